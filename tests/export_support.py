"""What the export tests (ONNX, AOTInductor) share: the image contract's prompt cases, run on
any runtime whose graphs answer onnxruntime's ``run(output_names, feeds)``, against our
float32 SAM2ImagePredictor; the tracking model and generated clip of the video tests; and
the ONNX tests' imports of onnx and onnxruntime.

Tolerances (float32 against float32, same weights, same normalised input): image features and
low-res logits rel-L2 <= 1e-4, full-size masks >= 99.9 % equal, IoU predictions within 1e-4.
Outputs are float32 whatever the precision inside the graphs."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

LOGITS_REL_L2 = 1e-4
MASKS_EQUAL = 0.999
IOU_ATOL = 1e-4
FEATURES = ("image_embed", "high_res_feats_0", "high_res_feats_1")


def import_onnx():
    """``(onnx, onnxruntime)``, or the calling test module skipped when one is missing; in CI
    (``CI=true``), which installs the test extra, a missing one is a failure, not a skip."""
    if os.environ.get("CI") == "true":
        import onnx
        import onnxruntime
        return onnx, onnxruntime
    reason = "pip install 'sam2-fast[export]' for the ONNX export tests"
    return pytest.importorskip("onnx", reason=reason), pytest.importorskip("onnxruntime", reason=reason)


def onnx_session(folder, name: str):
    """An onnxruntime session (CPU provider) on ``folder / name``."""
    import onnxruntime

    return onnxruntime.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])


def check_onnx_file(path, spec) -> None:
    """``path`` passes onnx.checker, holds standard-domain ops only and no complex tensors, and
    has the inputs and outputs of ``spec`` (its entry in export.json): names and shapes, a
    dynamic dimension by its name."""
    import onnx

    onnx.checker.check_model(str(path))
    graph = onnx.load(str(path)).graph
    assert {n.domain for n in graph.node} <= {"", "ai.onnx"}
    values = list(graph.input) + list(graph.output) + list(graph.value_info)
    assert all(v.type.tensor_type.elem_type not in (14, 15) for v in values)  # no complex
    assert [i.name for i in graph.input] == [t["name"] for t in spec["inputs"]]
    assert [o.name for o in graph.output] == [t["name"] for t in spec["outputs"]]
    for value, t in zip(list(graph.input) + list(graph.output), spec["inputs"] + spec["outputs"]):
        assert [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim] == t["shape"], value.name


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


class ImageRuntime:
    """An exported encoder and decoder (anything with ``run(output_names, feeds)``) on one image."""

    def __init__(self, encoder, decoder, image_size: int) -> None:
        self.encoder, self.decoder, self.size = encoder, decoder, image_size

    def set_image(self, image: np.ndarray) -> None:
        self.feats = self.encoder.run(None, {"image": image})

    def predict(self, coords, labels, mask_input=None):
        coords, labels = np.asarray(coords, np.float32), np.asarray(labels, np.float32)
        b, m = coords.shape[0], self.size // 4
        feeds = dict(zip(FEATURES, self.feats))
        feeds.update(
            point_coords=coords,
            point_labels=labels,
            mask_input=np.zeros((b, 1, m, m), np.float32) if mask_input is None else mask_input,
            has_mask_input=np.full((b,), 0.0 if mask_input is None else 1.0, np.float32),
        )
        return self.decoder.run(["masks", "iou_predictions"], feeds)


def onnx_image(folder, image_size: int) -> ImageRuntime:
    """:class:`ImageRuntime` on the image encoder and prompt decoder exported to ``folder``."""
    return ImageRuntime(onnx_session(folder, "image_encoder.onnx"), onnx_session(folder, "prompt_decoder.onnx"),
                        image_size)


def full_size_masks(low_res: np.ndarray, hw) -> np.ndarray:
    """The README's post-processing: bilinear upsampling to the image size, threshold at 0."""
    up = F.interpolate(torch.from_numpy(low_res), size=hw, mode="bilinear", align_corners=False)
    return (up > 0).numpy()


def assert_same(runtime_out, ours, logits_rel_l2=LOGITS_REL_L2, masks_equal=MASKS_EQUAL, iou_atol=IOU_ATOL) -> None:
    """The runtime's ``(masks, iou_predictions)`` against our predictor's ``(masks, iou,
    low_res)``, within the float32 tolerances unless told others."""
    masks, iou = runtime_out
    our_masks, our_iou, our_low_res = ours
    assert masks.shape == our_low_res.shape and iou.shape == our_iou.shape
    assert masks.dtype == np.float32 and iou.dtype == np.float32
    assert rel_l2(masks, our_low_res) <= logits_rel_l2
    equal = (full_size_masks(masks, our_masks.shape[-2:]) == (our_masks > 0)).mean()
    assert equal >= masks_equal, f"only {equal:.4%} of the mask pixels agree"
    np.testing.assert_allclose(iou, our_iou, rtol=0, atol=iou_atol)


