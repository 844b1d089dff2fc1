"""EdgeTAM's own modules: the RepViT trunk (timm), the spatial perceiver that compresses each
memory frame to latents, and the memory cross-attention over those latents. State-dict keys
and shapes are those of the official ``edgetam.pt`` (``image_encoder.trunk.body.*``,
``spatial_perceiver.*``, ``memory_attention.*``); the config is
:class:`~sam2_fast.modeling.edgetam_config.EdgeTAMConfig`. The rest of the model is SAM 2's
(:class:`~sam2_fast.modeling.sam2_base.SAM2Base` holds the perceiver as the official EdgeTAM
``SAM2Base`` does, and :mod:`~sam2_fast.modeling.builders` builds these parts).

A memory frame's latents are stored as a ``[B, mem_dim, 1, T]`` map (a row of ``T`` tokens:
the global latents, then the local ones in row-major window order), so that the memory
selection and assembly written for SAM 2's ``[B, mem_dim, h, w]`` maps read them unchanged.
"""

from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sam2_fast.errors import InvalidInputError
from sam2_fast.modeling.edgetam_config import PerceiverConfig, RepViTConfig
from sam2_fast.modeling.position_encoding import PositionEmbeddingSine, axial_rope_cos_sin
from sam2_fast.modeling.transformer import RoPEAttention, rope_values_op
from sam2_fast.ops.rope_attention import rotate_tokens

TIMM_HINT = "pip install 'sam2-fast[edgetam]'"


class RepViTTrunk(nn.Module):
    """timm's RepViT as a ``features_only`` model (``body``): ``[B, 3, S, S]`` -> its four
    stages' maps (strides 4, 8, 16, 32), highest resolution first. timm is imported here, when
    an EdgeTAM model is built."""

    def __init__(self, config: RepViTConfig) -> None:
        super().__init__()
        try:
            import timm
        except ImportError:
            raise ImportError(
                f"EdgeTAM's RepViT image encoder is built with timm, which is not installed; {TIMM_HINT}"
            ) from None
        self.body = timm.create_model(
            config.timm_name, pretrained=False, in_chans=3, features_only=True, out_indices=(0, 1, 2, 3)
        )
        channels = tuple(self.body.feature_info.channels())
        if channels != tuple(config.stage_channels):
            raise InvalidInputError(
                f"RepViTConfig: timm's {config.timm_name!r} has stage channels {channels}, the config "
                f"says {tuple(config.stage_channels)}"
            )
        self.channel_list = list(config.channel_list)

    def forward(self, x: Tensor) -> List[Tensor]:
        return list(self.body(x))


def _feed_forward(dim: int, mult: int) -> nn.Sequential:
    """Pre-norm MLP without biases (official ``FeedForward``: keys ``0`` norm, ``1``, ``3``)."""
    return nn.Sequential(
        nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(), nn.Linear(dim * mult, dim, bias=False)
    )


class _LatentAttention(nn.Module):
    """Multi-head attention of latents to inputs with a joint key/value projection (``to_kv``)
    and no biases. ``cross``: two input norms (``norm_latents``, ``norm_x``) and an optional
    position added to both keys and values after projection; else self-attention (``norm``)."""

    def __init__(self, dim: int, dim_head: int, heads: int, cross: bool) -> None:
        super().__init__()
        self.heads = heads
        inner = dim_head * heads
        if cross:
            self.norm_x = nn.LayerNorm(dim)
            self.norm_latents = nn.LayerNorm(dim)
        else:
            self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, latents: Tensor, x: Tensor | None = None, pos: Tensor | None = None) -> Tensor:
        """``latents [B, L, dim]``, ``x [B, N, dim]`` (None: self-attention), ``pos [B, N, inner]``."""
        if x is None:
            latents = x = self.norm(latents)
        else:
            latents, x = self.norm_latents(latents), self.norm_x(x)
        q = self._heads(self.to_q(latents))
        k, v = (self._heads(t) for t in self.to_kv(x).chunk(2, dim=-1))
        if pos is not None:
            pos = self._heads(pos)
            k, v = k + pos, v + pos
        out = F.scaled_dot_product_attention(q, k, v)
        b, h, n, c = out.shape
        return self.to_out(out.transpose(1, 2).reshape(b, n, h * c))


class PerceiverLayer(nn.Module):
    """Latents cross-attend to the inputs, MLP, self-attention, MLP; each with a residual."""

    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__()
        c = config
        self.attn = _LatentAttention(c.dim, c.dim_head, c.heads, cross=True)
        self.ff = _feed_forward(c.dim, c.ff_mult)
        self.self_attn = _LatentAttention(c.dim, c.dim_head, c.heads, cross=False)
        self.self_ff = _feed_forward(c.dim, c.ff_mult)

    def forward(self, latents: Tensor, x: Tensor, pos: Tensor | None = None) -> Tensor:
        latents = latents + self.attn(latents, x, pos)
        latents = latents + self.ff(latents)
        latents = latents + self.self_attn(latents)
        return latents + self.self_ff(latents)


