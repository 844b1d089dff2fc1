"""SAM2VideoPredictor parity with the official package on the same random weights.

Configuration (the most exact one in which the oracle runs on CPU): fp32, the oracle's
stored bf16 memories handed back as float32 (see ``official_video_predictor``), its
CUDA-only hole filling given an independent scipy labelling. The main scenario runs the
models at ``image_size=512`` (the same code paths, 16x cheaper memory attention) so CI stays
fast; a short scenario runs at the official 1024.

Thresholds (issue [2/6]): per (frame, object) mask IoU, mean >= 0.99 and min >= 0.95.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import numpy as np
import pytest
import torch
from PIL import Image

from oracle_support import import_oracle, official_video_predictor
from sam2_fast import build_sam2_video_predictor
from sam2_fast.modeling.config import PRESETS
from sam2_fast.modeling.init import random_state_dict
from sam2_fast.predictors.video_state import OFFICIAL_KEYS
from sam2_fast.sample import sample_video_frame, sample_video_objects

NAME = "sam2.1-hiera-tiny"
IOU_MEAN, IOU_MIN = 0.99, 0.95
H, W = 384, 512


def video_weights(seed: int = 1) -> Dict[str, torch.Tensor]:
    """Random weights whose object-presence head leans to "present", so that most tracked
    masks are non-empty and the comparison is not trivially between empty masks."""
    sd = random_state_dict(PRESETS[NAME], seed=seed)
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += 3.0
    return sd


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("video")
    for i in range(16):
        Image.fromarray(sample_video_frame(i, H, W)).save(folder / f"{i:05d}.jpg", quality=95)
    return folder


def build_pair(image_size: int, sd):
    import_oracle()
    overrides = [f"++model.image_size={image_size}"] if image_size != 1024 else []
    official = official_video_predictor(NAME, sd, overrides)
    ours = build_sam2_video_predictor(NAME, None, device="cpu", hydra_overrides_extra=overrides)
    ours.load_state_dict(sd)
    return ours.eval(), official


def box_around(center: Tuple[int, int], half: int = 45):
    return [center[0] - half, center[1] - half, center[0] + half, center[1] + half]


def run_scenario(predictor, video) -> Dict[tuple, torch.Tensor]:
    """Three objects; clicks and a box on different frames; forward tracking; a refinement
    click on a tracked frame; forward again from there; then reverse tracking."""
    results: Dict[tuple, torch.Tensor] = {}
    state = predictor.init_state(str(video))
    at0, at3 = sample_video_objects(0, H, W), sample_video_objects(3, H, W)
    results["prompt", 1] = predictor.add_new_points_or_box(state, 0, 1, points=[at0["disc"]], labels=[1])[2]
    results["prompt", 3] = predictor.add_new_points_or_box(
        state, 0, 3, points=[at0["triangle"], (450, 60)], labels=[1, 0]
    )[2]
    results["prompt", 2] = predictor.add_new_points_or_box(state, 3, 2, box=box_around(at3["square"]))[2]
    for f, _, masks in predictor.propagate_in_video(state, max_frame_num_to_track=10):
        results["forward", f] = masks
    at6 = sample_video_objects(6, H, W)["disc"]
    results["refine", 1] = predictor.add_new_points_or_box(
        state, 6, 1, points=[(at6[0] + 4, at6[1])], labels=[1], clear_old_points=False
    )[2]
    for f, _, masks in predictor.propagate_in_video(state, start_frame_idx=6):
        results["forward2", f] = masks
    for f, _, masks in predictor.propagate_in_video(state, start_frame_idx=15, reverse=True):
        results["reverse", f] = masks
    assert state["obj_ids"] == [1, 3, 2]
    return results


def click_box_and_track(predictor, video, box_frame: int, frames: int) -> Dict[object, torch.Tensor]:
    """A click on object 1 at frame 0, a box around object 2 at ``box_frame``, then forward
    tracking over ``frames`` more frames."""
    results: Dict[object, torch.Tensor] = {}
    state = predictor.init_state(str(video))
    at0 = sample_video_objects(0, H, W)
    results["click"] = predictor.add_new_points_or_box(state, 0, 1, points=[at0["disc"]], labels=[1])[2]
    results["box"] = predictor.add_new_points_or_box(state, box_frame, 2, box=box_around(at0["square"]))[2]
    for f, _, masks in predictor.propagate_in_video(state, max_frame_num_to_track=frames):
        results[f] = masks
    return results


def mask_ious(ours: Dict[tuple, torch.Tensor], ref: Dict[tuple, torch.Tensor]):
    assert ours.keys() == ref.keys()
    ious, nonempty = [], 0
    for key in ref:
        a, b = ours[key] > 0, ref[key] > 0
        assert a.shape == b.shape, key
        for j in range(a.shape[0]):
            union = (a[j] | b[j]).sum().item()
            ious.append(1.0 if union == 0 else (a[j] & b[j]).sum().item() / union)
            nonempty += int(b[j].any())
    return np.array(ious), nonempty


@pytest.fixture(scope="module")
def scenario_512(frames_dir):
    ours, official = build_pair(512, video_weights())
    return run_scenario(ours, frames_dir), run_scenario(official, frames_dir), ours


def test_video_masks_match_official(scenario_512):
    ours, ref, _ = scenario_512
    ious, nonempty = mask_ious(ours, ref)
    assert nonempty >= 0.5 * len(ious), f"only {nonempty}/{len(ious)} official masks are non-empty"
    assert ious.mean() >= IOU_MEAN and ious.min() >= IOU_MIN, (ious.mean(), ious.min())


def test_forced_reference_backends_match_default(frames_dir, scenario_512):
    """Every op forced to its plain-torch reference (rope_attention: SDPA on 256-dim values
    instead of the blocked kernel on folded 64-dim values) gives the same tracking."""
    from sam2_fast.ops import use_backend

    default, _, predictor = scenario_512
    with use_backend("reference"):
        forced = run_scenario(predictor, frames_dir)
    ious, _ = mask_ious(forced, default)
    assert ious.min() >= 0.999, ious.min()


def test_batched_objects_equal_objects_one_by_one(frames_dir, scenario_512):
    """Objects batched through every stage (memory attention included, as on the GPU) give
    the results of objects tracked one at a time."""
    _, _, predictor = scenario_512
    original = type(predictor)._track_objects

    def one_by_one(self, state, frame_idx, obj_indices, reverse):
        outputs, masks = {}, {}
        for obj_idx in obj_indices:
            out, mask = original(self, state, frame_idx, [obj_idx], reverse)
            outputs.update(out)
            masks.update(mask)
        return outputs, masks

    # Hole filling is a threshold on connected-component areas: rounding noise of a batched
    # GEMM can flip a borderline component there (a logit jump of ~3), so compare the
    # continuous logits it starts from. It never feeds back into the memory.
    fill_hole_area = predictor.fill_hole_area
    predictor.fill_hole_area = 0
    try:
        predictor.memory_attention_batch_size = 64
        batched = run_scenario(predictor, frames_dir)
        predictor.memory_attention_batch_size = None
        predictor._track_objects = one_by_one.__get__(predictor)
        single = run_scenario(predictor, frames_dir)
    finally:
        predictor.__dict__.pop("_track_objects", None)
        predictor.memory_attention_batch_size = None
        predictor.fill_hole_area = fill_hole_area
    ious, _ = mask_ious(batched, single)
    assert ious.min() >= 0.999, ious.min()
    for key in batched:
        torch.testing.assert_close(batched[key], single[key], rtol=1e-3, atol=1e-3, msg=lambda m: f"{key}: {m}")


def test_video_masks_match_official_at_full_resolution(frames_dir):
    ours, official = build_pair(1024, video_weights(seed=2))
    short = dict(video=frames_dir, box_frame=1, frames=3)
    ious, _ = mask_ious(click_box_and_track(ours, **short), click_box_and_track(official, **short))
    assert ious.mean() >= IOU_MEAN and ious.min() >= IOU_MIN, (ious.mean(), ious.min())


def run_editing_session(predictor, video) -> Dict[tuple, torch.Tensor]:
    """The editing calls of an interactive session, each output compared: a mask prompt, an
    object added after tracking started, a refinement click then cleared again
    (``clear_all_prompts_in_frame``), an object removed (``remove_object``), reverse
    tracking, and the state reset and reused."""
    results: Dict[tuple, torch.Tensor] = {}
    state = predictor.init_state(str(video))
    at0 = sample_video_objects(0, H, W)
    yy, xx = np.mgrid[:H, :W]
    disc = (xx - at0["disc"][0]) ** 2 + (yy - at0["disc"][1]) ** 2 <= 30**2
    _, ids, results["mask prompt"] = predictor.add_new_mask(state, 0, 1, disc)
    _, ids, results["click"] = predictor.add_new_points_or_box(state, 0, 2, points=[at0["triangle"]], labels=[1])
    for f, _, masks in predictor.propagate_in_video(state, max_frame_num_to_track=5):
        results["first", f] = masks
    at4 = sample_video_objects(4, H, W)
    _, ids, results["new object after tracking"] = predictor.add_new_points_or_box(
        state, 4, 3, box=box_around(at4["square"], 40)
    )
    results["ids after add"] = torch.tensor(ids)
    at5 = sample_video_objects(5, H, W)["triangle"]
    results["refine"] = predictor.add_new_points_or_box(
        state, 5, 2, points=[(at5[0] - 20, at5[1])], labels=[0], clear_old_points=False
    )[2]
    for f, _, masks in predictor.propagate_in_video(state, start_frame_idx=4, max_frame_num_to_track=4):
        results["second", f] = masks
    _, ids, results["cleared"] = predictor.clear_all_prompts_in_frame(state, 5, 2)
    ids, updated = predictor.remove_object(state, 1)  # (ids, [(frame, masks)]) as official
    results["ids after remove"] = torch.tensor(ids)
    results["frames updated by the removal"] = torch.tensor([f for f, _ in updated])
    for f, masks in updated:
        results["removed", f] = masks
    for f, _, masks in predictor.propagate_in_video(state, start_frame_idx=8, reverse=True):
        results["reverse", f] = masks
    predictor.reset_state(state)
    _, ids, results["after reset"] = predictor.add_new_points_or_box(state, 2, 5, points=[at0["disc"]], labels=[1])
    for f, _, masks in predictor.propagate_in_video(state, max_frame_num_to_track=3):
        results["third", f] = masks
    return results


def test_editing_session_matches_official(frames_dir):
    ours, official = build_pair(256, video_weights(seed=3))  # the code paths of 1024, 16x cheaper
    with torch.inference_mode():
        mine, ref = run_editing_session(ours, frames_dir), run_editing_session(official, frames_dir)
    for key in ("ids after add", "ids after remove", "frames updated by the removal"):
        assert mine.pop(key).tolist() == ref.pop(key).tolist(), key
    assert len(mine["removed", 0]) == 2 and len(mine["after reset"]) == 1
    ious, nonempty = mask_ious(mine, ref)
    assert nonempty >= 0.5 * len(ious), f"only {nonempty}/{len(ious)} official masks are non-empty"
    print(f"editing session: {len(ious)} masks, {nonempty} non-empty, IoU mean {ious.mean():.4f} min {ious.min():.4f}")
    assert ious.mean() >= IOU_MEAN and ious.min() >= IOU_MIN, (ious.mean(), ious.min())


def test_tracking_with_the_triton_rope_attention_matches_official(frames_dir, triton_interpreter):
    """Tracking with every memory-attention call (self-attention, and cross-attention over
    1..6 memory frames plus object pointers, two objects batched) forced to the Triton
    kernels, in Triton's CPU interpreter (float32), against the official predictor. At
    ``image_size=128`` (the interpreter's cost) the attention has 64 queries and up to
    7 x 64 + 16 keys; the code paths are those of 1024."""
    from sam2_fast.ops import get_op, use_backend

    triton_interpreter("sam2_fast.kernels.rope_attention")
    ours, official = build_pair(128, video_weights(seed=4))
    tokens = (128 // 16) ** 2
    # no hole filling on either side: a borderline component flipped by rounding would move
    # the logits compared below by ~1e-2 (it is compared in the other tests)
    ours.fill_hole_area = official.fill_hole_area = 0

    op = get_op("rope_attention")
    ran = []
    original = op.select

    def select(*args, **kwargs):
        backend = original(*args, **kwargs)
        ran.append((backend.name, args[1].shape[2], args[5]))  # name, keys, keys without RoPE
        return backend

    with torch.inference_mode():
        ref = click_box_and_track(official, frames_dir, box_frame=0, frames=7)
        # the image encoder on its reference, not on the interpreter's choice (triton)
        with use_backend("reference", op="window_attention"), use_backend("triton", op="rope_attention"):
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(op, "select", select)
                mine = click_box_and_track(ours, frames_dir, box_frame=0, frames=7)
    assert {name for name, _, _ in ran} == {"triton"}, ran
    assert max(keys for _, keys, _ in ran) > 6 * tokens and max(ptr for _, _, ptr in ran) > 0, ran
    ious, nonempty = mask_ious(mine, ref)
    assert nonempty >= 0.5 * len(ious), f"only {nonempty}/{len(ious)} official masks are non-empty"
    rel = max(((mine[k] - ref[k]).norm() / ref[k].norm()).item() for k in ref)
    print(
        f"triton rope_attention: {len(ran)} calls, {len(ious)} masks, "
        f"IoU mean {ious.mean():.4f} min {ious.min():.4f}, logits rel L2 {rel:.2e}"
    )
    assert ious.mean() >= IOU_MEAN and ious.min() >= IOU_MIN, (ious.mean(), ious.min())
    # float32 on both sides: the logits too (rotating the object pointers, a mistake that
    # keeps every IoU above 0.98, moves them by 1.7e-2)
    assert rel <= 1e-3, f"video-resolution logits rel L2 {rel:.2e}"


def layout(value: Any) -> Any:
    """The nested structure of a state value: dict keys, list lengths and tensor shapes
    (dtypes aside: the oracle's memories are handed back as float32, see
    ``official_video_predictor``)."""
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape))
    if isinstance(value, Mapping):
        return {k: layout(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [layout(v) for v in value]
    return value


def tensors(value: Any, path: str = "") -> Iterator[Tuple[str, torch.Tensor]]:
    """Every tensor in a nested state value, with its path."""
    if isinstance(value, torch.Tensor):
        yield path, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from tensors(v, f"{path}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from tensors(v, f"{path}[{i}]")


def prompt_and_track(predictor, video):
    """A mask prompt and a click on two frames, tracking over 5 frames, then a correction
    click on a tracked frame and a box on a new frame (both not tracked yet)."""
    state = predictor.init_state(str(video))
    at0 = sample_video_objects(0, H, W)
    yy, xx = np.mgrid[:H, :W]
    predictor.add_new_points_or_box(state, 0, 1, points=[at0["disc"]], labels=[1])
    predictor.add_new_mask(state, 1, 7, (xx - at0["triangle"][0]) ** 2 + (yy - at0["triangle"][1]) ** 2 <= 30**2)
    for _ in predictor.propagate_in_video(state, max_frame_num_to_track=4):
        pass
    at3 = sample_video_objects(3, H, W)["disc"]
    predictor.add_new_points_or_box(state, 3, 1, points=[(at3[0] + 4, at3[1])], labels=[1], clear_old_points=False)
    predictor.add_new_points_or_box(state, 6, 2, box=box_around(sample_video_objects(6, H, W)["square"]))
    return state


def test_inference_state_keys_hold_what_the_official_ones_hold(frames_dir):
    """Code written for the official package reads ``inference_state[key]``: every official
    key reads on ours, in the official order, with the same structure (objects, frames,
    output keys, tensor shapes) and the same values (prompts, images, constants exactly up to
    float rounding; stored masks within the parity thresholds). Stored memories are bfloat16
    as in the official package (its test shim hands them back as float32); this project
    keeps image features of the last ``feature_cache_size`` frames where it keeps the last one."""
    ours, official = build_pair(128, video_weights(seed=5))  # the code paths of 1024
    with torch.inference_mode():
        mine, ref = prompt_and_track(ours, frames_dir), prompt_and_track(official, frames_dir)
    assert list(mine.keys()) == list(ref.keys()) == list(OFFICIAL_KEYS)
    assert all(key in mine and mine.get(key) is not None for key in ref)
    for key in ("num_frames", "offload_video_to_cpu", "offload_state_to_cpu", "video_height", "video_width",
                "device", "storage_device", "obj_ids", "obj_id_to_idx", "obj_idx_to_id", "frames_tracked_per_obj"):
        assert mine[key] == ref[key], key
    assert mine["obj_ids"] == [1, 7, 2] and len(mine["images"]) == len(ref["images"]) == mine["num_frames"]
    for f in range(mine["num_frames"]):
        torch.testing.assert_close(mine["images"][f], ref["images"][f], msg=lambda m: f"images[{f}]: {m}")
    for key in ("point_inputs_per_obj", "mask_inputs_per_obj", "constants"):
        assert layout(mine[key]) == layout(ref[key]), key
        for (path, a), (_, b) in zip(tensors(mine[key]), tensors(ref[key])):
            torch.testing.assert_close(a, b, msg=lambda m: f"{key}{path}: {m}")
    masks_mine, masks_ref = {}, {}
    for key in ("output_dict_per_obj", "temp_output_dict_per_obj"):
        assert layout(mine[key]) == layout(ref[key]), key
        for obj_idx, outputs in ref[key].items():
            for kind, by_frame in outputs.items():
                for f, out in by_frame.items():
                    masks_mine[key, obj_idx, kind, f] = mine[key][obj_idx][kind][f]["pred_masks"]
                    masks_ref[key, obj_idx, kind, f] = out["pred_masks"]
                    features = mine[key][obj_idx][kind][f]["maskmem_features"]
                    assert features is None or features.dtype == torch.bfloat16
    assert any(not o.temp_outputs.is_empty() for o in mine.objects), "the scenario should leave prompts to encode"
    ious, _ = mask_ious(masks_mine, masks_ref)
    assert ious.mean() >= IOU_MEAN and ious.min() >= IOU_MIN, (ious.mean(), ious.min())
    assert set(ref["cached_features"]) <= set(mine["cached_features"])
    for f, (image, backbone_out) in ref["cached_features"].items():
        assert layout(mine["cached_features"][f][1]) == layout(backbone_out)
        torch.testing.assert_close(mine["cached_features"][f][0], image)