def test_image(size: int, seed: int = 0) -> np.ndarray:
    """A square image of the model's size: pixel coordinates are input-frame coordinates."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    img[size // 4 : size // 2, size // 4 : 3 * size // 4] = (250, 40, 40)  # a shape to find
    return img


test_image.__test__ = False  # a helper, not a test


def check_image_features(predictor, runtime, features_rel_l2=None, **tolerance) -> None:
    """The encoder's three outputs against our predictor's features, within ``features_rel_l2``
    (default: the logits' bound)."""
    bound = tolerance.get("logits_rel_l2", LOGITS_REL_L2) if features_rel_l2 is None else features_rel_l2
    ours = [predictor._features["image_embed"], *predictor._features["high_res_feats"]]
    assert len(runtime.feats) == len(ours)
    for got, want in zip(runtime.feats, ours):
        assert got.shape == tuple(want.shape) and got.dtype == np.float32
        assert rel_l2(got, want.numpy()) <= bound


def check_points(predictor, runtime, size: int, **tolerance) -> None:
    s = size / 1024
    coords, labels = np.array([[400.0, 380.0], [120.0, 800.0]]) * s, np.array([1, 0])
    assert_same(runtime.predict(coords[None], labels[None]), [x[None] for x in predictor.predict(coords, labels)],
                **tolerance)


def check_box(predictor, runtime, size: int, **tolerance) -> None:
    """A box as two corner points (labels 2, 3); a box and a click, corners first."""
    s = size / 1024
    box = np.array([240.0, 220.0, 780.0, 540.0]) * s
    ours = predictor.predict(box=box)
    assert_same(runtime.predict(box.reshape(1, 2, 2), [[2, 3]]), [x[None] for x in ours], **tolerance)
    click = np.array([[500.0, 400.0]]) * s
    ours = predictor.predict(click, np.array([1]), box=box)
    assert_same(runtime.predict(np.concatenate([box.reshape(2, 2), click])[None], [[2, 3, 1]]),
                [x[None] for x in ours], **tolerance)


def check_mask_prompt(predictor, runtime, size: int, **tolerance) -> None:
    s = size / 1024
    coords, labels = np.array([[400.0, 380.0]]) * s, np.array([1])
    _, scores, low_res = predictor.predict(coords, labels)
    mask = low_res[np.argmax(scores)][None]
    ours = predictor.predict(coords, labels, mask_input=mask)
    assert_same(runtime.predict(coords[None], labels[None], mask[None]), [x[None] for x in ours], **tolerance)


def check_batch_with_padding(predictor, runtime, size: int, **tolerance) -> None:
    """Four prompts of up to three points, rows padded with label -1."""
    rng = np.random.default_rng(1)
    coords = rng.uniform(0, size, (4, 3, 2))
    labels = np.array([[1, 1, 1], [1, 0, 1], [0, 1, -1], [1, -1, -1]])
    assert_same(runtime.predict(coords, labels), predictor.predict(coords, labels), **tolerance)


def clip(num_frames: int, size: int) -> np.ndarray:
    """A red rectangle moving over a grey noisy background, video size = model input size."""
    rng = np.random.default_rng(0)
    frames = (rng.integers(0, 256, (num_frames, size, size, 3), dtype=np.uint8) // 4 + 100).astype(np.uint8)
    for i in range(num_frames):
        frames[i, 60 + 4 * i : 140 + 4 * i, 50 + 6 * i : 150 + 6 * i] = (250, 40, 40)
    return frames


def tracking_model(model_name: str, size: int):
    """Our video predictor at ``size`` with random weights, ``fill_hole_area=0`` (the exported
    trackers fill no holes) and the object-score head's bias raised to +10: with random
    weights the score is otherwise negative on tracked frames, every mask would be the
    constant no-object mask and the memory path would go untested."""
    from sam2_fast.build_sam import build_sam2_random

    model = build_sam2_random(
        model_name, "cpu", video=True,
        hydra_overrides_extra=[f"++model.image_size={size}", "++model.fill_hole_area=0"],
    )
    model.show_progress = False
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(10.0)
    return model


def mask_ious(tracked, ours) -> list:
    """IoU per frame and object of a tracker's ``propagate()`` against ``ours`` ({frame: masks})."""
    ious = []
    for t, _, masks in tracked:
        for got, want in zip(masks, ours[t]):
            assert want.any()  # the object-score bias keeps the objects present
            ious.append((got & want).sum() / (got | want).sum())
    return ious


def check_two_object_tracking(model, tracker, num_frames: int, size: int, mean_iou: float) -> None:
    """``tracker`` (OnnxVideoTracker, AotiVideoTracker) against our video predictor ``model``:
    object 1 from a click on frame 0, object 2 from a box on frame 2 (tracked on frames 0 and
    1 from a conditioning frame in the future: no object pointers there); mean mask IoU over
    frames and objects at least ``mean_iou``."""
    frames = clip(num_frames, size)
    state = model.init_state(frames)
    model.add_new_points_or_box(state, 0, 1, points=[[100, 100]], labels=[1])
    model.add_new_points_or_box(state, 2, 2, box=[20, 20, 120, 90])
    ours = {t: (logits[:, 0] > 0).numpy() for t, _, logits in model.propagate_in_video(state)}

    tracker.init(frames)
    tracker.add_points(0, 1, points=[[100, 100]], labels=[1])
    tracker.add_box(2, 2, box=[20, 20, 120, 90])
    tracked = list(tracker.propagate())
    for _, obj_ids, masks in tracked:
        assert obj_ids == [1, 2] and masks.shape == (2, size, size) and masks.dtype == bool
    ious = mask_ious(tracked, ours)
    assert len(ious) == 2 * num_frames
    assert np.mean(ious) >= mean_iou, f"mean IoU {np.mean(ious):.4f}"
