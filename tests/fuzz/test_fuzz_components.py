"""Property-based tests of ``connected_components`` and ``fill_holes_and_sprinkles`` on random
masks and logits (batched, up to 40x40, any density, bool or uint8, both connectivities).

Oracles: ``scipy.ndimage.label`` for the components, compared as a partition of the pixels
(a bijection between our labels and scipy's), and official SAM 2's own post-processing code
(``SAM2Transforms.postprocess_masks``, ``fill_holes_in_mask_scores``) with scipy standing in
for its CUDA-only labelling kernel. Labels, areas and filled logits are compared exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from fuzz_support import logit_arrays, mask_tensors, runnable_backends
from oracle_support import scipy_connected_components
from sam2_fast.ops import connected_components, fill_holes_and_sprinkles, get_op, use_backend
from test_connected_components import STRUCTURES, run_backend

ndimage = pytest.importorskip("scipy.ndimage")
official_misc = pytest.importorskip("sam2.utils.misc")
official_transforms = pytest.importorskip("sam2.utils.transforms")

# official SAM2Transforms scripts its transforms with torch.jit; its post-processing turns any
# error into a UserWarning and returns the masks unchanged: make that an error here
pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("error::UserWarning"),
]

OP = "connected_components"
IMAGES = mask_tensors(st.tuples(st.integers(1, 3), st.just(1)))  # [N, 1, H, W]


def assert_same_partition(labels: np.ndarray, expected: np.ndarray) -> None:
    """``labels`` and ``expected`` (one image each) split the pixels the same way: 0 exactly on
    the same background, and each label of one side meets exactly one label of the other."""
    np.testing.assert_array_equal(labels == 0, expected == 0)
    fg = labels > 0
    pairs = np.unique(np.stack([labels[fg], expected[fg]]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1], "one of our components spans several of scipy's"
    assert len(np.unique(pairs[1])) == pairs.shape[1], "one of scipy's components is split in ours"


def assert_raster_numbering(labels: np.ndarray) -> None:
    """Labels are 1..K, numbered in raster order of each component's first pixel."""
    flat = labels.ravel()
    found, first = np.unique(flat[flat > 0], return_index=True)
    assert found.tolist() == list(range(1, len(found) + 1))
    assert np.all(np.diff(first) > 0)


@given(masks=IMAGES, connectivity=st.sampled_from([4, 8]))
def test_components_partition_pixels_like_scipy_on_every_backend(
    masks: torch.Tensor, connectivity: int
) -> None:
    results = {}
    for backend in runnable_backends(get_op(OP)):
        labels, areas = run_backend(backend, masks, connectivity)
        assert labels.dtype == areas.dtype == torch.int32
        assert labels.shape == areas.shape == masks.shape
        results[backend] = labels, areas
        for image, lab, area in zip(masks[:, 0].numpy() != 0, labels[:, 0].numpy(), areas[:, 0].numpy()):
            expected, _ = ndimage.label(image, structure=STRUCTURES[connectivity])
            assert_same_partition(lab, expected)
            assert_raster_numbering(lab)
            sizes = np.bincount(lab.ravel())
            sizes[0] = 0
            np.testing.assert_array_equal(area, sizes[lab])  # each pixel: its component's size
            np.testing.assert_array_equal(area, np.bincount(expected.ravel())[expected] * image)
    reference = results["reference"]
    for backend, (labels, areas) in results.items():
        assert torch.equal(labels, reference[0]) and torch.equal(areas, reference[1]), backend


@given(masks=IMAGES)
def test_default_connectivity_is_the_official_eight(masks: torch.Tensor) -> None:
    labels, areas = connected_components(masks)
    expected_labels, expected_areas = scipy_connected_components(masks != 0)
    for lab, expected in zip(labels[:, 0].numpy(), expected_labels[:, 0].numpy()):
        assert_same_partition(lab, expected)
    assert torch.equal(areas, expected_areas)


SHAPES = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 24), st.integers(1, 24))
SEEDS = st.integers(0, 2**32 - 1)
THRESHOLDS = st.sampled_from([0.0, 0.5, -1.0])
POSITIVE_AREAS = [1, 2, 5, 8, 40, 1e9]
AREAS = st.sampled_from([0, *POSITIVE_AREAS])  # 0 turns the step off


@given(
    shape=SHAPES,
    seed=SEEDS,
    threshold=THRESHOLDS,
    max_hole=AREAS,
    max_sprinkle=AREAS,
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
)
def test_fill_holes_and_sprinkles_equals_official_postprocessing(
    shape: tuple[int, ...], seed: int, threshold: float, max_hole: float, max_sprinkle: float,
    dtype: torch.dtype,
) -> None:
    """``SAM2Transforms.postprocess_masks`` at the logits' own size (no resampling), for every
    backend of the labelling op; a tenth of the logits lie exactly on the threshold."""
    mask_logits = torch.from_numpy(logit_arrays(shape, seed, threshold)).to(dtype)
    size = shape[-2:]
    transforms = official_transforms.SAM2Transforms(
        resolution=1024, mask_threshold=threshold, max_hole_area=max_hole, max_sprinkle_area=max_sprinkle
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(official_misc, "get_connected_components", scipy_connected_components)
        expected = transforms.postprocess_masks(mask_logits, size)
    for backend in runnable_backends(get_op(OP)):
        with use_backend(backend, op=OP):
            filled = fill_holes_and_sprinkles(mask_logits, threshold, max_hole, max_sprinkle)
        assert filled.dtype == torch.float32 and filled.shape == mask_logits.shape
        resized = F.interpolate(filled, size, mode="bilinear", align_corners=False)
        assert torch.equal(resized, expected), backend


@given(shape=SHAPES, seed=SEEDS, max_area=st.sampled_from(POSITIVE_AREAS))
def test_video_hole_filling_equals_official_fill_holes_in_mask_scores(
    shape: tuple[int, ...], seed: int, max_area: float
) -> None:
    """The video predictor's ``fill_holes_in_mask_scores`` on ``[N, 1, H, W]`` scores: holes
    at threshold 0, filled with 0.1, no sprinkle removal."""
    mask_logits = torch.from_numpy(logit_arrays(shape, seed)).flatten(0, 1).unsqueeze(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(official_misc, "get_connected_components", scipy_connected_components)
        expected = official_misc.fill_holes_in_mask_scores(mask_logits, max_area)
    for backend in runnable_backends(get_op(OP)):
        with use_backend(backend, op=OP):
            filled = fill_holes_and_sprinkles(mask_logits, 0.0, max_area, 0, hole_fill_value=0.1)
        assert torch.equal(filled, expected), backend
