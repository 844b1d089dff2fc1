"""Image encoder: Hiera trunk + FPN neck (``image_encoder.*`` keys of the checkpoints)."""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sam2_fast.errors import InvalidInputError
from sam2_fast.modeling.common import Conv2d
from sam2_fast.modeling.position_encoding import PositionEmbeddingSine


class FpnNeck(nn.Module):
    """A feature pyramid without output convs: 1x1 lateral convs to ``d_model`` channels,
    top-down fusion (sum of the lateral map and the 2x upsampled coarser map) only on
    ``fpn_top_down_levels``; every level gets a sine position encoding."""

    def __init__(
        self,
        position_encoding: PositionEmbeddingSine,
        d_model: int,
        backbone_channel_list: Sequence[int],
        fpn_interp_model: str = "bilinear",
        fuse_type: str = "sum",
        fpn_top_down_levels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if fuse_type not in ("sum", "avg"):
            raise InvalidInputError(f"fuse_type must be 'sum' or 'avg', got {fuse_type!r}")
        self.position_encoding = position_encoding
        self.d_model = d_model
        self.backbone_channel_list = list(backbone_channel_list)
        self.convs = nn.ModuleList()
        for dim in backbone_channel_list:
            level = nn.Sequential()
            level.add_module("conv", Conv2d(dim, d_model, kernel_size=1))
            self.convs.append(level)
        self.fpn_interp_model = fpn_interp_model
        self.fuse_type = fuse_type
        if fpn_top_down_levels is None:
            fpn_top_down_levels = range(len(self.convs))
        self.fpn_top_down_levels = list(fpn_top_down_levels)

    def forward(self, xs: List[torch.Tensor]):
        """``xs``: trunk maps, highest resolution first. Returns (features, pos), same order."""
        n = len(self.convs) - 1
        if len(xs) != n + 1:
            raise InvalidInputError(f"expected {n + 1} trunk feature maps, got {len(xs)}")
        out: List[torch.Tensor] = [None] * (n + 1)  # type: ignore[list-item]
        pos: List[torch.Tensor] = [None] * (n + 1)  # type: ignore[list-item]
        prev = None
        for i in range(n, -1, -1):  # coarse to fine
            lateral = self.convs[n - i](xs[i])
            if i in self.fpn_top_down_levels and prev is not None:
                top_down = F.interpolate(
                    prev.to(dtype=torch.float32),
                    scale_factor=2.0,
                    mode=self.fpn_interp_model,
                    align_corners=None if self.fpn_interp_model == "nearest" else False,
                    antialias=False,
                )
                prev = lateral + top_down
                if self.fuse_type == "avg":
                    prev = prev / 2
            else:
                prev = lateral
            out[i] = prev
            pos[i] = self.position_encoding(prev, prev.dtype)
        return out, pos


class ImageEncoder(nn.Module):
    """Trunk + neck; drops the ``scalp`` lowest-resolution levels."""

    def __init__(self, trunk: nn.Module, neck: FpnNeck, scalp: int = 0) -> None:
        super().__init__()
        if list(trunk.channel_list) != list(neck.backbone_channel_list):
            raise InvalidInputError(
                f"trunk channels {trunk.channel_list} do not match neck "
                f"backbone_channel_list {neck.backbone_channel_list}"
            )
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp

    def forward(self, sample: torch.Tensor) -> Dict[str, object]:
        features, pos = self.neck(self.trunk(sample))
        if self.scalp > 0:
            features, pos = features[: -self.scalp], pos[: -self.scalp]
        return {"vision_features": features[-1], "vision_pos_enc": pos, "backbone_fpn": features}
