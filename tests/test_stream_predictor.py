"""SAM2StreamPredictor: the same masks as the offline video predictor, in constant memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam2_fast import SAM2StreamPredictor, build_sam2_video_predictor
from sam2_fast.modeling.config import PRESETS
from sam2_fast.modeling.init import random_state_dict
from sam2_fast.sample import sample_video_frame, sample_video_objects

H, W = 96, 128
NUM_FRAMES = 20  # >= max_obj_ptrs_in_encoder, so offline and live normalise pointers alike


@pytest.fixture(scope="module")
def video_predictor():
    predictor = build_sam2_video_predictor(
        "sam2.1-hiera-tiny", None, device="cpu", hydra_overrides_extra=["++model.image_size=256"]
    )
    sd = random_state_dict(PRESETS["sam2.1-hiera-tiny"], seed=4)
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += 3.0  # mostly "object present"
    predictor.load_state_dict(sd)
    predictor.show_progress = False
    return predictor.eval()


@pytest.fixture(scope="module")
def frames():
    return [sample_video_frame(i, H, W) for i in range(NUM_FRAMES)]


def test_stream_matches_offline_tracking(video_predictor, frames):
    at0, at5 = sample_video_objects(0, H, W), sample_video_objects(5, H, W)

    offline = {}
    state = video_predictor.init_state(np.stack(frames))
    video_predictor.add_new_points_or_box(state, 0, "disc", points=[at0["disc"]], labels=[1])
    for f, _, masks in video_predictor.propagate_in_video(state, max_frame_num_to_track=4):
        offline[f] = masks
    # a second object appears at frame 5, then both are tracked to the end
    video_predictor.add_new_points_or_box(state, 5, "square", points=[at5["square"]], labels=[1])
    for f, _, masks in video_predictor.propagate_in_video(state, start_frame_idx=5):
        offline[f] = masks

    stream = SAM2StreamPredictor(video_predictor)
    live = {}
    for f, frame in enumerate(frames):
        ids, masks = stream.track(frame)
        if f == 0:
            assert ids == [] and masks.shape == (0, 1, H, W)
            ids, masks = stream.add_new_prompt("disc", points=[at0["disc"]], labels=[1])
        if f == 5:
            ids, masks = stream.add_new_prompt("square", points=[at5["square"]], labels=[1])
        live[f] = masks
        assert ids == (["disc"] if f < 5 else ["disc", "square"])
    assert stream.frame_idx == NUM_FRAMES - 1
    for f in offline:
        torch.testing.assert_close(live[f], offline[f], rtol=1e-4, atol=1e-4, msg=f"frame {f}")


def test_stream_memory_is_constant(video_predictor):
    stream = SAM2StreamPredictor(video_predictor)
    at0 = sample_video_objects(0, H, W)
    stream.track(sample_video_frame(0, H, W))
    stream.add_new_prompt(1, points=[at0["disc"]], labels=[1])
    stream.add_new_prompt(2, box=[at0["square"][0] - 12, at0["square"][1] - 12, at0["square"][0] + 12, at0["square"][1] + 12])
    sizes = {}
    for f in range(1, 61):
        stream.track(sample_video_frame(f % 24, H, W))
        if f in (30, 45, 60):
            sizes[f] = stream.state_tensor_bytes()
            held = [len(obj.outputs.non_cond_frame_outputs) for obj in stream.state.objects]
            assert max(held) <= video_predictor.max_obj_ptrs_in_encoder
    assert sizes[30] == sizes[45] == sizes[60], sizes


def test_stream_prompts_and_frames_are_checked(video_predictor):
    stream = SAM2StreamPredictor(video_predictor)
    with pytest.raises(RuntimeError, match="no frame yet"):
        stream.add_new_prompt(1, points=[[10, 10]], labels=[1])
    stream.track(sample_video_frame(0, H, W))
    with pytest.raises(ValueError, match="outside"):
        stream.add_new_prompt(1, points=[[10, 500]], labels=[1])
    with pytest.raises(ValueError, match="frame: expected 128x96"):
        stream.track(sample_video_frame(1, H + 2, W))
    with pytest.raises(TypeError, match="frame"):
        stream.track(np.zeros((H, W, 3), np.float32))
    ids, masks = stream.add_new_prompt(1, points=[[40, 40]], labels=[1])
    assert ids == [1] and masks.shape == (1, 1, H, W)
    ids, masks = stream.track(sample_video_frame(1, H, W))
    assert ids == [1] and masks.shape == (1, 1, H, W)
    with pytest.raises(KeyError, match="obj_id"):
        stream.remove_object(7)
    assert stream.remove_object(1) == []
    ids, masks = stream.track(sample_video_frame(2, H, W))
    assert ids == [] and masks.shape == (0, 1, H, W)
    with pytest.raises(TypeError, match="SAM2VideoPredictor"):
        SAM2StreamPredictor(object())
