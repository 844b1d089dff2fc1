"""upsample_masks (op ``mask_postprocess``): its backends against the reference on real shapes,
and a roofline model of the fused op against the unfused official sequence.

One benchmark group per shape, so the table shows the ratio between backends::

    pytest bench/ops/bench_mask_postprocess.py --benchmark-group-by=group \\
        --benchmark-columns=min,median,rounds

Shapes: ``predict`` (3 masks of 256x256 to a 720x1280 image) and one automatic-mask-generator
batch (64 masks, with stability scores). ``triton`` runs them on cuda; without a GPU it runs only
the tiny group, and only under ``TRITON_INTERPRET=1`` (the interpreter is for correctness, not
speed). ``compiled`` is timed after one warm-up call (the compilation).

``python bench/ops/bench_mask_postprocess.py`` prints the roofline table: FLOPs and HBM bytes of
the fused op and of the unfused torch sequence, and the time each takes at the memory or compute
roof of an A100 and an H100 SXM.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch

from sam2_fast.ops import get_op, upsample_masks, use_backend

OP = "mask_postprocess"


class Shape(NamedTuple):
    name: str
    masks: int  # B * C
    low_res: tuple[int, int]
    size: tuple[int, int]
    stability_offset: float | None


PREDICT = Shape("predict", 3, (256, 256), (720, 1280), None)
AMG_BATCH = Shape("AMG batch", 64, (256, 256), (720, 1280), 1.0)
TINY = Shape("tiny", 3, (32, 32), (45, 80), 1.0)


def _logits(shape: Shape, device: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    coarse = torch.randn(shape.masks, 1, 16, 16, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=shape.low_res, mode="bilinear")
    return (8 * smooth).reshape(1, shape.masks, *shape.low_res).to(device)


def _group(shape: Shape) -> str:
    offset = "" if shape.stability_offset is None else f", offset {shape.stability_offset}"
    return (
        f"mask_postprocess {shape.name}: [1, {shape.masks}, {shape.low_res[0]}, "
        f"{shape.low_res[1]}] -> {shape.size[0]}x{shape.size[1]}{offset}"
    )


def _run(benchmark, backend: str, shape: Shape) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    logits = _logits(shape, device)
    args = (logits, list(shape.size), 0.0, shape.stability_offset)
    reason = get_op(OP).explain(*args)[backend]
    if reason is not None:
        pytest.skip(f"{backend}: {reason}")
    if backend == "triton" and device == "cpu" and shape is not TINY:
        pytest.skip("the Triton interpreter runs only the tiny shape")

    def call() -> torch.Tensor:
        masks = upsample_masks(logits, shape.size, 0.0, shape.stability_offset).masks
        if device == "cuda":
            torch.cuda.synchronize()
        return masks

    with use_backend(backend, op=OP):
        call()  # warm-up: compiles the compiled / triton backends
        masks = benchmark(call)
    assert masks.shape == (1, shape.masks, *shape.size)


@pytest.mark.parametrize("backend", ["triton", "cpp", "chunked", "reference", "compiled"])
@pytest.mark.benchmark(group=_group(PREDICT))
def test_predict(benchmark, backend: str) -> None:
    _run(benchmark, backend, PREDICT)


@pytest.mark.parametrize("backend", ["triton", "cpp", "chunked", "reference", "compiled"])
@pytest.mark.benchmark(group=_group(AMG_BATCH))
def test_amg_batch(benchmark, backend: str) -> None:
    _run(benchmark, backend, AMG_BATCH)


@pytest.mark.parametrize("backend", ["triton", "reference"])
@pytest.mark.benchmark(group=_group(TINY))
def test_tiny(benchmark, backend: str) -> None:
    _run(benchmark, backend, TINY)


# ---------------------------------------------------------------------------------------------
# roofline model

# interpolation per output pixel: 3 fused multiply-adds + 3 multiplies (an FMA counts as 2)
INTERPOLATION_FLOPS = 9


class Gpu(NamedTuple):
    name: str
    bandwidth: float  # HBM bytes / s
    fp32: float  # FLOP / s (non-tensor-core, FMA = 2)


GPUS = (Gpu("A100", 1.555e12, 19.5e12), Gpu("H100 SXM", 3.35e12, 67e12))


class Cost(NamedTuple):
    flops: float
    bytes: float


def fused_cost(shape: Shape, input_bytes: int = 4) -> Cost:
    """One kernel: reads the low-res logits once, writes one byte per output pixel and the
    counts; per pixel the interpolation plus a compare and an add (count) per threshold."""
    pixels = shape.masks * shape.size[0] * shape.size[1]
    thresholds = 1 if shape.stability_offset is None else 3
    low_res = shape.masks * shape.low_res[0] * shape.low_res[1] * input_bytes
    return Cost(
        flops=pixels * (INTERPOLATION_FLOPS + 2 * thresholds),
        bytes=low_res + pixels + shape.masks * thresholds * 4,
    )


def unfused_cost(shape: Shape, input_bytes: int = 4) -> Cost:
    """The official sequence, each op a pass over memory: ``F.interpolate`` writes float32
    logits (4 B / pixel); ``> threshold`` reads them and writes bool (4 + 1); with stability,
    ``calculate_stability_score`` does that twice more and sums each bool mask (2 x (4 + 1 + 1),
    the int16 row sums ignored)."""
    pixels = shape.masks * shape.size[0] * shape.size[1]
    low_res = shape.masks * shape.low_res[0] * shape.low_res[1] * input_bytes
    per_pixel_bytes, per_pixel_flops = 4 + 5, INTERPOLATION_FLOPS + 1
    if shape.stability_offset is not None:
        per_pixel_bytes += 2 * 6
        per_pixel_flops += 2 * 2
    return Cost(flops=pixels * per_pixel_flops, bytes=low_res + pixels * per_pixel_bytes)


def roofline_seconds(cost: Cost, gpu: Gpu) -> float:
    return max(cost.flops / gpu.fp32, cost.bytes / gpu.bandwidth)


def roofline_table(shapes: tuple[Shape, ...] = (PREDICT, AMG_BATCH)) -> str:
    header = (
        f"{'shape':<34} {'version':<8} {'MFLOP':>8} {'MB':>9} {'FLOP/B':>7}"
        + "".join(f" {gpu.name + ' us':>12}" for gpu in GPUS)
    )
    lines = [header, "-" * len(header)]
    for shape in shapes:
        label = f"{shape.name} {shape.masks}x{shape.low_res[0]}^2->{shape.size[0]}x{shape.size[1]}"
        costs = {"fused": fused_cost(shape), "unfused": unfused_cost(shape)}
        for version, cost in costs.items():
            times = "".join(f" {roofline_seconds(cost, gpu) * 1e6:>12.1f}" for gpu in GPUS)
            lines.append(
                f"{label:<34} {version:<8} {cost.flops / 1e6:>8.1f} {cost.bytes / 1e6:>9.1f}"
                f" {cost.flops / cost.bytes:>7.1f}{times}"
            )
        ratios = [
            roofline_seconds(costs["unfused"], gpu) / roofline_seconds(costs["fused"], gpu)
            for gpu in GPUS
        ]
        speedups = "".join(f" {ratio:>11.1f}x" for ratio in ratios)
        lines.append(f"{label:<34} {'speedup':<8} {'':>8} {'':>9} {'':>7}{speedups}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(roofline_table())
