"""SAM2ImagePredictor parity with the official package on the same random weights (fp32, CPU).

Tolerances (issue [1/6]): binary masks >= 99.9 % identical pixels, low-res logits relative
L2 <= 1e-3, IoU predictions within 1e-3 (absolute).
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import pytest
import torch

from oracle_support import windows_in_place
from sam2_fast import SAM2ImagePredictor
from sam2_fast.sample import sample_image

MASK_AGREEMENT = 0.999
LOGITS_REL_L2 = 1e-3
IOU_ATOL = 1e-3

IMAGE_SIZES = [(512, 768), (640, 640), (333, 1001)]

# prompt cases in pixels of a 512x768 image; scaled to the image size in the tests
CASES: Dict[str, dict] = {
    "one_point_multimask": dict(point_coords=[[230, 250]], point_labels=[1]),
    "one_point_single": dict(point_coords=[[230, 250]], point_labels=[1], multimask_output=False),
    "points_with_negatives": dict(
        point_coords=[[230, 250], [520, 220], [600, 450]], point_labels=[1, 0, 0], multimask_output=False
    ),
    "box": dict(box=[440, 130, 610, 310], multimask_output=False),
    "box_and_points": dict(box=[100, 120, 360, 380], point_coords=[[230, 250], [520, 220]], point_labels=[1, 0]),
    "batched_boxes": dict(box=[[440, 130, 610, 310], [100, 120, 360, 380], [480, 320, 720, 500]]),
    "return_logits": dict(point_coords=[[520, 220]], point_labels=[1], return_logits=True),
    "normalized_coords": dict(
        point_coords=[[0.3, 0.5]], point_labels=[1], normalize_coords=False, multimask_output=False
    ),
}


def scaled(case: dict, hw: Tuple[int, int]) -> dict:
    sy, sx = hw[0] / 512, hw[1] / 768
    out = dict(case)
    if "point_coords" in case and case.get("normalize_coords", True):
        out["point_coords"] = np.array(case["point_coords"], np.float32) * [sx, sy]
    elif "point_coords" in case:
        out["point_coords"] = np.array(case["point_coords"], np.float32)
    if "point_labels" in case:
        out["point_labels"] = np.array(case["point_labels"], np.int32)
    if "box" in case:
        out["box"] = np.array(case["box"], np.float32) * [sx, sy, sx, sy]
    return out


def assert_same_prediction(ours, ref, return_logits: bool = False) -> None:
    (m_o, iou_o, lr_o), (m_r, iou_r, lr_r) = ours, ref
    assert m_o.shape == m_r.shape and m_o.dtype == m_r.dtype, (m_o.shape, m_o.dtype, m_r.shape, m_r.dtype)
    assert iou_o.shape == iou_r.shape and iou_o.dtype == iou_r.dtype
    assert lr_o.shape == lr_r.shape and lr_o.dtype == lr_r.dtype
    if return_logits:
        rel = np.linalg.norm(m_o - m_r) / np.linalg.norm(m_r)
        assert rel <= LOGITS_REL_L2, f"full-size logits rel L2 {rel:.2e}"
        m_o, m_r = m_o > 0, m_r > 0
    agreement = (m_o == m_r).mean()
    assert agreement >= MASK_AGREEMENT, f"only {agreement:.5f} of mask pixels agree"
    rel = np.linalg.norm(lr_o - lr_r) / np.linalg.norm(lr_r)
    assert rel <= LOGITS_REL_L2, f"low-res logits rel L2 {rel:.2e}"
    np.testing.assert_allclose(iou_o, iou_r, atol=IOU_ATOL, rtol=0)


_PREDICTORS: dict = {}


@pytest.fixture
def predictors(model_pair):
    """``predictors(variant, hw, **kw)`` -> (ours, official), both with the sample image set."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor as OfficialPredictor

    def get(variant: str, hw: Tuple[int, int], **kwargs):
        key = (variant, hw, tuple(sorted(kwargs.items())))
        if key not in _PREDICTORS:
            pair = model_pair(variant)
            image = sample_image(*hw)
            ours, ref = SAM2ImagePredictor(pair.ours, **kwargs), OfficialPredictor(pair.official, **kwargs)
            ours.set_image(image)
            ref.set_image(image)
            _PREDICTORS[key] = (ours, ref)
        return _PREDICTORS[key]

    return get


