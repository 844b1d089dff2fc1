"""Frozen dataclass config of EdgeTAM (Zhou et al. 2025, "EdgeTAM: On-Device Track Anything
Model", facebookresearch/EdgeTAM; no hydra).

EdgeTAM is SAM 2 with three parts changed: a RepViT-M1 image encoder (timm's ``repvit_m1``,
:class:`RepViTConfig`), a spatial perceiver that compresses each memory frame's ``mem_dim x
64 x 64`` map to ``num_latents`` global and ``num_latents_2d`` local (one per window of a
square grid) latents (:class:`PerceiverConfig`), and a two-layer memory attention whose
cross-attention rotates only the local latents, on their own grid. Everything else (prompt
encoder, mask decoder, memory encoder, object pointers) is SAM 2's, with the SAM 2.0 flags.
The values are those of the official ``sam2/configs/edgetam.yaml`` plus the official
constructors' defaults. Importing this module does not import torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Tuple

from sam2_fast.errors import InvalidInputError
from sam2_fast.modeling.config import SAM2Config


@dataclass(frozen=True)
class RepViTConfig:
    """The RepViT trunk (``image_encoder.trunk.body``: a timm ``features_only`` model).

    ``timm_name``: the timm architecture; ``stage_channels``: its four stages' output channels,
    highest resolution (stride 4) first."""

    kind: ClassVar[str] = "repvit"

    timm_name: str = "repvit_m1"
    stage_channels: Tuple[int, ...] = (48, 96, 192, 384)

    @property
    def channel_list(self) -> Tuple[int, ...]:
        """Output channels per stage, lowest resolution first (the neck's order)."""
        return tuple(reversed(self.stage_channels))


@dataclass(frozen=True)
class PerceiverConfig:
    """The spatial perceiver (``spatial_perceiver.*``) that resamples a memory frame.

    ``num_latents`` global latents attend to the whole map (their position is zero);
    ``num_latents_2d`` local latents (a square number) each attend to one window of a
    ``sqrt(num_latents_2d)``-square grid over the map and get the sine position of their
    window. Each of the ``depth`` layers: cross-attention latents -> map, MLP, self-attention
    of the latents, MLP (pre-norm, residual)."""

    dim: int = 64
    depth: int = 2
    dim_head: int = 64
    heads: int = 1
    ff_mult: int = 4
    num_latents: int = 256
    num_latents_2d: int = 256

    def __post_init__(self) -> None:
        side = math.isqrt(self.num_latents_2d)
        if side * side != self.num_latents_2d:
            raise InvalidInputError(f"PerceiverConfig.num_latents_2d must be a square number, got {self.num_latents_2d}")
        if self.num_latents < 0 or self.num_latents + self.num_latents_2d == 0:
            raise InvalidInputError(
                f"PerceiverConfig: need some latents, got num_latents={self.num_latents}, "
                f"num_latents_2d={self.num_latents_2d}"
            )

    @property
    def grid_2d(self) -> int:
        """The local latents' grid side."""
        return math.isqrt(self.num_latents_2d)

    @property
    def tokens_per_frame(self) -> int:
        """Memory tokens of one frame: the global latents, then the local ones."""
        return self.num_latents + self.num_latents_2d


@dataclass(frozen=True)
class EdgeTAMConfig(SAM2Config):
    """Everything needed to build EdgeTAM: :class:`SAM2Config`'s fields (the same meaning)
    with EdgeTAM's values, a :class:`RepViTConfig` trunk and the :class:`PerceiverConfig`."""

    name: str = "edgetam"
    trunk: RepViTConfig = field(default_factory=RepViTConfig)
    memory_attention_num_layers: int = 2
    perceiver: PerceiverConfig = field(default_factory=PerceiverConfig)
    # SAM 2.0's flags (edgetam.yaml sets add_tpos_enc_to_obj_ptrs false and leaves the others)
    no_obj_embed_spatial: bool = False
    add_tpos_enc_to_obj_ptrs: bool = False
    proj_tpos_enc_in_obj_ptrs: bool = False
    use_signed_tpos_enc_to_obj_ptrs: bool = False

    def __post_init__(self) -> None:
        if self.perceiver.dim != self.mem_dim:
            raise InvalidInputError(
                f"EdgeTAMConfig: the perceiver's dim ({self.perceiver.dim}) must be mem_dim ({self.mem_dim})"
            )
        if not self.directly_add_no_mem_embed:
            raise InvalidInputError(
                "EdgeTAMConfig: directly_add_no_mem_embed must be True (the latent memory attention "
                "has no form for SAM 2's single no-memory token)"
            )

    @property
    def feature_side(self) -> int:
        """Side of the image embedding's grid (``image_size / backbone_stride``)."""
        return self.image_size // self.backbone_stride


EDGETAM = EdgeTAMConfig()
