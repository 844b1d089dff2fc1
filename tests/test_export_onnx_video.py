"""ONNX export, video parts (sam2_fast.export): memory_attention.onnx and memory_encoder.onnx
pass onnx.checker with the contract's names, equal the torch modules on the inputs the official
memory assembly builds (any number of memories and pointers, none included), and
OnnxVideoTracker (numpy + onnxruntime) tracks a generated clip as our SAM2VideoPredictor does,
forward and backward.

Tolerances (float32 against float32, same weights): memory attention and memory encoder
rel-L2 <= 1e-4; tracker masks mean IoU >= 0.99 over frames and objects (the onnxruntime graphs
and our predictor's fast CPU kernels round differently, and a frame's error feeds the next
frames' memories).

The model is sam2.1-hiera-tiny with random weights at image size 256 (a 16 x 16 token grid:
the whole chain is size-generic): export_support.tracking_model, whose docstring says why it
fills no holes and raises the object-score bias to +10."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import export_support as es
from sam2_fast.export import OnnxVideoTracker, export_onnx
from sam2_fast.modeling.memory_plan import MemoryPlan

es.import_onnx()  # or skip

MODEL = "sam2.1-hiera-tiny"
SIZE = 256
GRID = SIZE // 16
REL_L2 = 1e-4
MEAN_IOU = 0.99
NUM_FRAMES = 6


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tracking model (export_support.tracking_model) and its export."""
    model = es.tracking_model(MODEL, SIZE)
    out = tmp_path_factory.mktemp("onnx_video")
    export_onnx(model, out, variant=MODEL)
    return model, out


def test_video_graphs_are_plain_onnx_with_the_contract_names(exported):
    _, out = exported
    desc = json.loads((out / "export.json").read_text())
    assert desc["video"]["num_maskmem"] == 7 and desc["video"]["max_obj_ptrs_in_encoder"] == 16
    for name in ("memory_attention.onnx", "memory_encoder.onnx"):
        es.check_onnx_file(out / name, desc["files"][name])
    decoder = [o["name"] for o in desc["files"]["prompt_decoder.onnx"]["outputs"]]
    assert decoder[2:] == ["mask_logits", "mask_scores", "obj_ptrs", "object_score_logits"]


@pytest.mark.parametrize("num_memories,num_pointers", [(1, 1), (3, 5), (7, 16), (2, 0)])
def test_memory_attention_matches_the_torch_module(exported, num_memories, num_pointers):
    """The graph's inputs built from memories and pointers as the tracker builds them equal
    the official assembly (``assemble_memory``) fed to the torch module."""
    model, out = exported
    g = torch.Generator().manual_seed(num_memories * 100 + num_pointers)
    raw = torch.randn(1, 256, GRID, GRID, generator=g)
    memories = torch.randn(num_memories, 64, GRID, GRID, generator=g)
    t_pos = torch.randint(0, 7, (num_memories,), generator=g).tolist()
    pointers = torch.randn(num_pointers, 256, generator=g)
    distances = [(-1) ** j * (j + 1) for j in range(num_pointers)]  # signed, as tracked backwards
    with torch.no_grad():
        pos = [model.memory_encoder.position_encoding.encoding(GRID, GRID, "cpu")[None]]
        plan = MemoryPlan(
            spatial=[(t, {"maskmem_features": memories[i : i + 1], "maskmem_pos_enc": pos}) for i, t in enumerate(t_pos)],
            pointers=[(d, {"obj_ptr": pointers[j : j + 1]}) for j, d in enumerate(distances)],
            max_obj_ptrs=16,
        )
        curr_pos = model.image_encoder.neck.position_encoding.encoding(GRID, GRID, "cpu")
        memory, memory_pos, num_ptr_tokens = model.assemble_memory([plan], torch.device("cpu"))
        want = model.memory_attention(
            curr=[raw.flatten(2).permute(2, 0, 1)], curr_pos=[curr_pos[None].flatten(2).permute(2, 0, 1)],
            memory=memory, memory_pos=memory_pos, num_obj_ptr_tokens=num_ptr_tokens,
        ).permute(1, 2, 0).reshape(1, 256, GRID, GRID)
        image_embed = raw + model.no_mem_embed.reshape(1, -1, 1, 1)
    got = es.onnx_session(out, "memory_attention.onnx").run(None, {
        "image_embed": image_embed.numpy(),
        "memory": memories.numpy(),
        "memory_tpos": np.array(t_pos, np.int64),
        "obj_ptrs": pointers.numpy().reshape(num_pointers, 256),
        "obj_ptr_tpos": np.array(distances, np.float32) / np.float32(15),
    })[0]
    assert got.shape == (1, 256, GRID, GRID)
    assert es.rel_l2(got, want.numpy()) <= REL_L2


