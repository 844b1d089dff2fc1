"""COCO RLE (sam2_fast.ops.rle, one mask at a time) is byte-for-byte pycocotools' format, both ways."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as coco
import pytest

from sam2_fast.ops.rle import mask_to_rle, mask_to_uncompressed_rle, rle_to_bbox, rle_to_mask
from sam2_fast.ops.rle import rle_area as area

# pycocotools' Cython decode trips a numpy 2 deprecation of its own
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _coco_encode(mask: np.ndarray) -> dict:
    return coco.encode(np.asfortranarray(mask.astype(np.uint8)))


def _random_mask(shape, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random(shape) < rng.uniform(0.05, 0.95)


def _single_pixel(shape, y: int, x: int) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[y, x] = True
    return mask


def _blob(shape) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - shape[0] * 0.4) ** 2 + (xx - shape[1] * 0.6) ** 2 < (min(shape) * 0.3) ** 2


MASKS = {
    "empty": np.zeros((7, 5), bool),
    "full": np.ones((7, 5), bool),
    "single pixel first": _single_pixel((6, 9), 0, 0),
    "single pixel last": _single_pixel((6, 9), 5, 8),
    "single pixel middle": _single_pixel((6, 9), 3, 4),
    "1xN": _random_mask((1, 37), 1),
    "Nx1": _random_mask((41, 1), 2),
    "1x1 set": np.ones((1, 1), bool),
    "1x1 clear": np.zeros((1, 1), bool),
    "odd random": _random_mask((33, 17), 3),
    "odd blob": _blob((101, 77)),
    "random 64x48": _random_mask((64, 48), 4),
    # long runs whose differences need several 5-bit chunks, positive and negative
    "large blob": _blob((1080, 1920)),
    "long runs": np.repeat(_random_mask((40, 1), 5), 3000, axis=1).reshape(3000, 40),
    "rows": np.tile((np.arange(257) % 3 == 0)[:, None], (1, 131)),
    "columns": np.tile(np.arange(131) % 4 == 1, (257, 1)),
}
RANDOM = {f"random {h}x{w} seed {seed}": _random_mask((h, w), seed) for seed, (h, w) in enumerate(
    [(2, 3), (5, 5), (13, 8), (16, 16), (29, 31), (1, 2), (2, 1), (100, 3)], start=10
)}
ALL = {**MASKS, **RANDOM}


@pytest.mark.parametrize("name", list(ALL))
def test_compressed_counts_equal_pycocotools(name):
    mask = ALL[name]
    rle = mask_to_rle(mask)
    ref = _coco_encode(mask)
    assert rle == {"size": list(ref["size"]), "counts": ref["counts"].decode("ascii")}


@pytest.mark.parametrize("name", list(ALL))
def test_round_trips_through_both_implementations(name):
    mask = ALL[name]
    rle = mask_to_rle(mask)
    np.testing.assert_array_equal(rle_to_mask(rle), mask)
    np.testing.assert_array_equal(coco.decode(rle).astype(bool), mask)  # pycocotools reads our str
    np.testing.assert_array_equal(rle_to_mask(_coco_encode(mask)), mask)  # we read its bytes
    uncompressed = mask_to_uncompressed_rle(mask)
    np.testing.assert_array_equal(rle_to_mask(uncompressed), mask)
    h, w = mask.shape
    assert coco.frPyObjects(uncompressed, h, w)["counts"].decode("ascii") == rle["counts"]


@pytest.mark.parametrize("name", list(ALL))
def test_area_and_bbox_equal_pycocotools(name):
    mask = ALL[name]
    rle, ref = mask_to_rle(mask), _coco_encode(mask)
    assert area(rle) == int(coco.area(ref)) == int(mask.sum())
    assert area(mask_to_uncompressed_rle(mask)) == area(rle)
    bbox = rle_to_bbox(rle)
    assert bbox.dtype == np.float64 and bbox.shape == (4,)
    np.testing.assert_array_equal(bbox, coco.toBbox(ref))


def test_bbox_is_the_tight_box_of_a_blob():
    mask = np.zeros((50, 60), bool)
    mask[10:20, 30:45] = True
    np.testing.assert_array_equal(rle_to_bbox(mask_to_rle(mask)), [30, 10, 15, 10])


@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (3, 0)])
def test_masks_without_pixels_encode_as_pycocotools_does(shape):
    mask = np.zeros(shape, bool)
    assert mask_to_rle(mask)["counts"] == _coco_encode(mask)["counts"].decode("ascii") == "0"
    assert rle_to_mask(mask_to_rle(mask)).shape == shape
    assert area(mask_to_rle(mask)) == 0
    np.testing.assert_array_equal(rle_to_bbox(mask_to_rle(mask)), [0, 0, 0, 0])


def test_nonzero_values_count_as_set():
    mask = np.array([[0, 2], [255, 0]], np.uint8)
    assert mask_to_rle(mask) == mask_to_rle(mask > 0)


def test_rejects_masks_that_are_not_2d():
    with pytest.raises(ValueError, match=r"mask: expected a 2-D \[H, W\] array"):
        mask_to_rle(np.zeros((2, 3, 4), bool))
    with pytest.raises(ValueError, match=r"mask: expected a 2-D"):
        mask_to_uncompressed_rle(np.zeros(5, bool))


@pytest.mark.parametrize(
    "rle,message",
    [
        ({"size": [2, 2], "counts": [1, 2]}, "cover 3 pixels but size 2x2 has 4"),
        ({"size": [2, 2], "counts": [5, -1]}, ">= 0"),
        ({"size": [2, 2], "counts": "0 "}, "not a valid compressed"),
        ({"size": [2, 2], "counts": "4P"}, "not a valid compressed"),  # ends on a continuation
        ({"size": [2, 2]}, "'size'"),
        ({"size": [2], "counts": [4]}, r"rle\['size'\]"),
    ],
)
def test_rejects_malformed_rles(rle, message):
    with pytest.raises(ValueError, match=message):
        rle_to_mask(rle)


def test_the_old_module_path_is_the_same_api() -> None:
    """``sam2_fast.utils.rle`` (documented in 0.1) names the functions of sam2_fast.ops.rle."""
    import sam2_fast.ops.rle as api
    import sam2_fast.utils.rle as old

    assert old.mask_to_rle is api.mask_to_rle and old.rle_to_mask is api.rle_to_mask
    assert old.area is api.rle_area and old.rle_to_bbox is api.rle_to_bbox
    assert old.mask_to_uncompressed_rle is api.mask_to_uncompressed_rle