@pytest.mark.parametrize("variant", ["sam2.1-hiera-tiny", "sam2-hiera-tiny"])
@pytest.mark.parametrize("hw", IMAGE_SIZES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
@pytest.mark.parametrize("case", list(CASES))
def test_predict_matches_official(predictors, variant, hw, case):
    ours, ref = predictors(variant, hw)
    kwargs = scaled(CASES[case], hw)
    assert_same_prediction(ours.predict(**kwargs), ref.predict(**kwargs), kwargs.get("return_logits", False))


@pytest.mark.parametrize("variant", ["sam2.1-hiera-tiny", "sam2-hiera-tiny"])
def test_image_embedding_matches_official(predictors, variant):
    ours, ref = predictors(variant, (512, 768))
    torch.testing.assert_close(ours.get_image_embedding(), ref.get_image_embedding(), rtol=1e-4, atol=1e-4)
    for a, b in zip(ours._features["high_res_feats"], ref._features["high_res_feats"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", ["sam2.1-hiera-tiny"])
def test_mask_input_refinement_matches_official(predictors, variant):
    ours, ref = predictors(variant, (512, 768))
    first = scaled(CASES["one_point_multimask"], (512, 768))
    _, scores, low_res = ref.predict(**first)
    best = low_res[np.argmax(scores)][None]
    second = dict(point_coords=np.array([[230, 250], [300, 330]], np.float32),
                  point_labels=np.array([1, 0], np.int32), mask_input=best, multimask_output=False)
    assert_same_prediction(ours.predict(**second), ref.predict(**second))


def test_larger_variant_matches_official(predictors):
    ours, ref = predictors("sam2.1-hiera-base-plus", (480, 640))
    for case in ("one_point_multimask", "box_and_points", "batched_boxes"):
        kwargs = scaled(CASES[case], (480, 640))
        assert_same_prediction(ours.predict(**kwargs), ref.predict(**kwargs))


def test_batch_api_matches_official(model_pair):
    from sam2.sam2_image_predictor import SAM2ImagePredictor as OfficialPredictor

    pair = model_pair("sam2.1-hiera-tiny")
    images = [sample_image(512, 768), sample_image(400, 300)]
    ours, ref = SAM2ImagePredictor(pair.ours), OfficialPredictor(pair.official)
    ours.set_image_batch(images)
    ref.set_image_batch(images)
    kwargs = dict(
        point_coords_batch=[np.array([[230, 250]], np.float32), np.array([[100, 200]], np.float32)],
        point_labels_batch=[np.array([1]), np.array([1])],
        box_batch=[None, np.array([20, 30, 250, 350], np.float32)],
        multimask_output=True,
    )
    out_o, out_r = ours.predict_batch(**kwargs), ref.predict_batch(**kwargs)
    for i in range(len(images)):
        assert_same_prediction(tuple(o[i] for o in out_o), tuple(r[i] for r in out_r))


def test_hole_and_sprinkle_removal_matches_official_postprocessing(model_pair, monkeypatch, scipy_cc):
    """The official package fills holes / removes sprinkles only with its CUDA extension and
    silently skips it on CPU. Give the oracle an independent (scipy) labelling so its own
    post-processing code runs, and compare with ours, which runs on CPU natively."""
    import sam2.utils.misc as official_misc
    from sam2.sam2_image_predictor import SAM2ImagePredictor as OfficialPredictor

    monkeypatch.setattr(official_misc, "get_connected_components", scipy_cc)
    pair = model_pair("sam2.1-hiera-tiny")
    image = sample_image(512, 768)
    options = dict(max_hole_area=40.0, max_sprinkle_area=40.0)
    ours, ref = SAM2ImagePredictor(pair.ours, **options), OfficialPredictor(pair.official, **options)
    plain = SAM2ImagePredictor(pair.ours)
    for p in (ours, ref, plain):
        p.set_image(image)
    kwargs = scaled(CASES["points_with_negatives"], (512, 768))
    with _no_warning():
        out_ref = ref.predict(**kwargs)
    out_ours = ours.predict(**kwargs)
    assert_same_prediction(out_ours, out_ref)
    # and the post-processing really changed something on these random weights
    changed = (plain.predict(**kwargs)[0] != out_ours[0]).sum()
    assert changed > 0, "hole/sprinkle removal changed no pixel: the test does not exercise it"


class _no_warning:
    """Fail if the oracle warns that it skipped post-processing."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings(record=True)
        self._log = self._ctx.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        skipped = [w for w in self._log if "Skipping the post-processing" in str(w.message)]
        assert not skipped, f"the oracle skipped post-processing: {skipped[0].message}"
        return False


@pytest.mark.parametrize("backend", ["reference", "compiled"])
def test_forced_backend_matches_official(model_pair, backend):
    """The whole image path with every op forced to one backend (the CPU defaults, blocked /
    chunked / cpp, are what the other tests run; ``compiled`` is ``torch.compile`` of each
    op's reference, 9 graphs here) still matches the official package. (``triton`` runs the
    model's kernels in the interpreter in tests/ops, on small shapes.)"""
    from sam2.sam2_image_predictor import SAM2ImagePredictor as OfficialPredictor

    from sam2_fast.ops import use_backend

    pair = model_pair("sam2.1-hiera-tiny")
    image = sample_image(333, 1001)
    kwargs = scaled(CASES["box_and_points"], (333, 1001))
    ours = SAM2ImagePredictor(pair.ours, max_hole_area=8, max_sprinkle_area=8)
    ref = OfficialPredictor(pair.official)
    ref.set_image(image)
    with use_backend(backend):
        ours.set_image(image)
        got = ours.predict(**kwargs)
    # the oracle skips hole / sprinkle removal on CPU: compare without it, then check the
    # forced run with it against our default backends
    plain = SAM2ImagePredictor(pair.ours)
    with use_backend(backend):
        plain.set_image(image)
        assert_same_prediction(plain.predict(**kwargs), ref.predict(**kwargs))
    ours_default = SAM2ImagePredictor(pair.ours, max_hole_area=8, max_sprinkle_area=8)
    ours_default.set_image(image)
    expected = ours_default.predict(**kwargs)
    np.testing.assert_array_equal(got[0], expected[0])
    # float32 summation orders differ between backends (oneDNN picks kernels per CPU): 1e-5
    # absolute measured 1.0014e-5 on one AMX Xeon for a logit of -4.75 (2.1e-6 relative)
    np.testing.assert_allclose(got[2], expected[2], atol=1e-5, rtol=1e-5)


def test_windows_read_in_place_match_official(model_pair):
    """float32, every windowed attention of the encoder in ``cpp_grid`` (the C++ kernel reading
    the windows in place: pooled, padded and plain windows of Hiera-T at a size whose stage-3
    windows are padded): the prediction matches the official package's."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor as OfficialPredictor

    pair = model_pair("sam2.1-hiera-tiny")
    image = sample_image(333, 1001)
    kwargs = scaled(CASES["box_and_points"], (333, 1001))
    ref = OfficialPredictor(pair.official)
    ref.set_image(image)
    ours = SAM2ImagePredictor(pair.ours)
    with windows_in_place() as picked:
        ours.set_image(image)
        got = ours.predict(**kwargs)
    assert "cpp_grid" in picked and set(picked) != {"cpp_grid"}, picked  # global blocks run another
    assert_same_prediction(got, ref.predict(**kwargs))


@pytest.mark.parametrize("variant", ["sam2.1-hiera-tiny", "sam2.1-hiera-base-plus"])
def test_image_encoder_with_the_triton_kernel_matches_official(model_pair, triton_interpreter, variant):
    """The image encoder with every window attention forced to the Triton kernel (in Triton's
    CPU interpreter, float32) against the official encoder on the same weights: windowed,
    pooled, padded and global blocks, head dims 96 (64 + 32 channels) and 56. A 128x128
    input keeps the interpreter to about a minute; the trunk's code paths are those of 1024
    (every window of the last two stages is padded, as some are there)."""
    from sam2_fast.ops import get_op, use_backend

    triton_interpreter("sam2_fast.kernels.window_attention")
    pair = model_pair(variant)
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    ran = []
    op = get_op("window_attention")
    original = op.select

    def select(*args, **kwargs):
        backend = original(*args, **kwargs)
        ran.append((backend.name, args[2]))
        return backend

    with torch.inference_mode():
        expected = pair.official.image_encoder(x)
        with use_backend("triton", op="window_attention"), pytest.MonkeyPatch.context() as patch:
            patch.setattr(op, "select", select)
            got = pair.ours.image_encoder(x)
    assert {name for name, _ in ran} == {"triton"} and len(ran) == len(pair.ours.image_encoder.trunk.blocks)
    assert 0 in {window for _, window in ran}, "a global-attention block must be among them"
    for name in ("vision_features",):
        a, b = got[name], expected[name]
        assert (a - b).norm() / b.norm() < 1e-4, name
    for a, b in zip(got["backbone_fpn"], expected["backbone_fpn"], strict=True):
        assert (a - b).norm() / b.norm() < 1e-4


@pytest.mark.parametrize("case", ["box_and_points", "batched_boxes"])
def test_predict_with_the_triton_mask_postprocess_matches_official(predictors, triton_interpreter, case):
    """``predict`` with the mask post-processing (bilinear upsampling of the low-res logits
    to 333x1001, threshold) forced to the Triton kernel, in Triton's CPU interpreter, against
    the official predictor; the odd size gives partial blocks on both axes."""
    from sam2_fast.ops import get_op, use_backend

    triton_interpreter("sam2_fast.kernels.mask_postprocess")
    hw = (333, 1001)
    with use_backend("reference", op="window_attention"):  # not the interpreter's choice, triton
        ours, ref = predictors("sam2.1-hiera-tiny", hw)
    kwargs = scaled(CASES[case], hw)
    op = get_op("mask_postprocess")
    ran = []
    original = op.select

    def select(*args, **kwargs):
        backend = original(*args, **kwargs)
        ran.append(backend.name)
        return backend

    with use_backend("triton", op="mask_postprocess"), pytest.MonkeyPatch.context() as patch:
        patch.setattr(op, "select", select)
        got = ours.predict(**kwargs)
    assert ran == ["triton"], ran
    assert_same_prediction(got, ref.predict(**kwargs))
