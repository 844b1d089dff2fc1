"""The automatic mask generator's ops (COCO RLE, mask boxes, box NMS): every backend that runs
here against independent oracles: pycocotools, official ``sam2.utils.amg``
(``mask_to_rle_pytorch``, ``coco_encode_rle``, ``batched_mask_to_box``, ``area_from_rle``) and
``torchvision.ops.nms``; round trips; empty batches; bad input.

Everything compared here is an integer or an index: every comparison is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

from sam2_fast.ops import (
    box_nms,
    get_op,
    masks_to_boxes,
    masks_to_rle,
    rle_area,
    rle_decode,
    rle_encode,
    rle_encode_compressed,
    rle_to_masks,
    use_backend,
)

coco = pytest.importorskip("pycocotools.mask")
torchvision = pytest.importorskip("torchvision")
amg = pytest.importorskip("sam2.utils.amg")

# pycocotools' Cython decode trips a numpy 2 deprecation of its own
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(params=["cpp", "reference"])
def cpu_backend(request: pytest.FixtureRequest) -> str:
    """A backend of the ops without a CUDA kernel (rle_decode, box_nms)."""
    if request.param == "cpp":
        request.getfixturevalue("extension")
    return request.param


def device_of(backend: str) -> str:
    return "cuda" if backend == "cuda" else "cpu"


def run(op: str, backend: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` with ``backend`` forced for ``op`` (tensors moved to its device)."""
    args = tuple(a.to(device_of(backend)) if isinstance(a, torch.Tensor) else a for a in args)
    with use_backend(backend, op=op):
        assert get_op(op).select(*args).name == backend
        return fn(*args)


# ---------------------------------------------------------------------------------------------
# masks


def blob(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - h * 0.4) ** 2 + (xx - w * 0.6) ** 2 < (min(h, w) * 0.3) ** 2


def mask_batch(h: int, w: int, seed: int) -> torch.Tensor:
    """[13, h, w] bool: empty, full, random at three densities, a single pixel in each corner,
    a blob, horizontal and vertical stripes, and one mask with ragged columns."""
    rng = np.random.default_rng(seed)
    masks = [np.zeros((h, w), bool), np.ones((h, w), bool)]
    masks += [rng.random((h, w)) < density for density in (0.1, 0.5, 0.9)]
    for y, x in ((0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)):
        corner = np.zeros((h, w), bool)
        corner[y, x] = True
        masks.append(corner)
    masks.append(blob(h, w))
    masks.append(np.tile((np.arange(h) % 3 == 0)[:, None], (1, w)))
    masks.append(np.tile(np.arange(w) % 4 == 1, (h, 1)))
    masks.append(np.arange(h)[:, None] < rng.integers(0, h + 1, size=w))
    return torch.from_numpy(np.stack(masks))


# widths around the C++ encoder's 8-column words; long thin masks; a multiple-chunk RLE string
SIZES = [(1, 1), (1, 2), (2, 1), (1, 37), (37, 1), (5, 7), (5, 8), (5, 9), (7, 13), (16, 64),
         (33, 17), (64, 48), (257, 131)]
SIZE_IDS = [f"{h}x{w}" for h, w in SIZES]


@pytest.fixture(params=SIZES, ids=SIZE_IDS)
def masks(request: pytest.FixtureRequest) -> torch.Tensor:
    h, w = request.param
    return mask_batch(h, w, seed=h * 1000 + w)


def official_rle(masks: torch.Tensor) -> list[dict]:
    """Official SAM 2's uncompressed RLE dicts of bool masks."""
    return amg.mask_to_rle_pytorch(masks.bool())


def pycocotools_string(mask: torch.Tensor) -> bytes:
    return coco.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))["counts"]


# ---------------------------------------------------------------------------------------------
# rle_encode / rle_encode_compressed vs official sam2 and pycocotools


def split(flat: torch.Tensor, offsets: torch.Tensor) -> list[list[int]]:
    bounds = offsets.tolist()
    values = flat.tolist()
    return [values[a:b] for a, b in zip(bounds, bounds[1:])]


def test_rle_encode_matches_official(backend: str, masks: torch.Tensor) -> None:
    counts, offsets = run("rle_encode", backend, rle_encode, masks)
    assert counts.dtype == torch.int64 and offsets.dtype == torch.int64
    assert counts.device.type == device_of(backend) == offsets.device.type
    assert offsets.shape == (len(masks) + 1,)
    expected = [rle["counts"] for rle in official_rle(masks)]
    assert split(counts.cpu(), offsets.cpu()) == expected


