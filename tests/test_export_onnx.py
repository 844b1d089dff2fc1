"""ONNX export (sam2_fast.export): the files pass onnx.checker, hold no complex tensors or
custom ops, and onnxruntime (CPU) gives what our float32 SAM2ImagePredictor gives, for
points, a box, a mask prompt and a batch of prompts, with dynamic B and N.

Tolerances (float32 against float32, same weights, same normalised input): low-res logits
rel-L2 <= 1e-4, full-size masks >= 99.9 % equal, IoU predictions within 1e-4."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cli_support import run_cli
from sam2_fast import SAM2ImagePredictor
from sam2_fast.build_sam import build_sam2_random
from sam2_fast.errors import InvalidInputError, InvalidTypeError
from sam2_fast.export import export_onnx

if os.environ.get("CI") == "true":
    import onnx  # CI installs the test extra: missing onnx / onnxruntime is a failure, not a skip
    import onnxruntime as ort
else:
    onnx = pytest.importorskip("onnx", reason="pip install 'sam2-fast[export]' for the ONNX export tests")
    ort = pytest.importorskip("onnxruntime", reason="pip install 'sam2-fast[export]' for the ONNX export tests")

MODEL = "sam2.1-hiera-tiny"
SIZE = 1024  # the released variants' image size (the contract's shapes)
LOGITS_REL_L2 = 1e-4
MASKS_EQUAL = 0.999
IOU_ATOL = 1e-4


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


class OnnxImage:
    """The two exported graphs in onnxruntime, on one image."""

    def __init__(self, folder, image_size: int) -> None:
        opts = dict(providers=["CPUExecutionProvider"])
        self.encoder = ort.InferenceSession(str(folder / "image_encoder.onnx"), **opts)
        self.decoder = ort.InferenceSession(str(folder / "prompt_decoder.onnx"), **opts)
        self.size = image_size

    def set_image(self, image: np.ndarray) -> None:
        self.feats = self.encoder.run(None, {"image": image})

    def predict(self, coords, labels, mask_input=None):
        coords, labels = np.asarray(coords, np.float32), np.asarray(labels, np.float32)
        b, m = coords.shape[0], self.size // 4
        feeds = dict(zip(["image_embed", "high_res_feats_0", "high_res_feats_1"], self.feats))
        feeds.update(
            point_coords=coords,
            point_labels=labels,
            mask_input=np.zeros((b, 1, m, m), np.float32) if mask_input is None else mask_input,
            has_mask_input=np.full((b,), 0.0 if mask_input is None else 1.0, np.float32),
        )
        return self.decoder.run(["masks", "iou_predictions"], feeds)


def _full_size_masks(low_res: np.ndarray, hw) -> np.ndarray:
    """The README's post-processing: bilinear upsampling to the image size, threshold at 0."""
    up = F.interpolate(torch.from_numpy(low_res), size=hw, mode="bilinear", align_corners=False)
    return (up > 0).numpy()


def _assert_same(onnx_out, ours, logits_rel_l2: float = LOGITS_REL_L2, masks_equal: float = MASKS_EQUAL,
                 iou_atol: float = IOU_ATOL) -> None:
    """onnxruntime's ``(masks, iou_predictions)`` against our predictor's ``(masks, iou,
    low_res)``, within the float32 tolerances unless told others (fp16 tests)."""
    masks, iou = onnx_out
    our_masks, our_iou, our_low_res = ours
    assert masks.shape == our_low_res.shape and iou.shape == our_iou.shape
    assert masks.dtype == np.float32 and iou.dtype == np.float32
    assert _rel_l2(masks, our_low_res) <= logits_rel_l2
    equal = (_full_size_masks(masks, our_masks.shape[-2:]) == (our_masks > 0)).mean()
    assert equal >= masks_equal, f"only {equal:.4%} of the mask pixels agree"
    np.testing.assert_allclose(iou, our_iou, rtol=0, atol=iou_atol)


