"""Plain multi-head attention ``softmax(q k^T * scale) v``: the mask decoder's attention between
its few prompt tokens and the image's 4096 tokens.

Backends (the default order when nothing is measured; see :mod:`sam2_fast.ops._tuning`):

* ``cpp``: CPU float32 / bfloat16 with AVX-512, ``torch.ops.sam2_fast.flash_attention``
  (csrc/attention.cpp) without rotation. For 4096 image tokens against 8 prompt tokens
  (8 heads of 16) torch's CPU flash attention spends about 1.7 ms a call on its block loop
  (bfloat16, 2-core Xeon with AMX), this about 0.5 ms;
* ``reference``: ``F.scaled_dot_product_attention``, any device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sam2_fast.errors import InvalidInputError, InvalidTypeError
from sam2_fast.ops._common import flash_inputs_refusal, via_custom_op
from sam2_fast.ops._dispatch import Op
from sam2_fast.ops._tuning import size_class

__all__ = ["attention"]


def _example(device: str) -> tuple:
    """The mask decoder's image-to-token attention at 1024: 4096 queries, 8 keys, 8 heads of 16."""
    with torch.device(device):
        return torch.zeros(1, 8, 4096, 16), torch.zeros(1, 8, 8, 16), torch.zeros(1, 8, 8, 16)


def _shape_class(q, k, v, scale=None) -> str:
    b, h, nq, d = q.shape
    dtype = str(q.dtype).removeprefix("torch.")
    return (f"{dtype} B{size_class(b)} heads {h} Nq {size_class(nq)} Nk {size_class(k.shape[2])} "
            f"D {d} Dv {v.shape[3]}")


attention_op = Op("attention", example=_example, shape_class=_shape_class)


def _check(q, k, v) -> None:
    for arg, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise InvalidTypeError(f"attention: {arg} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise InvalidInputError(f"attention: {arg} must be [B, heads, tokens, dim], got shape {list(t.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise InvalidTypeError(f"attention: q, k and v must have one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    b, h, _, d = q.shape
    if k.shape[:2] != (b, h) or k.shape[3] != d or v.shape[:3] != k.shape[:3]:
        raise InvalidInputError(
            f"attention: k must be [{b}, {h}, Nk, {d}] and v [{b}, {h}, Nk, Dv] to match q {list(q.shape)}, "
            f"got {list(k.shape)} and {list(v.shape)}"
        )


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """``softmax(q k^T * scale) v`` for ``q [B, heads, Nq, D]``, ``k [B, heads, Nk, D]``, ``v [B,
    heads, Nk, Dv]`` (``scale`` default ``1 / sqrt(D)``); ``[B, heads, Nq, Dv]`` in ``q.dtype``.
    Under autograd: torch's SDPA."""
    _check(q, k, v)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        return _reference(q, k, v, scale)
    if via_custom_op(attention_op):
        return torch.ops.sam2_fast.attention(q, k, v, scale)
    return attention_op(q, k, v, scale)


@torch.library.custom_op("sam2_fast::attention", mutates_args=())
def _attention_custom_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    return attention_op(q, k, v, scale)


@_attention_custom_op.register_fake
def _(q, k, v, scale):
    return q.new_empty(q.shape[0], q.shape[1], q.shape[2], v.shape[3])


def _cpp_refusal(q, k, v, scale=None) -> str | None:
    return flash_inputs_refusal(q, k, v)


@attention_op.register("cpp", _cpp_refusal)
def attention_cpp(q, k, v, scale=None):
    """CPU, float32 or bfloat16 with AVX-512: the C++ flash attention without rotation (one
    block of keys when there are few)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return torch.ops.sam2_fast.flash_attention(q, k, v, None, None, 0, float(scale))


def _reference(q, k, v, scale=None):
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


attention_op.add_backend("reference", _reference)
