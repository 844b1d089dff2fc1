"""Hiera's (windowed) multi-head attention with optional query pooling, from the qkv projection
of the un-partitioned tokens to the attention output at un-partitioned positions.

In an official Hiera block the tokens ``[B, H, W, C]`` are zero-padded at the bottom / right to
a multiple of the window size, split into windows, projected to qkv (so a padded token's qkv is
the Linear's bias), queries are optionally max-pooled ``q_stride x q_stride`` inside each
window, and every window attends to all of its tokens, padded ones included (they are not
masked out). The result is stitched back together and cropped. This op does all of that from
the qkv projection of the un-partitioned tokens, with ``qkv_bias`` standing for the padded
tokens' qkv.

Backends (the default order when nothing is measured; see :mod:`sam2_fast.ops._tuning`):

* ``triton``: ``kernels/window_attention.py``, one program per query tile of a window, head and
  image; window partition, padding, pooling, flash-style softmax and un-partition are index
  arithmetic and masks inside the kernel (cuda, or cpu under ``TRITON_INTERPRET=1``);
* ``banded``: CPU, windowed: the reference on bands of whole window rows (about 8 MiB of qkv
  each), so its copies stay in the caches; the same numbers as the reference;
* ``blocked``: CPU float32 / bfloat16: the reference's partition and pooling with the attention
  as matrix products (a global window in query blocks; small windows as batched products)
  on the bands of ``banded``;
* ``cpp``: CPU float32 / bfloat16 with AVX-512: the reference's partition and pooling with
  the attention in ``torch.ops.sam2_fast.flash_attention`` (csrc/attention.cpp, oneDNN's
  micro-kernels), windowed inputs on the bands of ``banded``;
* ``cpp_grid``: CPU float32 / bfloat16 with AVX-512, windowed: the same kernel reading each
  window's keys and values in place from ``qkv`` (a padded token reads ``qkv_bias``) and
  writing each query's output at its un-partitioned position; the queries max-pooled first
  when ``q_stride > 1`` (no partition, padding or un-partition copies);
* ``reference``: pad, :func:`window_partition`, max-pool, ``F.scaled_dot_product_attention``,
  :func:`window_unpartition` in plain torch, any device (the numbers of the official model);
* ``compiled``: ``torch.compile`` of the reference (only when forced).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from sam2_fast.errors import InvalidInputError, InvalidTypeError
from sam2_fast.ops._blocked import DTYPES as blocked_dtypes
from sam2_fast.ops._blocked import blocked_attention
from sam2_fast.ops._common import extension_refusal, flash_attention_refusal, via_custom_op
from sam2_fast.ops._dispatch import Op
from sam2_fast.ops._tuning import size_class
from sam2_fast.ops._triton import interpreter_untimed, triton_refusal

__all__ = [
    "window_attention",
    "window_attention_reference",
    "window_partition",
    "window_unpartition",
]

_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _example(device: str) -> tuple:
    """Stage 3 of Hiera-T / S at image size 1024: 14 x 14 windows over 64 x 64 tokens (padded to
    70 x 70), four heads of 96."""
    qkv = torch.zeros(1, 64, 64, 3 * 384, device=device)
    return qkv, 4, 14, 1, torch.zeros(3 * 384, device=device)


window_attention_op = Op("window_attention", example=_example)


# ---------------------------------------------------------------------------------------------
# window partition (shared with sam2_fast.modeling.hiera)


def window_partition(x: torch.Tensor, window_size: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """``[B, H, W, C]`` -> ``[B * nW, ws, ws, C]`` windows (zero-padded at the bottom/right)
    and the padded size ``(Hp, Wp)``."""
    b, h, w, c = x.shape
    pad_h = (window_size - h % window_size) % window_size
    pad_w = (window_size - w % window_size) % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window_size, window_size, wp // window_size, window_size, c)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c)
    return windows, (hp, wp)


def max_pool_nhwc(x: torch.Tensor, stride: int) -> torch.Tensor:
    """``F.max_pool2d(kernel_size=stride, stride=stride)`` of a ``[B, H, W, C]`` tensor (the
    sizes floored), as elementwise maxima of its ``stride ** 2`` strided views: the same values
    (NaN propagates in both), read in place from any strides (a query pooled out of ``qkv``
    is not copied first) and written contiguous; on the AMX Xeon 1.8x faster than torch's
    pooling kernel, which also computes indices (Hiera-T's block 1 shortcut, 256 x 256 x 192
    bfloat16: 3.6 -> 2.0 ms). Under autograd ``max_pool2d`` (its gradient goes to one element
    of a tie, ``maximum``'s is split), and in traced graphs (an exported graph keeps the
    pooling op)."""
    if stride == 1:
        return x
    if (x.requires_grad and torch.is_grad_enabled()) or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return F.max_pool2d(x.permute(0, 3, 1, 2), stride, stride).permute(0, 2, 3, 1)
    return max_pool_op(x, stride)


def _strided_maxima(x: torch.Tensor, stride: int) -> torch.Tensor:
    h, w = x.shape[1] // stride * stride, x.shape[2] // stride * stride
    views = [x[:, i:h:stride, j:w:stride] for i in range(stride) for j in range(stride)]
    out = torch.maximum(views[0], views[1])
    for view in views[2:]:
        torch.maximum(out, view, out=out)
    return out


def _pool_refusal(x: torch.Tensor, stride: int) -> Optional[str]:
    reason = extension_refusal("cpu", x=x)
    if reason is not None:
        return reason
    if x.dtype not in (torch.float32, torch.bfloat16):
        return f"x is {x.dtype}, the kernel reads float32 or bfloat16"
    if x.dim() != 4 or (x.shape[3] > 1 and x.stride(3) != 1):
        return "the kernel reads [B, H, W, C] with contiguous channels"
    if not hasattr(torch.ops.sam2_fast, "max_pool_nhwc"):
        return "the compiled extension predates max_pool_nhwc (reinstall sam2-fast)"
    return None


def _pool_example(device: str) -> tuple:
    """Hiera-T's block 1 at image size 1024: its stage-change shortcut, 256 x 256 x 192, stride 2."""
    return torch.zeros(1, 256, 256, 192, device=device, dtype=torch.bfloat16), 2


