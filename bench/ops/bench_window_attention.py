"""window_attention (Hiera's windowed attention, qkv in, attention output out): backends on the
real shapes of the trunk at image size 1024, plus a roofline model of the fused op against the
unfused torch sequence.

One benchmark group per shape, so the table shows the ratio between backends::

    pytest bench/ops/bench_window_attention.py --benchmark-columns=min,median,rounds

``reference`` and ``compiled`` run on the CPU (``compiled`` is timed after its compilation);
``triton`` runs on CUDA when there is a GPU, and in Triton's CPU interpreter on a tiny shape
only when the process was started with ``TRITON_INTERPRET=1`` (correctness, not speed).

``python bench/ops/bench_window_attention.py`` prints the roofline table (FLOPs, HBM bytes and
the modelled A100 / H100 time of each distinct attention shape and of each trunk).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

import pytest
import torch

from sam2_fast.ops import get_op, use_backend, window_attention

OP = "window_attention"
IMAGE_SIZE = 1024
# peak dense bf16 tensor-core FLOP/s and HBM bytes/s (A100 SXM 40/80 GB, H100 SXM)
GPUS = {"A100": (312e12, 1.555e12), "H100 SXM": (989e12, 3.35e12)}


@dataclass(frozen=True)
class Shape:
    """One attention call of a Hiera block: qkv ``[batch, h, w, 3 * dim]``."""

    h: int
    w: int
    dim: int
    heads: int
    window: int
    q_stride: int
    batch: int = 1

    @property
    def label(self) -> str:
        kind = f"win{self.window}" if self.window else "global"
        pool = f" pool{self.q_stride}" if self.q_stride > 1 else ""
        return f"[{self.batch},{self.h},{self.w},{3 * self.dim}] {self.heads}h d{self.dim // self.heads} {kind}{pool}"

    def inputs(self, device: str = "cpu", dtype: torch.dtype = torch.float32) -> tuple:
        generator = torch.Generator().manual_seed(0)
        qkv = torch.randn(self.batch, self.h, self.w, 3 * self.dim, generator=generator)
        bias = torch.randn(3 * self.dim, generator=generator)
        return qkv.to(device, dtype), self.heads, self.window, self.q_stride, bias.to(device, dtype)


def trunk_shapes(preset: str, image_size: int = IMAGE_SIZE) -> Counter:
    """How many blocks of a preset's trunk run each attention shape."""
    from sam2_fast.modeling.config import PRESETS
    from sam2_fast.modeling.hiera import Hiera

    with torch.device("meta"):
        trunk = Hiera(PRESETS[preset].trunk)
    shapes: Counter = Counter()
    size = image_size // 4
    for block in trunk.blocks:
        attn = block.attn
        shapes[Shape(size, size, attn.dim_out, attn.num_heads, attn.window_size, attn.q_stride)] += 1
        size //= attn.q_stride
    return shapes


# ---------------------------------------------------------------------------------------------
# roofline model


