"""Bad input to SAM2VideoPredictor: one clear error naming the argument, and the tracking
state stays usable afterwards (a later correct call gives the same results as if the bad call
never happened). Also: stopping propagation halfway (abandoned generator, KeyboardInterrupt)
and adding / removing objects after tracking leave the other results unchanged.

The model is sam2.1-hiera-tiny with random weights at ``image_size=256`` on an 8-frame
generated video, so that every test runs in about a second on a CPU.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Dict

import numpy as np
import pytest
import torch

from sam2_fast import build_sam2_video_predictor
from sam2_fast.modeling.config import PRESETS
from sam2_fast.modeling.init import random_state_dict
from sam2_fast.predictors.video_io import FrameSource, VideoReadError
from sam2_fast.sample import sample_video_frame, sample_video_objects

NAME = "sam2.1-hiera-tiny"
T, H, W = 8, 96, 128
OBJECTS = {1: "disc", 2: "square", 3: "triangle"}  # obj_id -> shape clicked on frame 0
AT0 = sample_video_objects(0, H, W)


@pytest.fixture(scope="module")
def predictor():
    sd = random_state_dict(PRESETS[NAME], seed=0)
    # lean the object-presence head to "present", so tracked masks are not all empty
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += 3.0
    p = build_sam2_video_predictor(NAME, None, device="cpu", hydra_overrides_extra=["++model.image_size=256"])
    p.load_state_dict(sd)
    p.show_progress = False
    # one intra-op thread: on a busy 2-core machine, OpenMP threads waiting for each other
    # made these tests over 10x slower (measured: 386 s vs 30 s for the tracking tests)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield p.eval()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.stack([sample_video_frame(i, H, W) for i in range(T)])


def click(predictor, state, obj_id, frame_idx=0, **kwargs):
    point = sample_video_objects(frame_idx, H, W)[OBJECTS[obj_id]]
    return predictor.add_new_points_or_box(state, frame_idx, obj_id, points=[point], labels=[1], **kwargs)


def prompted_state(predictor, frames, obj_ids=(1, 2, 3)):
    state = predictor.init_state(frames)
    for obj_id in obj_ids:
        click(predictor, state, obj_id)
    return state


def track(predictor, state, **kwargs) -> Dict[int, torch.Tensor]:
    return {f: masks.clone() for f, _, masks in predictor.propagate_in_video(state, **kwargs)}


@pytest.fixture(scope="module")
def reference(predictor, frames) -> Dict[int, torch.Tensor]:
    """An uninterrupted run: objects 1, 2, 3 clicked on frame 0, tracked through the video."""
    results = track(predictor, prompted_state(predictor, frames))
    assert all((m[:, 0] > 0).any() for m in results.values()), "tracked masks should not be empty"
    return results


@pytest.fixture
def state(predictor, frames):
    """Objects 1, 2, 3 clicked on frame 0, not tracked yet."""
    return prompted_state(predictor, frames)


def assert_results_equal(results: Dict[int, torch.Tensor], expected: Dict[int, torch.Tensor]):
    assert list(results) == sorted(results) and set(results) <= set(expected)
    for f, masks in results.items():
        torch.testing.assert_close(masks, expected[f], rtol=0, atol=0, msg=f"frame {f}")


def assert_state_consistent(state, obj_ids):
    """Object maps agree with each other, every per-object container has one entry per
    object, no prompt output is left unmerged, and each object's tracked frames are exactly
    its stored outputs."""
    n = len(obj_ids)
    assert state["obj_ids"] == list(obj_ids)
    assert dict(state["obj_id_to_idx"]) == {o: i for i, o in enumerate(obj_ids)}
    assert dict(state["obj_idx_to_id"]) == {i: o for i, o in enumerate(obj_ids)}
    for key in ("point_inputs_per_obj", "mask_inputs_per_obj", "output_dict_per_obj",
                "temp_output_dict_per_obj", "frames_tracked_per_obj"):
        assert sorted(state[key]) == list(range(n)), key
    for obj_idx in range(n):
        temp = state["temp_output_dict_per_obj"][obj_idx]
        assert not temp["cond_frame_outputs"] and not temp["non_cond_frame_outputs"]
        out = state["output_dict_per_obj"][obj_idx]
        assert not set(out["cond_frame_outputs"]) & set(out["non_cond_frame_outputs"])
        stored = set(out["cond_frame_outputs"]) | set(out["non_cond_frame_outputs"])
        assert set(state["frames_tracked_per_obj"][obj_idx]) == stored


def assert_tracks_like_reference(predictor, state, reference):
    """The state still has objects 1, 2, 3, their prompted frame 0 and the first tracked
    frame come out as in the reference."""
    assert state["obj_ids"] == [1, 2, 3]
    assert_results_equal(track(predictor, state, max_frame_num_to_track=1), reference)


# ------------------------------------------------------------------ video


def test_init_state_with_a_missing_video_raises_naming_video_path(predictor, tmp_path):
    with pytest.raises(VideoReadError, match=r"video_path: '.*missing\.mp4' does not exist"):
        predictor.init_state(str(tmp_path / "missing.mp4"))


@pytest.mark.parametrize("kind", ["generator", "async_loading_frames"])
def test_other_ways_to_pass_frames_track_the_same(predictor, frames, reference, kind):
    if kind == "generator":
        state = predictor.init_state(f for f in frames)
    else:
        state = predictor.init_state(frames, async_loading_frames=True)
    for obj_id in OBJECTS:
        click(predictor, state, obj_id)
    assert_results_equal(track(predictor, state, max_frame_num_to_track=3), reference)
    state["images"].close()


# ------------------------------------------------------------------ frame indices

BAD_FRAME_IDX = [
    ("past_the_end", T, IndexError, rf"frame_idx: {T} is out of range for a video of {T} frames \(0\.\.{T - 1}\)"),
    ("negative", -1, IndexError, "frame_idx: -1 is out of range"),
    ("float", 1.0, TypeError, "frame_idx: expected an int, got float"),
    ("string", "1", TypeError, "frame_idx: expected an int, got str"),
    ("bool", True, TypeError, "frame_idx: expected an int, got bool"),
    ("none", None, TypeError, "frame_idx: expected an int, got NoneType"),
]
# prompts for a known object (1) and a new one (7), and clearing a known object's prompts
FRAME_IDX_CALLS = {
    "points_known_object": lambda p, s, f: p.add_new_points_or_box(s, f, 1, points=[AT0["disc"]], labels=[1]),
    "points_new_object": lambda p, s, f: p.add_new_points_or_box(s, f, 7, points=[AT0["disc"]], labels=[1]),
    "mask_known_object": lambda p, s, f: p.add_new_mask(s, f, 1, np.zeros((H, W), bool)),
    "mask_new_object": lambda p, s, f: p.add_new_mask(s, f, 7, np.zeros((H, W), bool)),
    "clear_all_prompts_in_frame": lambda p, s, f: p.clear_all_prompts_in_frame(s, f, 1),
}


@pytest.mark.parametrize("call", list(FRAME_IDX_CALLS))
@pytest.mark.parametrize("name,frame_idx,exc,match", BAD_FRAME_IDX, ids=[b[0] for b in BAD_FRAME_IDX])
def test_prompt_on_bad_frame_idx_raises_and_keeps_state(predictor, state, reference, call, name, frame_idx, exc, match):
    with pytest.raises(exc, match=match):
        FRAME_IDX_CALLS[call](predictor, state, frame_idx)
    assert_tracks_like_reference(predictor, state, reference)


# start_frame_idx=None is valid: it means the first prompted frame
BAD_START_FRAME_IDX = [b for b in BAD_FRAME_IDX if b[1] is not None]


@pytest.mark.parametrize("name,frame_idx,exc,match", BAD_START_FRAME_IDX, ids=[b[0] for b in BAD_START_FRAME_IDX])
def test_propagate_from_bad_start_frame_idx_raises_and_keeps_state(
    predictor, state, reference, name, frame_idx, exc, match
):
    with pytest.raises(exc, match=match.replace("frame_idx", "start_frame_idx")):
        next(predictor.propagate_in_video(state, start_frame_idx=frame_idx))
    assert_tracks_like_reference(predictor, state, reference)


@pytest.mark.parametrize(
    "value,exc,match",
    [(-1, ValueError, "max_frame_num_to_track: expected >= 0, got -1"),
     (1.5, TypeError, "max_frame_num_to_track: expected an int or None, got float")],
    ids=["negative", "float"],
)
def test_propagate_with_bad_max_frame_num_raises_and_keeps_state(predictor, state, reference, value, exc, match):
    with pytest.raises(exc, match=match):
        next(predictor.propagate_in_video(state, max_frame_num_to_track=value))
    assert_tracks_like_reference(predictor, state, reference)


def test_numpy_integer_frame_idx_is_accepted(predictor, frames, reference):
    state = predictor.init_state(frames)
    for obj_id in OBJECTS:
        click(predictor, state, obj_id, frame_idx=np.int64(0))
    assert_tracks_like_reference(predictor, state, reference)


# ------------------------------------------------------------------ object ids


def test_remove_unknown_object_strict_raises_and_keeps_state(predictor, state, reference):
    with pytest.raises(RuntimeError, match=r"Cannot remove object id 99 .* existing object ids: \[1, 2, 3\]"):
        predictor.remove_object(state, 99, strict=True)
    assert_tracks_like_reference(predictor, state, reference)


def test_remove_unknown_object_not_strict_is_a_no_op(predictor, state, reference):
    obj_ids, updated_frames = predictor.remove_object(state, 99)
    assert obj_ids == [1, 2, 3] and updated_frames == []
    assert_tracks_like_reference(predictor, state, reference)


def test_clear_prompts_of_unknown_object_raises_and_keeps_state(predictor, state, reference):
    with pytest.raises(KeyError, match=r"obj_id: unknown object id 99; existing ids: \[1, 2, 3\]"):
        predictor.clear_all_prompts_in_frame(state, 0, 99)
    assert_tracks_like_reference(predictor, state, reference)


# ------------------------------------------------------------------ points and boxes

BAD_PROMPTS = [
    ("points_without_labels", dict(points=[[10, 10]]), ValueError, "points and labels must be provided together"),
    ("labels_without_points", dict(labels=[1]), ValueError, "points and labels must be provided together"),
    ("labels_length_mismatch", dict(points=[[10, 10], [20, 20]], labels=[1]), ValueError,
     r"labels: expected shape \(2,\) \(one label per point\), got \(1,\)"),
    ("label_value", dict(points=[[10, 10]], labels=[4]), ValueError, r"labels: expected 1 \(foreground\)"),
    ("point_right_of_frame", dict(points=[[W + 1, 10]], labels=[1]), ValueError,
     rf"point \[{W + 1}\.0, 10\.0\] \(x, y\) lies outside the {W}x{H} image"),
    ("point_below_frame", dict(points=[[10, H + 1]], labels=[1]), ValueError, "lies outside"),
    ("point_negative", dict(points=[[-1, 10]], labels=[1]), ValueError, "lies outside"),
    ("normalized_point_outside", dict(points=[[0.5, 1.5]], labels=[1], normalize_coords=False), ValueError,
     r"lies outside \[0, 1\]"),
    ("point_nan", dict(points=[[np.nan, 10]], labels=[1]), ValueError, "NaN"),
    ("points_rank_1", dict(points=[10, 10], labels=[1]), ValueError, r"expected shape \[N, 2\]"),
    ("box_x1_before_x0", dict(box=[50, 10, 20, 40]), ValueError,
     r"box: expected x0 <= x1 and y0 <= y1 in \(x0, y0, x1, y1\), got \[50\.0, 10\.0, 20\.0, 40\.0\]"),
    ("box_y1_before_y0", dict(box=[10, 50, 40, 20]), ValueError, "box: expected x0 <= x1 and y0 <= y1"),
    ("box_three_numbers", dict(box=[10, 10, 40]), ValueError, r"box: expected shape \[4\]"),
    ("two_boxes", dict(box=[[10, 10, 40, 40], [20, 20, 50, 50]]), ValueError, "box: one box per object, got 2"),
    ("box_without_clearing_old_points", dict(box=[10, 10, 40, 40], clear_old_points=False), ValueError,
     "please use clear_old_points=True"),
    ("neither_points_nor_box", dict(), ValueError, "at least one of points or box must be provided"),
]


@pytest.mark.parametrize("name,kwargs,exc,match", BAD_PROMPTS, ids=[b[0] for b in BAD_PROMPTS])
@pytest.mark.parametrize("obj_id", [1, 7], ids=["known_object", "new_object"])
def test_bad_points_or_box_raise_and_keep_state(predictor, state, reference, name, kwargs, exc, match, obj_id):
    with pytest.raises(exc, match=match):
        predictor.add_new_points_or_box(state, 0, obj_id, **kwargs)
    assert_tracks_like_reference(predictor, state, reference)


# ------------------------------------------------------------------ masks

BAD_MASKS = [
    ("wrong_width", np.zeros((H, W + 1), bool), ValueError,
     rf"mask: expected shape \({H}, {W}\) \(the video's height, width\), got \({H}, {W + 1}\)"),
    ("model_size_not_video_size", np.zeros((256, 256), bool), ValueError, r"mask: expected shape"),
    ("rank_3", np.zeros((1, H, W), bool), ValueError, rf"mask: expected shape .* got \(1, {H}, {W}\)"),
    ("rank_1", np.zeros(H * W, bool), ValueError, r"mask: expected shape"),
    ("tensor_rank_4", torch.zeros(1, 1, H, W), ValueError, r"mask: expected shape"),
    ("string", "mask.png", TypeError, r"mask: expected a \[H, W\] array, got str"),
    ("none", None, TypeError, r"mask: expected a \[H, W\] array, got NoneType"),
    ("ragged_list", [[1, 0], [1]], TypeError, r"mask: expected a \[H, W\] array, got list"),
]


@pytest.mark.parametrize("name,mask,exc,match", BAD_MASKS, ids=[b[0] for b in BAD_MASKS])
@pytest.mark.parametrize("obj_id", [1, 7], ids=["known_object", "new_object"])
def test_bad_mask_raises_and_keeps_state(predictor, state, reference, name, mask, exc, match, obj_id):
    with pytest.raises(exc, match=match):
        predictor.add_new_mask(state, 0, obj_id, mask)
    assert_tracks_like_reference(predictor, state, reference)


# ------------------------------------------------------------------ propagation


def test_propagate_without_prompts_raises_runtime_error_like_official(predictor, frames, reference):
    state = predictor.init_state(frames)
    with pytest.raises(RuntimeError, match="No input points or masks are provided for any object"):
        next(predictor.propagate_in_video(state))
    for obj_id in OBJECTS:
        click(predictor, state, obj_id)
    assert_tracks_like_reference(predictor, state, reference)


@pytest.mark.parametrize("resume_from", [None, 4], ids=["from_first_prompt", "from_where_it_stopped"])
def test_abandoned_propagation_resumes_like_an_uninterrupted_run(predictor, state, reference, resume_from):
    generator = predictor.propagate_in_video(state)
    first = {}
    for frame_idx, _, masks in generator:
        first[frame_idx] = masks.clone()
        if frame_idx == 3:
            break
    generator.close()
    assert_results_equal(first, reference)
    assert_state_consistent(state, [1, 2, 3])
    for obj_idx in range(3):
        assert sorted(state["frames_tracked_per_obj"][obj_idx]) == [0, 1, 2, 3]
    assert len(state["cached_features"]) <= predictor.feature_cache_size

    resumed = track(predictor, state, start_frame_idx=resume_from)
    assert list(resumed) == list(range(resume_from or 0, T))
    assert_results_equal(resumed, reference)
    assert_state_consistent(state, [1, 2, 3])


@contextmanager
def interrupt_on_call(module: torch.nn.Module, n: int):
    """Raise KeyboardInterrupt when ``module`` is called for the ``n``-th time."""
    calls = 0

    def hook(_module, _args):
        nonlocal calls
        calls += 1
        if calls == n:
            raise KeyboardInterrupt

    handle = module.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


# The memory encoder runs once per prompted object before tracking starts (3 calls here),
# then once per tracked frame for all objects at once (frame 0 has prompts: no call).


def test_keyboard_interrupt_mid_video_leaves_resumable_state(predictor, state, reference):
    seen = []
    with interrupt_on_call(predictor.memory_encoder, 6), pytest.raises(KeyboardInterrupt):
        for frame_idx, _, _ in predictor.propagate_in_video(state):
            seen.append(frame_idx)
    assert seen == [0, 1, 2]  # interrupted while tracking frame 3: nothing of it is stored
    assert_state_consistent(state, [1, 2, 3])
    for obj_idx in range(3):
        assert sorted(state["frames_tracked_per_obj"][obj_idx]) == [0, 1, 2]

    assert_results_equal(track(predictor, state), reference)
    assert_state_consistent(state, [1, 2, 3])


def test_keyboard_interrupt_before_tracking_starts_leaves_resumable_state(predictor, state, reference):
    with interrupt_on_call(predictor.memory_encoder, 2), pytest.raises(KeyboardInterrupt):
        next(predictor.propagate_in_video(state))
    for obj_idx in range(3):
        assert not state["frames_tracked_per_obj"][obj_idx]

    assert_results_equal(track(predictor, state), reference)
    assert_state_consistent(state, [1, 2, 3])


def test_keyboard_interrupt_while_prompting_leaves_objects_and_prompts_unchanged(predictor, state, reference):
    with interrupt_on_call(predictor.sam_mask_decoder, 1), pytest.raises(KeyboardInterrupt):
        click(predictor, state, 1, frame_idx=2, clear_old_points=False)  # known object: nothing to undo
    with interrupt_on_call(predictor.sam_mask_decoder, 1), pytest.raises(KeyboardInterrupt):
        predictor.add_new_points_or_box(state, 0, 7, points=[[5, 5]], labels=[1])
    with interrupt_on_call(predictor.sam_mask_decoder, 1), pytest.raises(KeyboardInterrupt):
        predictor.add_new_mask(state, 0, 8, np.ones((H, W), bool))
    assert state["obj_ids"] == [1, 2, 3]
    assert 2 not in state["point_inputs_per_obj"][0]
    assert_tracks_like_reference(predictor, state, reference)


# ------------------------------------------------------------------ adding / removing objects
# Objects are tracked independently; batched GEMMs over a different number of objects may
# round differently on some backends (on this CPU the results are identical), hence the tolerance.
ATOL = 1e-4


def test_adding_an_object_after_tracking_keeps_other_objects_results(predictor, frames):
    state = prompted_state(predictor, frames, obj_ids=(1, 2))
    before = track(predictor, state)
    _, obj_ids, masks = click(predictor, state, 3, frame_idx=4)
    assert obj_ids == [1, 2, 3]
    torch.testing.assert_close(masks[:2], before[4], rtol=0, atol=0)
    assert (masks[2, 0] > 0).any()

    after = track(predictor, state)
    assert list(after) == list(range(T))
    for f in range(T):
        torch.testing.assert_close(after[f][:2], before[f], rtol=0, atol=ATOL, msg=f"frame {f}")
    assert_state_consistent(state, [1, 2, 3])


def test_removing_one_of_three_objects_keeps_the_others_results(predictor, state, reference):
    track(predictor, state)
    obj_ids, updated_frames = predictor.remove_object(state, 2)
    assert obj_ids == [1, 3]
    assert [f for f, _ in updated_frames] == [0]
    torch.testing.assert_close(updated_frames[0][1], reference[0][[0, 2]], rtol=0, atol=0)
    assert_state_consistent(state, [1, 3])

    after = track(predictor, state)
    assert list(after) == list(range(T))
    for f in range(T):
        torch.testing.assert_close(after[f], reference[f][[0, 2]], rtol=0, atol=ATOL, msg=f"frame {f}")
    assert_state_consistent(state, [1, 3])


class FlakyFrames(FrameSource):
    """A frame source (a camera, a network stream) whose read of frame ``index`` fails
    once."""

    def __init__(self, frames: np.ndarray, index: int) -> None:
        self.frames, self.index, self.failed = frames, index, False
        self.num_frames, self.height, self.width = frames.shape[:3]

    def _read(self, i: int) -> np.ndarray:
        if i == self.index and not self.failed:
            self.failed = True
            raise OSError(f"frame {i}: input/output error")
        return self.frames[i]


def test_frame_source_error_mid_video_leaves_resumable_state(predictor, frames, reference):
    """A frame that cannot be read stops propagation with the error; the frames before it are
    stored, the state is consistent, and propagation resumes at the failed frame with the
    results of an uninterrupted run."""
    state = prompted_state(predictor, FlakyFrames(frames, index=4))
    seen = []
    with pytest.raises(OSError, match="frame 4: input/output error"):
        for f, _, _ in predictor.propagate_in_video(state):
            seen.append(f)
    assert seen == [0, 1, 2, 3]
    assert_state_consistent(state, [1, 2, 3])
    assert 4 not in state["frames_tracked_per_obj"][0]
    resumed = track(predictor, state, start_frame_idx=4)
    assert list(resumed) == list(range(4, len(frames)))
    assert_results_equal(resumed, reference)


def test_the_official_private_helpers_work_on_the_typed_state(predictor, frames):
    """Code written against the official predictor calls a few of its private helpers; they
    keep their official signatures and results (sam2_fast.predictors.video_compat)."""
    state = predictor.init_state(frames)
    click(predictor, state, 1)
    _, obj_ids, masks = click(predictor, state, 2)
    assert predictor._get_obj_num(state) == 2 and predictor._obj_idx_to_id(state, 1) == 2
    assert predictor._obj_id_to_idx(state, 2) == 1
    low_res = torch.stack([state["temp_output_dict_per_obj"][i]["cond_frame_outputs"][0]["pred_masks"][0]
                           for i in range(2)])
    any_res, video_res = predictor._get_orig_video_res_output(state, low_res)
    assert any_res.shape == low_res.shape and video_res.shape == (2, 1, H, W)
    torch.testing.assert_close(video_res, masks)  # what the click returned for the frame
    assert predictor._obj_id_to_idx(state, "new") == 2 and state["obj_ids"] == [1, 2, "new"]
    predictor._reset_tracking_results(state)
    assert state["obj_ids"] == [1, 2, "new"]  # the objects stay, their prompts and outputs go
    assert all(not v for v in state["point_inputs_per_obj"].values())
    assert all(not d["cond_frame_outputs"] for d in state["temp_output_dict_per_obj"].values())
