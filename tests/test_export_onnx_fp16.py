"""ONNX export with ``dtype="fp16"`` (sam2_fast.export.onnx_fp16): float16 weights and
arithmetic inside float32 inputs and outputs. The four files pass onnx.checker with the fp32
export's names, shapes and float32 boundary, store float16 weights (about half the size),
onnxruntime's CPU provider runs them, and they give what the float32 model gives within
float16's error; OnnxVideoTracker runs on them unchanged.

The model is the one of tests/test_export_onnx_video.py (export_support.tracking_model:
sam2.1-hiera-tiny, random weights, image size 256, the object score biased so that objects
stay present); the image cases are export_support's.

Tolerances, float16 against float32 (same weights). float16 keeps 11 significant bits (one
rounding: up to 4.9e-4 relative) and the roundings of ~30 layers add up. Measured on the
2-core AMX Xeon with onnxruntime 1.32 (CPU provider), the largest over the cases below: image
features rel-L2 1.2e-3, low-res logits 1.4e-3, IoU predictions 2.6e-4 absolute, full-size
masks 99.93 % equal, memory attention 6.7e-4, memory encoder 3.8e-4; the tracker's masks on
the clip, mean IoU 0.999 against the fp32 files. The CPU provider has float16 kernels for few
ops on x86 and computes chains of the others in float32 on the float16 tensors; a float16
provider (CUDA, WebGPU) rounds every value it stores, which ``_round_every_float16_value``
emulates: features 1.6e-3, logits 2.0e-3 (a box with a click), IoU 3.6e-4, masks 99.90 %
equal. The bounds below leave 2.5x to 5x room over the worse of the two."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import export_support as es
from cli_support import run_cli
from sam2_fast import SAM2ImagePredictor
from sam2_fast.export import OnnxVideoTracker, export_onnx
from sam2_fast.export.onnx import DTYPES
from test_export_onnx_video import GRID, MODEL, NUM_FRAMES, SIZE
from test_export_onnx_video import exported  # noqa: F401  (the fixture: the model and its fp32 export)

onnx, _ = es.import_onnx()
TensorProto, helper, numpy_helper = onnx.TensorProto, onnx.helper, onnx.numpy_helper
FILES = ("image_encoder.onnx", "prompt_decoder.onnx", "memory_attention.onnx", "memory_encoder.onnx")
FEATURES_REL_L2 = 5e-3
LOGITS_REL_L2 = 5e-3
IOU_ATOL = 2e-3
MEMORY_REL_L2 = 2e-3
MASKS_EQUAL = 0.995
FP16 = dict(logits_rel_l2=LOGITS_REL_L2, masks_equal=MASKS_EQUAL, iou_atol=IOU_ATOL)
SIZE_RATIO = (0.48, 0.53)  # float16 weights: half the bytes, plus the graph itself
TRACKER_MEAN_IOU = 0.99  # measured 0.999 (lowest frame 0.998): a frame's error feeds the next one's memory


@pytest.fixture(scope="module")
def exported_fp16(exported, tmp_path_factory):  # noqa: F811
    """The fp16 export of the video test's model, which must come back as it was."""
    model, fp32 = exported
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = tmp_path_factory.mktemp("onnx_fp16")
    export_onnx(model, out, dtype="fp16", variant=MODEL)
    after = model.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
    return model, fp32, out


def test_cli_offers_the_export_dtypes(tmp_path):
    rc, stdout, _ = run_cli(["export", "onnx", "--help"])
    assert rc == 0 and "{" + ",".join(DTYPES) + "}" in stdout
    rc, _, stderr = run_cli(["export", "onnx", "--dtype", "bf16", "--out", str(tmp_path)])
    assert rc == 2 and "dtype" in stderr and not list(tmp_path.iterdir())


def test_fp16_files_keep_the_fp32_contract_with_float16_weights(exported_fp16):
    _, fp32, fp16 = exported_fp16
    desc32 = json.loads((fp32 / "export.json").read_text())
    desc16 = json.loads((fp16 / "export.json").read_text())
    assert desc16["dtype"] == "fp16" and desc16["precision"]["weights"] == "float16"
    float32_ops = {name: desc16["files"][name].pop("float32_ops") for name in FILES}
    # the point and pointer encodings stay float32 (the image encoder's are constants)
    assert {"Sin", "Cos", "MatMul"} <= set(float32_ops["prompt_decoder.onnx"])
    assert {"Sin", "Cos"} <= set(float32_ops["memory_attention.onnx"])
    for name in FILES:
        assert desc16["files"][name] == desc32["files"][name]  # the same tensors, all float32
        onnx.checker.check_model(str(fp16 / name))
        graph16, graph32 = onnx.load(str(fp16 / name)).graph, onnx.load(str(fp32 / name)).graph
        assert {n.domain for n in graph16.node} <= {"", "ai.onnx"}
        boundary = list(graph16.input) + list(graph16.output)
        assert [str(v.type) for v in boundary] == [str(v.type) for v in list(graph32.input) + list(graph32.output)]
        weights = {TensorProto.FLOAT: 0, TensorProto.FLOAT16: 0}
        for tensor in graph16.initializer:
            if tensor.data_type in weights:
                weights[tensor.data_type] += numpy_helper.to_array(tensor).nbytes
        assert weights[TensorProto.FLOAT16] >= 0.99 * sum(weights.values()), name
        ratio = (fp16 / name).stat().st_size / (fp32 / name).stat().st_size
        assert SIZE_RATIO[0] <= ratio <= SIZE_RATIO[1], f"{name}: {ratio:.3f} of the fp32 file"


