"""Module builders: the image encoder, memory attention and memory encoder of a
:class:`~sam2_fast.modeling.config.SAM2Config`, and the spatial perceiver of an
:class:`~sam2_fast.modeling.edgetam_config.EdgeTAMConfig`, in the official layout (state-dict
keys and shapes match the official checkpoints). The trunk is picked by its config's ``kind``
tag from ``BACKBONES`` (Hiera for SAM 2, RepViT for EdgeTAM; another family registers its
backbone with :func:`register_backbone`). The SAM heads are built by the model itself
(:meth:`sam2_fast.modeling.sam_heads.SAMHeads._build_sam_heads`), from its constructor's
arguments."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from torch import nn

from sam2_fast.errors import InvalidInputError
from sam2_fast.modeling.config import HieraConfig, SAM2Config
from sam2_fast.modeling.edgetam import LatentRoPEAttention, RepViTTrunk, SpatialPerceiver
from sam2_fast.modeling.edgetam_config import EdgeTAMConfig, RepViTConfig
from sam2_fast.modeling.hiera import Hiera
from sam2_fast.modeling.image_encoder import FpnNeck, ImageEncoder
from sam2_fast.modeling.memory_attention import MemoryAttention, MemoryAttentionLayer
from sam2_fast.modeling.memory_encoder import CXBlock, Fuser, MaskDownSampler, MemoryEncoder
from sam2_fast.modeling.position_encoding import PositionEmbeddingSine
from sam2_fast.modeling.transformer import RoPEAttention


#: backbone kind (its config's ``kind`` tag) -> the trunk built from that config; a family
#: with another backbone registers it with :func:`register_backbone`
BACKBONES: Dict[str, Callable[[Any], nn.Module]] = {HieraConfig.kind: Hiera, RepViTConfig.kind: RepViTTrunk}


def register_backbone(kind: str, build: Callable[[Any], nn.Module]) -> None:
    """Make trunk configs tagged ``kind`` buildable (``build(config) -> nn.Module`` whose
    forward returns the per-stage features the neck reads, channels ``config.channel_list``)."""
    if not isinstance(kind, str) or not kind or not callable(build):
        raise InvalidInputError(f"register_backbone: expected a kind name and a callable, got {kind!r}, {build!r}")
    BACKBONES[kind] = build


def build_trunk(trunk: Any) -> nn.Module:
    """The backbone of a trunk config, by its ``kind`` tag."""
    kind = getattr(trunk, "kind", None)
    if kind not in BACKBONES:
        raise InvalidInputError(
            f"trunk: no backbone is registered for {type(trunk).__name__} (kind {kind!r}); "
            f"known kinds: {', '.join(sorted(BACKBONES))}"
        )
    return BACKBONES[kind](trunk)


def build_image_encoder(cfg: SAM2Config) -> ImageEncoder:
    """The trunk (by its kind: Hiera for SAM 2) and FPN neck of ``cfg``."""
    neck = FpnNeck(
        position_encoding=PositionEmbeddingSine(num_pos_feats=cfg.d_model),
        d_model=cfg.d_model,
        backbone_channel_list=cfg.backbone_channel_list,
        fpn_top_down_levels=cfg.fpn_top_down_levels,
        fpn_interp_model=cfg.fpn_interp_model,
    )
    return ImageEncoder(trunk=build_trunk(cfg.trunk), neck=neck, scalp=cfg.scalp)


def build_memory_attention(cfg: SAM2Config) -> MemoryAttention:
    """``cfg.memory_attention_num_layers`` layers of RoPE self-attention and RoPE cross-attention
    to the ``cfg.mem_dim``-channel memories (EdgeTAM: to the perceiver's latents)."""

    def rope_attention(kind=RoPEAttention, **extra) -> RoPEAttention:
        return kind(
            cfg.d_model,
            num_heads=1,
            downsample_rate=1,
            dropout=cfg.memory_attention_dropout,
            rope_theta=cfg.rope_theta,
            feat_sizes=cfg.rope_feat_sizes,
            **extra,
        )

    def cross_attention() -> RoPEAttention:
        if isinstance(cfg, EdgeTAMConfig):  # to each memory frame's latents
            latents = cfg.perceiver
            return rope_attention(
                LatentRoPEAttention, kv_in_dim=cfg.mem_dim, num_latents=latents.num_latents, grid_2d=latents.grid_2d
            )
        return rope_attention(rope_k_repeat=True, kv_in_dim=cfg.mem_dim)

    def layer() -> MemoryAttentionLayer:
        return MemoryAttentionLayer(
            activation="relu",
            self_attention=rope_attention(),
            cross_attention=cross_attention(),
            d_model=cfg.d_model,
            dim_feedforward=cfg.memory_attention_dim_feedforward,
            dropout=cfg.memory_attention_dropout,
            pos_enc_at_attn=False,
            pos_enc_at_cross_attn_keys=True,
            pos_enc_at_cross_attn_queries=False,
        )

    return MemoryAttention(
        d_model=cfg.d_model,
        pos_enc_at_input=True,
        layer_factory=layer,
        num_layers=cfg.memory_attention_num_layers,
    )


def build_memory_encoder(cfg: SAM2Config) -> MemoryEncoder:
    """The mask downsampler and fuser that turn ``cfg.d_model``-channel features and a mask into
    a ``cfg.mem_dim``-channel memory."""
    return MemoryEncoder(
        out_dim=cfg.mem_dim,
        position_encoding=PositionEmbeddingSine(num_pos_feats=cfg.mem_dim),
        mask_downsampler=MaskDownSampler(kernel_size=3, stride=2, padding=1),
        fuser=Fuser(lambda: CXBlock(dim=cfg.d_model, kernel_size=7, padding=3), num_layers=2),
        in_dim=cfg.d_model,
    )


def build_spatial_perceiver(cfg: SAM2Config) -> Optional[SpatialPerceiver]:
    """EdgeTAM's perceiver that compresses each memory frame to latents; None for SAM 2."""
    return SpatialPerceiver(cfg.perceiver) if isinstance(cfg, EdgeTAMConfig) else None
