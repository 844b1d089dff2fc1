"""Triton kernel of Hiera's windowed attention (``sam2_fast.ops.window_attention``).

One program computes one tile of queries of one window, for one head of one image. It reads
queries, keys and values straight from the un-partitioned qkv projection ``[B, H, W, 3 * C]``
with window index arithmetic and masks; queries are max-pooled ``q_stride x q_stride`` as they
are loaded; the softmax is online over key tiles in float32 (global attention never holds a
score matrix of the whole image); each output token is written at its un-partitioned, cropped
position of ``[B, H', W', C]``.

Tokens of the zero-padded border are never loaded. The official model gives each of them the
qkv Linear's bias as its qkv and lets them take part as keys and values, so the ``n_pad``
padded keys of a window are one repeated key: the online softmax starts from a single key with
logit ``q . bias_k + log(n_pad)`` and value ``bias_v``, which is exact. Padded queries only
produce cropped outputs and are skipped.

Head dims that are not powers of two (Hiera's 56, 72 and 96) are computed as a power-of-two
chunk plus a power-of-two tail (72 = 64 + 16 with 8 masked, 96 = 64 + 32), or padded to the next
power of two with masks where that wastes at most 1/8 (56 -> 64). Window size 0 means global attention (the whole image is one window).

One file of ~530 lines: the kernel, its launcher, its tile table and its ahead-of-time
specs are one kernel family (the layout of kernels/).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from sam2_fast.kernels._aot import AotSpec
from sam2_fast.kernels._interpreter import interpreting

__all__ = ["SHIPPED", "aot_specs", "block_config", "head_chunks", "unsupported_reason", "window_attention_triton"]

_TL_DTYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
_MAX_HEAD_DIM = 128  # BLOCK_D; larger tiles would spill
_BLOCK_CHOICES = (64, 32, 16)


@triton.jit
def _window_attention_fwd(
    qkv_ptr,
    bias_ptr,
    out_ptr,
    H,
    W,
    dim,
    H_out,
    W_out,
    n_win_w,
    n_q_tiles,
    stride_b,
    stride_h,
    stride_w,
    stride_ob,
    stride_oh,
    stride_ow,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    WINDOW: tl.constexpr,
    Q_STRIDE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DT: tl.constexpr,
    IEEE_DOT: tl.constexpr,
    ALIGNED: tl.constexpr,
):
    """Grid ``(windows * n_q_tiles, heads, batch)``; ``qk_scale`` = softmax scale * log2(e).

    ``IEEE_DOT``: both products in full float32 (no TF32) on float32 upcasts of the operands;
    for float32 inputs, and for bfloat16 in Triton's CPU interpreter, whose bfloat16 ``dot`` is
    wrong (Triton 3.8). A product of two bfloat16 is exact in float32 and the sums are float32
    either way, so this computes what the tensor-core path does, up to summation order.

    ``ALIGNED``: every pointer is 16-byte aligned and ``dim``, ``HEAD_DIM`` and the strides are
    multiples of 8 elements (true for every SAM 2 preset); channels always have stride 1.

    Channels come in two chunks: ``BLOCK_D`` first, then ``BLOCK_DT`` (0: none), each a power
    of two, so a head dim of 72 computes 64 + 16 channels instead of 128 (96: 64 + 32). Every
    product over channels is a sum of the two chunks' dots; the output is written per chunk.
    """
    window = tl.program_id(0) // n_q_tiles
    q_tile = tl.program_id(0) % n_q_tiles
    head = tl.program_id(1)
    batch = tl.program_id(2).to(tl.int64)
    if WINDOW > 0:
        win_h = WINDOW
        win_w = WINDOW
    else:
        win_h = H
        win_w = W
    q_win_h = win_h // Q_STRIDE
    q_win_w = win_w // Q_STRIDE
    n_q = q_win_h * q_win_w
    n_k = win_h * win_w
    win_y = window // n_win_w
    win_x = window % n_win_w
    row0 = win_y * win_h
    col0 = win_x * win_w

    qkv = qkv_ptr + batch * stride_b
    out_base = out_ptr + batch * stride_ob
    TAIL: tl.constexpr = BLOCK_DT > 0
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    q_start = head * HEAD_DIM  # channels are contiguous (stride 1)
    k_start = q_start + dim
    v_start = k_start + dim
    if ALIGNED:
        # what Triton's JIT infers from 16-byte aligned arguments, spelled out for compiles
        # ahead of time (no argument values): the token / channel offsets below are then
        # multiples of 8 elements and every load and store is a 16-byte vector
        qkv = tl.multiple_of(qkv, 16)
        out_base = tl.multiple_of(out_base, 16)
        k_start = tl.multiple_of(k_start, 8)
        v_start = tl.multiple_of(v_start, 8)
    q_ch = q_start + offs_d
    k_ch = k_start + offs_d
    v_ch = v_start + offs_d
    if TAIL:
        offs_t = BLOCK_D + tl.arange(0, BLOCK_DT)
        t_ok = offs_t < HEAD_DIM
        q_ch_t = q_start + offs_t
        k_ch_t = k_start + offs_t
        v_ch_t = v_start + offs_t

    # queries: the max over each Q_STRIDE x Q_STRIDE cell (one token when Q_STRIDE == 1). A
    # query with a cell outside the image is cropped from the output, so it reads zeros.
    offs_m = q_tile * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < n_q
    q_row = offs_m // q_win_w
    q_col = offs_m % q_win_w
    q = tl.full([BLOCK_M, BLOCK_D], float("-inf"), tl.float32)  # exact: max needs no rounding
    if TAIL:
        q_t = tl.full([BLOCK_M, BLOCK_DT], float("-inf"), tl.float32)
    for dy in tl.static_range(Q_STRIDE):
        for dx in tl.static_range(Q_STRIDE):
            cell_row = row0 + q_row * Q_STRIDE + dy
            cell_col = col0 + q_col * Q_STRIDE + dx
            cell_in = m_ok & (cell_row < H) & (cell_col < W)
            cell_off = cell_row * stride_h + cell_col * stride_w
            if ALIGNED:
                cell_off = tl.multiple_of(cell_off, 8)
            cell_ptrs = qkv + cell_off[:, None]
            cell = tl.load(cell_ptrs + q_ch[None, :], mask=cell_in[:, None] & d_ok[None, :], other=0.0)
            q = tl.maximum(q, cell.to(tl.float32))
            if TAIL:
                cell_t = tl.load(cell_ptrs + q_ch_t[None, :], mask=cell_in[:, None] & t_ok[None, :], other=0.0)
                q_t = tl.maximum(q_t, cell_t.to(tl.float32))
    q = q.to(qkv_ptr.dtype.element_ty)
    if TAIL:
        q_t = q_t.to(qkv_ptr.dtype.element_ty)

    # Online softmax state, in log2 units. Every padded key of a window is the same token
    # (k = bias_k, v = bias_v), so instead of loading them the state starts with one key that
    # stands for all n_pad of them: logit s_pad + log2(n_pad), value bias_v. Its weight
    # w_pad follows the rescaling of the accumulator; bias_v is added at the end.
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    w_pad = tl.zeros([BLOCK_M], tl.float32)
    if WINDOW > 0:
        n_pad = n_k - tl.minimum(win_h, H - row0) * tl.minimum(win_w, W - col0)
        if n_pad > 0:
            s_pad = tl.zeros([BLOCK_M], tl.float32)
            if HAS_BIAS:
                # q . bias_k with the loop's own dot (16 identical rows: dot needs 16)
                rows16 = tl.zeros([16, 1], tl.int32)
                bias_k = tl.load(bias_ptr + k_ch[None, :] + rows16, mask=d_ok[None, :], other=0.0)
                s_bias = _dot_t(q, bias_k, IEEE_DOT)
                if TAIL:
                    bias_k_t = tl.load(bias_ptr + k_ch_t[None, :] + rows16, mask=t_ok[None, :], other=0.0)
                    s_bias += _dot_t(q_t, bias_k_t, IEEE_DOT)
                s_pad = tl.max(s_bias, 1) * qk_scale
            m_i = s_pad + tl.log2(n_pad.to(tl.float32))
            l_i += 1.0
            w_pad += 1.0
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    if TAIL:
        acc_t = tl.zeros([BLOCK_M, BLOCK_DT], tl.float32)

    for start in range(0, n_k, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        key_row = row0 + offs_n // win_w
        key_col = col0 + offs_n % win_w
        inside = (offs_n < n_k) & (key_row < H) & (key_col < W)
        key_off = key_row * stride_h + key_col * stride_w
        if ALIGNED:
            key_off = tl.multiple_of(key_off, 8)
        ptrs = qkv + key_off[:, None]
        load_mask = inside[:, None] & d_ok[None, :]
        k = tl.load(ptrs + k_ch[None, :], mask=load_mask, other=0.0)
        v = tl.load(ptrs + v_ch[None, :], mask=load_mask, other=0.0)
        s = _dot_t(q, k, IEEE_DOT)
        if TAIL:
            load_mask_t = inside[:, None] & t_ok[None, :]
            k_t = tl.load(ptrs + k_ch_t[None, :], mask=load_mask_t, other=0.0)
            v_t = tl.load(ptrs + v_ch_t[None, :], mask=load_mask_t, other=0.0)
            s += _dot_t(q_t, k_t, IEEE_DOT)
        s = tl.where(inside[None, :], s * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        w_pad *= alpha
        p = p.to(v.dtype)
        acc = acc * alpha[:, None] + _dot(p, v, IEEE_DOT)
        if TAIL:
            acc_t = acc_t * alpha[:, None] + _dot(p, v_t, IEEE_DOT)
        m_i = m_new
    if WINDOW > 0 and HAS_BIAS:
        bias_v = tl.load(bias_ptr + v_ch, mask=d_ok, other=0.0).to(tl.float32)
        acc += w_pad[:, None] * bias_v[None, :]
        if TAIL:
            bias_v_t = tl.load(bias_ptr + v_ch_t, mask=t_ok, other=0.0).to(tl.float32)
            acc_t += w_pad[:, None] * bias_v_t[None, :]

    out_row = win_y * q_win_h + q_row
    out_col = win_x * q_win_w + q_col
    keep = m_ok & (out_row < H_out) & (out_col < W_out)
    out_off = out_row * stride_oh + out_col * stride_ow
    if ALIGNED:
        out_off = tl.multiple_of(out_off, 8)
    out_ptrs = out_base + out_off[:, None]
    out = acc / l_i[:, None]
    tl.store(out_ptrs + q_ch[None, :], out.to(out_ptr.dtype.element_ty), mask=keep[:, None] & d_ok[None, :])
    if TAIL:
        out_t = acc_t / l_i[:, None]
        tl.store(
            out_ptrs + q_ch_t[None, :], out_t.to(out_ptr.dtype.element_ty), mask=keep[:, None] & t_ok[None, :]
        )


@triton.jit
def _dot(a, b, IEEE_DOT: tl.constexpr):
    """``a @ b`` with float32 accumulation; in full float32 on float32 upcasts when IEEE_DOT."""
    if IEEE_DOT:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b)


@triton.jit
def _dot_t(a, b, IEEE_DOT: tl.constexpr):
    """``a @ b.T`` (see :func:`_dot`)."""
    return _dot(a, tl.trans(b), IEEE_DOT)


def _interpreted(fn) -> bool:
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(fn, InterpretedFunction)


def _mode_refusal() -> str | None:
    """Why the kernel cannot run in the mode ``TRITON_INTERPRET`` asks for now, or None.

    ``triton.jit`` reads ``TRITON_INTERPRET`` once, when it decorates (triton.language's own
    functions when triton is imported): setting or clearing it later does not switch modes.
    """
    wanted = interpreting()
    if _interpreted(_window_attention_fwd) == wanted and _interpreted(tl.zeros) == wanted:
        return None
    if wanted:
        return (
            "TRITON_INTERPRET=1 was set after triton was imported, so its kernels are compiled "
            "for the GPU; set it before starting Python"
        )
    return (
        "triton was imported with TRITON_INTERPRET=1 (its kernels run in the CPU interpreter) and "
        "the variable is now unset; unset it before starting Python"
    )


def _pick_block(n: int, largest: int) -> int:
    """The largest tile of 64 / 32 / 16 rows (at most ``largest``) that wastes at most 1/8 of
    its rows on ``n`` items, else the one that wastes least (Triton's dot needs 16 or more)."""
    choices = [b for b in _BLOCK_CHOICES if b <= largest]
    waste = {b: math.ceil(n / b) * b - n for b in choices}
    for b in choices:
        if waste[b] * 8 <= math.ceil(n / b) * b:
            return b
    return min(choices, key=lambda b: (waste[b], -b))


# (dtype, head dim, window size (0: global), q_stride) -> (largest BLOCK_M, largest BLOCK_N,
# num_warps): for each configuration of the presets, the first candidate of _CANDIDATES that
# compiles without register spills for sm_80 and sm_90 (``python -m sam2_fast.kernels aot``),
# except the entries marked "H200", the fastest spill-free candidate of a sweep on an H200
# (bench/gpu/check_kernels.py --only tune; bench/gpu/README.md). Entries equal to the first
# candidate are left out. Since head dims 72 and 96 run as 64 + 16 / 64 + 32 channels instead
# of 128 (head_chunks), their first candidates compile spill-free nearly everywhere; the two
# H200 entries of 72 / 96 were swept with 128 channels and are kept until the next sweep.
_TUNED: dict[tuple[torch.dtype, int, int, int], tuple[int, int, int]] = {
    (torch.bfloat16, 56, 4, 2): (16, 16, 1),
    (torch.bfloat16, 56, 14, 1): (16, 16, 1),  # H200: 37 vs 44 us
    (torch.bfloat16, 96, 8, 2): (16, 16, 2),  # H200: 34 vs 48 us
    (torch.bfloat16, 72, 16, 1): (64, 32, 4),  # H200: 31 vs 49 us
    (torch.float32, 72, 16, 1): (16, 32, 4),
    (torch.bfloat16, 96, 4, 2): (64, 64, 8),
    (torch.float16, 96, 4, 2): (64, 64, 8),
}
_CANDIDATES = {
    "16-bit": (
        (64, 64, 4), (64, 64, 8), (64, 32, 4), (64, 32, 8), (32, 32, 4), (16, 32, 4), (16, 16, 2),
        (16, 16, 1),
    ),
    "float32": (
        (32, 32, 4), (32, 32, 8), (16, 32, 4), (16, 32, 8), (16, 16, 8), (16, 16, 4), (16, 16, 1),
    ),
}


def candidates(dtype: torch.dtype) -> tuple[tuple[int, int, int], ...]:
    """Tile caps and warps to try for ``dtype``, best first (bigger tiles, fewer warps)."""
    return _CANDIDATES["float32" if dtype == torch.float32 else "16-bit"]


def block_config(
    head_dim: int,
    window_size: int,
    q_stride: int,
    height: int,
    width: int,
    dtype: torch.dtype,
    tiles: tuple[int, int, int] | None = None,
) -> dict[str, int]:
    """Tile sizes and launch options of one configuration: ``BLOCK_M`` queries, ``BLOCK_N``
    keys, ``BLOCK_D`` and ``BLOCK_DT`` (the head dim's chunks, :func:`head_chunks`), ``num_warps``
    and ``num_stages``.

    ``tiles`` (largest BLOCK_M, largest BLOCK_N, num_warps) defaults to the tuned entry of the
    configuration, else to the first candidate for ``dtype``. float32 runs its products on CUDA
    cores in full precision and gets at most 32 x 32 tiles.
    """
    if tiles is None:
        tiles = _TUNED.get((dtype, head_dim, window_size, q_stride), candidates(dtype)[0])
    largest_m, largest_n, num_warps = tiles
    win_h, win_w = (window_size, window_size) if window_size > 0 else (height, width)
    n_q = (win_h // q_stride) * (win_w // q_stride)
    block_d, block_dt = head_chunks(head_dim)
    return dict(
        BLOCK_M=_pick_block(max(n_q, 1), largest_m),
        BLOCK_N=_pick_block(win_h * win_w, largest_n),
        BLOCK_D=block_d,
        BLOCK_DT=block_dt,
        num_warps=num_warps,
        num_stages=2,
    )


def head_chunks(head_dim: int) -> tuple[int, int]:
    """``(BLOCK_D, BLOCK_DT)``: the head dim's channels as one power-of-two chunk (padded,
    masked) or, where that wastes more than 1/8 of it, a power-of-two chunk and a smaller
    power-of-two tail (each at least 16, what Triton's dot needs): 72 -> 64 + 16 (8 masked)
    instead of 128, 96 -> 64 + 32, while 56 stays one chunk of 64."""
    whole = max(16, triton.next_power_of_2(head_dim))
    if (whole - head_dim) * 8 <= whole:
        return whole, 0
    main = whole // 2
    tail = max(16, triton.next_power_of_2(head_dim - main))
    return (main, tail) if main + tail < whole else (whole, 0)


def unsupported_reason(qkv: torch.Tensor, num_heads: int, window_size: int, q_stride: int) -> str | None:
    """Why this kernel cannot take these (already validated) inputs, or None."""
    reason = _mode_refusal()
    if reason is not None:
        return reason
    if qkv.dtype not in _TL_DTYPES:
        return f"qkv is {qkv.dtype}; the kernel takes float32, bfloat16 or float16"
    head_dim = qkv.shape[3] // (3 * num_heads)
    if head_dim > _MAX_HEAD_DIM:
        return f"head dim {head_dim} is above the kernel's {_MAX_HEAD_DIM}"
    if q_stride > 4:
        return f"q_stride {q_stride} is above the kernel's 4 (the pooling loop is unrolled)"
    last_offset = sum((n - 1) * s for n, s in zip(qkv.shape[1:], qkv.stride()[1:]))
    if last_offset >= 2**31 or qkv[0].numel() >= 2**31:
        return "one image of qkv spans 2**31 elements or more (the kernel indexes it in int32)"
    if qkv.device.type == "cuda" and qkv.dtype == torch.bfloat16:
        major, minor = torch.cuda.get_device_capability(qkv.device)
        if major < 8:
            return f"bfloat16 needs compute capability 8.0 or newer, this GPU has {major}.{minor}"
    return None


def window_attention_triton(
    qkv: torch.Tensor,
    num_heads: int,
    window_size: int,
    q_stride: int = 1,
    qkv_bias: torch.Tensor | None = None,
    *,
    tiles: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """The ``triton`` backend of :func:`sam2_fast.ops.window_attention` (same arguments;
    ``qkv_bias`` already has ``qkv``'s dtype and device). ``tiles`` overrides the tuned
    (largest BLOCK_M, largest BLOCK_N, num_warps), for tuning sweeps (bench/gpu)."""
    b, h, w, c3 = qkv.shape
    c = c3 // 3
    head_dim = c // num_heads
    h_out, w_out = h // q_stride, w // q_stride
    out = qkv.new_empty(b, h_out, w_out, c)
    if out.numel() == 0:
        return out
    if qkv.stride(3) != 1:
        qkv = qkv.contiguous()  # the kernel reads channels as contiguous vectors
    cfg = block_config(head_dim, window_size, q_stride, h, w, qkv.dtype, tiles)
    if window_size > 0:
        n_win_h, n_win_w = -(-h // window_size), -(-w // window_size)
        n_q = (window_size // q_stride) ** 2
    else:
        n_win_h, n_win_w = 1, 1
        n_q = h_out * w_out
    n_q_tiles = triton.cdiv(n_q, cfg["BLOCK_M"])
    grid = (n_win_h * n_win_w * n_q_tiles, num_heads, b)
    bias = qkv_bias if qkv_bias is not None else qkv  # an unread pointer when HAS_BIAS is False
    aligned = all(t.data_ptr() % 16 == 0 for t in (qkv, bias, out)) and all(
        n % 8 == 0 for n in (c, head_dim, *qkv.stride()[:3], *out.stride()[:3])
    )
    _window_attention_fwd[grid](
        qkv,
        bias,
        out,
        h,
        w,
        c,
        h_out,
        w_out,
        n_win_w,
        n_q_tiles,
        qkv.stride(0),
        qkv.stride(1),
        qkv.stride(2),
        out.stride(0),
        out.stride(1),
        out.stride(2),
        head_dim**-0.5 * math.log2(math.e),
        HEAD_DIM=head_dim,
        WINDOW=window_size,
        Q_STRIDE=q_stride,
        HAS_BIAS=qkv_bias is not None,
        BLOCK_M=cfg["BLOCK_M"],
        BLOCK_N=cfg["BLOCK_N"],
        BLOCK_D=cfg["BLOCK_D"],
        BLOCK_DT=cfg["BLOCK_DT"],
        IEEE_DOT=qkv.dtype == torch.float32 or (interpreting() and qkv.dtype == torch.bfloat16),
        ALIGNED=aligned,
        num_warps=cfg["num_warps"],
        num_stages=cfg["num_stages"],
    )
    return out


#: ``(head_dim, window_size, q_stride, H, W)`` of every distinct kernel configuration that the
#: eight SAM 2 / 2.1 presets launch at image size 1024 (``H, W``: the block's input grid, which
#: only global attention (window 0) depends on; 0 for windowed blocks). The kernels know no
#: model: ``sam2_fast.modeling.hiera.window_attention_launches`` derives this list from the
#: presets and tests/ops/test_window_attention.py checks that the two agree.
SHIPPED = (
    (56, 0, 1, 64, 64), (56, 4, 1, 0, 0), (56, 4, 2, 0, 0), (56, 7, 1, 0, 0), (56, 8, 1, 0, 0),
    (56, 8, 2, 0, 0), (56, 14, 1, 0, 0), (56, 14, 2, 0, 0),
    (72, 0, 1, 64, 64), (72, 4, 1, 0, 0), (72, 4, 2, 0, 0), (72, 8, 1, 0, 0), (72, 8, 2, 0, 0),
    (72, 16, 1, 0, 0), (72, 16, 2, 0, 0),
    (96, 0, 1, 64, 64), (96, 4, 1, 0, 0), (96, 4, 2, 0, 0), (96, 7, 1, 0, 0), (96, 8, 1, 0, 0),
    (96, 8, 2, 0, 0), (96, 14, 1, 0, 0), (96, 14, 2, 0, 0),
)


_INT_ARGS = (
    "H", "W", "dim", "H_out", "W_out", "n_win_w", "n_q_tiles", "stride_b", "stride_h",
    "stride_w", "stride_ob", "stride_oh", "stride_ow",
)


def aot_spec(
    head_dim: int,
    window_size: int,
    q_stride: int,
    height: int,
    width: int,
    dtype: torch.dtype,
    tiles: tuple[int, int, int] | None = None,
) -> AotSpec:
    """The kernel as :func:`window_attention_triton` launches it on aligned SAM 2 tensors."""
    cfg = block_config(head_dim, window_size, q_stride, height, width, dtype, tiles)
    constexprs = dict(
        HEAD_DIM=head_dim,
        WINDOW=window_size,
        Q_STRIDE=q_stride,
        HAS_BIAS=True,
        BLOCK_M=cfg["BLOCK_M"],
        BLOCK_N=cfg["BLOCK_N"],
        BLOCK_D=cfg["BLOCK_D"],
        BLOCK_DT=cfg["BLOCK_DT"],
        IEEE_DOT=dtype == torch.float32,
        ALIGNED=True,
    )
    pointer = f"*{_TL_DTYPES[dtype]}"
    signature = dict(
        qkv_ptr=pointer,
        bias_ptr=pointer,
        out_ptr=pointer,
        **dict.fromkeys(_INT_ARGS, "i32"),
        qk_scale="fp32",
        **dict.fromkeys(constexprs, "constexpr"),
    )
    where = f"global{height}x{width}" if window_size == 0 else f"win{window_size}"
    pool = f" pool{q_stride}" if q_stride > 1 else ""
    return AotSpec(
        name=(
            f"window_attention {_TL_DTYPES[dtype]} d{head_dim} {where}{pool} "
            f"m{cfg['BLOCK_M']} n{cfg['BLOCK_N']} w{cfg['num_warps']} s{cfg['num_stages']}"
        ),
        fn=_window_attention_fwd,
        signature=signature,
        constexprs=constexprs,
        num_warps=cfg["num_warps"],
        num_stages=cfg["num_stages"],
    )


def aot_specs() -> list[AotSpec]:
    """Every configuration the SAM 2 / 2.1 presets launch at image size 1024, per dtype."""
    return [
        aot_spec(*config, dtype) for config in SHIPPED for dtype in _TL_DTYPES
    ]