def _image(size: int, seed: int = 0) -> np.ndarray:
    """A square image of the model's size: pixel coordinates are input-frame coordinates."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    img[size // 4 : size // 2, size // 4 : 3 * size // 4] = (250, 40, 40)  # a shape to find
    return img


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The model exported by the command line, onnxruntime on it, and our predictor on the
    same (seeded random) weights, on one image."""
    out = tmp_path_factory.mktemp("onnx")
    rc, stdout, stderr = run_cli(["export", "onnx", "--model", MODEL, "--random-weights", "--out", str(out)])
    assert rc == 0, stderr
    predictor = SAM2ImagePredictor(build_sam2_random(MODEL, "cpu"))
    img = _image(SIZE)
    predictor.set_image(img)
    runtime = OnnxImage(out, SIZE)
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
        onnx.checker.check_model(str(out / name))
        graph = onnx.load(str(out / name)).graph
        assert {n.domain for n in graph.node} <= {"", "ai.onnx"}
        values = list(graph.input) + list(graph.output) + list(graph.value_info)
        assert all(v.type.tensor_type.elem_type not in (14, 15) for v in values)  # no complex
        assert [i.name for i in graph.input] == [t["name"] for t in spec["inputs"]]
        assert [o.name for o in graph.output] == [t["name"] for t in spec["outputs"]]
        for value, t in zip(list(graph.input) + list(graph.output), spec["inputs"] + spec["outputs"]):
            dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
            assert len(dims) == len(t["shape"]) and all(
                isinstance(want, str) or got == want for got, want in zip(dims, t["shape"]))


def test_image_features_match(exported):
    _, _, predictor, runtime = exported
    ours = [predictor._features["image_embed"], *predictor._features["high_res_feats"]]
    assert [f.shape for f in runtime.feats] == [(1, 256, 64, 64), (1, 32, 256, 256), (1, 64, 128, 128)]
    for got, want in zip(runtime.feats, ours):
        assert got.shape == tuple(want.shape)
        assert _rel_l2(got, want.numpy()) <= LOGITS_REL_L2


def test_points_match(exported):
    _, _, predictor, runtime = exported
    coords, labels = np.array([[400.0, 380.0], [120.0, 800.0]]), np.array([1, 0])
    _assert_same(runtime.predict(coords[None], labels[None]), [x[None] for x in predictor.predict(coords, labels)])


def test_box_as_two_corner_points_matches(exported):
    _, _, predictor, runtime = exported
    box = np.array([240.0, 220.0, 780.0, 540.0])
    ours = predictor.predict(box=box)
    _assert_same(runtime.predict(box.reshape(1, 2, 2), [[2, 3]]), [x[None] for x in ours])
    # a box and a click: corners first
    click = np.array([[500.0, 400.0]])
    ours = predictor.predict(click, np.array([1]), box=box)
    _assert_same(runtime.predict(np.concatenate([box.reshape(2, 2), click])[None], [[2, 3, 1]]),
                 [x[None] for x in ours])


def test_mask_prompt_matches(exported):
    _, _, predictor, runtime = exported
    coords, labels = np.array([[400.0, 380.0]]), np.array([1])
    _, _, low_res = predictor.predict(coords, labels)
    mask = low_res[np.argmax(predictor.predict(coords, labels)[1])][None]
    ours = predictor.predict(coords, labels, mask_input=mask)
    _assert_same(runtime.predict(coords[None], labels[None], mask[None]), [x[None] for x in ours])


def test_batch_of_four_prompts_with_padding_matches(exported):
    _, _, predictor, runtime = exported
    rng = np.random.default_rng(1)
    coords = rng.uniform(0, SIZE, (4, 3, 2))
    labels = np.array([[1, 1, 1], [1, 0, 1], [0, 1, -1], [1, -1, -1]])  # -1: padding
    _assert_same(runtime.predict(coords, labels), predictor.predict(coords, labels))


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