def _check_image_path(folder, model) -> None:
    """Image features and the decoder's logits of ``folder``'s graphs against our float32
    SAM2ImagePredictor: export_support's two clicks, a box (alone and with a click), and a
    batch of 4 prompts with padding."""
    predictor = SAM2ImagePredictor(model)
    img = es.test_image(SIZE)
    predictor.set_image(img)
    runtime = es.onnx_image(folder, SIZE)
    runtime.set_image(predictor._transforms.to_input(img).numpy()[None])
    es.check_image_features(predictor, runtime, features_rel_l2=FEATURES_REL_L2)
    es.check_points(predictor, runtime, SIZE, **FP16)
    es.check_box(predictor, runtime, SIZE, **FP16)
    es.check_batch_with_padding(predictor, runtime, SIZE, **FP16)


def test_fp16_image_path_matches_the_fp32_predictor(exported_fp16):
    model, _, fp16 = exported_fp16
    _check_image_path(fp16, model)


def _round_every_float16_value(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float32 graph that rounds each float16 value of ``model`` to float16 where the
    float16 graph stores it, as a float16 execution provider does (onnxruntime's CPU provider
    computes chains of ops in float32 between the casts it inserts)."""
    inferred = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.value_info, *inferred.input]}
    graph = model.graph
    tensors = [*graph.initializer, *(a.t for n in graph.node for a in n.attribute if a.name == "value")]
    for tensor in tensors:
        if tensor.data_type == TensorProto.FLOAT16:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name))
    nodes = []
    for node in graph.node:
        rounded = {n for n in node.output if types.get(n) == TensorProto.FLOAT16}
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT16:
                attr.i = TensorProto.FLOAT
                rounded.add(node.output[0])
        node.output[:] = [f"{n}/exact" if n in rounded else n for n in node.output]
        nodes.append(node)
        for name in rounded:
            nodes.append(helper.make_node("Cast", [f"{name}/exact"], [f"{name}/half"], to=TensorProto.FLOAT16))
            nodes.append(helper.make_node("Cast", [f"{name}/half"], [name], to=TensorProto.FLOAT))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    return model


def test_image_path_matches_with_every_float16_value_rounded(exported_fp16, tmp_path):
    model, _, fp16 = exported_fp16
    for name in ("image_encoder.onnx", "prompt_decoder.onnx"):
        onnx.save(_round_every_float16_value(onnx.load(str(fp16 / name))), str(tmp_path / name))
    assert not any(t.data_type == TensorProto.FLOAT16 for t in onnx.load(str(tmp_path / FILES[0])).graph.initializer)
    _check_image_path(tmp_path, model)


@pytest.mark.parametrize("num_memories,num_pointers", [(7, 16), (2, 0)])
def test_fp16_memory_attention_matches_fp32(exported_fp16, num_memories, num_pointers):
    _, fp32, fp16 = exported_fp16
    rng = np.random.default_rng(num_memories)
    feeds = {
        "image_embed": rng.standard_normal((1, 256, GRID, GRID)).astype(np.float32),
        "memory": rng.standard_normal((num_memories, 64, GRID, GRID)).astype(np.float32),
        "memory_tpos": np.arange(num_memories, dtype=np.int64) % 7,
        "obj_ptrs": rng.standard_normal((num_pointers, 256)).astype(np.float32),
        "obj_ptr_tpos": (np.arange(num_pointers) / 15).astype(np.float32),
    }
    want = es.onnx_session(fp32, "memory_attention.onnx").run(None, feeds)[0]
    got = es.onnx_session(fp16, "memory_attention.onnx").run(None, feeds)[0]
    assert got.dtype == np.float32 and es.rel_l2(got, want) <= MEMORY_REL_L2


@pytest.mark.parametrize("is_mask_from_pts,score", [(1.0, 3.0), (0.0, 3.0), (0.0, -2.0)])
def test_fp16_memory_encoder_matches_fp32(exported_fp16, is_mask_from_pts, score):
    _, fp32, fp16 = exported_fp16
    rng = np.random.default_rng(int(is_mask_from_pts))
    feeds = {
        "image_embed": rng.standard_normal((1, 256, GRID, GRID)).astype(np.float32),
        "mask_logits": (rng.standard_normal((1, 1, SIZE // 4, SIZE // 4)) * 8).astype(np.float32),
        "object_score_logits": np.full((1, 1), score, np.float32),
        "is_mask_from_pts": np.array([is_mask_from_pts], np.float32),
    }
    want = es.onnx_session(fp32, "memory_encoder.onnx").run(None, feeds)[0]
    got = es.onnx_session(fp16, "memory_encoder.onnx").run(None, feeds)[0]
    assert es.rel_l2(got, want) <= MEMORY_REL_L2


def test_onnx_tracker_on_fp16_files_follows_the_fp32_tracker(exported_fp16):
    """A click on frame 0 and a box on frame 2, tracked through the clip."""
    _, fp32, fp16 = exported_fp16
    frames = es.clip(NUM_FRAMES, SIZE)
    tracked = {}
    for folder in (fp32, fp16):
        tracker = OnnxVideoTracker(folder)
        tracker.init(frames)
        tracker.add_points(0, 1, points=[[100, 100]], labels=[1])
        tracker.add_box(2, 2, box=[20, 20, 120, 90])
        tracked[folder] = list(tracker.propagate())
    ious = es.mask_ious(tracked[fp16], {t: masks for t, _, masks in tracked[fp32]})
    assert len(ious) == 2 * NUM_FRAMES
    assert np.mean(ious) >= TRACKER_MEAN_IOU, f"mean IoU {np.mean(ious):.4f}"