def test_rle_encode_compressed_matches_pycocotools(backend: str, masks: torch.Tensor) -> None:
    chars, offsets = run("rle_encode_compressed", backend, rle_encode_compressed, masks)
    assert chars.dtype == torch.uint8 and offsets.dtype == torch.int64
    assert chars.device.type == "cpu" and offsets.device.type == "cpu"
    strings = [bytes(s) for s in split(chars, offsets)]
    assert strings == [pycocotools_string(mask) for mask in masks]


def test_masks_to_rle_matches_official_dicts(backend: str, masks: torch.Tensor) -> None:
    with use_backend(backend, op="rle_encode"), use_backend(backend, op="rle_encode_compressed"):
        uncompressed = masks_to_rle(masks.to(device_of(backend)))
        compressed = masks_to_rle(masks.to(device_of(backend)), compressed=True)
    expected = official_rle(masks)
    assert uncompressed == expected
    assert compressed == [amg.coco_encode_rle(rle) for rle in expected]
    assert all(isinstance(rle["counts"], str) for rle in compressed)


def test_long_runs_need_several_characters(backend: str) -> None:
    """Run lengths and their (negative) differences of up to 2^21: 5 characters each."""
    big = torch.from_numpy(np.stack([blob(1080, 1920), ~blob(1080, 1920)]))
    thin = torch.from_numpy(np.repeat(np.random.default_rng(5).random((40, 1)) < 0.5, 3000, 1))
    for masks in (big, thin.reshape(1, 3000, 40)):
        chars, offsets = run("rle_encode_compressed", backend, rle_encode_compressed, masks)
        assert [bytes(s) for s in split(chars, offsets)] == [pycocotools_string(m) for m in masks]


def test_uint8_nonzero_is_foreground(backend: str) -> None:
    values = torch.tensor([[[0, 1, 0, 255], [7, 0, 0, 128], [0, 0, 3, 0]]], dtype=torch.uint8)
    for op, fn in (("rle_encode", rle_encode), ("rle_encode_compressed", rle_encode_compressed)):
        got = run(op, backend, fn, values)
        expected = run(op, backend, fn, values != 0)
        assert all(torch.equal(a.cpu(), b.cpu()) for a, b in zip(got, expected))


def test_non_contiguous_masks(backend: str) -> None:
    base = mask_batch(24, 17, seed=3)
    masks = base.transpose(1, 2)
    assert not masks.is_contiguous()
    for op, fn in (("rle_encode", rle_encode), ("rle_encode_compressed", rle_encode_compressed)):
        got = run(op, backend, fn, masks)
        expected = run(op, backend, fn, masks.contiguous())
        assert all(torch.equal(a.cpu(), b.cpu()) for a, b in zip(got, expected))


@pytest.mark.parametrize("shape", [(0, 4, 5), (3, 0, 5), (3, 5, 0), (2, 0, 0)])
def test_encode_empty_tensors(backend: str, shape: tuple[int, int, int]) -> None:
    """No masks: no runs. Masks without pixels: the single run 0 (string "0"), as pycocotools."""
    masks = torch.zeros(shape, dtype=torch.bool)
    counts, offsets = run("rle_encode", backend, rle_encode, masks)
    chars, char_offsets = run("rle_encode_compressed", backend, rle_encode_compressed, masks)
    n = shape[0]
    assert counts.tolist() == [0] * n and offsets.tolist() == list(range(n + 1))
    assert bytes(chars.tolist()) == b"0" * n and char_offsets.tolist() == list(range(n + 1))
    if n:
        assert pycocotools_string(masks[0]) == b"0"


# ---------------------------------------------------------------------------------------------
# rle_decode and the dict layer: round trips, pycocotools' output, areas


def test_rle_decode_inverts_rle_encode(cpu_backend: str, masks: torch.Tensor) -> None:
    counts, offsets = rle_encode(masks)
    h, w = masks.shape[1:]
    decoded = run("rle_decode", cpu_backend, rle_decode, counts, offsets, h, w)
    assert decoded.dtype == torch.bool and torch.equal(decoded, masks)


