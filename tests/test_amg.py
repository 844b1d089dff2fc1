"""SAM2AutomaticMaskGenerator: output formats, options and bad input (a small random model;
parity with the official generator is in tests/parity/test_amg_parity.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam2_fast import SAM2AutomaticMaskGenerator, build_sam2
from sam2_fast.modeling.init import random_state_dict
from sam2_fast.sample import sample_image
from sam2_fast.zoo import get_model_info

KEYS = {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"}
# loose thresholds: a model with random weights predicts low IoUs
LOOSE = dict(pred_iou_thresh=0.0, stability_score_thresh=0.5)


@pytest.fixture(scope="module")
def model():
    name = "sam2.1-hiera-tiny"
    m = build_sam2(name, device="cpu", hydra_overrides_extra=["++model.image_size=256"])
    m.load_state_dict(random_state_dict(get_model_info(name).config, seed=0))
    return m


@pytest.fixture(scope="module")
def image():
    return sample_image(96, 128)


@pytest.fixture(scope="module")
def binary_records(model, image):
    return SAM2AutomaticMaskGenerator(model, points_per_side=6, **LOOSE).generate(image)


def test_records_have_the_official_fields(binary_records, image):
    assert len(binary_records) > 0
    h, w = image.shape[:2]
    for r in binary_records:
        assert set(r) == KEYS
        m = r["segmentation"]
        assert m.dtype == bool and m.shape == (h, w)
        assert r["area"] == int(m.sum()) > 0
        ys, xs = np.nonzero(m)
        assert r["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
        assert r["crop_box"] == [0, 0, w, h]
        assert len(r["point_coords"]) == 1 and len(r["point_coords"][0]) == 2
        assert 0.0 <= r["stability_score"] <= 1.0
        assert isinstance(r["predicted_iou"], float)


@pytest.mark.parametrize("mode", ["uncompressed_rle", "coco_rle"])
def test_rle_output_modes_encode_the_binary_masks(model, image, binary_records, mode):
    from pycocotools import mask as mask_utils

    records = SAM2AutomaticMaskGenerator(model, points_per_side=6, output_mode=mode, **LOOSE).generate(image)
    assert len(records) == len(binary_records)
    h, w = image.shape[:2]
    for r, b in zip(records, binary_records):
        rle = r["segmentation"]
        assert rle["size"] == [h, w]
        if mode == "coco_rle":
            assert isinstance(rle["counts"], str)
            decoded = mask_utils.decode(dict(rle, counts=rle["counts"].encode()))
        else:
            assert isinstance(rle["counts"], list)
            decoded = mask_utils.decode(mask_utils.frPyObjects(rle, h, w))
        np.testing.assert_array_equal(decoded.astype(bool), b["segmentation"])
        assert {k: v for k, v in r.items() if k != "segmentation"} == {
            k: v for k, v in b.items() if k != "segmentation"
        }


def test_crops_m2m_and_region_filtering_run(model, image):
    gen = SAM2AutomaticMaskGenerator(
        model, points_per_side=4, crop_n_layers=1, crop_n_points_downscale_factor=2, use_m2m=True,
        min_mask_region_area=5, output_mode="coco_rle", pred_iou_thresh=0.0, stability_score_thresh=0.0,
    )
    records = gen.generate(image)
    crops = {tuple(r["crop_box"]) for r in records}
    assert crops <= {(0, 0, 128, 96)} | {tuple(b) for b in _layer1_crops_xywh(96, 128, gen.crop_overlap_ratio)}
    assert len(records) > 0


def _layer1_crops_xywh(h, w, ratio):
    from sam2_fast.utils.amg import box_xyxy_to_xywh, generate_crop_boxes

    boxes, _ = generate_crop_boxes((h, w), 1, ratio)
    return [box_xyxy_to_xywh(np.array(b)).tolist() for b in boxes[1:]]


def test_multimask_off_gives_one_mask_per_click(model, image):
    gen = SAM2AutomaticMaskGenerator(
        model, points_per_side=3, multimask_output=False, pred_iou_thresh=0.0,
        stability_score_thresh=0.0, box_nms_thresh=1.0,
    )
    records = gen.generate(image)
    assert len(records) <= 9
    assert len({tuple(r["point_coords"][0]) for r in records}) == len(records)


def test_tiny_and_blank_images(model):
    gen = SAM2AutomaticMaskGenerator(model, points_per_side=2, **LOOSE)
    for img in (np.zeros((1, 1, 3), np.uint8), np.full((5, 3, 3), 255, np.uint8)):
        records = gen.generate(img)
        assert isinstance(records, list)
        for r in records:
            assert r["segmentation"].shape == img.shape[:2]


def test_huge_min_mask_region_area_inverts_masks_as_official(model, image):
    """Official semantics: holes and sprinkles are both measured on the unfilled low-res mask,
    so with a huge area every background region is filled and every foreground region
    removed -- each mask is inverted. The records stay consistent."""
    kwargs = dict(points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    plain = SAM2AutomaticMaskGenerator(model, **kwargs).generate(image)
    huge = SAM2AutomaticMaskGenerator(model, min_mask_region_area=10**9, **kwargs).generate(image)
    assert len(plain) == len(huge) > 0
    by_click = {tuple(r["point_coords"][0]) + (round(r["predicted_iou"], 5),): r for r in plain}
    inverted = []
    for r in huge:
        original = by_click[tuple(r["point_coords"][0]) + (round(r["predicted_iou"], 5),)]
        inverted.append((r["segmentation"] != original["segmentation"]).mean())
        assert r["area"] == int(r["segmentation"].sum())
    # up to where the upsampling puts region borders (+-10 steps vs smooth logits)
    assert min(inverted) > 0.75 and np.mean(inverted) > 0.9, inverted


def test_progress_bar(model, image, capsys):
    SAM2AutomaticMaskGenerator(model, points_per_side=2, progress=True, **LOOSE).generate(image)
    assert "automatic masks" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(points_per_side=None), ValueError, "give exactly one of them, got neither"),
        (dict(point_grids=[np.zeros((4, 2))]), ValueError, "got both"),
        (dict(points_per_side=0), ValueError, "points_per_side: expected an int >= 1, got 0"),
        (dict(points_per_side=2.5), TypeError, "points_per_side: expected an int"),
        (dict(points_per_batch=0), ValueError, "points_per_batch"),
        (dict(output_mode="png"), ValueError, "output_mode: expected one of"),
        (dict(box_nms_thresh=1.5), ValueError, r"box_nms_thresh: expected a number in \[0.0, 1.0\]"),
        (dict(pred_iou_thresh="high"), TypeError, "pred_iou_thresh: expected a real number"),
        (dict(stability_score_offset=-1), ValueError, "stability_score_offset"),
        (dict(min_mask_region_area=-5), ValueError, "min_mask_region_area"),
        (dict(crop_n_layers=-1), ValueError, "crop_n_layers"),
        (dict(points_per_side=None, point_grids=[np.full((3, 2), 1.5)]), ValueError, r"point_grids\[0\]"),
        (dict(points_per_side=None, point_grids=[np.zeros((3, 2))], crop_n_layers=1), ValueError,
         "needs 2 grids"),
        (dict(points_per_side=1, crop_n_layers=1, crop_n_points_downscale_factor=4), ValueError,
         "leaves no points in crop layer 1"),
    ],
)
def test_bad_arguments_raise_clear_errors(model, kwargs, error, match):
    with pytest.raises(error, match=match):
        SAM2AutomaticMaskGenerator(model, **kwargs)


def test_bad_model_and_image(model):
    with pytest.raises(TypeError, match="model: expected a SAM 2 model"):
        SAM2AutomaticMaskGenerator(torch.nn.Linear(2, 2))
    gen = SAM2AutomaticMaskGenerator(model, points_per_side=2, **LOOSE)
    with pytest.raises(ValueError, match=r"image: expected shape \[H, W, 3\]"):
        gen.generate(np.zeros((8, 8), np.uint8))
    with pytest.raises(TypeError, match="image: expected dtype uint8"):
        gen.generate(np.zeros((8, 8, 3), np.float32))
    assert isinstance(gen.generate(sample_image(32, 32)), list)  # still usable


@pytest.mark.parametrize("mode", ["binary_mask", "uncompressed_rle", "coco_rle"])
@pytest.mark.parametrize("kwargs", [dict(pred_iou_thresh=0.999), dict(pred_iou_thresh=0.0, stability_score_thresh=1.0),
                                    dict(pred_iou_thresh=0.999, crop_n_layers=1)])
def test_no_mask_passing_the_filters_gives_an_empty_list(model, image, mode, kwargs):
    assert SAM2AutomaticMaskGenerator(model, points_per_side=3, output_mode=mode, **kwargs).generate(image) == []


@pytest.mark.parametrize("mode", ["binary_mask", "coco_rle"])
def test_deferred_encoding_equals_encoding_every_candidate(model, image, monkeypatch, mode):
    """Masks are encoded after the crop's NMS; past PENDING_LOGITS_BYTES of waiting low-res
    logits they are encoded at once. Both give the same records (crops included)."""
    import sam2_fast.automatic_mask_generator as amg_module

    kwargs = dict(points_per_side=6, points_per_batch=8, crop_n_layers=1, output_mode=mode, **LOOSE)
    deferred = SAM2AutomaticMaskGenerator(model, **kwargs).generate(image)
    encoded = []
    original = SAM2AutomaticMaskGenerator._encode_pending

    def counting(self, data, *args):
        encoded.append(sum(t is not None for t in data.pending))
        return original(self, data, *args)

    monkeypatch.setattr(SAM2AutomaticMaskGenerator, "_encode_pending", counting)
    monkeypatch.setattr(amg_module, "PENDING_LOGITS_BYTES", 0)  # encode after every batch
    eager = SAM2AutomaticMaskGenerator(model, **kwargs).generate(image)
    assert len(deferred) == len(eager) > 0
    assert max(encoded) <= kwargs["points_per_batch"] * 3 and encoded.count(0) >= 1
    for a, b in zip(deferred, eager):
        if mode == "binary_mask":
            np.testing.assert_array_equal(a["segmentation"], b["segmentation"])
        else:
            assert a["segmentation"] == b["segmentation"]
        assert {k: v for k, v in a.items() if k != "segmentation"} == {
            k: v for k, v in b.items() if k != "segmentation"
        }
