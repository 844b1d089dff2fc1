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
the whole chain is size-generic), ``fill_hole_area=0`` (the tracker fills no holes), and the
object-score head's bias raised to +10: with random weights the score is otherwise negative
on tracked frames, every mask would be the constant no-object mask and the memory path would
go untested."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from sam2_fast.build_sam import build_sam2_random
from sam2_fast.export import OnnxVideoTracker, export_onnx
from sam2_fast.modeling.memory_plan import MemoryPlan

if os.environ.get("CI") == "true":
    import onnx  # CI installs the test extra: missing onnx / onnxruntime is a failure, not a skip
    import onnxruntime as ort
else:
    onnx = pytest.importorskip("onnx", reason="pip install 'sam2-fast[export]' for the ONNX export tests")
    ort = pytest.importorskip("onnxruntime", reason="pip install 'sam2-fast[export]' for the ONNX export tests")

MODEL = "sam2.1-hiera-tiny"
SIZE = 256
GRID = SIZE // 16
REL_L2 = 1e-4
MEAN_IOU = 0.99
NUM_FRAMES = 6


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _session(folder, name):
    return ort.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Our video predictor (see the module docstring) and its export."""
    model = build_sam2_random(
        MODEL, "cpu", video=True, hydra_overrides_extra=[f"++model.image_size={SIZE}", "++model.fill_hole_area=0"]
    )
    model.show_progress = False
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(10.0)
    out = tmp_path_factory.mktemp("onnx_video")
    export_onnx(model, out, variant=MODEL)
    return model, out


def _clip() -> np.ndarray:
    """A red rectangle moving over a grey noisy background, video size = model input size."""
    rng = np.random.default_rng(0)
    frames = (rng.integers(0, 256, (NUM_FRAMES, SIZE, SIZE, 3), dtype=np.uint8) // 4 + 100).astype(np.uint8)
    for i in range(NUM_FRAMES):
        frames[i, 60 + 4 * i : 140 + 4 * i, 50 + 6 * i : 150 + 6 * i] = (250, 40, 40)
    return frames


def test_video_graphs_are_plain_onnx_with_the_contract_names(exported):
    _, out = exported
    desc = json.loads((out / "export.json").read_text())
    assert desc["video"]["num_maskmem"] == 7 and desc["video"]["max_obj_ptrs_in_encoder"] == 16
    for name in ("memory_attention.onnx", "memory_encoder.onnx"):
        spec = desc["files"][name]
        onnx.checker.check_model(str(out / name))
        graph = onnx.load(str(out / name)).graph
        assert {n.domain for n in graph.node} <= {"", "ai.onnx"}
        values = list(graph.input) + list(graph.output) + list(graph.value_info)
        assert all(v.type.tensor_type.elem_type not in (14, 15) for v in values)  # no complex
        assert [i.name for i in graph.input] == [t["name"] for t in spec["inputs"]]
        assert [o.name for o in graph.output] == [t["name"] for t in spec["outputs"]]
        for value, t in zip(list(graph.input) + list(graph.output), spec["inputs"] + spec["outputs"]):
            dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
            assert dims == t["shape"]
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
    got = _session(out, "memory_attention.onnx").run(None, {
        "image_embed": image_embed.numpy(),
        "memory": memories.numpy(),
        "memory_tpos": np.array(t_pos, np.int64),
        "obj_ptrs": pointers.numpy().reshape(num_pointers, 256),
        "obj_ptr_tpos": np.array(distances, np.float32) / np.float32(15),
    })[0]
    assert got.shape == (1, 256, GRID, GRID)
    assert _rel_l2(got, want.numpy()) <= REL_L2


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
    got = _session(out, "memory_encoder.onnx").run(None, {
        "image_embed": image_embed.numpy(),
        "mask_logits": low_res.numpy(),
        "object_score_logits": scores.numpy(),
        "is_mask_from_pts": np.array([float(from_points)], np.float32),
    })[0]
    assert _rel_l2(got, want.numpy()) <= REL_L2


def test_onnx_tracker_matches_the_video_predictor(exported):
    """Object 1 from a click on frame 0, object 2 from a box on frame 2 (tracked on frames 0
    and 1 from a conditioning frame in the future: no object pointers there)."""
    model, out = exported
    frames = _clip()
    state = model.init_state(frames)
    model.add_new_points_or_box(state, 0, 1, points=[[100, 100]], labels=[1])
    model.add_new_points_or_box(state, 2, 2, box=[20, 20, 120, 90])
    ours = {t: (logits[:, 0] > 0).numpy() for t, _, logits in model.propagate_in_video(state)}

    tracker = OnnxVideoTracker(out)
    tracker.init(frames)
    tracker.add_points(0, 1, points=[[100, 100]], labels=[1])
    tracker.add_box(2, 2, box=[20, 20, 120, 90])
    ious = []
    for t, obj_ids, masks in tracker.propagate():
        assert obj_ids == [1, 2] and masks.shape == (2, SIZE, SIZE) and masks.dtype == bool
        for got, want in zip(masks, ours[t]):
            assert want.any()  # the object-score bias keeps the objects present
            ious.append((got & want).sum() / (got | want).sum())
    assert len(ious) == 2 * NUM_FRAMES
    assert np.mean(ious) >= MEAN_IOU, f"mean IoU {np.mean(ious):.4f}"


def test_onnx_tracker_matches_the_video_predictor_on_three_objects(exported):
    """Three objects with their own prompts, on a clip with a second shape: object 1 from a
    click on frame 0 and two clicks (one negative) on frame 3, so two conditioning frames;
    object 2 from a box on frame 1; object 3 from a positive and a negative click on frame 4,
    tracked on frames 0 to 3 from that future conditioning frame. Each object against our
    predictor's mask of the same object."""
    model, out = exported
    frames = _clip()
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
    ious = {1: [], 2: [], 3: []}
    for t, obj_ids, masks in tracker.propagate():
        assert obj_ids == ours[t][0] == [1, 2, 3] and masks.shape == (3, SIZE, SIZE)
        for obj_id, got, want in zip(obj_ids, masks, ours[t][1]):
            assert want.any()
            ious[obj_id].append((got & want).sum() / (got | want).sum())
    assert sorted(ours) == list(range(NUM_FRAMES))
    for obj_id, values in ious.items():
        assert len(values) == NUM_FRAMES
        assert np.mean(values) >= MEAN_IOU, f"object {obj_id}: mean IoU {np.mean(values):.4f}"


def test_tracker_imports_no_torch():
    code = "import sys, sam2_fast.export as e; e.OnnxVideoTracker; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_onnx_tracker_matches_the_video_predictor_backward(exported):
    """A click on the last frame, tracked backward to frame 0."""
    model, out = exported
    frames = _clip()
    last, click = NUM_FRAMES - 1, [[90 + 6 * (NUM_FRAMES - 1), 100 + 4 * (NUM_FRAMES - 1)]]
    state = model.init_state(frames)
    model.add_new_points_or_box(state, last, 1, points=click, labels=[1])
    ours = {t: (logits[:, 0] > 0).numpy() for t, _, logits in model.propagate_in_video(state, reverse=True)}

    tracker = OnnxVideoTracker(out)
    tracker.init(frames)
    tracker.add_points(last, 1, points=click, labels=[1])
    ious = []
    for t, _, masks in tracker.propagate(reverse=True):
        assert ours[t][0].any()
        ious.append((masks[0] & ours[t][0]).sum() / (masks[0] | ours[t][0]).sum())
    assert len(ious) == NUM_FRAMES
    assert np.mean(ious) >= MEAN_IOU, f"mean IoU {np.mean(ious):.4f}"
