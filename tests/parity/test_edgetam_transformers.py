"""EdgeTAM against an independent implementation: transformers' ``EdgeTamModel`` and
``EdgeTamVideoModel`` (PyPI), on the same random weights written as a transformers folder by
the EdgeTAM family's ``to_transformers`` and loaded with ``from_pretrained``.

Tolerances: image low-res logits rel-L2 <= 1e-3 and full-size masks >= 99.9 % equal (points,
a box, a mask prompt); video masks IoU >= 0.99 on every frame of a short generated clip. At a
512-pixel input (32 x 32 embedding; the perceiver's 16 x 16 windows are 2 x 2) to stay quick.

Where the two differ by design, ours follows the official EdgeTAM / sam2 1.1.0 package: the
video test turns off the official video builder's hole filling (transformers has none).
transformers binarizes the memory's mask on every prompted frame, the official package on
clicked frames only: the clip is prompted by clicks.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F


def _require(name: str):
    """The module, or a skip when it is missing -- a failure in CI (CI=true)."""
    if os.environ.get("CI") == "true":
        return importlib.import_module(name)
    return pytest.importorskip(name)


transformers = _require("transformers")
_require("timm")

from sam2_fast.build_sam import build_sam2, build_sam2_video_predictor  # noqa: E402
from sam2_fast.modeling.edgetam_config import EDGETAM  # noqa: E402
from sam2_fast.modeling.init import random_state_dict  # noqa: E402
from sam2_fast.predictors.image_predictor import SAM2ImagePredictor  # noqa: E402
from sam2_fast.sample import sample_image, sample_video_frame, sample_video_objects  # noqa: E402
from sam2_fast.state_dict_io import write_state_dict  # noqa: E402
from sam2_fast.zoo import get_family  # noqa: E402

SIZE = 512
CONFIG = EDGETAM.replace(image_size=SIZE).with_postprocessing()  # as build_sam2 builds it
FRAMES = 4


def write_transformers_folder(folder: Path, config, state_dict, video: bool) -> Path:
    from safetensors.torch import save_file

    config_json, hf_state_dict = get_family("edgetam").to_transformers(config, state_dict, video)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config_json, indent=2))
    save_file({k: v.contiguous() for k, v in hf_state_dict.items()}, str(folder / "model.safetensors"))
    return folder


def load_transformers(cls, folder: Path):
    model, info = cls.from_pretrained(str(folder), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model.eval()


@pytest.fixture(scope="module")
def weights():
    return random_state_dict(CONFIG, seed=0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, weights) -> Path:
    path = tmp_path_factory.mktemp("edgetam") / "edgetam.safetensors"
    write_state_dict(weights, path)
    return path


@pytest.fixture(scope="module")
def image_pair(tmp_path_factory, weights, checkpoint):
    folder = write_transformers_folder(tmp_path_factory.mktemp("hf_image"), CONFIG, weights, video=False)
    theirs = load_transformers(transformers.EdgeTamModel, folder)
    ours = SAM2ImagePredictor(build_sam2(CONFIG, checkpoint, device="cpu"))
    image = sample_image(SIZE, SIZE)
    ours.set_image(image)
    pixels = ours._transforms.to_input(image, "cpu").unsqueeze(0)
    return ours, theirs, pixels


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


POINTS = np.array([[230.0 * SIZE / 768, 250.0], [120.0, 400.0]])
CASES = {
    "one click": dict(point_coords=POINTS[:1], point_labels=np.array([1])),
    "click and negative click": dict(point_coords=POINTS, point_labels=np.array([1, 0])),
    "box": dict(box=np.array([60.0, 90.0, 300.0, 330.0])),
}


def _transformers_prompts(case: dict) -> dict:
    kwargs = {}
    if "point_coords" in case:
        kwargs["input_points"] = torch.as_tensor(case["point_coords"], dtype=torch.float32)[None, None]
        kwargs["input_labels"] = torch.as_tensor(case["point_labels"], dtype=torch.int32)[None, None]
    if "box" in case:
        kwargs["input_boxes"] = torch.as_tensor(case["box"], dtype=torch.float32)[None, None]
    return kwargs


def _compare(ours_masks, ours_logits, their_logits) -> None:
    """Low-res logits rel-L2 <= 1e-3; full-size masks >= 99.9 % equal."""
    ours_logits = torch.as_tensor(ours_logits)
    assert ours_logits.shape == their_logits.shape, (ours_logits.shape, their_logits.shape)
    assert rel_l2(ours_logits, their_logits) <= 1e-3
    their_masks = F.interpolate(their_logits[None], size=(SIZE, SIZE), mode="bilinear", align_corners=False)[0] > 0
    equal = (torch.as_tensor(ours_masks).bool() == their_masks).float().mean().item()
    assert equal >= 0.999, equal


@pytest.mark.parametrize("case", list(CASES))
def test_image_prompts_match_transformers(image_pair, case):
    ours, theirs, pixels = image_pair
    masks, scores, logits = ours.predict(**CASES[case], multimask_output=True)
    with torch.no_grad():
        out = theirs(pixel_values=pixels, multimask_output=True, **_transformers_prompts(CASES[case]))
    _compare(masks, logits, out.pred_masks[0, 0])
    np.testing.assert_allclose(scores, out.iou_scores[0, 0].numpy(), atol=1e-3)


def test_image_mask_prompt_matches_transformers(image_pair):
    ours, theirs, pixels = image_pair
    case = CASES["one click"]
    _, scores, logits = ours.predict(**case, multimask_output=True)
    mask_input = logits[np.argmax(scores)][None]
    masks, _, refined = ours.predict(**case, mask_input=mask_input, multimask_output=False)
    with torch.no_grad():
        out = theirs(
            pixel_values=pixels, multimask_output=False,
            input_masks=torch.as_tensor(mask_input)[None], **_transformers_prompts(case),
        )
    _compare(masks, refined, out.pred_masks[0, 0])


OBJECT_SCORE_BIAS = "sam_mask_decoder.pred_obj_score_head.layers.2.bias"


def test_video_tracking_matches_transformers(tmp_path, weights):
    """Two objects clicked on the first frame, tracked through the clip."""
    from transformers.models.edgetam_video.modeling_edgetam_video import EdgeTamVideoInferenceSession

    video_config = CONFIG.with_postprocessing(video=True).replace(fill_hole_area=0)
    # random weights score the object as absent on tracked frames, which empties every mask and
    # compares nothing: the object-score head's output bias makes it present
    weights = {**weights, OBJECT_SCORE_BIAS: torch.full_like(weights[OBJECT_SCORE_BIAS], 20.0)}
    checkpoint = tmp_path / "edgetam_present.safetensors"
    write_state_dict(weights, checkpoint)
    folder = write_transformers_folder(tmp_path / "hf_video", video_config, weights, video=True)
    theirs = load_transformers(transformers.EdgeTamVideoModel, folder)
    ours = build_sam2_video_predictor(video_config, checkpoint, device="cpu", apply_postprocessing=False)
    frames = np.stack([sample_video_frame(i, SIZE, SIZE) for i in range(FRAMES)])
    at0 = sample_video_objects(0, SIZE, SIZE)
    clicks = {1: (0, at0["disc"]), 2: (0, at0["square"])}

    state = ours.init_state(frames)
    session = EdgeTamVideoInferenceSession(
        video=torch.stack([state.images[i] for i in range(FRAMES)]), video_height=SIZE, video_width=SIZE,
        dtype=torch.float32,
    )
    for obj_id, (frame, xy) in clicks.items():
        ours.add_new_points_or_box(state, frame, obj_id, points=[xy], labels=[1])
        obj_idx = session.obj_id_to_idx(obj_id)
        session.add_point_inputs(obj_idx, frame, {
            "point_coords": torch.tensor([[[xy]]], dtype=torch.float32),
            "point_labels": torch.tensor([[[1]]], dtype=torch.int32),
        })
        session.obj_with_new_inputs = [obj_id]
        with torch.no_grad():
            theirs(inference_session=session, frame_idx=frame)

    ours_masks = {f: (logits > 0)[:, 0] for f, _, logits in ours.propagate_in_video(state)}
    with torch.no_grad():
        their_masks = {
            out.frame_idx: F.interpolate(out.pred_masks, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0] > 0
            for out in theirs.propagate_in_video_iterator(session)
        }
    assert sorted(ours_masks) == sorted(their_masks) == list(range(FRAMES))
    areas = [int(ours_masks[f][i].sum()) for f in range(FRAMES) for i in range(len(clicks))]
    assert all(0 < a < SIZE * SIZE for a in areas), areas  # masks, not empty or full frames
    for f in range(FRAMES):
        for i in range(len(clicks)):
            a, b = ours_masks[f][i], their_masks[f][i]
            union = (a | b).sum().item()
            iou = (a & b).sum().item() / union if union else 1.0
            assert iou >= 0.99, (f, i, iou)