def _grid(s: Shape) -> tuple[int, int, int, int, int]:
    """(padded tokens, real tokens, (pooled) queries incl. padding, keys per window, windows)."""
    if s.window:
        hp, wp = -(-s.h // s.window) * s.window, -(-s.w // s.window) * s.window
        n_windows = (hp // s.window) * (wp // s.window)
        n_k = s.window**2
    else:
        hp, wp, n_windows, n_k = s.h, s.w, 1, s.h * s.w
    n_q = n_k // s.q_stride**2 if s.window else (s.h // s.q_stride) * (s.w // s.q_stride)
    return s.batch * hp * wp, s.batch * s.h * s.w, s.batch * n_windows * n_q, n_k, s.batch * n_windows


def flops(s: Shape) -> int:
    """QK^T and PV multiply-adds (2 FLOPs each) over every window, padded keys included."""
    _, _, queries, n_k, _ = _grid(s)
    return 4 * queries * n_k * s.dim


def fused_bytes(s: Shape, elem: int = 2) -> int:
    """HBM traffic of the fused kernel: qkv read once (padded tokens come from the bias, in
    registers), the output written once at its cropped position."""
    _, real, _, _, _ = _grid(s)
    out = s.batch * (s.h // s.q_stride) * (s.w // s.q_stride)
    return elem * (3 * s.dim * real + s.dim * out)


def unfused_bytes(s: Shape, elem: int = 2) -> int:
    """HBM traffic of the reference sequence run eagerly (flash SDPA, no score matrix):
    bias-filled padding, window partition copy, query pooling copies, SDPA, the head transpose
    copy, window un-partition and the crop's copy."""
    padded, real, queries, _, _ = _grid(s)
    c = s.dim
    total = 0
    tokens = real
    if s.window:
        if padded != real:
            total += 3 * c * padded + 2 * 3 * c * real  # fill with the bias, copy qkv in
        total += 2 * 3 * c * padded  # window_partition: read + write
        tokens = padded
    if s.q_stride > 1:
        pooled = tokens // s.q_stride**2
        total += 2 * c * tokens  # queries to [n, h, w, C]
        total += c * tokens + c * pooled  # max_pool2d
        total += 2 * c * pooled  # back to [n, heads, N, d]
    total += 3 * c * tokens + c * queries  # SDPA: read q, k, v (q pooled), write out
    total += 2 * c * queries  # out.transpose(1, 2).reshape
    if s.window:
        total += 2 * c * queries  # window_unpartition
        out = s.batch * (s.h // s.q_stride) * (s.w // s.q_stride)
        if out != queries:
            total += 2 * c * out  # crop to a contiguous tensor
    return elem * total


def roofline_seconds(flop: int, nbytes: int, gpu: str) -> float:
    peak, bandwidth = GPUS[gpu]
    return max(flop / peak, nbytes / bandwidth)


def roofline_table(presets: tuple[str, ...] = ("sam2.1-hiera-tiny", "sam2.1-hiera-small",
                                               "sam2.1-hiera-base-plus", "sam2.1-hiera-large")) -> str:
    """Markdown table: each distinct attention shape of the trunks (bf16), then each trunk's
    total over its blocks."""
    header = (
        "| shape (bf16) | blocks | GFLOP | fused MB | unfused MB | A100 fused us | A100 unfused us "
        "| H100 fused us | H100 unfused us |"
    )
    lines = [header, "|" + "---|" * 9]

    def row(label: str, count: int, flop: int, fused: int, unfused: int) -> str:
        times = [
            roofline_seconds(flop, nbytes, gpu) * 1e6 for gpu in GPUS for nbytes in (fused, unfused)
        ]
        return (
            f"| {label} | {count} | {flop / 1e9:.2f} | {fused / 1e6:.1f} | {unfused / 1e6:.1f} | "
            + " | ".join(f"{t:.0f}" for t in times)
            + " |"
        )

    every: Counter = Counter()
    per_trunk = {}
    for preset in presets:
        shapes = trunk_shapes(preset)
        every.update(shapes)
        per_trunk[preset] = shapes
    for shape in sorted(every, key=lambda s: (s.dim // s.heads, -s.h, s.window, s.q_stride)):
        lines.append(row(shape.label, every[shape], flops(shape), fused_bytes(shape), unfused_bytes(shape)))
    for preset, shapes in per_trunk.items():
        total = [sum(n * f(s) for s, n in shapes.items()) for f in (flops, fused_bytes, unfused_bytes)]
        lines.append(row(f"**{preset} trunk, all blocks**", sum(shapes.values()), *total))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# benchmarks

SHAPES = {
    "tiny stage 1 (window 8)": Shape(256, 256, 96, 1, 8, 1),
    "tiny stage 2 entry (window 8, pooled)": Shape(256, 256, 192, 2, 8, 2),
    "tiny stage 3 (window 14, padded)": Shape(64, 64, 384, 4, 14, 1),
    "tiny stage 3 global": Shape(64, 64, 384, 4, 0, 1),
    "large stage 3 (window 16)": Shape(64, 64, 576, 8, 16, 1),
    "large stage 4 (window 8)": Shape(32, 32, 1152, 16, 8, 1),
}


@pytest.fixture(params=["triton", "compiled", "reference"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "triton" and not torch.cuda.is_available():
        pytest.skip("no CUDA device (the interpreter runs in test_interpreter_tiny)")
    return request.param


@pytest.mark.parametrize("name", list(SHAPES))
def test_window_attention(benchmark, backend: str, name: str) -> None:
    shape = SHAPES[name]
    device = "cuda" if backend == "triton" else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    args = shape.inputs(device, dtype)
    benchmark.group = f"window_attention {name} {shape.label} {dtype}"
    with use_backend(backend, op=OP), torch.inference_mode():
        assert get_op(OP).select(*args).name == backend
        window_attention(*args)  # compile / warm up outside the timing
        out = benchmark(window_attention, *args)
    assert out.shape[-1] == shape.dim


@pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET", "0") in ("", "0"),
    reason="the interpreter needs TRITON_INTERPRET=1 before Python starts",
)
@pytest.mark.benchmark(group="window_attention tiny [1,16,16,96] win8, triton interpreter")
def test_interpreter_tiny(benchmark) -> None:
    args = Shape(16, 16, 32, 1, 8, 1).inputs()
    with use_backend("triton", op=OP), torch.inference_mode():
        out = benchmark(window_attention, *args)
    assert out.shape == (1, 16, 16, 32)


def main() -> None:
    print(roofline_table())
    print(
        "\nbf16; roofline time = max(FLOPs / peak, bytes / bandwidth) with "
        + ", ".join(f"{gpu} {p / 1e12:.0f} TF/s, {b / 1e12:.3f} TB/s" for gpu, (p, b) in GPUS.items())
        + f". GFLOP per call at image size {IMAGE_SIZE}, batch 1; 'blocks' counts the blocks of"
        " the four SAM 2.1 trunks (SAM 2.0 trunks are the same) that run the shape."
    )


if __name__ == "__main__":
    main()
