"""The typed video session (``sam2_fast.predictors.video_state``): object-id bookkeeping, the
stream's pruning, and the official ``inference_state`` dict face (every official key, live
per-object views, writes through nested dicts, a clear KeyError for unknown keys).

No model: the state is built by hand over a 4-frame array video. The same keys read against
the official package after real prompts and tracking: ``tests/parity/test_video_parity.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam2_fast.errors import UnknownObjectError
from sam2_fast.predictors.video_io import LazyVideoFrames, open_video
from sam2_fast.predictors.video_state import OFFICIAL_KEYS, FrameOutputs, InferenceState


def new_state(**kwargs) -> InferenceState:
    frames = LazyVideoFrames(open_video(np.zeros((4, 6, 8, 3), np.uint8)), 16, device=torch.device("cpu"))
    return InferenceState(frames, num_frames=4, video_height=6, video_width=8, device=torch.device("cpu"), **kwargs)


def output(value: float = 0.0) -> dict:
    return {"maskmem_features": torch.full((1, 2), value), "pred_masks": torch.full((1, 1, 2, 2), value)}


@pytest.fixture
def state() -> InferenceState:
    """Objects "a", "b", "c" (indices 0, 1, 2), each with a click on frame 1 and a tracked frame 2."""
    s = new_state()
    for k, obj_id in enumerate("abc"):
        obj = s.objects[s.index_or_add(obj_id)]
        obj.point_inputs[1] = {"point_coords": torch.full((1, 1, 2), float(k)), "point_labels": torch.ones(1, 1)}
        obj.outputs.cond_frame_outputs[1] = output(k)
        obj.outputs.non_cond_frame_outputs[2] = output(k)
        obj.frames_tracked.update({1: {"reverse": False}, 2: {"reverse": False}})
    return s


# ------------------------------------------------------------------ object ids


def test_new_ids_get_the_next_index_and_known_ids_keep_theirs(state):
    assert state.index_or_add("b") == 1 and state.index_or_add(7) == 3
    assert state.obj_ids == ["a", "b", "c", 7] and state.num_objects == 4
    assert state.index_of("zz") is None


def test_unknown_id_raises_naming_the_existing_ids(state):
    with pytest.raises(UnknownObjectError, match=r"unknown object id 'zz'; existing ids: \['a', 'b', 'c'\]"):
        state.existing_index("zz")


def test_removing_an_object_compacts_the_indices(state):
    removed = state.remove_object(1)
    assert removed.obj_id == "b" and removed.prompted_frames() == {1}
    assert state.obj_ids == ["a", "c"]
    assert state.obj_id_to_idx == {"a": 0, "c": 1} and state.obj_idx_to_id == {0: "a", 1: "c"}
    assert state.existing_index("c") == 1
    assert state["point_inputs_per_obj"][1][1]["point_coords"][0, 0, 0].item() == 2.0  # "c"'s own click moved down
    assert state.index_or_add("d") == 2


def test_clear_objects_empties_the_dicts_a_caller_may_hold(state):
    held = state["output_dict_per_obj"][0]["cond_frame_outputs"]
    state.clear_objects()
    assert state.obj_ids == [] and not held and state.index_of("a") is None


def test_cleared_prompts_leave_an_ordinary_tracked_frame(state):
    obj = state.objects[0]
    obj.temp_outputs.cond_frame_outputs[1] = output(5)
    obj.clear_prompts(1)
    assert not obj.point_inputs and obj.temp_outputs.is_empty()
    assert 1 not in obj.outputs.cond_frame_outputs and obj.outputs.non_cond_frame_outputs[1]["pred_masks"].max() == 0
    assert 1 not in obj.frames_tracked


def test_latest_output_prefers_a_prompt_not_yet_encoded(state):
    obj = state.objects[2]
    assert obj.latest_output(1, cond=True) is obj.outputs.cond_frame_outputs[1]
    obj.temp_outputs.cond_frame_outputs[1] = newer = output(9)
    assert obj.latest_output(1, cond=True) is newer
    assert obj.latest_output(1, cond=False) is obj.outputs.cond_frame_outputs[1]
    assert state.has_temp_outputs() and state.has_temp_cond_output(1) and not state.has_temp_cond_output(2)


def test_stream_pruning_keeps_only_what_later_frames_read():
    s = new_state()
    obj = s.objects[s.index_or_add(1)]
    obj.outputs.cond_frame_outputs[0] = output()
    for t in range(1, 12):
        obj.outputs.non_cond_frame_outputs[t] = output(t)
        obj.frames_tracked[t] = {"reverse": False}
        obj.mask_inputs[t] = torch.zeros(1, 1, 4, 4)
    obj.frames_tracked[0] = {"reverse": False}
    s.forget_old_frames(11, spatial_window=3, pointer_window=6)
    non_cond = obj.outputs.non_cond_frame_outputs
    assert sorted(non_cond) == list(range(6, 12))  # the pointer window
    assert non_cond[8]["maskmem_features"] is None and non_cond[8]["pred_masks"] is None  # outside the spatial window
    assert non_cond[9]["maskmem_features"] is not None
    assert sorted(obj.frames_tracked) == [0, 10, 11]  # the prompted frame stays
    assert sorted(obj.mask_inputs) == [10, 11]


def test_tensor_bytes_count_each_storage_once():
    s = new_state()
    obj = s.objects[s.index_or_add(1)]
    shared = torch.zeros(100)
    obj.outputs.cond_frame_outputs[0] = {"a": shared, "b": shared[:10]}
    s.constants["x"] = [torch.zeros(25)]
    s["mine"] = torch.zeros(5)  # a caller's key counts too
    assert s.tensor_bytes() == 4 * (100 + 25 + 5)


# ------------------------------------------------------------------ the official dict face


def test_every_official_key_reads_and_nothing_else(state):
    assert list(state) == list(OFFICIAL_KEYS) and len(state) == len(OFFICIAL_KEYS)
    assert all(key in state for key in OFFICIAL_KEYS) and "leaked" not in state
    assert state["num_frames"] == 4 and (state["video_height"], state["video_width"]) == (6, 8)
    assert state["device"] == state["storage_device"] == torch.device("cpu")
    assert state["obj_ids"] == ["a", "b", "c"] and state["obj_id_to_idx"] == {"a": 0, "b": 1, "c": 2}
    assert state["obj_idx_to_id"] == {0: "a", 1: "b", 2: "c"}
    assert state["images"] is state.images and state["cached_features"] is state.cached_features
    for key in ("point_inputs_per_obj", "mask_inputs_per_obj", "output_dict_per_obj",
                "temp_output_dict_per_obj", "frames_tracked_per_obj"):
        assert sorted(state[key]) == [0, 1, 2] and len(state[key]) == 3, key
    assert state.get("nope") is None and state.get("nope", 5) == 5
    assert dict(state.items())["num_frames"] == 4


def test_unknown_key_raises_naming_it_and_the_known_keys(state):
    known = r"known keys: images, num_frames, .*, frames_tracked_per_obj"
    with pytest.raises(KeyError, match=rf"inference_state has no key 'output_dict'; {known}"):
        state["output_dict"]
    with pytest.raises(KeyError, match="known keys: cond_frame_outputs, non_cond_frame_outputs"):
        state["output_dict_per_obj"][0]["cond"]
    with pytest.raises(KeyError):
        state["point_inputs_per_obj"][3]


def test_per_object_views_are_live(state):
    view = state["frames_tracked_per_obj"]
    state.index_or_add("d")
    assert sorted(view) == [0, 1, 2, 3] and view[3] == {}
    state.remove_object(0)
    assert view[0] is state.objects[0].frames_tracked and state.objects[0].obj_id == "b"


def test_writes_through_nested_dicts_change_the_state(state):
    state["point_inputs_per_obj"][0].pop(1)
    assert not state.objects[0].point_inputs
    state["output_dict_per_obj"][1]["non_cond_frame_outputs"][3] = out = output(3)
    assert state.objects[1].outputs.non_cond_frame_outputs[3] is out
    state["output_dict_per_obj"][2]["cond_frame_outputs"] = replaced = {}
    assert state.objects[2].outputs.cond_frame_outputs is replaced
    state["mask_inputs_per_obj"][0] = masks = {0: torch.zeros(1, 1, 16, 16)}
    assert state.objects[0].mask_inputs is masks
    state["cached_features"].clear()
    state["video_height"] = 12
    assert state.video_hw == (12, 8)
    state.setdefault("leaked", []).append(1)  # a caller's own key, as in a dict
    assert state["leaked"] == [1] and "leaked" in state and list(state)[-1] == "leaked"
    del state["leaked"]
    assert "leaked" not in state


def test_derived_keys_cannot_be_replaced_or_deleted(state):
    with pytest.raises(TypeError, match="derived from the tracked objects"):
        state["obj_ids"] = []
    with pytest.raises(TypeError, match="derived from the tracked objects"):
        state["output_dict_per_obj"] = {}
    with pytest.raises(TypeError, match="cannot be deleted"):
        del state["num_frames"]
    with pytest.raises(TypeError, match="remove_object"):
        del state["point_inputs_per_obj"][0]


def test_output_dicts_read_as_the_official_pair():
    outputs = FrameOutputs()
    outputs.frames(cond=True)[3] = out = output()
    assert dict(outputs) == {"cond_frame_outputs": {3: out}, "non_cond_frame_outputs": {}}
    assert outputs.output_at(3) is out and outputs.output_at(4) is None
