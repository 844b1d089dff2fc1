"""ONNX export (sam2_fast.export): the files pass onnx.checker, hold no complex tensors or
custom ops, and onnxruntime (CPU) gives what our float32 SAM2ImagePredictor gives, for
points, a box, a mask prompt and a batch of prompts, with dynamic B and N: the image
contract's cases and float32 tolerances of tests/export_support.py, at the released
variants' image size."""

from __future__ import annotations

import json

import pytest
import torch

import export_support as es
from cli_support import run_cli
from sam2_fast import SAM2ImagePredictor
from sam2_fast.build_sam import build_sam2_random
from sam2_fast.errors import InvalidInputError, InvalidTypeError
from sam2_fast.export import export_onnx

es.import_onnx()  # or skip

MODEL = "sam2.1-hiera-tiny"
SIZE = 1024  # the released variants' image size (the contract's shapes)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The model exported by the command line, onnxruntime on it, and our predictor on the
    same (seeded random) weights, on one image."""
    out = tmp_path_factory.mktemp("onnx")
    rc, stdout, stderr = run_cli(["export", "onnx", "--model", MODEL, "--random-weights", "--out", str(out)])
    assert rc == 0, stderr
    predictor = SAM2ImagePredictor(build_sam2_random(MODEL, "cpu"))
    img = es.test_image(SIZE)
    predictor.set_image(img)
    runtime = es.onnx_image(out, SIZE)
    runtime.set_image(predictor._transforms.to_input(img).numpy()[None])
    return out, stdout, predictor, runtime


def test_cli_writes_the_files_and_their_description(exported):
    out, stdout, _, _ = exported
    for name in ("image_encoder.onnx", "prompt_decoder.onnx", "memory_attention.onnx", "memory_encoder.onnx",
                 "export.json"):
        assert (out / name).is_file() and f"wrote {out / name}" in stdout
    desc = json.loads((out / "export.json").read_text())
    assert desc["model"] == {"family": "sam2", "variant": MODEL, "image_size": SIZE, "num_multimask_outputs": 3}
    assert desc["preprocessing"]["resize"] == [SIZE, SIZE]
    assert desc["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    assert desc["preprocessing"]["std"] == [0.229, 0.224, 0.225]
    decoder = desc["files"]["prompt_decoder.onnx"]
    assert [t["name"] for t in decoder["inputs"]] == [
        "image_embed", "high_res_feats_0", "high_res_feats_1", "point_coords", "point_labels",
        "mask_input", "has_mask_input"]
    assert [(t["name"], t["shape"]) for t in decoder["outputs"]] == [
        ("masks", ["B", 3, SIZE // 4, SIZE // 4]), ("iou_predictions", ["B", 3]),
        ("mask_logits", ["B", 4, SIZE // 4, SIZE // 4]), ("mask_scores", ["B", 4]), ("obj_ptrs", ["B", 4, 256]),
        ("object_score_logits", ["B", 1])]


def test_graphs_are_plain_onnx_with_the_contract_names(exported):
    out, _, _, _ = exported
    desc = json.loads((out / "export.json").read_text())
    for name, spec in desc["files"].items():
        es.check_onnx_file(out / name, spec)


def test_image_features_match(exported):
    _, _, predictor, runtime = exported
    assert [f.shape for f in runtime.feats] == [(1, 256, 64, 64), (1, 32, 256, 256), (1, 64, 128, 128)]
    es.check_image_features(predictor, runtime)


def test_points_match(exported):
    es.check_points(*exported[2:], SIZE)


def test_box_as_two_corner_points_matches(exported):
    es.check_box(*exported[2:], SIZE)


def test_mask_prompt_matches(exported):
    es.check_mask_prompt(*exported[2:], SIZE)


def test_batch_of_four_prompts_with_padding_matches(exported):
    es.check_batch_with_padding(*exported[2:], SIZE)


def test_unsupported_options_fail_naming_the_argument(exported, tmp_path):
    model = exported[2].model
    with pytest.raises(InvalidInputError, match="dtype"):
        export_onnx(model, tmp_path, dtype="bf16")
    with pytest.raises(InvalidInputError, match="opset"):
        export_onnx(model, tmp_path, opset=13)
    with pytest.raises(InvalidTypeError, match="model"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path)
    assert not list(tmp_path.iterdir())
    rc, _, stderr = run_cli(["export", "onnx", "--dtype", "int8", "--out", str(tmp_path)])
    assert rc == 2 and "dtype" in stderr