def test_rle_to_masks_round_trips_both_forms(cpu_backend: str, masks: torch.Tensor) -> None:
    with use_backend(cpu_backend, op="rle_decode"):
        for compressed in (False, True):
            assert torch.equal(rle_to_masks(masks_to_rle(masks, compressed=compressed)), masks)


def test_rle_to_masks_reads_pycocotools_and_official_rles(cpu_backend: str) -> None:
    masks = mask_batch(33, 17, seed=1)
    from_pycocotools = [coco.encode(np.asfortranarray(m.numpy().astype(np.uint8))) for m in masks]
    assert isinstance(from_pycocotools[0]["counts"], bytes)
    with use_backend(cpu_backend, op="rle_decode"):
        assert torch.equal(rle_to_masks(from_pycocotools), masks)
        assert torch.equal(rle_to_masks(official_rle(masks)), masks)



def test_pycocotools_and_official_read_our_rles() -> None:
    masks = mask_batch(33, 17, seed=2)
    for mask, uncompressed, compressed in zip(
        masks, masks_to_rle(masks), masks_to_rle(masks, compressed=True)
    ):
        np.testing.assert_array_equal(coco.decode(compressed), mask.numpy())
        np.testing.assert_array_equal(amg.rle_to_mask(uncompressed), mask.numpy())


def test_rle_area_matches_pycocotools_and_official(masks: torch.Tensor) -> None:
    for mask, uncompressed, compressed in zip(
        masks, masks_to_rle(masks), masks_to_rle(masks, compressed=True)
    ):
        expected = int(mask.sum())
        assert rle_area(uncompressed) == rle_area(compressed) == expected
        assert amg.area_from_rle(uncompressed) == expected
        assert int(coco.area(coco.frPyObjects(uncompressed, *mask.shape))) == expected


@pytest.mark.parametrize("shape", [(0, 4, 5), (3, 0, 5), (3, 5, 0)])
def test_decode_empty_tensors(cpu_backend: str, shape: tuple[int, int, int]) -> None:
    masks = torch.zeros(shape, dtype=torch.bool)
    counts, offsets = rle_encode(masks)
    decoded = run("rle_decode", cpu_backend, rle_decode, counts, offsets, *shape[1:])
    assert decoded.shape == shape and decoded.dtype == torch.bool
    assert rle_to_masks([]).shape == (0, 0, 0)


# ---------------------------------------------------------------------------------------------
# masks_to_boxes vs official batched_mask_to_box


def test_masks_to_boxes_matches_official(backend: str, masks: torch.Tensor) -> None:
    boxes = run("masks_to_boxes", backend, masks_to_boxes, masks)
    assert boxes.dtype == torch.int64 and boxes.device.type == device_of(backend)
    assert torch.equal(boxes.cpu(), amg.batched_mask_to_box(masks))


@pytest.mark.parametrize("shape", [(9, 11), (2, 3, 9, 11), (1, 1, 1, 5, 1)])
def test_masks_to_boxes_keeps_leading_dims(backend: str, shape: tuple[int, ...]) -> None:
    masks = torch.rand(shape, generator=torch.Generator().manual_seed(2)) < 0.2
    boxes = run("masks_to_boxes", backend, masks_to_boxes, masks).cpu()
    assert boxes.shape == (*shape[:-2], 4)
    assert torch.equal(boxes, amg.batched_mask_to_box(masks))


@pytest.mark.parametrize("shape", [(0, 4, 5), (3, 0, 5), (3, 5, 0), (2, 0, 3, 3)])
def test_masks_to_boxes_of_empty_tensors(backend: str, shape: tuple[int, ...]) -> None:
    boxes = run("masks_to_boxes", backend, masks_to_boxes, torch.zeros(shape, dtype=torch.bool))
    assert boxes.dtype == torch.int64 and boxes.shape == (*shape[:-2], 4)
    # the official function returns float32 zeros for inputs without elements
    official = amg.batched_mask_to_box(torch.zeros(shape, dtype=torch.bool))
    assert torch.equal(boxes.cpu(), official.long())
    assert not boxes.any()


