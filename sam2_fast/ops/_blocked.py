"""Attention on a CPU as blocks of matrix products: the shared core of the ``blocked``
backends of :mod:`~sam2_fast.ops.rope_attention` and :mod:`~sam2_fast.ops.window_attention`.

For each block of queries, one product against every key gives the block's scores (about
:data:`BLOCK_BYTES` of them, so they stay in the caches), an in-place pass turns them into
softmax numerators, and one product with the values and a column of ones gives the weighted
values and the row sums together. There is no online rescaling: each block sees every key.

The products are ``F.linear`` calls (the keys and the transposed values are the "weights"):
on x86 CPUs torch runs them with oneDNN, which for bfloat16 reaches 85-95 % of the machine's
bfloat16 GEMM peak where ``torch.matmul`` of the same shapes reaches about half of it
(AMD EPYC with AVX512-BF16, 2 cores: 880 vs 480 GFLOP/s on the memory attention's scores).

Precision: float32 inputs give float32 scores. bfloat16 inputs give the scores of a bfloat16
product (float32 accumulation, rounded once to bfloat16), numerators computed in float32 and
stored in bfloat16, float32-accumulated row sums: the rounding a bfloat16 matrix product has.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["BLOCK_BYTES", "blocked_attention", "block_rows"]

#: bytes of scores per block of queries
BLOCK_BYTES = 16 << 20
_TINY = torch.finfo(torch.float32).tiny
DTYPES = (torch.float32, torch.bfloat16)


def block_rows(num_keys: int, element_size: int, num_queries: int) -> int:
    """Queries per block: about :data:`BLOCK_BYTES` of scores, a multiple of 16 (at least
    16, at most every query)."""
    rows = BLOCK_BYTES // max(1, num_keys * element_size) // 16 * 16
    return max(16, min(num_queries, rows))


def blocked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads_per_value: int = 1) -> torch.Tensor:
    """``softmax(q k^T) v`` per group.

    Args:
        q: ``[G, Nq, D]`` queries, already scaled.
        k: ``[G, Nk, D]`` keys (``Nk >= 1``).
        v: ``[G / heads_per_value, Nk, Dv]`` values; group ``i`` uses ``v[i // heads_per_value]``
            (one set of values shared by the heads of an image).
        All CPU tensors of one dtype, float32 or bfloat16.

    Returns:
        ``[G, Nq, Dv]`` in the inputs' dtype.
    """
    g, nq, _ = q.shape
    nk, dv = k.shape[1], v.shape[2]
    dtype = q.dtype
    k = k.contiguous()
    # [v^T; 1]: one product gives the weighted values and the softmax row sums
    v1t = torch.empty(v.shape[0], dv + 1, nk, dtype=dtype)
    v1t[:, :dv] = v.transpose(1, 2)
    v1t[:, dv] = 1.0
    out = torch.empty(g, nq, dv, dtype=dtype)
    rows = block_rows(nk, q.element_size(), nq)
    for i in range(g):
        keys, values = k[i], v1t[i // heads_per_value]
        for start in range(0, nq, rows):
            s = F.linear(q[i, start : start + rows], keys)  # [n, Nk]
            s.sub_(s.amax(dim=-1, keepdim=True)).exp_()
            # subnormal weights (keys ~87 logits below the best) to 0: a product with a
            # subnormal costs a microcode assist, ~100x a normal one (a change < 1.2e-38 each)
            F.threshold_(s, _TINY, 0.0)
            acc = F.linear(s, values)  # [n, Dv + 1]
            torch.div(acc[:, :dv], acc[:, dv:], out=out[i, start : start + rows])
    return out
