"""Triton kernel of :func:`sam2_fast.ops.rope_attention`: flash attention with 2D axial RoPE
applied to the query and key tiles as they are loaded.

One program takes ``BLOCK_M`` queries of one (batch, head) and streams every key in tiles of
``BLOCK_N`` with an online softmax in float32 (``exp2``, the scale folded with ``log2 e``), so
no ``[Nq, Nk]`` score matrix exists anywhere. Channel pairs ``(2i, 2i + 1)`` are loaded as two
half-width tiles (even, odd) and rotated in registers; the score is the sum of the two half
dot products. Keys ``>= NK_ROPE`` (object pointers) are loaded with ``cos = 1, sin = 0``.
Values may have any width up to 256 and may be shared by all heads (stride 0).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from sam2_fast.kernels._aot import AotSpec
from sam2_fast.ops._triton import interpreting

LOG2E = 1.4426950408889634
MAX_HEAD_DIM = 256
MAX_VALUE_DIM = 256


@triton.jit
def _dot(a, b, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """``a @ b`` with float32 accumulation. ``UPCAST``: in float32 (exact for 16-bit inputs);
    used under the interpreter, whose 16-bit ``tl.dot`` returns garbage for bfloat16 (Triton 3.8)."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=DOT_PRECISION)


@triton.jit
def _rope_attention_fwd(
    Q, K, V, COS, SIN, OUT,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    H, NQ, NK, NK_ROPE, qk_scale,
    HALF: tl.constexpr, DV: tl.constexpr,
    BLOCK_HALF: tl.constexpr, BLOCK_DV: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    dtype = Q.dtype.element_ty

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_p = tl.arange(0, BLOCK_HALF)
    offs_v = tl.arange(0, BLOCK_DV)
    m_ok = offs_m < NQ
    p_ok = offs_p < HALF
    v_ok = offs_v < DV

    # queries: even / odd channels, rotated in float32, scaled by scale * log2(e)
    q_ptr = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qn
    q_mask = m_ok[:, None] & p_ok[None, :]
    q_even = tl.load(q_ptr + (2 * offs_p[None, :]) * stride_qd, mask=q_mask, other=0.0).to(tl.float32)
    q_odd = tl.load(q_ptr + (2 * offs_p[None, :] + 1) * stride_qd, mask=q_mask, other=0.0).to(tl.float32)
    table = offs_m[:, None] * HALF + offs_p[None, :]
    cos = tl.load(COS + table, mask=q_mask, other=1.0)
    sin = tl.load(SIN + table, mask=q_mask, other=0.0)
    q_re = ((q_even * cos - q_odd * sin) * qk_scale).to(dtype)
    q_ro = ((q_even * sin + q_odd * cos) * qk_scale).to(dtype)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)

    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    for start_n in range(0, NK, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < NK
        k_mask = n_ok[:, None] & p_ok[None, :]
        k_ptr = k_base + offs_n[:, None] * stride_kn
        k_even = tl.load(k_ptr + (2 * offs_p[None, :]) * stride_kd, mask=k_mask, other=0.0).to(tl.float32)
        k_odd = tl.load(k_ptr + (2 * offs_p[None, :] + 1) * stride_kd, mask=k_mask, other=0.0).to(tl.float32)
        rot_mask = k_mask & (offs_n < NK_ROPE)[:, None]
        k_table = (offs_n % NQ)[:, None] * HALF + offs_p[None, :]
        k_cos = tl.load(COS + k_table, mask=rot_mask, other=1.0)
        k_sin = tl.load(SIN + k_table, mask=rot_mask, other=0.0)
        k_re = (k_even * k_cos - k_odd * k_sin).to(dtype)
        k_ro = (k_even * k_sin + k_odd * k_cos).to(dtype)

        qk = _dot(q_re, tl.trans(k_re), DOT_PRECISION, UPCAST_DOT)
        qk += _dot(q_ro, tl.trans(k_ro), DOT_PRECISION, UPCAST_DOT)
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

    acc = acc / l_i[:, None]
    o_ptr = OUT + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_on + offs_v[None, :] * stride_od
    tl.store(o_ptr, acc.to(OUT.dtype.element_ty), mask=m_ok[:, None] & v_ok[None, :])


def block_config(head_dim: int, value_dim: int, dtype: torch.dtype) -> dict[str, int]:
    """Tile sizes, warps and stages for a head / value width and dtype; every shipped
    configuration is checked spill-free on sm_80 and sm_90 by the AOT check."""
    if dtype == torch.float32:
        # exact float32 dots ("ieee") need small tiles; this runs only in the interpreter
        return {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 4, "num_stages": 1}
    if head_dim <= 128 and value_dim <= 128:
        return {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2}
    if value_dim <= 64:
        return {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 8, "num_stages": 2}
    return {"BLOCK_M": 32, "BLOCK_N": 32, "num_warps": 8, "num_stages": 1}


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


def rope_attention_triton(q, k, v, cos, sin, num_k_exclude_rope=0, scale=None):
    b, h, nq, d = q.shape
    nk, dv = k.shape[2], v.shape[3]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    cos = cos.contiguous()
    sin = sin.contiguous()
    out = torch.empty(b, h, nq, dv, dtype=q.dtype, device=q.device)
    cfg = block_config(d, dv, q.dtype)
    grid = (triton.cdiv(nq, cfg["BLOCK_M"]), b * h)
    stride_vh = v.stride(1) if v.shape[1] > 1 else 0
    _rope_attention_fwd[grid](
        q, k, v, cos, sin, out,
        *q.stride(), *k.stride(),
        v.stride(0), stride_vh, v.stride(2), v.stride(3),
        *out.stride(),
        h, nq, nk, nk - num_k_exclude_rope, scale * LOG2E,
        HALF=d // 2, DV=dv,
        BLOCK_HALF=triton.next_power_of_2(d // 2), BLOCK_DV=triton.next_power_of_2(dv),
        BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
        DOT_PRECISION=_dot_precision(q.dtype),
        UPCAST_DOT=interpreting(),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return out


_TRITON_TYPES = {torch.bfloat16: "bf16", torch.float16: "fp16"}

# SAM 2 memory attention: self-attention (1 head of 256, values 256) and cross-attention to the
# memories (1 head of 256, values kept in the 64-dim memory space)
SHIPPED = ((256, 256), (256, 64))


def aot_specs() -> list[AotSpec]:
    specs = []
    for head_dim, value_dim in SHIPPED:
        for dtype, ty in _TRITON_TYPES.items():
            cfg = block_config(head_dim, value_dim, dtype)
            pointer = f"*{ty}"
            signature = {
                "Q": pointer, "K": pointer, "V": pointer, "COS": "*fp32", "SIN": "*fp32", "OUT": pointer,
                **{f"stride_{t}{a}": "i32" for t in "qkvo" for a in "bhnd"},
                "H": "i32", "NQ": "i32", "NK": "i32", "NK_ROPE": "i32", "qk_scale": "fp32",
            }
            constexprs = {
                "HALF": head_dim // 2,
                "DV": value_dim,
                "BLOCK_HALF": triton.next_power_of_2(head_dim // 2),
                "BLOCK_DV": triton.next_power_of_2(value_dim),
                "BLOCK_M": cfg["BLOCK_M"],
                "BLOCK_N": cfg["BLOCK_N"],
                "DOT_PRECISION": _dot_precision(dtype),
                "UPCAST_DOT": False,
            }
            signature.update({name: "constexpr" for name in constexprs})
            specs.append(
                AotSpec(
                    f"rope_attention d{head_dim} dv{value_dim} {ty}",
                    _rope_attention_fwd,
                    signature,
                    constexprs,
                    num_warps=cfg["num_warps"],
                    num_stages=cfg["num_stages"],
                )
            )
    return specs