def test_masks_to_boxes_uint8_nonzero_is_foreground(backend: str) -> None:
    values = torch.zeros(2, 6, 7, dtype=torch.uint8)
    values[0, 1, 2], values[0, 4, 5], values[1, 3, 3] = 200, 7, 2
    boxes = run("masks_to_boxes", backend, masks_to_boxes, values).cpu()
    assert boxes.tolist() == [[2, 1, 5, 4], [3, 3, 3, 3]]


# ---------------------------------------------------------------------------------------------
# box_nms vs torchvision.ops.nms


def random_boxes(n: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    corners = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 100
    sizes = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 40
    return torch.cat([corners, corners + sizes], dim=1).to(dtype)


def integer_boxes(n: int, seed: int) -> torch.Tensor:
    """Boxes on a coarse pixel grid, as masks_to_boxes gives: many equal IoUs and duplicates."""
    generator = torch.Generator().manual_seed(seed)
    corners = torch.randint(0, 8, (n, 2), generator=generator)
    sizes = torch.randint(0, 6, (n, 2), generator=generator)
    return torch.cat([corners, corners + sizes], dim=1).float()


def assert_nms_matches_torchvision(
    backend: str, boxes: torch.Tensor, scores: torch.Tensor, threshold: float
) -> None:
    keep = run("box_nms", backend, box_nms, boxes, scores, threshold)
    assert keep.dtype == torch.int64
    expected = torchvision.ops.nms(boxes, scores, threshold)
    assert keep.tolist() == expected.tolist()
    batched = torchvision.ops.batched_nms(boxes, scores, torch.zeros_like(scores), threshold)
    assert keep.tolist() == batched.tolist()  # how official SAM 2 calls it


THRESHOLDS = [0.0, 0.3, 0.5, 0.7, 0.95, 1.0]


@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_box_nms_matches_torchvision(
    cpu_backend: str, dtype: torch.dtype, threshold: float
) -> None:
    boxes = random_boxes(600, seed=int(threshold * 100), dtype=dtype)
    scores = torch.rand(600, generator=torch.Generator().manual_seed(1), dtype=dtype)
    assert_nms_matches_torchvision(cpu_backend, boxes, scores, threshold)


@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_box_nms_ties_and_duplicates(cpu_backend: str, threshold: float) -> None:
    """Scores on 4 levels (ties everywhere) and grid boxes (duplicates, equal IoUs): equal
    scores keep input order."""
    boxes = integer_boxes(400, seed=3)
    boxes = torch.cat([boxes, boxes[:50]])  # exact duplicates with the same scores
    scores = torch.randint(0, 4, (400,), generator=torch.Generator().manual_seed(4)).float()
    scores = torch.cat([scores, scores[:50]])
    assert_nms_matches_torchvision(cpu_backend, boxes, scores, threshold)
    same = torch.ones(len(boxes))
    assert_nms_matches_torchvision(cpu_backend, boxes, same, threshold)


def test_box_nms_degenerate_boxes(cpu_backend: str) -> None:
    """Zero-area boxes (IoU 0 / 0 = NaN is never > threshold) and inverted boxes."""
    boxes = torch.tensor(
        [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 5], [2, 2, 6, 6], [6, 6, 2, 2], [2, 2, 6, 6]],
        dtype=torch.float32,
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.6])
    for threshold in (0.0, 0.5):
        assert_nms_matches_torchvision(cpu_backend, boxes, scores, threshold)


def test_box_nms_compares_float_iou_in_double(cpu_backend: str) -> None:
    """IoU 3 / 10 rounds to float32 0.30000001 > 0.3 (double): suppressed, as torchvision; an
    IoU equal to the threshold (0.5 exactly) is kept."""
    boxes = torch.tensor([[0, 0, 10, 1], [0, 0, 3, 1], [20, 0, 24, 1], [20, 0, 22, 1]]).float()
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    keep = run("box_nms", cpu_backend, box_nms, boxes, scores, 0.3)
    assert keep.tolist() == [0, 2] == torchvision.ops.nms(boxes, scores, 0.3).tolist()
    keep = run("box_nms", cpu_backend, box_nms, boxes, scores, 0.5)
    assert keep.tolist() == [0, 1, 2, 3] == torchvision.ops.nms(boxes, scores, 0.5).tolist()


@pytest.mark.parametrize("n", [0, 1, 2])
def test_box_nms_few_boxes(cpu_backend: str, n: int) -> None:
    boxes, scores = random_boxes(n, seed=n), torch.rand(n)
    assert_nms_matches_torchvision(cpu_backend, boxes, scores, 0.5)


