"""connected_components and fill_holes_and_sprinkles on CPU: the cpp backend vs the reference.

One benchmark group per op and input, so the table shows the ratio between backends::

    pytest bench/ops/bench_connected_components.py --benchmark-columns=min,median,rounds
"""

from __future__ import annotations

import pytest
import torch

from sam2_fast._ext import load_extension
from sam2_fast.ops import connected_components, fill_holes_and_sprinkles, use_backend

OP = "connected_components"


@pytest.fixture(params=["cpp", "reference"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "cpp":
        ext, reason = load_extension()
        if ext is None:
            pytest.skip(f"sam2_fast._C {reason}")
    return request.param


@pytest.fixture(scope="module")
def masks() -> torch.Tensor:
    """[16, 1, 256, 256] random bool masks at density 0.5 (SAM 2's low-res mask size)."""
    return torch.rand(16, 1, 256, 256, generator=torch.Generator().manual_seed(0)) < 0.5


@pytest.fixture(scope="module")
def logits() -> torch.Tensor:
    """[4, 3, 256, 256] smooth logits plus noise: blobs with holes and sprinkles."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.randn(12, 1, 32, 32, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(256, 256), mode="bilinear")
    return (smooth + 0.5 * torch.randn(12, 1, 256, 256, generator=generator)).reshape(
        4, 3, 256, 256
    )


@pytest.mark.benchmark(group="connected_components [16, 1, 256, 256] bool, density 0.5")
def test_connected_components(benchmark, backend: str, masks: torch.Tensor) -> None:
    with use_backend(backend, op=OP):
        labels, _ = benchmark(connected_components, masks)
    assert labels.shape == masks.shape


@pytest.mark.benchmark(group="fill_holes_and_sprinkles [4, 3, 256, 256], areas 8 / 8")
def test_fill_holes_and_sprinkles(benchmark, backend: str, logits: torch.Tensor) -> None:
    with use_backend(backend, op=OP):
        out = benchmark(fill_holes_and_sprinkles, logits, 0.0, 8, 8)
    assert out.shape == logits.shape
