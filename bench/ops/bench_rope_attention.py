"""rope_attention on the real shapes of SAM 2's memory attention (1024² input, 64x64 tokens):
the CPU backends (the C++ flash kernel vs blocked vs reference SDPA vs torch.compile) in one
group per shape and dtype::

    pytest bench/ops/bench_rope_attention.py --benchmark-group-by=group --benchmark-columns=min,median,rounds

``python bench/ops/bench_rope_attention.py`` prints the roofline model of the fused Triton
kernel vs the unfused torch sequence of the official package on A100 and H100 (bench/README.md).
"""

from __future__ import annotations

import pytest
import torch

from sam2_fast.modeling.position_encoding import axial_rope_cos_sin
from sam2_fast.ops import rope_attention, use_backend
from sam2_fast.ops.rope_attention import rope_attention_op

SIDE = 64  # 1024 / 16
NQ = SIDE * SIDE
# name -> (keys, value width, excluded keys): cross-attention at full memory (7 frames of
# 4096 tokens + 16 object pointers x 4 tokens, values kept 64-dim) and the self-attention
SHAPES = {
    "cross-attention 4096 x (7x4096+64), values 64": (7 * NQ + 64, 64, 64),
    "self-attention 4096 x 4096, values 256": (NQ, 256, 0),
}
D = 256


def _inputs(nk: int, dv: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, NQ, D, generator=g).to(dtype)
    k = (torch.randn(1, 1, nk, D, generator=g) / 4).to(dtype)
    v = torch.randn(1, 1, nk, dv, generator=g).to(dtype)
    cos, sin = axial_rope_cos_sin(D, SIDE, SIDE, 10000.0)
    return q, k, v, cos, sin


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("backend", ["cpp", "blocked", "reference", "compiled"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_rope_attention_cpu(benchmark, shape: str, backend: str, dtype: torch.dtype) -> None:
    nk, dv, excluded = SHAPES[shape]
    q, k, v, cos, sin = _inputs(nk, dv, dtype)
    reason = rope_attention_op.backend(backend).supports(q, k, v, cos, sin, excluded)
    if reason is not None:
        pytest.skip(f"{backend} cannot run here: {reason}")
    benchmark.group = f"rope_attention {shape}, {str(dtype).removeprefix('torch.')}"
    benchmark.extra_info["gflop"] = round(2 * NQ * nk * (D + dv) / 1e9, 2)
    with torch.inference_mode(), use_backend(backend, op="rope_attention"):
        rope_attention(q, k, v, cos, sin, excluded)  # warm-up (compiles once for "compiled")
        out = benchmark.pedantic(rope_attention, (q, k, v, cos, sin, excluded), rounds=3, iterations=1)
    assert out.shape == (1, 1, NQ, dv)


# ---------------------------------------------------------------------------------------------
# roofline model

GPUS = {  # dense bf16 tensor-core peak (FLOP/s) and HBM bandwidth (B/s)
    "A100 SXM": (312e12, 1.555e12),
    "H100 SXM": (989e12, 3.35e12),
}


def roofline_rows() -> list[dict]:
    """FLOPs and HBM bytes (bf16 tensors, float32 tables) per memory-attention call, fused vs
    the official sequence (complex RoPE on q and k in float32, v_proj to 256, SDPA)."""
    rows = []
    for name, (nk, dv_fused, excluded) in SHAPES.items():
        nr = nk - excluded
        dv_full = 256
        fused_flops = 2 * NQ * nk * (D + dv_fused)
        # ours: the rotation pass reads q, k and the tables and writes rotated bf16 copies, the
        # attention reads those and the values and writes the output (key-split partials, used
        # when a GPU would be under-filled, are not counted: < 10 MB at these shapes)
        rotation_bytes = 2 * 2 * (NQ * D + nk * D) + 2 * 4 * NQ * D // 2
        fused_bytes = rotation_bytes + 2 * (NQ * D + nk * D + nk * dv_fused + NQ * dv_fused)
        # official: q, k rotated through float32 complex (read bf16, write f32, read f32 +
        # table, write bf16), v_proj of the 64-dim memory when dv_fused < 256, then SDPA
        rotate = lambda n: n * D * (2 + 4 + 4 + 2) + n * D // 2 * 8  # noqa: E731
        unfused_bytes = rotate(NQ) + rotate(nr)
        unfused_flops = 2 * NQ * nk * (D + dv_full)
        if dv_fused < dv_full:
            unfused_bytes += 2 * (nk * dv_fused + nk * dv_full)
            unfused_flops += 2 * nk * dv_fused * dv_full
        unfused_bytes += 2 * (NQ * D + nk * D + nk * dv_full + NQ * dv_full)
        row = {"shape": name, "fused GFLOP": fused_flops / 1e9, "fused MB": fused_bytes / 1e6,
               "unfused GFLOP": unfused_flops / 1e9, "unfused MB": unfused_bytes / 1e6}
        for gpu, (peak, bandwidth) in GPUS.items():
            fused = max(fused_flops / peak, fused_bytes / bandwidth)
            # unfused: the attention overlaps its own traffic, the elementwise passes do not
            unfused = max(2 * NQ * nk * (D + dv_full) / peak, 2 * (NQ * D + nk * D + nk * dv_full) / bandwidth)
            unfused += (unfused_bytes - 2 * (NQ * D + nk * D + nk * dv_full + NQ * dv_full)) / bandwidth
            row[f"{gpu} fused us"] = fused * 1e6
            row[f"{gpu} unfused us"] = unfused * 1e6
        rows.append(row)
    return rows


def main() -> None:
    for row in roofline_rows():
        print(row["shape"])
        print(f"  fused   {row['fused GFLOP']:8.1f} GFLOP {row['fused MB']:8.1f} MB")
        print(f"  unfused {row['unfused GFLOP']:8.1f} GFLOP {row['unfused MB']:8.1f} MB")
        for gpu in GPUS:
            f, u = row[f"{gpu} fused us"], row[f"{gpu} unfused us"]
            print(f"  {gpu}: fused bound {f:7.1f} us, unfused bound {u:7.1f} us ({u / f:.2f}x)")


if __name__ == "__main__":
    main()