def _pool_shape_class(x: torch.Tensor, stride: int) -> str:
    dtype = str(x.dtype).removeprefix("torch.")
    return f"{dtype} B{size_class(x.shape[0])} {size_class(x.shape[1])}x{size_class(x.shape[2])}x{x.shape[3]} stride {stride}"


#: max pooling of a channels-last map with kernel = stride (Hiera's query pooling and shortcut)
max_pool_op = Op("max_pool_nhwc", example=_pool_example, shape_class=_pool_shape_class)
max_pool_op.add_backend(
    "cpp", lambda x, stride: torch.ops.sam2_fast.max_pool_nhwc(x, stride), _pool_refusal
)  # csrc/pool.cpp: one pass, every window's stride^2 vectors at once
max_pool_op.add_backend("reference", _strided_maxima)


def window_unpartition(
    windows: torch.Tensor, window_size: int, pad_hw: Tuple[int, int], hw: Tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``[B * nW, ws, ws, C]`` -> ``[B, H, W, C]``."""
    hp, wp = pad_hw
    h, w = hw
    b = windows.shape[0] // ((hp // window_size) * (wp // window_size))
    x = windows.reshape(b, hp // window_size, wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    if hp > h or wp > w:
        x = x[:, :h, :w, :]
    return x


# ---------------------------------------------------------------------------------------------
# public op


def _check(
    qkv: torch.Tensor,
    num_heads: int,
    window_size: int,
    q_stride: int,
    qkv_bias: Optional[torch.Tensor],
) -> None:
    name = "window_attention"
    if not isinstance(qkv, torch.Tensor):
        raise InvalidTypeError(f"{name}: qkv must be a torch.Tensor, got {type(qkv).__name__}")
    if qkv.dim() != 4:
        raise InvalidInputError(
            f"{name}: qkv must be [B, H, W, 3 * C] (the qkv projection of un-partitioned tokens), "
            f"got shape {list(qkv.shape)}"
        )
    if qkv.dtype not in _FLOAT_DTYPES:
        raise InvalidTypeError(f"{name}: qkv must be float32, bfloat16 or float16, got {qkv.dtype}")
    for arg, value, low in (("num_heads", num_heads, 1), ("window_size", window_size, 0), ("q_stride", q_stride, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidInputError(f"{name}: {arg} must be an int >= {low}, got {value!r}")
    c3 = qkv.shape[3]
    if c3 % (3 * num_heads):
        raise InvalidInputError(
            f"{name}: the last dim of qkv ({c3}) must be 3 * num_heads * head_dim; it is not "
            f"divisible by 3 * num_heads = {3 * num_heads}"
        )
    if window_size > 0 and window_size % q_stride:
        raise InvalidInputError(
            f"{name}: window_size ({window_size}) must be a multiple of q_stride ({q_stride}) so "
            "that pooled windows tile the pooled image"
        )
    h, w = qkv.shape[1:3]
    if h < q_stride or w < q_stride:
        raise InvalidInputError(
            f"{name}: qkv's token grid ({h}x{w}) must be at least q_stride x q_stride "
            f"({q_stride}x{q_stride}) to pool the queries"
        )
    if qkv_bias is None:
        return
    if not isinstance(qkv_bias, torch.Tensor):
        raise InvalidTypeError(f"{name}: qkv_bias must be a torch.Tensor or None, got {type(qkv_bias).__name__}")
    if qkv_bias.shape != (c3,):
        raise InvalidInputError(f"{name}: qkv_bias must be [{c3}] (qkv's last dim), got shape {list(qkv_bias.shape)}")
    if not qkv_bias.is_floating_point():
        raise InvalidTypeError(f"{name}: qkv_bias must be floating point, got {qkv_bias.dtype}")
    if qkv_bias.device != qkv.device:
        raise InvalidInputError(
            f"{name}: qkv_bias is on {qkv_bias.device} but qkv is on {qkv.device}; move it with "
            f"qkv_bias.to({str(qkv.device)!r})"
        )


def window_attention(
    qkv: torch.Tensor,
    num_heads: int,
    window_size: int,
    q_stride: int = 1,
    qkv_bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Multi-head attention inside ``window_size x window_size`` windows, before the output
    projection, as an official Hiera block computes it.

    Args:
        qkv: ``[B, H, W, 3 * C]`` the qkv projection of the **un-partitioned** tokens; channels
            are ``(q | k | v, head, head_dim)`` as ``nn.Linear(dim, 3 * C)`` lays them out.
            Any strides; float32, bfloat16 or float16 (softmax in float32).
        num_heads: heads; ``C / num_heads`` is the head dim.
        window_size: side of the square windows; ``0`` for global attention (one window).
            The image is padded at the bottom / right to a multiple of it.
        q_stride: ``2`` max-pools the queries ``2 x 2`` (stride 2) inside each window, as at a
            Hiera stage change; ``1`` for no pooling. ``window_size`` must be a multiple of it.
        qkv_bias: ``[3 * C]``, the qkv of a padded token (the Linear's bias; zeros when None).
            Padded tokens take part in the attention as keys and values, as in the official
            model. Cast to ``qkv.dtype``.

    Returns:
        ``[B, H // q_stride, W // q_stride, C]`` in ``qkv.dtype``: the attention output of each
        (pooled) query at its un-partitioned position, padding cropped. Where the official
        model's shapes agree (``H``, ``W`` even when pooling, always the case in SAM 2) this is
        its ``window_unpartition(attn(window_partition(x)))`` before ``attn.proj``.
    """
    _check(qkv, num_heads, window_size, q_stride, qkv_bias)
    if qkv_bias is not None:
        qkv_bias = qkv_bias.to(qkv.dtype)
    needs_grad = qkv.requires_grad or (qkv_bias is not None and qkv_bias.requires_grad)
    if torch.is_grad_enabled() and needs_grad:
        return window_attention_reference(qkv, num_heads, window_size, q_stride, qkv_bias)
    if via_custom_op(window_attention_op):
        return torch.ops.sam2_fast.window_attention(qkv, num_heads, window_size, q_stride, qkv_bias)
    return window_attention_op(qkv, num_heads, window_size, q_stride, qkv_bias)


@torch.library.custom_op("sam2_fast::window_attention", mutates_args=())
def _window_attention_custom_op(
    qkv: torch.Tensor,
    num_heads: int,
    window_size: int,
    q_stride: int,
    qkv_bias: Optional[torch.Tensor],
) -> torch.Tensor:
    return window_attention_op(qkv, num_heads, window_size, q_stride, qkv_bias)


@_window_attention_custom_op.register_fake
def _(qkv, num_heads, window_size, q_stride, qkv_bias):
    b, h, w, c3 = qkv.shape
    return qkv.new_empty(b, h // q_stride, w // q_stride, c3 // 3)


# ---------------------------------------------------------------------------------------------
# triton backend


def _triton_refusal(qkv, num_heads, window_size, q_stride=1, qkv_bias=None) -> Optional[str]:
    reason = triton_refusal(qkv) if qkv_bias is None else triton_refusal(qkv, qkv_bias)
    if reason is not None:
        return reason
    if qkv_bias is not None and qkv_bias.dtype != qkv.dtype:
        return f"qkv_bias is {qkv_bias.dtype} and qkv is {qkv.dtype}; the kernel takes one dtype"
    from sam2_fast.kernels.window_attention import unsupported_reason

    return unsupported_reason(qkv, num_heads, window_size, q_stride)


def _triton(qkv, num_heads, window_size, q_stride=1, qkv_bias=None) -> torch.Tensor:
    from sam2_fast.kernels.window_attention import window_attention_triton

    return window_attention_triton(qkv, num_heads, window_size, q_stride, qkv_bias)


def _triton_preference(qkv, num_heads, window_size, q_stride=1, qkv_bias=None) -> Optional[str]:
    """Where the kernel measured slower than the reference (torch's flash / memory-efficient
    SDPA) on an H200 (bench/gpu/README.md), the built-in default runs the reference; with
    tuning on, both are timed on the user's GPU (sam2_fast.ops._tuning)."""
    if qkv.device.type != "cuda":
        return None  # the interpreter
    head_dim = qkv.shape[-1] // 3 // num_heads
    if qkv.dtype == torch.float32:
        return "float32 on cuda: torch's SDPA measured up to 7x faster than the exact-float32 kernel (H200)"
    if window_size == 0:
        return "global attention: torch's flash SDPA measured 4.7x faster (H200, tiny stage 3)"
    if head_dim not in _TRITON_FASTER_HEAD_DIMS:
        return (
            f"head dim {head_dim}: the kernel measured faster than torch's SDPA only for head dims "
            f"{sorted(_TRITON_FASTER_HEAD_DIMS)} (H200)"
        )
    return None


# head dims of windowed attention where the kernel beat torch's SDPA on an H200 (bf16 / fp16):
# the built-in default only (the tuner measures every head dim on the machine it runs on)
_TRITON_FASTER_HEAD_DIMS = frozenset({56, 96})

window_attention_op.add_backend("triton", _triton, _triton_refusal, _triton_preference, interpreter_untimed)


# ---------------------------------------------------------------------------------------------
# banded backend (CPU)

#: bytes of qkv per band of window rows: the band's partition, pooling, attention and
#: un-partition copies then stay in the CPU's caches instead of streaming the whole image
#: through memory several times (a 2-core Xeon: 36 -> 18 ms for Hiera-T's first block, 75 -> 24
#: ms at the pooled stage change, identical results)
BAND_BYTES = 8 << 20


def band_rows_of(row_bytes: int, window_size: int, band_bytes: Optional[int] = None) -> int:
    """Token rows per band: whole window rows, about ``band_bytes`` (default
    :data:`BAND_BYTES`) of qkv when one token row of it is ``row_bytes`` (also the bands of
    whole Hiera blocks)."""
    band_bytes = BAND_BYTES if band_bytes is None else band_bytes
    return window_size * max(1, band_bytes // max(1, window_size * row_bytes))


def _band_rows(qkv: torch.Tensor, window_size: int) -> int:
    return band_rows_of(qkv.shape[2] * qkv.shape[3] * qkv.element_size(), window_size)


def _banded_refusal(qkv, num_heads, window_size, q_stride=1, qkv_bias=None) -> Optional[str]:
    if qkv.device.type != "cpu":
        return f"qkv is on {qkv.device.type}; bands help CPU caches (a GPU runs triton or the reference)"
    if window_size == 0:
        return "global attention: one window, nothing to split into bands"
    if qkv.shape[1] <= window_size:
        return f"one row of windows ({qkv.shape[1]} token rows, window {window_size}): nothing to split"
    return None


def _banded_preference(qkv, num_heads, window_size, q_stride=1, qkv_bias=None) -> Optional[str]:
    if qkv[0].numel() * qkv.element_size() < 2 * BAND_BYTES or qkv.shape[1] <= _band_rows(qkv, window_size):
        return f"qkv fits one band of {BAND_BYTES >> 20} MiB (the reference runs it as a whole)"
    return None


@window_attention_op.register("banded", _banded_refusal, _banded_preference)
def window_attention_banded(
    qkv: torch.Tensor,
    num_heads: int,
    window_size: int,
    q_stride: int = 1,
    qkv_bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The reference on bands of whole window rows, one after the other (windows never cross
    a band, so the result is the reference's, bit for bit)."""
    return _in_bands(qkv, num_heads, window_size, q_stride, qkv_bias, F.scaled_dot_product_attention)


def _in_bands(qkv, num_heads, window_size, q_stride, qkv_bias, attend) -> torch.Tensor:
    b, h, w, c3 = qkv.shape
    out = qkv.new_empty(b, h // q_stride, w // q_stride, c3 // 3)
    step = _band_rows(qkv, window_size)
    for r0 in range(0, h, step):
        r1 = min(h, r0 + step)
        out[:, r0 // q_stride : r1 // q_stride] = _partitioned(
            qkv[:, r0:r1], num_heads, window_size, q_stride, qkv_bias, attend
        )
    return out


# ---------------------------------------------------------------------------------------------
# blocked backend (CPU): the attention as matrix products


def _blocked_refusal(qkv, num_heads, window_size, q_stride=1, qkv_bias=None) -> Optional[str]:
    if qkv.device.type != "cpu":
        return f"qkv is on {qkv.device.type}; this backend runs on cpu"
    if qkv.dtype not in blocked_dtypes:
        return f"qkv is {qkv.dtype}; this backend runs float32 or bfloat16 (CPU float16 products are slow)"
    return None


def _attend_by_products(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d)) v`` for ``[n, heads, N, d]``: one global window as query
    blocks (:func:`~sam2_fast.ops._blocked.blocked_attention`), many small windows as two
    batched products around a float32 softmax."""
    n, heads, nq, d = q.shape
    scale = d**-0.5
    if n == 1:
        out = blocked_attention((q * scale).flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1))
        return out.view(n, heads, nq, -1)
    s = torch.matmul(q * scale, k.transpose(-1, -2))  # [n, heads, Nq, Nk]
    p = torch.softmax(s, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(p, v)


def _blocked_preference(qkv, num_heads, window_size, q_stride=1, qkv_bias=None) -> Optional[str]:
    if qkv.dtype == torch.float32:
        return "float32: the built-in default is torch's SDPA (the tuner measures both)"
    return None


@window_attention_op.register("blocked", _blocked_refusal, _blocked_preference)
def window_attention_blocked(
    qkv: torch.Tensor,
    num_heads: int,
    window_size: int,
    q_stride: int = 1,
    qkv_bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """CPU, float32 or bfloat16: the reference's partition and pooling, with the attention as
    matrix products instead of torch's SDPA (whose CPU kernel runs small windows and bfloat16
    below the machine's GEMM rate); windowed inputs on the bands of :func:`window_attention_banded`."""
    return _on_bands_when_windowed(qkv, num_heads, window_size, q_stride, qkv_bias, _attend_by_products)


def _on_bands_when_windowed(qkv, num_heads, window_size, q_stride, qkv_bias, attend) -> torch.Tensor:
    """:func:`_partitioned` with ``attend``: a global window (or one row of windows) whole,
    windowed inputs on the bands of :func:`window_attention_banded`."""
    if window_size == 0 or qkv.shape[1] <= window_size:
        return _partitioned(qkv, num_heads, window_size, q_stride, qkv_bias, attend)
    return _in_bands(qkv, num_heads, window_size, q_stride, qkv_bias, attend)


# ---------------------------------------------------------------------------------------------
# cpp backend (CPU): the attention in the C++ flash kernel


def _cpp_refusal(qkv, num_heads, window_size, q_stride=1, qkv_bias=None) -> Optional[str]:
    reason = extension_refusal("cpu", qkv=qkv)
    if reason is not None:
        return reason
    if (qkv.shape[-1] // 3 // num_heads) % 2:
        return f"head dim {qkv.shape[-1] // 3 // num_heads} is odd; the kernel takes channel pairs"
    return flash_attention_refusal(qkv.dtype)


#: why the C++ backends are not the built-in default for windows
_WINDOWS_DEFAULT = "windows: the built-in default is banded / blocked / torch's SDPA (the tuner measures this too)"


def _cpp_preference(qkv, num_heads, window_size, q_stride=1, qkv_bias=None) -> Optional[str]:
    if window_size != 0:
        return _WINDOWS_DEFAULT
    if qkv.dtype != torch.bfloat16:
        return f"{qkv.dtype}: the built-in default is torch's SDPA (the tuner measures this too)"
    return None


def _attend_flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.ops.sam2_fast.flash_attention(q, k, v, None, None, 0, q.shape[-1] ** -0.5)


@window_attention_op.register("cpp", _cpp_refusal, _cpp_preference)
def window_attention_cpp(
    qkv: torch.Tensor,
    num_heads: int,
    window_size: int,
    q_stride: int = 1,
    qkv_bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """CPU, float32 or bfloat16 with AVX-512: the reference's partition and pooling, the
    attention in the C++ flash kernel (a global window of Hiera-T at 1024, 4 heads of 96 over
    4096 tokens, bfloat16 on the AMX Xeon: 20-22 ms against 24 ms for torch's SDPA)."""
    return _on_bands_when_windowed(qkv, num_heads, window_size, q_stride, qkv_bias, _attend_flash)


def _attend_flash_q128(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.ops.sam2_fast.flash_attention(q, k, v, None, None, 0, q.shape[-1] ** -0.5, 128, 512)


def _cpp_q128_preference(qkv, num_heads, window_size, q_stride=1, qkv_bias=None) -> Optional[str]:
    return "the built-in default is cpp's blocks of 256 queries (the tuner measures this too)"


# ``cpp`` with blocks of 128 queries instead of 256: with narrow heads the softmax of a block is
# a larger share of its work (a global window of Hiera-T, 4 heads of 96 over 4096 tokens,
# bfloat16 on the AMX Xeon: 17.9 ms against 19.5 ms; the memory attention's single 256-wide head
# measured the other way)
window_attention_op.add_backend(
    "cpp_q128",
    lambda qkv, num_heads, window_size, q_stride=1, qkv_bias=None: _on_bands_when_windowed(
        qkv, num_heads, window_size, q_stride, qkv_bias, _attend_flash_q128),
    _cpp_refusal,
    _cpp_q128_preference,
)


# ``cpp_grid``: windows read in place. No copies of the token grid: on the AMX Xeon, bfloat16,
# Hiera-T's windowed attention 2x faster than ``cpp`` on its partitioned copies (block 1,
# 256 x 256 tokens pooled into windows of 8: 15 -> 9 ms; stage 3's windows of 14 padded from 64
# to 70 tokens: 4.2 -> 2.0 ms)


def _cpp_grid_refusal(qkv, num_heads, window_size, q_stride=1, qkv_bias=None) -> Optional[str]:
    reason = _cpp_refusal(qkv, num_heads, window_size, q_stride, qkv_bias)
    if reason is not None:
        return reason
    if window_size == 0:
        return "global attention: one window, which cpp already reads in place"
    if not hasattr(torch.ops.sam2_fast, "window_flash_attention"):
        return "the compiled extension predates window_flash_attention (reinstall sam2-fast)"
    return None


def _cpp_grid_preference(qkv, num_heads, window_size, q_stride=1, qkv_bias=None) -> Optional[str]:
    return _WINDOWS_DEFAULT


@window_attention_op.register("cpp_grid", _cpp_grid_refusal, _cpp_grid_preference)
def window_attention_cpp_grid(
    qkv: torch.Tensor,
    num_heads: int,
    window_size: int,
    q_stride: int = 1,
    qkv_bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """CPU, float32 or bfloat16 with AVX-512, windowed: ``torch.ops.sam2_fast.window_flash_attention``
    on the q, k and v channels of ``qkv`` as they lie (the queries max-pooled first when
    ``q_stride > 1``: pooling aligned to the windows is pooling inside them, and a kept pooled
    query never covers a padded token); a padded key or value token reads ``qkv_bias`` (zeros
    when None), as the reference's padded tokens hold it."""
    c = qkv.shape[-1] // 3
    q, k, v = qkv[..., :c], qkv[..., c : 2 * c], qkv[..., 2 * c :]
    if q_stride > 1:
        q = max_pool_nhwc(q, q_stride)
    pad = qkv.new_zeros(3 * c) if qkv_bias is None else qkv_bias.to(qkv.dtype)
    return torch.ops.sam2_fast.window_flash_attention(
        q, k, v, pad[c : 2 * c], pad[2 * c :], num_heads, window_size, window_size // q_stride,
        (c // num_heads) ** -0.5)


# ---------------------------------------------------------------------------------------------
# reference backend


def _pad_to_windows(qkv: torch.Tensor, window_size: int, fill: Optional[torch.Tensor]) -> torch.Tensor:
    """``qkv`` padded at the bottom / right to a multiple of ``window_size``, with the vector
    ``fill`` (zeros when None) in every padded token."""
    b, h, w, c3 = qkv.shape
    # rounded up with a floor division of non-negative numbers: a traced (ONNX) graph divides
    # sizes with truncation, which rounds -h // window_size the wrong way
    hp = (h + window_size - 1) // window_size * window_size
    wp = (w + window_size - 1) // window_size * window_size
    if (hp, wp) == (h, w):
        return qkv
    if fill is None:
        return F.pad(qkv, (0, 0, 0, wp - w, 0, hp - h))
    padded = qkv.new_empty(b, hp, wp, c3)
    padded[:, :h, :w] = qkv
    padded[:, h:] = fill
    padded[:, :h, w:] = fill
    return padded


@window_attention_op.register("reference")
def window_attention_reference(
    qkv: torch.Tensor,
    num_heads: int,
    window_size: int,
    q_stride: int = 1,
    qkv_bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Plain torch :func:`window_attention` (same arguments, ``qkv_bias`` in ``qkv``'s dtype),
    any device, differentiable: the official Hiera block's sequence of operations."""
    return _partitioned(qkv, num_heads, window_size, q_stride, qkv_bias, F.scaled_dot_product_attention)


def _partitioned(qkv, num_heads, window_size, q_stride, qkv_bias, attend) -> torch.Tensor:
    """Pad, partition, pool, ``attend(q, k, v)`` (``[windows, heads, tokens, head_dim]``
    each, unscaled), un-partition."""
    b, h, w, c3 = qkv.shape
    if window_size > 0:
        qkv = _pad_to_windows(qkv, window_size, qkv_bias)
        hp, wp = qkv.shape[1:3]
        qkv, _ = window_partition(qkv, window_size)
    n, hq, wq = qkv.shape[:3]
    # [n, hq * wq, 3, heads, head_dim] -> 3 x [n, heads, hq * wq, head_dim]
    q, k, v = qkv.reshape(n, hq * wq, 3, num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    if q_stride > 1:
        q = max_pool_nhwc(q.transpose(1, 2).reshape(n, hq, wq, -1), q_stride)
        hq, wq = q.shape[1:3]
        q = q.reshape(n, hq * wq, num_heads, -1).transpose(1, 2)
    x = attend(q, k, v)
    x = x.transpose(1, 2).reshape(n, hq, wq, -1)
    if window_size > 0:
        pooled = window_size // q_stride
        x = window_unpartition(x, pooled, (hp // q_stride, wp // q_stride), (h // q_stride, w // q_stride))
    # contiguous like the other backends and the fake (the crop is a view); the output
    # projection then sees the same rows as the official one on windows, bit for bit
    return x.contiguous()


window_attention_op.add_compiled_backend(window_attention_reference)
