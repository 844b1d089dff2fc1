"""Position encodings: 2D sine (FPN neck, memory encoder), random Fourier (prompt encoder),
1D sine (temporal), and 2D axial rotary encoding (memory attention) in real arithmetic."""

from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from sam2_fast.errors import InvalidInputError
from sam2_fast.ops.rope import apply_rope, apply_rope_, axial_rope_cos_sin  # noqa: F401  (the rotation lives with its op)


class PositionEmbeddingSine(nn.Module):
    """The DETR-style 2D sine encoding of a feature map, ``[B, C, H, W] -> [B, C, H, W]``.

    Depends only on the spatial size, so the result is cached per ``(H, W, device, dtype)``
    (a 16-bit copy is rounded once, not at every call: at 256 x 256 x 256 that copy alone took
    50 ms of a bfloat16 ``set_image``).
    """

    def __init__(
        self,
        num_pos_feats: int,
        temperature: int = 10000,
        normalize: bool = True,
        scale: Optional[float] = None,
    ) -> None:
        super().__init__()
        if num_pos_feats % 2 != 0:
            raise InvalidInputError(f"num_pos_feats must be even, got {num_pos_feats}")
        if scale is not None and not normalize:
            raise InvalidInputError("normalize must be True if scale is passed")
        self.num_pos_feats = num_pos_feats // 2
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale
        self._cache: Dict[Tuple[int, int, str], torch.Tensor] = {}

    def _dim_t(self, device: torch.device) -> torch.Tensor:
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=device)
        return self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)

    @staticmethod
    def _interleave_sin_cos(pos: torch.Tensor) -> torch.Tensor:
        return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)

    @torch.no_grad()
    def encoding(self, h: int, w: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The ``[C, H, W]`` encoding of an ``h x w`` map, computed in float32 and rounded to
        ``dtype``."""
        key = (h, w, str(device), dtype)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if dtype != torch.float32:
            pos = self._cache[key] = self.encoding(h, w, device).to(dtype)
            return pos
        y = torch.arange(1, h + 1, dtype=torch.float32, device=device)
        x = torch.arange(1, w + 1, dtype=torch.float32, device=device)
        if self.normalize:
            eps = 1e-6
            y = y / (y[-1:] + eps) * self.scale
            x = x / (x[-1:] + eps) * self.scale
        dim_t = self._dim_t(device)
        pos_y = self._interleave_sin_cos(y[:, None] / dim_t)  # [H, C/2]
        pos_x = self._interleave_sin_cos(x[:, None] / dim_t)  # [W, C/2]
        pos = torch.cat(
            (pos_y[:, None, :].expand(h, w, -1), pos_x[None, :, :].expand(h, w, -1)), dim=-1
        )
        pos = pos.permute(2, 0, 1).contiguous()
        self._cache[key] = pos
        return pos

    @torch.no_grad()
    def forward(self, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The encoding of ``x``'s spatial size in ``dtype``, ``[B, C, H, W]`` (expanded)."""
        pos = self.encoding(x.shape[-2], x.shape[-1], x.device, dtype)
        return pos.unsqueeze(0).expand(x.shape[0], -1, -1, -1)


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of normalised coordinates (SAM's prompt encoding)."""

    def __init__(self, num_pos_feats: int = 64, scale: Optional[float] = None) -> None:
        super().__init__()
        if scale is None or scale <= 0.0:
            scale = 1.0
        # a checkpoint's matrix replaces this one; on the meta device (the loading path) random
        # values are not drawn: torch.randn and `scale * tensor` there import sympy and
        # torch._dynamo, about 1.5 s of a cold start
        matrix = torch.empty((2, num_pos_feats))
        if not matrix.is_meta:
            matrix = torch.randn((2, num_pos_feats), device=matrix.device).mul_(scale)
        self.register_buffer("positional_encoding_gaussian_matrix", matrix)

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """``[..., 2]`` coords in ``[0, 1]`` -> ``[..., 2 * num_pos_feats]``."""
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: Tuple[int, int]) -> torch.Tensor:
        """Encoding of every cell centre of an ``h x w`` grid, ``[C, H, W]``."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        y = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        x = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid = torch.stack(
            (x[None, :].expand(h, w), y[:, None].expand(h, w)), dim=-1
        )
        return self._pe_encoding(grid).permute(2, 0, 1)

    def forward_with_coords(
        self, coords_input: torch.Tensor, image_size: Tuple[int, int]
    ) -> torch.Tensor:
        """Encode ``[B, N, 2]`` pixel coordinates (x, y) of an image of ``image_size`` (H, W)."""
        # per-axis scalar divisions: a [W, H] tensor would be a host-to-GPU copy that waits
        # for the GPU (the same quotients)
        coords = torch.stack((coords_input[..., 0] / image_size[1], coords_input[..., 1] / image_size[0]), dim=-1)
        return self._pe_encoding(coords.to(torch.float))


def get_1d_sine_pe(pos_inds: torch.Tensor, dim: int, temperature: float = 10000) -> torch.Tensor:
    """1D sine encoding (sin half then cos half) of ``[N]`` positions -> ``[N, dim]``."""
    pe_dim = dim // 2
    dim_t = torch.arange(pe_dim, dtype=torch.float32, device=pos_inds.device)
    dim_t = temperature ** (2 * (dim_t // 2) / pe_dim)
    pos_embed = pos_inds.unsqueeze(-1) / dim_t
    return torch.cat([pos_embed.sin(), pos_embed.cos()], dim=-1)
