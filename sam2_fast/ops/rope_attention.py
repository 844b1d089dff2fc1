"""Attention with 2D axial rotary position encoding (RoPE) fused into the query / key loads.

This is the attention of SAM 2's memory attention: self-attention of the current frame's
``Nq = h * w`` tokens and cross-attention to the memories of past frames. The keys are ``r``
stacked copies of the query grid (one per memory frame, rotated with the query positions)
followed by ``num_k_exclude_rope`` object-pointer tokens that are not rotated.

The values may have any width: the memory attention passes the raw 64-dim memory features and
folds the value projection into the output projection (softmax rows sum to 1, so
``P (M W_v^T + b_v) = (P M) W_v^T + b_v`` exactly), which cuts the ``P V`` work by 4x.

Backends (the default order when nothing is measured; see :mod:`sam2_fast.ops._tuning`):

* ``triton``: ``kernels/rope_attention.py``: one pass rotates the queries and keys (real-valued,
  no complex tensors) into contiguous copies, then flash attention with an online softmax,
  the keys split across programs when there are few query blocks;
* ``cpp``: CPU float32 / bfloat16 with AVX-512, ``torch.ops.sam2_fast.flash_attention``
  (csrc/attention.cpp): flash attention on oneDNN's micro-kernels (AMX / AVX512-BF16 tiles for
  bfloat16), the rotation fused into its layout passes, the softmax online in float32, values
  of any width;
* ``blocked``: CPU float32 / bfloat16, query blocks against all keys with one product each,
  softmax in place and the row sums from a column of ones appended to the values (torch's CPU
  SDPA cannot keep narrow values: it falls back to its math path);
* ``reference``: rotate with :func:`~sam2_fast.ops.rope.apply_rope`, then
  ``F.scaled_dot_product_attention``;
* ``compiled``: ``torch.compile`` of the reference (only when forced).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sam2_fast.errors import InvalidInputError, InvalidTypeError
from sam2_fast.ops._blocked import DTYPES as blocked_dtypes
from sam2_fast.ops._blocked import blocked_attention
from sam2_fast.ops._common import flash_inputs_refusal, via_custom_op
from sam2_fast.ops._dispatch import Op
from sam2_fast.ops.rope import apply_rope, apply_rope_, axial_rope_cos_sin
from sam2_fast.ops._tuning import size_class
from sam2_fast.ops._triton import interpreter_untimed, triton_refusal

__all__ = ["rope_attention", "rope_attention_reference"]

_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _example(device: str) -> tuple:

    cos, sin = axial_rope_cos_sin(256, 64, 64, 10000.0, device=device)
    q = torch.zeros(1, 1, 4096, 256, device=device)
    k = torch.zeros(1, 1, 7 * 4096 + 64, 256, device=device)
    v = torch.zeros(1, 1, 7 * 4096 + 64, 64, device=device)
    return q, k, v, cos, sin, 64


def _shape_class(q, k, v, cos, sin, num_k_exclude_rope=0, scale=None) -> str:
    """Batch, heads, queries and keys rounded up to powers of two; the widths exact."""
    b, h, nq, d = q.shape
    dtype = str(q.dtype).removeprefix("torch.")
    return (f"{dtype} B{size_class(b)} heads {h} Nq {size_class(nq)} Nk {size_class(k.shape[2])} "
            f"D {d} Dv {v.shape[3]}")


rope_attention_op = Op("rope_attention", example=_example, shape_class=_shape_class)


def _check(q, k, v, cos, sin, num_k_exclude_rope: int) -> None:
    name = "rope_attention"
    for arg, t in (("q", q), ("k", k), ("v", v), ("cos", cos), ("sin", sin)):
        if not isinstance(t, torch.Tensor):
            raise InvalidTypeError(f"{name}: {arg} must be a torch.Tensor, got {type(t).__name__}")
    for arg, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise InvalidInputError(f"{name}: {arg} must be [B, heads, tokens, dim], got shape {list(t.shape)}")
        if t.dtype not in _FLOAT_DTYPES:
            raise InvalidTypeError(f"{name}: {arg} must be float32, bfloat16 or float16, got {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise InvalidTypeError(f"{name}: q, k and v must have one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    devices = {t.device for t in (q, k, v, cos, sin)}
    if len(devices) > 1:
        raise InvalidInputError(f"{name}: all inputs must be on one device, got {sorted(map(str, devices))}")
    b, h, nq, d = q.shape
    if k.shape[0] != b or k.shape[1] != h or k.shape[3] != d:
        raise InvalidInputError(f"{name}: k must be [{b}, {h}, Nk, {d}] to match q {list(q.shape)}, got {list(k.shape)}")
    if v.shape[0] != b or v.shape[1] not in (1, h) or v.shape[2] != k.shape[2]:
        raise InvalidInputError(
            f"{name}: v must be [{b}, 1 or {h}, {k.shape[2]}, Dv] to match q and k, got {list(v.shape)}"
        )
    if d % 2:
        raise InvalidInputError(f"{name}: the head dim must be even for RoPE, got {d}")
    if cos.shape != (nq, d // 2) or sin.shape != (nq, d // 2):
        raise InvalidInputError(
            f"{name}: cos and sin must be [{nq}, {d // 2}] (queries, head dim / 2), got "
            f"{list(cos.shape)} and {list(sin.shape)}"
        )
    if cos.dtype != torch.float32 or sin.dtype != torch.float32:
        raise InvalidTypeError(f"{name}: cos and sin must be float32, got {cos.dtype} and {sin.dtype}")
    if nq == 0:
        raise InvalidInputError(f"{name}: q has no query tokens (shape {list(q.shape)})")
    nk = k.shape[2]
    if not isinstance(num_k_exclude_rope, int) or not 0 <= num_k_exclude_rope <= nk:
        raise InvalidInputError(f"{name}: num_k_exclude_rope must be an int in [0, {nk}], got {num_k_exclude_rope!r}")
    if (nk - num_k_exclude_rope) % nq:
        raise InvalidInputError(
            f"{name}: the rotated keys ({nk} - {num_k_exclude_rope} excluded) must be a multiple of "
            f"the queries ({nq}): copies of the query grid"
        )


def rope_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    num_k_exclude_rope: int = 0,
    scale: float | None = None,
) -> torch.Tensor:
    """``softmax(R(q) R(k)^T * scale) v`` with axial RoPE ``R`` on queries and the first keys.

    Args:
        q: ``[B, heads, Nq, D]`` queries (not rotated); ``Nq`` tokens of the query grid.
        k: ``[B, heads, Nk, D]`` keys (not rotated): ``r`` copies of the query grid (rotated
            with the query positions), then ``num_k_exclude_rope`` tokens left unrotated.
        v: ``[B, 1 or heads, Nk, Dv]`` values (one set may be shared by every head).
        cos, sin: ``[Nq, D / 2]`` float32 rotation tables (``axial_rope_cos_sin``).
        num_k_exclude_rope: how many trailing keys are not rotated.
        scale: softmax scale, default ``1 / sqrt(D)``.

    Returns:
        ``[B, heads, Nq, Dv]`` in ``q.dtype``.
    """
    _check(q, k, v, cos, sin, num_k_exclude_rope)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        return rope_attention_reference(q, k, v, cos, sin, num_k_exclude_rope, scale)
    if via_custom_op(rope_attention_op):
        return torch.ops.sam2_fast.rope_attention(q, k, v, cos, sin, num_k_exclude_rope, scale)
    return rope_attention_op(q, k, v, cos, sin, num_k_exclude_rope, scale)


@torch.library.custom_op("sam2_fast::rope_attention", mutates_args=())
def _rope_attention_custom_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    num_k_exclude_rope: int,
    scale: float,
) -> torch.Tensor:
    return rope_attention_op(q, k, v, cos, sin, num_k_exclude_rope, scale)


@_rope_attention_custom_op.register_fake
def _(q, k, v, cos, sin, num_k_exclude_rope, scale):
    return q.new_empty(q.shape[0], q.shape[1], q.shape[2], v.shape[3])


# ---------------------------------------------------------------------------------------------
# reference


def rotate_tokens(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_exclude: int = 0) -> torch.Tensor:
    """RoPE on ``x [B, heads, N, D]``: the first ``N - num_exclude`` tokens are copies of the
    ``cos/sin`` grid and are rotated, the rest are left as they are."""

    nq = cos.shape[0]
    n_rope = x.shape[2] - num_exclude
    if n_rope == 0:
        return x
    rotated = apply_rope(x[:, :, :n_rope].unflatten(2, (-1, nq)), cos, sin).flatten(2, 3)
    if num_exclude == 0:
        return rotated
    return torch.cat([rotated, x[:, :, n_rope:]], dim=2)


def rope_attention_reference(q, k, v, cos, sin, num_k_exclude_rope=0, scale=None):
    """Plain torch :func:`rope_attention` (rotation in float32, then SDPA), any device."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    q = rotate_tokens(q, cos, sin)
    k = rotate_tokens(k, cos, sin, num_k_exclude_rope)
    v = v.expand(-1, q.shape[1], -1, -1)
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