def test_box_nms_amg_scale(cpu_backend: str) -> None:
    """3000 boxes of masks, the generator's threshold."""
    boxes = integer_boxes(3000, seed=9) * 16
    scores = torch.rand(3000, generator=torch.Generator().manual_seed(9))
    assert_nms_matches_torchvision(cpu_backend, boxes, scores, 0.7)


def test_box_nms_half_precision_runs_the_reference() -> None:
    boxes, scores = random_boxes(10, seed=0).half(), torch.rand(10).half()
    verdicts = get_op("box_nms").explain(boxes, scores, 0.5)
    assert verdicts["cpp"] == "boxes are torch.float16, this backend runs float32 and float64"
    assert verdicts["reference"] is None
    assert box_nms(boxes, scores, 0.5).dtype == torch.int64


# ---------------------------------------------------------------------------------------------
# bad input


BAD_MASKS = [
    ([[True]], TypeError, r"masks must be a torch.Tensor, got list"),
    (torch.zeros(4, 5, dtype=torch.bool), ValueError,
     r"masks must be \[N, H, W\], got shape \[4, 5\]"),
    (torch.zeros(1, 4, 5), TypeError, r"masks must be bool or uint8 \(nonzero = foreground\), got "
     r"torch.float32"),
]


@pytest.mark.parametrize("fn", [rle_encode, rle_encode_compressed, masks_to_rle])
@pytest.mark.parametrize("masks, error, message", BAD_MASKS, ids=["list", "2d", "float"])
def test_encoders_reject_bad_masks(fn: Callable, masks: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=f"{fn.__name__}: {message}"):
        fn(masks)


COUNTS, OFFSETS = torch.tensor([1, 2, 3, 0, 6]), torch.tensor([0, 3, 5])  # two 2x3 masks


@pytest.mark.parametrize(
    "counts, offsets, height, width, error, message",
    [
        (COUNTS.int(), OFFSETS, 2, 3, TypeError, r"counts must be int64, got torch.int32"),
        (COUNTS, OFFSETS.float(), 2, 3, TypeError, r"offsets must be int64, got torch.float32"),
        (COUNTS[None], OFFSETS, 2, 3, ValueError, r"counts must be 1-D \[total\], got \[1, 5\]"),
        (COUNTS, OFFSETS[:0], 2, 3, ValueError, r"offsets must be 1-D \[N \+ 1\], got \[0\]"),
        (COUNTS, OFFSETS, -2, 3, ValueError, r"height must be >= 0, got -2"),
        (COUNTS, OFFSETS, 2, 3.0, TypeError, r"width must be an int, got float"),
        (COUNTS, [0, 3, 5], 2, 3, TypeError, r"offsets must be a torch.Tensor, got list"),
    ],
)
def test_rle_decode_rejects_bad_arguments(
    counts: Any, offsets: Any, height: Any, width: Any, error: type, message: str
) -> None:
    with pytest.raises(error, match=f"rle_decode: {message}"):
        rle_decode(counts, offsets, height, width)


@pytest.mark.parametrize(
    "counts, offsets, message",
    [
        ([1, 2, 3, 1, 4], [0, 3, 5], r"the runs of mask 1 cover 5 pixels, expected height \* "
         r"width = 2 \* 3 = 6"),
        ([1, 2, 3, 9, -3], [0, 3, 5], r"run 1 of mask 1 has negative length -3"),
        ([6, 0, 6, 1], [0, 1, 4], r"the runs of mask 1 cover 7 pixels, expected"),
        ([1, 2, 3, 0, 6], [0, 3, 4], r"offsets must run from 0 to counts.numel\(\) = 5, got "
         r"offsets\[0\] = 0 and offsets\[-1\] = 4"),
        ([6, 6], [0, 2, 1, 2], r"offsets must not decrease, got offsets\[1\] = 2 > "
         r"offsets\[2\] = 1"),
    ],
    ids=["short", "negative", "long", "offsets end", "offsets decrease"],
)
def test_rle_decode_names_the_bad_mask(
    cpu_backend: str, counts: list[int], offsets: list[int], message: str
) -> None:
    with pytest.raises(ValueError, match=f"rle_decode: {message}"):
        run("rle_decode", cpu_backend, rle_decode, torch.tensor(counts), torch.tensor(offsets), 2,
            3)