@pytest.mark.parametrize("from_points,score", [(True, 3.0), (False, 3.0), (False, -2.0)])
def test_memory_encoder_matches_the_torch_model(exported, from_points, score):
    model, out = exported
    g = torch.Generator().manual_seed(int(from_points) * 10 + int(score))
    raw = torch.randn(1, 256, GRID, GRID, generator=g)
    low_res = torch.randn(1, 1, SIZE // 4, SIZE // 4, generator=g) * 8
    scores = torch.full((1, 1), score)
    with torch.no_grad():
        high_res = torch.nn.functional.interpolate(low_res, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        want, _ = model._encode_new_memory(
            [raw.flatten(2).permute(2, 0, 1)], [(GRID, GRID)], high_res, scores, is_mask_from_pts=from_points
        )
        image_embed = raw + model.no_mem_embed.reshape(1, -1, 1, 1)
    got = es.onnx_session(out, "memory_encoder.onnx").run(None, {
        "image_embed": image_embed.numpy(),
        "mask_logits": low_res.numpy(),
        "object_score_logits": scores.numpy(),
        "is_mask_from_pts": np.array([float(from_points)], np.float32),
    })[0]
    assert es.rel_l2(got, want.numpy()) <= REL_L2


def test_onnx_tracker_matches_the_video_predictor(exported):
    """Object 1 from a click, object 2 from a box on a later frame (export_support)."""
    model, out = exported
    es.check_two_object_tracking(model, OnnxVideoTracker(out), NUM_FRAMES, SIZE, MEAN_IOU)


def test_onnx_tracker_matches_the_video_predictor_on_three_objects(exported):
    """Three objects with their own prompts, on a clip with a second shape: object 1 from a
    click on frame 0 and two clicks (one negative) on frame 3, so two conditioning frames;
    object 2 from a box on frame 1; object 3 from a positive and a negative click on frame 4,
    tracked on frames 0 to 3 from that future conditioning frame. Each object against our
    predictor's mask of the same object."""
    model, out = exported
    frames = es.clip(NUM_FRAMES, SIZE)
    for i in range(NUM_FRAMES):  # a blue square moving left
        frames[i, 150 - 3 * i : 210 - 3 * i, 180 - 8 * i : 240 - 8 * i] = (40, 60, 230)
    prompts = [
        (0, 1, {"points": [[100, 100]], "labels": [1]}),
        (3, 1, {"points": [[120, 110], [30, 200]], "labels": [1, 0]}),
        (1, 2, {"box": [165, 145, 235, 210]}),
        (4, 3, {"points": [[70, 220], [200, 40]], "labels": [1, 0]}),
    ]
    state = model.init_state(frames)
    for frame_idx, obj_id, prompt in prompts:
        model.add_new_points_or_box(state, frame_idx, obj_id, **prompt)
    ours = {t: (list(ids), (logits[:, 0] > 0).numpy()) for t, ids, logits in model.propagate_in_video(state)}

    tracker = OnnxVideoTracker(out)
    tracker.init(frames)
    for frame_idx, obj_id, prompt in prompts:
        tracker.add_points(frame_idx, obj_id, **prompt)
    tracked = list(tracker.propagate())
    for t, obj_ids, masks in tracked:
        assert obj_ids == ours[t][0] == [1, 2, 3] and masks.shape == (3, SIZE, SIZE)
    ious = np.reshape(es.mask_ious(tracked, {t: masks for t, (_, masks) in ours.items()}), (-1, 3))  # frame, object
    assert sorted(ours) == list(range(NUM_FRAMES)) and ious.shape == (NUM_FRAMES, 3)
    for obj_id, values in zip([1, 2, 3], ious.T):
        assert np.mean(values) >= MEAN_IOU, f"object {obj_id}: mean IoU {np.mean(values):.4f}"


def test_tracker_imports_no_torch():
    code = "import sys, sam2_fast.export as e; e.OnnxVideoTracker; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_onnx_tracker_matches_the_video_predictor_backward(exported):
    """A click on the last frame, tracked backward to frame 0."""
    model, out = exported
    frames = es.clip(NUM_FRAMES, SIZE)
    last, click = NUM_FRAMES - 1, [[90 + 6 * (NUM_FRAMES - 1), 100 + 4 * (NUM_FRAMES - 1)]]
    state = model.init_state(frames)
    model.add_new_points_or_box(state, last, 1, points=click, labels=[1])
    ours = {t: (logits[:, 0] > 0).numpy() for t, _, logits in model.propagate_in_video(state, reverse=True)}

    tracker = OnnxVideoTracker(out)
    tracker.init(frames)
    tracker.add_points(last, 1, points=click, labels=[1])
    ious = es.mask_ious(tracker.propagate(reverse=True), ours)
    assert len(ious) == NUM_FRAMES
    assert np.mean(ious) >= MEAN_IOU, f"mean IoU {np.mean(ious):.4f}"