rope_attention_op.add_backend(
    "triton",
    lambda *a: _triton_impl()(*a),
    lambda q, k, v, *rest: _triton_refusal(q, k, v, *rest),
    lambda q, *rest: _triton_preference(q),
    interpreter_untimed,
)


def _triton_preference(q: torch.Tensor) -> str | None:
    if q.device.type != "cuda":
        return None  # the interpreter
    return (
        "not measured on a GPU since its redesign (rotate once, then split flash attention); the "
        "kernel before it measured 3-16x slower than the reference (RoPE, then torch's SDPA) on "
        "an H200 (bench/gpu/README.md; `bash bench/gpu/run.sh rope` measures it): the default "
        "when nothing is measured; the tuner times it against the reference on the GPU"
    )


def _triton_impl():
    from sam2_fast.kernels.rope_attention import rope_attention_triton

    return rope_attention_triton


def _triton_refusal(q, k, v, cos, sin, num_k_exclude_rope, scale=None) -> str | None:
    reason = triton_refusal(q, k, v, cos, sin)
    if reason is not None:
        return reason
    from sam2_fast.kernels.rope_attention import unsupported_reason

    return unsupported_reason(q, k, v)


# ---------------------------------------------------------------------------------------------
# cpp (CPU flash attention)


def _cpp_refusal(q, k, v, cos, sin, num_k_exclude_rope, scale=None) -> str | None:
    return flash_inputs_refusal(q, k, v)


