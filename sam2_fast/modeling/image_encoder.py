"""Image encoder: Hiera trunk + FPN neck (``image_encoder.*`` keys of the checkpoints)."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sam2_fast.errors import InvalidInputError
from sam2_fast.modeling.common import Conv2d, autocast_weight_dtype, kept_across_calls
from sam2_fast.ops._dispatch import Op
from sam2_fast.ops._tuning import size_class
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

    def forward(self, xs: List[torch.Tensor], projections: Optional[Dict[int, nn.Module]] = None):
        """``xs``: trunk maps, highest resolution first. Returns (features, pos), same order.

        ``projections``: level -> a 1x1 convolution applied to that level's output (the mask
        decoder's ``conv_s0`` / ``conv_s1``); a level without top-down fusion is then the op
        ``neck_projection`` (its lateral and the projection, or the two as one product)."""
        n = len(self.convs) - 1
        if len(xs) != n + 1:
            raise InvalidInputError(f"expected {n + 1} trunk feature maps, got {len(xs)}")
        projections = projections or {}
        out: List[torch.Tensor] = [None] * (n + 1)  # type: ignore[list-item]
        pos: List[torch.Tensor] = [None] * (n + 1)  # type: ignore[list-item]
        prev = None
        for i in range(n, -1, -1):  # coarse to fine
            alone = i not in self.fpn_top_down_levels and i - 1 not in self.fpn_top_down_levels
            if i in projections and alone and not torch.compiler.is_compiling():  # nothing fuses with it
                out[i] = neck_projection_op(self.convs[n - i], projections[i], xs[i])
                pos[i] = self.position_encoding(out[i], out[i].dtype)
                prev = None
                continue
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
            if i in projections:
                out[i] = projections[i](prev)
        return out, pos


# ---------------------------------------------------------------------------------------------
# a neck level and the mask decoder's projection of it: two 1x1 products, or one


def _conv_of(module: nn.Module) -> nn.Module:
    """The convolution of a neck level (an ``nn.Sequential`` holding one ``conv``), or ``module``."""
    if isinstance(module, nn.Sequential) and len(module) == 1:
        return module[0]
    return module


def _fused_weights(lateral: nn.Module, projection: nn.Module):
    """``(W_p W_l, W_p b_l + b_p)``: the two 1x1 convolutions as one, in float32, kept until a
    weight changes."""
    tensors = (lateral.weight, lateral.bias, projection.weight, projection.bias)

    def make():
        w_l, w_p = lateral.weight.detach().flatten(1).float(), projection.weight.detach().flatten(1).float()
        bias = w_p @ lateral.bias.detach().float() + projection.bias.detach().float()
        return (w_p @ w_l).view(w_p.shape[0], w_l.shape[1], 1, 1), bias

    return kept_across_calls(projection, "_kept_fused_with_lateral", id(lateral), tensors, make)


def _neck_projection_fused(lateral: nn.Module, projection: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The lateral and the projection as one product (``C -> 32`` instead of ``C -> 256 ->
    32`` at 256 x 256 for level 0): the 256-channel map of a high-resolution level, which only
    the projection reads, is never written. Under bfloat16 autocast this rounds once where the
    official sequence rounds the 256-channel map first (the bfloat16 mode's tolerance)."""
    weight, bias = _fused_weights(_conv_of(lateral), _conv_of(projection))
    return F.conv2d(x, weight, bias)


def _neck_projection_refusal(lateral: nn.Module, projection: nn.Module, x: torch.Tensor) -> Optional[str]:
    convs = (_conv_of(lateral), _conv_of(projection))
    if not all(isinstance(c, nn.Conv2d) and tuple(c.kernel_size) == (1, 1) and c.groups == 1
               and tuple(c.stride) == (1, 1) and tuple(c.padding) == (0, 0) and c.bias is not None
               for c in convs):
        return "both must be 1x1 convolutions with a bias"
    if x.device.type != "cpu":
        return f"input on {x.device.type}: measured on CPUs only so far"
    if autocast_weight_dtype(x, projection.weight) != torch.bfloat16:
        return "the exact float32 mode keeps the official two products (bit parity)"
    return None


def _neck_projection_shape_class(lateral: nn.Module, projection: nn.Module, x: torch.Tensor) -> str:
    dtype = str(x.dtype).removeprefix("torch.")
    widths = " -> ".join(str(getattr(_conv_of(c), "out_channels", "?")) for c in (lateral, projection))
    return f"{dtype} B{size_class(x.shape[0])} {x.shape[1]}x{size_class(x.shape[2])}x{size_class(x.shape[3])} -> {widths}"


def _neck_projection_example(device: str) -> tuple:
    """sam2.1-hiera-tiny's level 0 at image size 1024: 96 channels at 256 x 256 -> 256 -> 32."""
    with torch.device(device):
        return Conv2d(96, 256, kernel_size=1), Conv2d(256, 32, kernel_size=1), torch.zeros(1, 96, 256, 256)


neck_projection_op = Op("neck_projection", example=_neck_projection_example,
                        shape_class=_neck_projection_shape_class, kind="model")
neck_projection_op.add_backend("fused", _neck_projection_fused, _neck_projection_refusal)
neck_projection_op.add_backend("reference", lambda lateral, projection, x: projection(lateral(x)))


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

    def forward(self, sample: torch.Tensor, projections: Optional[Dict[int, nn.Module]] = None) -> Dict[str, object]:
        """``projections``: see :meth:`FpnNeck.forward` (``backbone_fpn`` then holds the
        projected levels)."""
        features, pos = self.neck(self.trunk(sample), projections)
        if self.scalp > 0:
            features, pos = features[: -self.scalp], pos[: -self.scalp]
        return {"vision_features": features[-1], "vision_pos_enc": pos, "backbone_fpn": features}
