"""Bad input to SAM2ImagePredictor: one clear error naming the argument, and the predictor
stays usable afterwards (same results as before the bad call)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sam2_fast import SAM2ImagePredictor
from sam2_fast.modeling.config import PRESETS
from sam2_fast.modeling.init import random_state_dict
from sam2_fast.modeling.sam2_base import SAM2Base
from sam2_fast.sample import sample_image

GOOD = dict(point_coords=np.array([[100.0, 120.0]]), point_labels=np.array([1]), multimask_output=False)


@pytest.fixture(scope="module")
def predictor():
    cfg = PRESETS["sam2.1-hiera-tiny"].with_postprocessing()
    with torch.device("meta"):
        model = SAM2Base.from_config(cfg)
    model.load_state_dict(random_state_dict(cfg, seed=3), assign=True)
    p = SAM2ImagePredictor(model.eval())
    p.set_image(sample_image(256, 320))
    return p


@pytest.fixture(scope="module")
def reference(predictor):
    return predictor.predict(**GOOD)


def assert_still_usable(predictor, reference):
    masks, scores, low_res = predictor.predict(**GOOD)
    np.testing.assert_array_equal(masks, reference[0])
    np.testing.assert_array_equal(scores, reference[1])


BAD_IMAGES = [
    ("float_dtype", np.zeros((32, 32, 3), np.float32), TypeError, "uint8"),
    ("two_channels", np.zeros((32, 32, 2), np.uint8), ValueError, r"\[H, W, 3\]"),
    ("rgba_array", np.zeros((32, 32, 4), np.uint8), ValueError, r"\[H, W, 3\]"),
    ("grayscale_2d", np.zeros((32, 32), np.uint8), ValueError, "grayscale"),
    ("rank_4", np.zeros((1, 32, 32, 3), np.uint8), ValueError, r"\[H, W, 3\]"),
    ("empty", np.zeros((0, 32, 3), np.uint8), ValueError, "empty"),
    ("a_list", [[1, 2, 3]], TypeError, "numpy array"),
    ("a_tensor", torch.zeros(32, 32, 3, dtype=torch.uint8), TypeError, "numpy array"),
    ("a_path", "image.png", TypeError, "numpy array"),
]


@pytest.mark.parametrize("name,image,exc,match", BAD_IMAGES, ids=[b[0] for b in BAD_IMAGES])
def test_set_image_rejects_bad_image_and_keeps_previous(predictor, reference, name, image, exc, match):
    with pytest.raises(exc, match=match) as info:
        predictor.set_image(image)
    assert "image" in str(info.value)
    assert_still_usable(predictor, reference)


def test_set_image_accepts_pil_of_any_mode(predictor, reference):
    img = sample_image(256, 320)
    other = SAM2ImagePredictor(predictor.model)
    other.set_image(Image.fromarray(img).convert("RGBA"))
    np.testing.assert_array_equal(other.predict(**GOOD)[0], reference[0])


BAD_PROMPTS = [
    ("labels_length", dict(point_coords=[[10, 10], [20, 20]], point_labels=[1]), ValueError, "point_labels"),
    ("labels_missing", dict(point_coords=[[10, 10]]), ValueError, "point_labels"),
    ("labels_without_points", dict(point_labels=[1]), ValueError, "point_labels"),
    ("bad_label_value", dict(point_coords=[[10, 10]], point_labels=[5]), ValueError, "point_labels"),
    ("coords_shape", dict(point_coords=[10, 10, 10], point_labels=[1]), ValueError, "point_coords"),
    ("point_outside_right", dict(point_coords=[[400, 10]], point_labels=[1]), ValueError, "outside"),
    ("point_negative", dict(point_coords=[[-1, 10]], point_labels=[1]), ValueError, "outside"),
    ("point_nan", dict(point_coords=[[np.nan, 10]], point_labels=[1]), ValueError, "NaN"),
    ("normalized_point_outside", dict(point_coords=[[1.5, 0.5]], point_labels=[1], normalize_coords=False),
     ValueError, "outside"),
    ("box_x1_lt_x0", dict(box=[200, 10, 100, 50]), ValueError, "x0 <= x1"),
    ("box_shape", dict(box=[1, 2, 3]), ValueError, "box"),
    ("mask_input_shape", dict(point_coords=[[10, 10]], point_labels=[1], mask_input=np.zeros((1, 64, 64))),
     ValueError, "mask_input"),
    ("batch_mismatch", dict(point_coords=np.zeros((2, 1, 2)), point_labels=np.ones((2, 1)),
                            box=np.array([[0, 0, 5, 5]] * 3)), ValueError, "batch sizes differ"),
    ("string_coords", dict(point_coords=[["a", "b"]], point_labels=[1]), TypeError, "point_coords"),
]


@pytest.mark.parametrize("name,kwargs,exc,match", BAD_PROMPTS, ids=[b[0] for b in BAD_PROMPTS])
def test_predict_rejects_bad_prompts_and_stays_usable(predictor, reference, name, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        predictor.predict(**kwargs)
    assert_still_usable(predictor, reference)


def test_predict_before_set_image_is_a_clear_error(predictor):
    fresh = SAM2ImagePredictor(predictor.model)
    with pytest.raises(RuntimeError, match=r"set_image"):
        fresh.predict(**GOOD)
    with pytest.raises(RuntimeError, match=r"set_image"):
        fresh.get_image_embedding()
    fresh.set_image(sample_image(128, 160))
    assert fresh.predict(**GOOD)[0].shape == (1, 128, 160)


def test_batch_and_single_apis_do_not_mix(predictor):
    p = SAM2ImagePredictor(predictor.model)
    p.set_image_batch([sample_image(64, 80), sample_image(80, 64)])
    with pytest.raises(RuntimeError, match="predict_batch"):
        p.predict(**GOOD)
    with pytest.raises(ValueError, match="point_coords_batch"):
        p.predict_batch(point_coords_batch=[np.array([[1.0, 1.0]])], point_labels_batch=[np.array([1])])
    masks, scores, low_res = p.predict_batch(
        point_coords_batch=[np.array([[10.0, 10.0]])] * 2, point_labels_batch=[np.array([1])] * 2
    )
    assert [m.shape for m in masks] == [(3, 64, 80), (3, 80, 64)]
    with pytest.raises(TypeError, match="image_list"):
        p.set_image_batch([])


def test_wrong_model_type_is_rejected():
    with pytest.raises(TypeError, match="sam_model"):
        SAM2ImagePredictor(object())


def test_outputs_have_official_types(predictor):
    masks, scores, low_res = predictor.predict(point_coords=np.array([[100, 120]]), point_labels=np.array([1]))
    assert masks.shape == (3, 256, 320) and masks.dtype == np.float32
    assert set(np.unique(masks)) <= {0.0, 1.0}
    assert scores.shape == (3,) and scores.dtype == np.float32
    assert low_res.shape == (3, 256, 256) and low_res.dtype == np.float32
    logits, _, _ = predictor.predict(point_coords=np.array([[100, 120]]), point_labels=np.array([1]), return_logits=True)
    assert logits.dtype == np.float32 and np.array_equal(logits > 0, masks > 0)


def test_reused_image_share_follows_the_image():
    """Clicks without a mask reuse the decoder's share of the image (computed on the first
    click): it must belong to the image now set, per image in a batch, and give what the
    plain decoder gives."""
    cfg = PRESETS["sam2.1-hiera-tiny"]
    with torch.device("meta"):
        model = SAM2Base.from_config(cfg)
    model.load_state_dict(random_state_dict(cfg, seed=5), assign=True)
    model.eval()
    a, b = sample_image(256, 320), np.ascontiguousarray(sample_image(256, 320)[::-1, ::-1])
    click = dict(point_coords=np.array([[120.0, 90.0]]), point_labels=np.array([1]))

    def fresh(image):
        p = SAM2ImagePredictor(model)
        p.set_image(image)
        return p.predict(**click)

    p = SAM2ImagePredictor(model)
    p.set_image(a)
    first_a = p.predict(**click)
    p.set_image(b)
    on_b = p.predict(**click)
    for got, expected in zip(on_b, fresh(b)):
        np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(on_b[2], first_a[2])
    p.set_image_batch([a, b])
    batch = p.predict_batch([click["point_coords"]] * 2, [click["point_labels"]] * 2)
    for i, expected in enumerate((first_a, on_b)):
        np.testing.assert_array_equal(batch[0][i], expected[0])
        np.testing.assert_allclose(batch[2][i], expected[2], rtol=0, atol=1e-5)
    # and the same numbers as the plain decoder called directly on the same prompt
    p.set_image(a)
    features = p._features
    prompt_encoder = model.sam_prompt_encoder
    coords = torch.as_tensor(click["point_coords"], dtype=torch.float32)[None] * torch.tensor(
        [model.image_size / 320, model.image_size / 256])
    sparse, dense = prompt_encoder(points=(coords, torch.tensor([[1]])), boxes=None, masks=None)
    with torch.inference_mode():
        low_res, iou, _, _ = model.sam_mask_decoder(
            image_embeddings=features["image_embed"], image_pe=prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=True,
            repeat_image=False, high_res_features=features["high_res_feats"],
        )
    np.testing.assert_allclose(first_a[1], iou[0].numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(first_a[2], low_res[0].clamp(-32, 32).numpy(), rtol=1e-4, atol=1e-4)