@pytest.mark.parametrize(
    "rles, error, message",
    [
        ({"size": [2, 3], "counts": [6]}, TypeError,
         r"rles must be a sequence of RLE dicts, got dict"),
        ([{"size": [2, 3], "counts": [6]}, {"size": [2, 3], "counts": [1, 4]}], ValueError,
         r"rles\[1\]: rle\['counts'\]: the runs cover 5 pixels but size 2x3 has 6"),
        ([{"size": [2, 3], "counts": [6]}, {"size": [3, 2], "counts": [6]}], ValueError,
         r"rles\[1\] has size \[3, 2\] but rles\[0\] has \[2, 3\]"),
        ([{"size": [2, 3], "counts": "4P"}], ValueError, r"rles\[0\]: .*not a valid compressed"),
        ([{"size": [2, 3]}], ValueError, r"rles\[0\]: rle: expected a dict with 'size'"),
        ([{"size": [2, 3], "counts": [7, -1]}], ValueError, r"rles\[0\]: .*must be >= 0"),
    ],
    ids=["one dict", "short runs", "sizes differ", "bad string", "no counts", "negative"],
)
def test_rle_to_masks_names_the_bad_rle(rles: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=f"rle_to_masks: {message}"):
        rle_to_masks(rles)


def test_rle_area_rejects_wrong_total_length() -> None:
    with pytest.raises(ValueError, match=r"the runs cover 5 pixels but size 2x3 has 6"):
        rle_area({"size": [2, 3], "counts": [1, 4]})


@pytest.mark.parametrize(
    "masks, error, message",
    [
        (torch.zeros(5, dtype=torch.bool), ValueError,
         r"masks must be \[\.\.\., H, W\], got \[5\]"),
        (torch.zeros(2, 5, 5, dtype=torch.int32), TypeError, r"masks must be bool or uint8"),
        (np.zeros((2, 5, 5), bool), TypeError, r"masks must be a torch.Tensor, got ndarray"),
    ],
)
def test_masks_to_boxes_rejects_bad_masks(masks: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=f"masks_to_boxes: {message}"):
        masks_to_boxes(masks)


BOXES, SCORES = torch.zeros(3, 4), torch.zeros(3)


@pytest.mark.parametrize(
    "boxes, scores, threshold, error, message",
    [
        (BOXES[:, :3], SCORES, 0.5, ValueError,
         r"boxes must be \[N, 4\] \(x1, y1, x2, y2\), got \[3, 3\]"),
        (BOXES, SCORES[:2], 0.5, ValueError,
         r"scores must be \[N\] with N = boxes.size\(0\) = 3, got \[2\]"),
        (BOXES.long(), SCORES, 0.5, TypeError, r"boxes must be floating point, got torch.int64"),
        (BOXES, SCORES.long(), 0.5, TypeError, r"scores must be floating point, got torch.int64"),
        (BOXES, SCORES, "0.5", TypeError, r"iou_threshold must be a real number, got str"),
        (BOXES, SCORES, float("nan"), ValueError, r"iou_threshold must not be NaN"),
        (BOXES, SCORES.to("meta"), 0.5, ValueError, r"boxes and scores must be on one device"),
        ([[0, 0, 1, 1]], SCORES, 0.5, TypeError, r"boxes must be a torch.Tensor, got list"),
    ],
    ids=["boxes shape", "scores shape", "int boxes", "int scores", "str threshold", "nan",
         "devices", "list"],
)
def test_box_nms_rejects_bad_arguments(
    boxes: Any, scores: Any, threshold: Any, error: type, message: str
) -> None:
    with pytest.raises(error, match=f"box_nms: {message}"):
        box_nms(boxes, scores, threshold)


def test_compiled_ops_run_on_torchs_threads(extension: ModuleType) -> None:
    """at::parallel_for is inline: an extension compiled without OpenMP runs it serially under
    torch's OpenMP backend (it did before build 2026-11-26, on every C++ op)."""
    if torch.backends.openmp.is_available():
        assert extension.build_info()["openmp"], "torch uses OpenMP but the extension was built without"
    threads = torch.get_num_threads()
    try:
        for n in sorted({1, threads}):
            torch.set_num_threads(n)
            assert torch.ops.sam2_fast.parallel_threads(8) == min(n, 8)
            assert torch.ops.sam2_fast.parallel_threads(1) == 1
            assert torch.ops.sam2_fast.parallel_threads(0) == 0
    finally:
        torch.set_num_threads(threads)


