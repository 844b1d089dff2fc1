"""Triton kernels of :func:`sam2_fast.ops.rope_attention`: rotate once, then plain flash attention.

Three kernels, run in this order:

1. ``_rotate``: RoPE on the queries and on the keys, each once per call. It reads ``[B, H, N, D]``
   through its strides, rotates the channel pairs ``(2i, 2i + 1)`` in float32 (keys ``>= N_ROPE``,
   the object pointers, are copied unrotated) and writes a contiguous ``[B * H, N, D]`` copy in
   the input dtype with the channels **de-interleaved**: the rotated even channels, then the odd
   ones. A dot product is a sum over channels, so permuting the channels of both queries and
   keys in the same way leaves every score unchanged, and the attention kernel loads whole
   contiguous rows instead of stride-2 gathers. The queries also take the softmax scale times
   ``log2 e`` here. This pass moves ``(Nq + Nk) * D`` elements twice, against the
   ``Nq * Nk * (D + Dv)`` multiply-adds of the attention.
2. ``_attention_fwd``: flash attention over the rotated copies. One program takes ``BLOCK_M``
   queries of one (batch, head) against one contiguous share of the keys (a *split*), streams
   it in tiles of ``BLOCK_N`` with an online softmax in float32 (``exp2``) and never holds an
   ``[Nq, Nk]`` score matrix. Values may have any width up to 256 and may be shared by all heads.
   With one split it writes the normalised output; with several it writes float32 partials
   (unnormalised sum, running max, row sum).
3. ``_combine``: merges the splits' partials into the output (only when there are several).

Why splits: SAM 2's memory attention has few query blocks (4096 queries of one head per
object) and many keys (up to ``7 * 4096 + 64``). With one object, 4096 / 128 = 32 programs would
leave most of a GPU's 100+ multiprocessors idle; splitting the keys gives each of them work,
at the price of writing ``splits * Nq * Dv`` float32 partials.

The earlier single kernel rotated every key tile again inside every query block (64 times
over at 4096 queries) and loaded the even / odd channels with stride-2 gathers; it measured
0.06x of RoPE + torch's SDPA on an H200 (``bench/gpu/README.md``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from sam2_fast.kernels._aot import AotSpec
from sam2_fast.kernels._interpreter import interpreting

__all__ = [
    "Tiles", "aot_specs", "block_config", "candidates", "num_splits", "rope_attention_triton", "rotate",
    "unsupported_reason",
]

LOG2E = 1.4426950408889634
MAX_HEAD_DIM = 256
MAX_VALUE_DIM = 256
# keys per split at least this many tiles: fewer would cost more in partials than they gain
_MIN_TILES_PER_SPLIT = 4
_MAX_SPLITS = 16


class Tiles(NamedTuple):
    """Tile sizes and launch options of the attention kernel."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