class SpatialPerceiver(nn.Module):
    """The official ``PerceiverResampler`` of EdgeTAM (inference): a memory map -> latents.

    The global latents (``latents``) attend to every position of the map, with the map's
    position encoding added to keys and values; their own position is zero. The local latents
    (``latents_2d``), one per window of a ``g x g`` grid, attend to their window only (no
    position), and get the sine encoding of the ``g x g`` grid. Both go through the same layers
    and the same final norm.
    """

    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__()
        self.config = config
        self.num_latents = config.num_latents
        self.num_latents_2d = config.num_latents_2d
        if config.num_latents > 0:
            self.latents = nn.Parameter(torch.randn(config.num_latents, config.dim))
        if config.num_latents_2d > 0:
            self.latents_2d = nn.Parameter(torch.randn(config.num_latents_2d, config.dim))
        self.position_encoding = PositionEmbeddingSine(num_pos_feats=config.dim)
        self.layers = nn.ModuleList(PerceiverLayer(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim)

    def forward(self, x: Tensor, pos: Tensor) -> Tuple[Tensor, Tensor]:
        """``x``, ``pos``: ``[B, dim, H, W]`` memory features and their position encoding.

        Returns latents and their positions, each ``[B, dim, 1, T]`` (``T = num_latents +
        num_latents_2d``: global first)."""
        latents, positions = [], []
        if self.num_latents > 0:
            latents.append(self._global(x, pos))
            positions.append(torch.zeros_like(latents[-1]))
        if self.num_latents_2d > 0:
            local, local_pos = self._local(x)
            latents.append(local)
            positions.append(local_pos)
        out = torch.cat(latents, dim=1)
        out_pos = torch.cat(positions, dim=1).to(out.dtype)
        return out.transpose(1, 2).unsqueeze(2), out_pos.transpose(1, 2).unsqueeze(2)

    def _global(self, x: Tensor, pos: Tensor) -> Tensor:
        latents = self.latents.unsqueeze(0).expand(x.shape[0], -1, -1)
        tokens = x.flatten(2).transpose(1, 2)
        token_pos = pos.flatten(2).transpose(1, 2).to(tokens.dtype)
        for layer in self.layers:
            latents = layer(latents, tokens, token_pos)
        return self.norm(latents)

    def _local(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        g = self.config.grid_2d
        if h % g or w % g:
            raise InvalidInputError(
                f"spatial perceiver: the memory map ({h} x {w}) must divide into a {g} x {g} grid of windows"
            )
        wh, ww = h // g, w // g
        # [B * g * g, window tokens, C]: window (i, j) in row-major order
        windows = x.view(b, c, g, wh, g, ww).permute(0, 2, 4, 3, 5, 1).reshape(b * g * g, wh * ww, c)
        latents = self.latents_2d.unsqueeze(0).expand(b, -1, -1).reshape(b * g * g, 1, c)
        for layer in self.layers:
            latents = layer(latents, windows)
        latents = self.norm(latents.view(b, g * g, c))
        pos = self.position_encoding.encoding(g, g, x.device).flatten(1).transpose(0, 1)
        return latents, pos.unsqueeze(0).expand(b, -1, -1)


class LatentRoPEAttention(RoPEAttention):
    """EdgeTAM's memory cross-attention (official ``RoPEAttentionv2``): the queries are rotated
    on their own grid; of each memory frame's ``T`` latent tokens the global ones are not
    rotated and the local ones are rotated on the perceiver's ``g x g`` grid; the trailing
    object-pointer tokens are not rotated.

    The local latents are rotated here; the attention itself is the ``rope_attention`` op with
    every key excluded from its rotation (the same kernels and value algebra as SAM 2's memory
    attention, :class:`~sam2_fast.modeling.transformer.RoPEAttention`).
    """

    def __init__(self, *args, num_latents: int, grid_2d: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.num_latents = num_latents
        self.grid_2d = grid_2d
        self.tokens_per_frame = num_latents + grid_2d * grid_2d

    def key_tables(self, device: torch.device) -> Tuple[Tensor, Tensor]:
        """Cos/sin tables of the local latents' grid, ``[g * g, head_dim / 2]``."""
        key = ("keys", str(device))
        tables = self._rope_cache.get(key)
        if tables is None:
            tables = self._rope_cache[key] = axial_rope_cos_sin(
                self.internal_dim // self.num_heads, self.grid_2d, self.grid_2d, self.rope_theta, device=device
            )
        return tables

    def rotate_keys(self, k: Tensor, num_k_exclude_rope: int) -> Tensor:
        """``k [B, heads, Nk, D]``: memory frames of ``T`` tokens then ``num_k_exclude_rope``
        pointer tokens -> the same with each frame's local latents rotated."""
        b, h, nk, d = k.shape
        spatial = nk - num_k_exclude_rope
        if spatial % self.tokens_per_frame:
            raise InvalidInputError(
                f"memory attention: {spatial} memory tokens are not whole frames of {self.tokens_per_frame} latents"
            )
        if spatial == 0 or self.grid_2d == 0:
            return k
        cos, sin = self.key_tables(k.device)
        frames = k[:, :, :spatial].unflatten(2, (-1, self.tokens_per_frame))
        local = frames[:, :, :, self.num_latents :].flatten(2, 3)
        rotated = rotate_tokens(local, cos, sin).unflatten(2, (-1, self.grid_2d * self.grid_2d))
        frames = torch.cat([frames[:, :, :, : self.num_latents], rotated], dim=3).flatten(2, 3)
        return torch.cat([frames, k[:, :, spatial:]], dim=2)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, num_k_exclude_rope: int = 0) -> Tensor:
        q = self._separate_heads(self.q_proj(q))
        k = self.rotate_keys(self._separate_heads(self.k_proj(k)), num_k_exclude_rope)
        cos, sin = self.rope_tables(q.shape[-2], q.device)
        nk = k.shape[-2]
        if self.training and self.dropout_p > 0:
            v = self._separate_heads(self.v_proj(v))
            q = rotate_tokens(q, cos, sin)
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout_p)
            return self.out_proj(self._recombine_heads(out))
        return rope_values_op(self, q, k, v, cos, sin, nk)