def test_compiled_ops_check_their_inputs(extension: ModuleType) -> None:
    """Called directly (torch.ops.sam2_fast.*), the C++ ops raise the same kinds of errors."""
    ops = torch.ops.sam2_fast
    with pytest.raises(ValueError, match=r"rle_encode: masks must be \[N, H, W\]"):
        ops.rle_encode(torch.zeros(4, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"rle_encode_compressed: masks must be bool or uint8"):
        ops.rle_encode_compressed(torch.zeros(1, 4, 5))
    with pytest.raises(ValueError, match=r"rle_decode: the runs of mask 0 cover 5 pixels"):
        ops.rle_decode(torch.tensor([5]), torch.tensor([0, 1]), 2, 3)
    with pytest.raises(ValueError, match=r"masks_to_boxes: masks must be \[\.\.\., H, W\]"):
        ops.masks_to_boxes(torch.zeros(5, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"box_nms: boxes must be float32 or float64"):
        ops.box_nms(torch.zeros(2, 4, dtype=torch.half), torch.zeros(2), 0.5)


# ---------------------------------------------------------------------------------------------
# registration: schemas, fake kernels, dispatcher verdicts


OPCHECK_ARGS = {
    "rle_encode": (mask_batch(5, 7, seed=0),),
    "rle_encode_compressed": (mask_batch(5, 7, seed=0),),
    "rle_decode": (torch.tensor([35, 0, 35, 10, 25]), torch.tensor([0, 1, 3, 5]), 5, 7),
    "masks_to_boxes": (mask_batch(5, 7, seed=0).reshape(13, 1, 5, 7),),
    "box_nms": (random_boxes(20, seed=0), torch.rand(20), 0.5),
}


@pytest.mark.parametrize("name", list(OPCHECK_ARGS))
def test_compiled_op_passes_opcheck(extension: ModuleType, name: str) -> None:
    """Schema, fake kernel (data-dependent output sizes included) and AOT dispatch."""
    if not hasattr(torch.library, "opcheck"):
        pytest.skip(f"torch.library.opcheck needs torch >= 2.4, got {torch.__version__}")
    torch.library.opcheck(getattr(torch.ops.sam2_fast, name).default, OPCHECK_ARGS[name])


@pytest.mark.parametrize("name", ["rle_encode", "rle_encode_compressed", "masks_to_boxes"])
def test_cuda_kernels_registered_when_cuda_ops_compiled(
    extension: ModuleType, expect_cuda_build: bool, name: str
) -> None:
    """No GPU here: check that the CUDA kernels were compiled and registered."""
    info = extension.build_info()
    if not info["cuda"] and not expect_cuda_build:
        pytest.skip(f"CUDA ops not compiled in this build: {info['cuda_skip_reason']}")
    assert info["cuda"], info["cuda_skip_reason"]
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"sam2_fast::{name}", "CUDA")


def test_compiled_backends_explain_their_refusals() -> None:
    masks = torch.zeros(2, 4, 4, dtype=torch.bool, device="meta")
    verdicts = get_op("rle_encode").explain(masks)
    assert verdicts["cpp"] == "masks are on meta, this backend runs on cpu"
    assert verdicts["cuda"] == "masks are on meta, this backend runs on cuda"
    counts = torch.zeros(2, dtype=torch.int64, device="meta")
    verdicts = get_op("rle_decode").explain(counts, counts, 4, 4)
    assert verdicts["cpp"] == "counts are on meta, this backend runs on cpu"


@pytest.mark.parametrize("op", ["rle_encode", "masks_to_boxes"])
def test_cuda_backends_measured_slower_are_passed_over(op: str) -> None:
    """On an H200 the torch reference beat these CUDA kernels on the same GPU tensors
    (bench/gpu/README.md): automatic selection skips them, forcing still runs them."""
    backend = get_op(op).backend("cuda")
    assert "measured slower" in backend.prefer(torch.zeros(1, 4, 4, dtype=torch.bool))
    assert get_op("connected_components").backend("cuda").prefer(torch.zeros(1, 1, 4, 4, dtype=torch.bool)) is None
