"""Property-based tests of the COCO RLE ops and mask boxes (``rle_encode``,
``rle_encode_compressed``, ``rle_decode``, the dict layer and ``masks_to_boxes``) on random
masks: every shape down to 1xN, Nx1 and masks without pixels, any density, batch dims, uint8
with any nonzero value as foreground, non-contiguous storage.

Oracles: pycocotools (strings, areas, boxes), official ``sam2.utils.amg.mask_to_rle_pytorch``
(run lengths) and numpy (boxes). Every backend that runs here is checked against them, so the
backends also agree with each other. Everything compared is an integer: comparisons are exact.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fuzz_support import mask_tensors, runnable_backends
from sam2_fast.errors import InvalidInputError
from sam2_fast.ops import (
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
from sam2_fast.ops import _rle_numpy as numpy_rle
from test_mask_ops import coco, official_rle, pycocotools_string, run, split

# pycocotools' Cython decode trips a numpy 2 deprecation of its own
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# 0..3 masks; sides from 0 (masks without pixels) to 40
BATCHES = st.tuples(st.integers(0, 3))
ANY_MASKS = mask_tensors(BATCHES, min_side=0)
# [..., H, W] with up to three leading dims (some of size 0)
LEADING = st.lists(st.integers(0, 3), min_size=0, max_size=3).map(tuple)


def backends(op: str) -> list[str]:
    return runnable_backends(get_op(op))


def expected_runs(masks: torch.Tensor) -> list[list[int]]:
    """Official run lengths; a mask without pixels is the single run ``[0]`` (pycocotools;
    the official function fails on it)."""
    n, h, w = masks.shape
    if h * w == 0:
        return [[0]] * n
    return [rle["counts"] for rle in official_rle(masks != 0)]


def numpy_box(mask: np.ndarray) -> list[int]:
    """XYXY with the max inclusive (official ``batched_mask_to_box``), zeros when empty."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


@given(masks=ANY_MASKS)
def test_rle_encode_gives_official_runs_and_decodes_back_on_every_backend(masks: torch.Tensor) -> None:
    n, h, w = masks.shape
    expected = expected_runs(masks)
    for encoder in backends("rle_encode"):
        counts, offsets = run("rle_encode", encoder, rle_encode, masks)
        counts, offsets = counts.cpu(), offsets.cpu()
        runs = split(counts, offsets)
        assert runs == expected, encoder
        # canonical form: zeros first (maybe an empty run), every later run non-empty
        assert all(sum(r) == h * w and all(c > 0 for c in r[1:]) for r in runs), encoder
        for decoder in backends("rle_decode"):
            decoded = run("rle_decode", decoder, rle_decode, counts, offsets, h, w).cpu()
            assert decoded.dtype == torch.bool and decoded.shape == (n, h, w)
            assert torch.equal(decoded, masks != 0), (encoder, decoder)


@given(masks=ANY_MASKS)
def test_compressed_strings_equal_pycocotools_on_every_backend(masks: torch.Tensor) -> None:
    foreground = masks != 0
    # pycocotools reads 0/1 pixels (other values break its runs), in Fortran order
    expected = [pycocotools_string(mask) for mask in foreground]
    for backend in backends("rle_encode_compressed"):
        chars, offsets = run("rle_encode_compressed", backend, rle_encode_compressed, masks)
        assert [bytes(s) for s in split(chars, offsets)] == expected, backend
        with use_backend(backend, op="rle_encode_compressed"):
            dicts = masks_to_rle(masks, compressed=True)
        assert [d["counts"].encode("ascii") for d in dicts] == expected, backend
        assert all(d["size"] == list(masks.shape[1:]) for d in dicts)
    numpy_strings = [numpy_rle.mask_to_rle(m.numpy())["counts"].encode("ascii") for m in foreground]
    assert numpy_strings == expected


@given(masks=mask_tensors(BATCHES))
def test_rle_dicts_round_trip_and_give_the_pixel_count(masks: torch.Tensor) -> None:
    foreground = masks != 0
    for backend in backends("rle_encode"):
        with use_backend(backend, op="rle_encode"), use_backend(backend, op="rle_encode_compressed"):
            uncompressed = masks_to_rle(masks)
            compressed = masks_to_rle(masks, compressed=True)
        for mask, plain, packed in zip(foreground, uncompressed, compressed):
            area = int(mask.sum())
            assert rle_area(plain) == rle_area(packed) == area, backend
            assert sum(plain["counts"][1::2]) == area
            coco_rle = {"size": packed["size"], "counts": packed["counts"].encode("ascii")}
            assert int(coco.area(coco_rle)) == area
            np.testing.assert_array_equal(coco.decode(coco_rle), mask.numpy())
        for decoder in backends("rle_decode"):
            with use_backend(decoder, op="rle_decode"):
                for rles in (uncompressed, compressed):
                    if len(rles):
                        assert torch.equal(rle_to_masks(rles), foreground), (backend, decoder)


@given(masks=mask_tensors(BATCHES))
def test_rle_to_masks_reads_pycocotools_rles(masks: torch.Tensor) -> None:
    foreground = masks != 0
    rles = [coco.encode(np.asfortranarray(m.numpy().astype(np.uint8))) for m in foreground]
    for decoder in backends("rle_decode"):
        with use_backend(decoder, op="rle_decode"):
            if rles:
                assert torch.equal(rle_to_masks(rles), foreground), decoder


@given(masks=mask_tensors(LEADING))
def test_masks_to_boxes_is_the_inclusive_xyxy_box_on_every_backend(masks: torch.Tensor) -> None:
    *batch, h, w = masks.shape
    flat = (masks != 0).reshape(-1, h, w).numpy()
    expected = torch.tensor([numpy_box(m) for m in flat], dtype=torch.int64).reshape(*batch, 4)
    for backend in backends("masks_to_boxes"):
        boxes = run("masks_to_boxes", backend, masks_to_boxes, masks).cpu()
        assert boxes.dtype == torch.int64 and torch.equal(boxes, expected), backend
    # pycocotools' (x, y, width, height) box of the same mask: the max corner is inclusive
    for mask, box in zip(flat, expected.reshape(-1, 4).tolist()):
        coco_box = coco.toBbox(coco.encode(np.asfortranarray(mask.astype(np.uint8)))).tolist()
        x0, y0, x1, y1 = box
        assert coco_box == ([x0, y0, x1 - x0 + 1, y1 - y0 + 1] if mask.any() else [0, 0, 0, 0])
        assert numpy_rle.rle_to_bbox(numpy_rle.mask_to_rle(mask)).tolist() == coco_box


@given(
    masks=mask_tensors(st.tuples(st.integers(1, 3)), max_side=12),
    data=st.data(),
)
def test_rle_decode_rejects_corrupt_runs_alike_on_every_backend(masks: torch.Tensor, data: st.DataObject) -> None:
    """A run changed by a nonzero amount no longer covers ``H * W`` pixels (or is negative):
    every backend raises InvalidInputError with the same message, naming the mask."""
    h, w = masks.shape[1:]
    counts, offsets = rle_encode(masks)
    index = data.draw(st.integers(0, counts.numel() - 1), label="run index")
    delta = data.draw(st.sampled_from([-3, -2, -1, 1, 2, 3]), label="delta")
    corrupt = counts.clone()
    corrupt[index] += delta
    messages = {}
    for decoder in backends("rle_decode"):
        with pytest.raises(InvalidInputError, match=r"rle_decode: .*mask \d") as info:
            run("rle_decode", decoder, rle_decode, corrupt, offsets, h, w)
        messages[decoder] = str(info.value)
    assert len(set(messages.values())) == 1, messages
