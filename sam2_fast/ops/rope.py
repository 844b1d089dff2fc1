"""The 2D axial rotary position encoding (RoPE) of SAM 2's memory attention in real
arithmetic: the rotation tables and the rotation of channel pairs. The reference that the
``rope_attention`` backends (C++, Triton, torch) fuse into their layout passes; the model
(:mod:`sam2_fast.modeling.position_encoding`) builds its tables with it."""

from __future__ import annotations

from typing import Tuple

import torch


def axial_rope_cos_sin(
    dim: int, end_x: int, end_y: int, theta: float = 10000.0, device=None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Cos/sin tables of the 2D axial rotary encoding, each ``[end_x * end_y, dim // 2]``.

    Token ``t`` sits at ``(x, y) = (t % end_x, t // end_x)``. Channel pair ``j`` (elements
    ``2j, 2j+1``) is rotated by ``x * f_j`` for ``j < dim // 4`` and by ``y * f_{j - dim//4}``
    after, with ``f_j = theta ** (-4j / dim)`` — the same angles as the official complex
    ``compute_axial_cis``, without complex dtypes.
    """
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4, device=device)[: dim // 4].float() / dim))
    t = torch.arange(end_x * end_y, dtype=torch.float32, device=device)
    t_x = t % end_x
    t_y = torch.div(t, end_x, rounding_mode="floor")
    angles = torch.cat([torch.outer(t_x, freqs), torch.outer(t_y, freqs)], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of ``x [..., N, D]`` by ``cos/sin [N, D/2]``.

    Computed in float32 and returned in ``x.dtype`` (as the official code does).
    """
    xf = x.float()
    if torch.is_grad_enabled() and (xf.requires_grad or cos.requires_grad or sin.requires_grad):
        pairs = xf.unflatten(-1, (-1, 2))
        even, odd = pairs[..., 0], pairs[..., 1]
        out = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
        return out.flatten(-2).to(x.dtype)
    out = torch.empty_like(xf)
    _rotate_pairs(xf.unflatten(-1, (-1, 2)), out.unflatten(-1, (-1, 2)), cos, sin)
    return out.to(x.dtype)


def apply_rope_(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """In-place :func:`apply_rope` for float32 ``x`` (no autograd); returns ``x``."""
    pairs = x.unflatten(-1, (-1, 2))
    _rotate_pairs(pairs.clone(), pairs, cos, sin)
    return x


def _rotate_pairs(src: torch.Tensor, dst: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    """``dst = (e cos - o sin, e sin + o cos)`` for the pairs ``src = (e, o)`` ``[..., D/2, 2]``
    (``dst`` must not overlap ``src``)."""
    even, odd = src[..., 0], src[..., 1]
    torch.mul(even, cos, out=dst[..., 0])
    dst[..., 0].addcmul_(odd, sin, value=-1)
    torch.mul(even, sin, out=dst[..., 1])
    dst[..., 1].addcmul_(odd, cos)
