"""The automatic mask generator's ops on CPU: the cpp backend vs the torch reference, and vs the
official implementations where they are importable (``sam2.utils.amg``, pycocotools,
torchvision).

One benchmark group per op and input, so the table shows the ratio between implementations::

    pytest bench/ops/bench_mask_ops.py --benchmark-group-by=group \
        --benchmark-columns=min,median,rounds
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import pytest
import torch

from sam2_fast._ext import load_extension
from sam2_fast.ops import (
    box_nms,
    masks_to_boxes,
    masks_to_rle,
    rle_encode,
    rle_to_masks,
    use_backend,
)

N_MASKS, HEIGHT, WIDTH = 64, 720, 1280
N_BOXES = 3000


def _official(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pytest.skip(f"{module} is not importable: {exc}")


@pytest.fixture(params=["cpp", "reference", "official"])
def impl(request: pytest.FixtureRequest) -> str:
    if request.param == "cpp":
        ext, reason = load_extension()
        if ext is None:
            pytest.skip(f"sam2_fast._C {reason}")
    return request.param


@pytest.fixture(scope="module")
def masks() -> torch.Tensor:
    """[64, 720, 1280] bool: smooth blobs of about a third of the image, as the generator's
    masks after upsampling (a few hundred runs per mask)."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.randn(N_MASKS, 1, 12, 20, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(HEIGHT, WIDTH), mode="bilinear")
    return smooth[:, 0] > 0.4


@pytest.fixture(scope="module")
def boxes_and_scores(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """3000 float32 boxes of mask-like sizes over a 720x1280 image, random scores."""
    generator = torch.Generator().manual_seed(1)
    corners = torch.rand(N_BOXES, 2, generator=generator) * torch.tensor([WIDTH, HEIGHT])
    sizes = torch.rand(N_BOXES, 2, generator=generator) * torch.tensor([400.0, 300.0]) + 4
    return torch.cat([corners, corners + sizes], 1), torch.rand(N_BOXES, generator=generator)


def _ours(op: str, backend: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any) -> Any:
        with use_backend(backend, op=op):
            return fn(*args)

    return run


@pytest.mark.benchmark(group=f"rle_encode [{N_MASKS}, {HEIGHT}, {WIDTH}] bool -> run lengths")
def test_rle_encode(benchmark, impl: str, masks: torch.Tensor) -> None:
    if impl == "official":
        pytest.skip("the official package has no flat-tensor encoder; see masks_to_rle")
    counts, offsets = benchmark(_ours("rle_encode", impl, rle_encode), masks)
    assert offsets.numel() == N_MASKS + 1


@pytest.mark.benchmark(group=f"masks_to_rle [{N_MASKS}, {HEIGHT}, {WIDTH}] -> uncompressed dicts")
def test_masks_to_rle(benchmark, impl: str, masks: torch.Tensor) -> None:
    if impl == "official":
        fn = _official("sam2.utils.amg").mask_to_rle_pytorch
    else:
        fn = _ours("rle_encode", impl, masks_to_rle)
    rles = benchmark(fn, masks)
    assert len(rles) == N_MASKS


@pytest.mark.benchmark(group=f"masks_to_rle [{N_MASKS}, {HEIGHT}, {WIDTH}] -> compressed dicts")
def test_masks_to_rle_compressed(benchmark, impl: str, masks: torch.Tensor) -> None:
    if impl == "official":
        amg = _official("sam2.utils.amg")
        _official("pycocotools.mask")

        def fn(m: torch.Tensor) -> list[dict]:
            return [amg.coco_encode_rle(rle) for rle in amg.mask_to_rle_pytorch(m)]

    else:
        run = _ours("rle_encode_compressed", impl, masks_to_rle)

        def fn(m: torch.Tensor) -> list[dict]:
            return run(m, True)

    rles = benchmark(fn, masks)
    assert len(rles) == N_MASKS


@pytest.mark.benchmark(group=f"rle_to_masks {N_MASKS} uncompressed dicts -> [{HEIGHT}, {WIDTH}]")
def test_rle_to_masks(benchmark, impl: str, masks: torch.Tensor) -> None:
    rles = masks_to_rle(masks)
    if impl == "official":
        amg = _official("sam2.utils.amg")

        def fn(dicts: list[dict]) -> list:
            return [amg.rle_to_mask(rle) for rle in dicts]

    else:
        fn = _ours("rle_decode", impl, rle_to_masks)
    decoded = benchmark(fn, rles)
    assert len(decoded) == N_MASKS


@pytest.mark.benchmark(group=f"masks_to_boxes [{N_MASKS}, {HEIGHT}, {WIDTH}] bool")
def test_masks_to_boxes(benchmark, impl: str, masks: torch.Tensor) -> None:
    if impl == "official":
        fn = _official("sam2.utils.amg").batched_mask_to_box
    else:
        fn = _ours("masks_to_boxes", impl, masks_to_boxes)
    boxes = benchmark(fn, masks)
    assert boxes.shape == (N_MASKS, 4)


@pytest.mark.benchmark(group=f"box_nms [{N_BOXES}, 4] float32, iou 0.7")
def test_box_nms(benchmark, impl: str, boxes_and_scores: tuple[torch.Tensor, torch.Tensor]) -> None:
    boxes, scores = boxes_and_scores
    if impl == "official":
        fn = _official("torchvision.ops").nms
    else:
        fn = _ours("box_nms", impl, box_nms)
    keep = benchmark(fn, boxes, scores, 0.7)
    assert 0 < keep.numel() <= N_BOXES