@triton.jit
def _dot(a, b, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """``a @ b`` with float32 accumulation. ``UPCAST``: in float32 (exact for 16-bit inputs);
    used under the interpreter, whose 16-bit ``tl.dot`` returns garbage for bfloat16 (Triton 3.8)."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=DOT_PRECISION)


@triton.jit
def _rotate(
    X, COS, SIN, OUT,
    stride_xb, stride_xh, stride_xn, stride_xd,
    H, N, NQ, N_ROPE, scale,
    HALF: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_HALF: tl.constexpr,
):
    """Grid ``(cdiv(N, BLOCK_T), B * H)``: ``OUT[bh, t] = scale * [re, ro]`` of token ``t``,
    ``re = e cos - o sin``, ``ro = e sin + o cos`` with the table row ``t % NQ`` for ``t < N_ROPE``
    (``cos = 1, sin = 0`` after)."""
    pid_t = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_p = tl.arange(0, BLOCK_HALF)
    mask = (offs_t < N)[:, None] & (offs_p < HALF)[None, :]
    x = X + b.to(tl.int64) * stride_xb + h * stride_xh + offs_t[:, None].to(tl.int64) * stride_xn
    even = tl.load(x + (2 * offs_p[None, :]) * stride_xd, mask=mask, other=0.0).to(tl.float32)
    odd = tl.load(x + (2 * offs_p[None, :] + 1) * stride_xd, mask=mask, other=0.0).to(tl.float32)
    rotated = mask & (offs_t < N_ROPE)[:, None]
    table = (offs_t % NQ)[:, None] * HALF + offs_p[None, :]
    cos = tl.load(COS + table, mask=rotated, other=1.0)
    sin = tl.load(SIN + table, mask=rotated, other=0.0)
    re = (even * cos - odd * sin) * scale
    ro = (even * sin + odd * cos) * scale
    out = OUT + pid_bh.to(tl.int64) * N * (2 * HALF) + offs_t[:, None].to(tl.int64) * (2 * HALF) + offs_p[None, :]
    dtype = OUT.dtype.element_ty
    tl.store(out, re.to(dtype), mask=mask)
    tl.store(out + HALF, ro.to(dtype), mask=mask)


@triton.jit
def _attention_fwd(
    Q, K, V, OUT, PART_ACC, PART_M, PART_L,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    H, NQ, NK, KEYS_PER_SPLIT,
    D: tl.constexpr, DV: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    SPLIT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
):
    """Grid ``(cdiv(NQ, BLOCK_M), B * H, splits)``. ``Q [B*H, NQ, D]`` and ``K [B*H, NK, D]``
    are the contiguous rotated copies (``Q`` pre-scaled by scale * log2 e). ``SPLIT``: write
    float32 partials ``PART_ACC [splits, B*H, NQ, DV]``, ``PART_M / PART_L [splits, B*H, NQ]``
    instead of the output."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    pid_s = tl.program_id(2)
    b = pid_bh // H
    h = pid_bh % H
    dtype = Q.dtype.element_ty

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_v = tl.arange(0, BLOCK_DV)
    m_ok = offs_m < NQ
    d_ok = offs_d < D
    v_ok = offs_v < DV

    q_ptr = Q + pid_bh.to(tl.int64) * NQ * D + offs_m[:, None] * D + offs_d[None, :]
    q = tl.load(q_ptr, mask=m_ok[:, None] & d_ok[None, :], other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)

    key_start = pid_s * KEYS_PER_SPLIT
    key_end = tl.minimum(key_start + KEYS_PER_SPLIT, NK)
    k_base = K + pid_bh.to(tl.int64) * NK * D
    v_base = V + b.to(tl.int64) * stride_vb + h * stride_vh
    for start_n in range(key_start, key_end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < key_end
        k = tl.load(k_base + offs_n[:, None] * D + offs_d[None, :], mask=n_ok[:, None] & d_ok[None, :], other=0.0)
        qk = _dot(q, tl.trans(k), DOT_PRECISION, UPCAST_DOT)
        qk = tl.where(n_ok[None, :], qk, float("-inf"))

        m_new = tl.maximum(m_i, tl.max(qk, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(qk - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(
            v_base + offs_n[:, None] * stride_vn + offs_v[None, :] * stride_vd,
            mask=n_ok[:, None] & v_ok[None, :],
            other=0.0,
        )
        acc = acc * alpha[:, None] + _dot(p.to(dtype), v.to(dtype), DOT_PRECISION, UPCAST_DOT)
        m_i = m_new

    if SPLIT:
        row = (pid_s * tl.num_programs(1) + pid_bh).to(tl.int64) * NQ + offs_m
        tl.store(PART_M + row, m_i, mask=m_ok)
        tl.store(PART_L + row, l_i, mask=m_ok)
        tl.store(PART_ACC + row[:, None] * DV + offs_v[None, :], acc, mask=m_ok[:, None] & v_ok[None, :])
    else:
        acc = acc / l_i[:, None]
        o_ptr = OUT + b.to(tl.int64) * stride_ob + h * stride_oh + offs_m[:, None] * stride_on + offs_v[None, :] * stride_od
        tl.store(o_ptr, acc.to(OUT.dtype.element_ty), mask=m_ok[:, None] & v_ok[None, :])


@triton.jit
def _combine(
    PART_ACC, PART_M, PART_L, OUT,
    stride_ob, stride_oh, stride_on, stride_od,
    H, NQ, BH, SPLITS,
    DV: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_M: tl.constexpr,
):
    """Grid ``(cdiv(NQ, BLOCK_M), B * H)``: ``OUT = sum_s 2^(m_s - m) acc_s / sum_s 2^(m_s - m) l_s``
    with ``m = max_s m_s`` (every split has at least one key, so every ``m_s`` is finite)."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_v = tl.arange(0, BLOCK_DV)
    m_ok = offs_m < NQ
    v_ok = offs_v < DV
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
    for s in range(0, SPLITS):
        row = (s * BH + pid_bh).to(tl.int64) * NQ + offs_m
        m_s = tl.load(PART_M + row, mask=m_ok, other=0.0)
        l_s = tl.load(PART_L + row, mask=m_ok, other=1.0)  # rows past NQ: no 0 / 0
        acc_s = tl.load(PART_ACC + row[:, None] * DV + offs_v[None, :], mask=m_ok[:, None] & v_ok[None, :], other=0.0)
        m_new = tl.maximum(m_i, m_s)
        alpha = tl.exp2(m_i - m_new)
        beta = tl.exp2(m_s - m_new)
        l_i = l_i * alpha + l_s * beta
        acc = acc * alpha[:, None] + acc_s * beta[:, None]
        m_i = m_new
    out = acc / l_i[:, None]
    o_ptr = OUT + b.to(tl.int64) * stride_ob + h * stride_oh + offs_m[:, None] * stride_on + offs_v[None, :] * stride_od
    tl.store(o_ptr, out.to(OUT.dtype.element_ty), mask=m_ok[:, None] & v_ok[None, :])


# 8 x 128 channel pairs per program of 4 warps: 8 pairs a thread, no register pressure
_ROTATE_TOKENS = 8
_COMBINE_ROWS = 16


_LARGE_SHARED_MEMORY = (90, 100, 103)


def block_config(head_dim: int, value_dim: int, dtype: torch.dtype, cc: int = 90) -> Tiles:
    """Tiles of the attention kernel for a head / value width, dtype and compute capability
    (``cc`` 80 for Ampere, 90 for Hopper, ...); every shipped configuration is checked
    spill-free on its target by the AOT check (the other tile sizes spill at head dim 256)."""
    if dtype == torch.float32:
        # exact float32 dots ("ieee") need small tiles; this runs only in the interpreter
        return Tiles(16, 16, 4, 1)
    if head_dim <= 128 and value_dim <= 128:
        return Tiles(64, 64, 4, 2)
    # Hopper / datacenter Blackwell take up to 227 KiB of shared memory per block; the others
    # (A100 164, consumer parts 99) get tiles within 96 KiB
    large = cc in _LARGE_SHARED_MEMORY
    if value_dim <= 64:
        return Tiles(128, 64, 8, 2) if large else Tiles(128, 32, 8, 2)
    return Tiles(128, 32, 8, 2) if large else Tiles(64, 32, 8, 2)


def candidates(head_dim: int, value_dim: int, dtype: torch.dtype, cc: int = 90) -> list[Tiles]:
    """Every tile choice the GPU check sweeps (``bench/gpu/check_kernels.py --only rope_tune``),
    the default first."""
    options = [Tiles(128, 64, 8, 2), Tiles(128, 64, 8, 3), Tiles(128, 32, 8, 2), Tiles(128, 32, 8, 3),
               Tiles(64, 64, 8, 2), Tiles(64, 32, 8, 2), Tiles(64, 32, 4, 2), Tiles(32, 64, 4, 2),
               Tiles(32, 32, 4, 2)]
    default = block_config(head_dim, value_dim, dtype, cc)
    return [default] + [t for t in options if t != default]


def num_splits(programs: int, num_keys: int, block_n: int, multiprocessors: int | None) -> int:
    """How many key splits: enough programs for two per multiprocessor, each split at least
    ``_MIN_TILES_PER_SPLIT`` key tiles, at most ``_MAX_SPLITS``; 1 without a device count."""
    if not multiprocessors or programs >= multiprocessors:
        return 1
    by_work = max(1, num_keys // (_MIN_TILES_PER_SPLIT * block_n))
    return max(1, min(_MAX_SPLITS, by_work, -(-2 * multiprocessors // programs)))


def _multiprocessors(device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).multi_processor_count


def _compute_capability(device: torch.device) -> int:
    if device.type != "cuda":
        return 90  # the interpreter: any choice runs
    major, minor = torch.cuda.get_device_capability(device)
    return 10 * major + minor


def unsupported_reason(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str | None:
    if q.dtype == torch.float32 and q.is_cuda:
        return (
            "float32 on cuda runs the reference (exact SDPA); the kernel ships bfloat16 / float16: "
            "full-precision float32 tiles at head dim 256 spill registers"
        )
    if q.shape[-1] > MAX_HEAD_DIM:
        return f"head dim {q.shape[-1]} > {MAX_HEAD_DIM}"
    if v.shape[-1] > MAX_VALUE_DIM:
        return f"value dim {v.shape[-1]} > {MAX_VALUE_DIM}"
    if q.shape[2] == 0 or k.shape[2] == 0:
        return "no queries or no keys"
    return None


def _dot_precision(dtype: torch.dtype) -> str:
    # float32 inputs keep full precision (tf32 would change the masks); 16-bit ones use the MMA
    return "ieee" if dtype == torch.float32 else "tf32"


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_rope: int, scale: float = 1.0) -> torch.Tensor:
    """``[B, H, N, D]`` → contiguous ``[B * H, N, D]``: the first ``num_rope`` tokens rotated
    (table row ``token % cos.shape[0]``), every token scaled, channels de-interleaved."""
    b, h, n, d = x.shape
    out = torch.empty(b * h, n, d, dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(n, _ROTATE_TOKENS), b * h)
    _rotate[grid](
        x, cos, sin, out, *x.stride(), h, n, cos.shape[0], num_rope, scale,
        HALF=d // 2, BLOCK_T=_ROTATE_TOKENS, BLOCK_HALF=triton.next_power_of_2(d // 2),
    )
    return out


def rope_attention_triton(q, k, v, cos, sin, num_k_exclude_rope=0, scale=None, *, tiles: Tiles | None = None, splits: int | None = None):
    """The op on CUDA (or interpreted) tensors. ``tiles`` / ``splits`` override the defaults
    (the GPU tile sweep and the tests use them)."""
    b, h, nq, d = q.shape
    nk, dv = k.shape[2], v.shape[3]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    cos = cos.contiguous()
    sin = sin.contiguous()
    tiles = tiles or block_config(d, dv, q.dtype, _compute_capability(q.device))
    q_rot = rotate(q, cos, sin, nq, scale * LOG2E)
    k_rot = rotate(k, cos, sin, nk - num_k_exclude_rope)

    q_blocks = triton.cdiv(nq, tiles.block_m)
    if splits is None:
        splits = num_splits(q_blocks * b * h, nk, tiles.block_n, _multiprocessors(q.device))
    # every split gets whole key tiles and at least one key
    keys_per_split = triton.cdiv(triton.cdiv(nk, max(1, splits)), tiles.block_n) * tiles.block_n
    splits = triton.cdiv(nk, keys_per_split)

    out = torch.empty(b, h, nq, dv, dtype=q.dtype, device=q.device)
    if splits > 1:
        part_acc = torch.empty(splits, b * h, nq, dv, dtype=torch.float32, device=q.device)
        part_m = torch.empty(splits, b * h, nq, dtype=torch.float32, device=q.device)
        part_l = torch.empty_like(part_m)
    else:
        part_acc = part_m = part_l = out  # not read or written
    stride_vh = v.stride(1) if v.shape[1] > 1 else 0
    block_dv = triton.next_power_of_2(dv)
    _attention_fwd[(q_blocks, b * h, splits)](
        q_rot, k_rot, v, out, part_acc, part_m, part_l,
        v.stride(0), stride_vh, v.stride(2), v.stride(3),
        *out.stride(),
        h, nq, nk, keys_per_split,
        D=d, DV=dv,
        BLOCK_D=triton.next_power_of_2(d), BLOCK_DV=block_dv,
        BLOCK_M=tiles.block_m, BLOCK_N=tiles.block_n,
        SPLIT=splits > 1,
        DOT_PRECISION=_dot_precision(q.dtype),
        UPCAST_DOT=interpreting(),
        num_warps=tiles.num_warps, num_stages=tiles.num_stages,
    )
    if splits > 1:
        _combine[(triton.cdiv(nq, _COMBINE_ROWS), b * h)](
            part_acc, part_m, part_l, out, *out.stride(), h, nq, b * h, splits,
            DV=dv, BLOCK_DV=block_dv, BLOCK_M=_COMBINE_ROWS,
        )
    return out


_TRITON_TYPES = {torch.bfloat16: "bf16", torch.float16: "fp16"}

# SAM 2 memory attention: self-attention (1 head of 256, values 256) and cross-attention to the
# memories (1 head of 256, values kept in the 64-dim memory space)
SHIPPED = ((256, 256), (256, 64))


# what Triton's JIT finds 16-divisible at SAM 2's shapes (torch allocations are aligned;
# NQ = 4096, NK = 7 * 4096 + 64, KEYS_PER_SPLIT a multiple of BLOCK_N, strides of widths 64 / 256)
_ATTENTION_ALIGNED = (
    "Q", "K", "V", "OUT", "PART_ACC", "PART_M", "PART_L",
    "stride_vb", "stride_vh", "stride_vn", "stride_ob", "stride_oh", "stride_on", "NQ", "NK", "KEYS_PER_SPLIT",
)
_ROTATE_ALIGNED = ("X", "COS", "SIN", "OUT", "stride_xb", "stride_xh", "stride_xn", "N", "NQ", "N_ROPE")


def aot_specs() -> list[AotSpec]:
    specs = []
    for dtype, ty in _TRITON_TYPES.items():
        pointer = f"*{ty}"
        half = MAX_HEAD_DIM // 2
        rotate_constexprs = {"HALF": half, "BLOCK_T": _ROTATE_TOKENS, "BLOCK_HALF": half, "stride_xd": 1}
        specs.append(
            AotSpec(
                f"rope_attention rotate d{MAX_HEAD_DIM} {ty}",
                _rotate,
                {
                    "X": pointer, "COS": "*fp32", "SIN": "*fp32", "OUT": pointer,
                    **{f"stride_x{a}": "i32" for a in "bhn"},
                    "H": "i32", "N": "i32", "NQ": "i32", "N_ROPE": "i32", "scale": "fp32",
                    **{name: "constexpr" for name in rotate_constexprs},
                },
                rotate_constexprs,
                num_warps=4,
                num_stages=1,
                divisible_by_16=_ROTATE_ALIGNED,
            )
        )
        for head_dim, value_dim in SHIPPED:
            for cc in (80, 90):
                tiles = block_config(head_dim, value_dim, dtype, cc)
                for split in (False, True):
                    constexprs = {
                        "D": head_dim, "DV": value_dim,
                        "BLOCK_D": triton.next_power_of_2(head_dim), "BLOCK_DV": triton.next_power_of_2(value_dim),
                        "BLOCK_M": tiles.block_m, "BLOCK_N": tiles.block_n,
                        "SPLIT": split,
                        "DOT_PRECISION": _dot_precision(dtype),
                        "UPCAST_DOT": False,
                    }
                    # channels have stride 1, as Triton's JIT specializes it on SAM 2's tensors
                    constexprs.update(stride_vd=1, stride_od=1)
                    signature = {
                        "Q": pointer, "K": pointer, "V": pointer, "OUT": pointer,
                        "PART_ACC": "*fp32", "PART_M": "*fp32", "PART_L": "*fp32",
                        **{f"stride_{t}{a}": "i32" for t in "vo" for a in "bhn"},
                        "H": "i32", "NQ": "i32", "NK": "i32", "KEYS_PER_SPLIT": "i32",
                        **{name: "constexpr" for name in constexprs},
                    }
                    specs.append(
                        AotSpec(
                            f"rope_attention d{head_dim} dv{value_dim} {ty} {tiles.block_m}x{tiles.block_n}"
                            f"{' split' if split else ''}",
                            _attention_fwd,
                            signature,
                            constexprs,
                            num_warps=tiles.num_warps,
                            num_stages=tiles.num_stages,
                            targets=(cc,),
                            divisible_by_16=_ATTENTION_ALIGNED,
                        )
                    )
        for value_dim in sorted({dv for _, dv in SHIPPED}):
            constexprs = {"DV": value_dim, "BLOCK_DV": triton.next_power_of_2(value_dim), "BLOCK_M": _COMBINE_ROWS}
            specs.append(
                AotSpec(
                    f"rope_attention combine dv{value_dim} {ty}",
                    _combine,
                    {
                        "PART_ACC": "*fp32", "PART_M": "*fp32", "PART_L": "*fp32", "OUT": pointer,
                        **{f"stride_o{a}": "i32" for a in "bhnd"},
                        "H": "i32", "NQ": "i32", "BH": "i32", "SPLITS": "i32",
                        **{name: "constexpr" for name in constexprs},
                    },
                    constexprs,
                    num_warps=4,
                    num_stages=1,
                )
            )
    return specs