@rope_attention_op.register("cpp", _cpp_refusal)
def rope_attention_cpp(q, k, v, cos, sin, num_k_exclude_rope=0, scale=None):
    """CPU, float32 or bfloat16 with AVX-512: one call of the C++ flash attention, which
    rotates the queries and the first ``Nk - num_k_exclude_rope`` keys as it lays them out."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return torch.ops.sam2_fast.flash_attention(
        q, k, v, cos, sin, k.shape[2] - num_k_exclude_rope, float(scale)
    )


# ---------------------------------------------------------------------------------------------
# blocked (CPU)


def _blocked_refusal(q, k, v, cos, sin, num_k_exclude_rope, scale=None) -> str | None:
    if q.device.type != "cpu":
        return f"inputs are on {q.device.type}, this backend runs on cpu"
    if q.dtype not in blocked_dtypes:
        return f"inputs are {q.dtype}, this backend runs float32 or bfloat16 (CPU float16 products are slow)"
    if k.shape[2] == 0:
        return "no keys (the softmax of its block loop needs at least one)"
    return None


@rope_attention_op.register("blocked", _blocked_refusal)
def rope_attention_blocked(q, k, v, cos, sin, num_k_exclude_rope=0, scale=None):
    """CPU, float32 or bfloat16: rotate once in float32 (rounded to the inputs' dtype, as the
    official code does), then :func:`~sam2_fast.ops._blocked.blocked_attention`: per block of
    queries one product against every key, an in-place softmax numerator, one product with
    ``[v, 1]`` that also yields the row sums. Narrow values stay narrow (torch's CPU SDPA
    falls back to its slow math path when the value width differs from the key width)."""

    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    b, h, nq, d = q.shape
    nk = k.shape[2]
    qr = apply_rope_(q.float().clone(), cos, sin).mul_(scale).to(q.dtype)
    kr = k.float().clone()
    n_rope = nk - num_k_exclude_rope
    if n_rope:
        apply_rope_(kr[:, :, :n_rope].unflatten(2, (-1, nq)), cos, sin)
    kr = kr.to(q.dtype)
    heads_per_value = h if v.shape[1] == 1 else 1
    out = blocked_attention(qr.flatten(0, 1), kr.flatten(0, 1), v.flatten(0, 1), heads_per_value)
    return out.view(b, h, nq, v.shape[3])


rope_attention_op.add_backend("reference", rope_attention_reference)
rope_attention_op.add_compiled_backend(rope_attention_reference)
