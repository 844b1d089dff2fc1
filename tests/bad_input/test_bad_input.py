"""The bad-input suite: every case raises one exception from ``sam2_fast.errors`` whose
message names the argument (and what was expected), and the predictor, generator or
inference state that raised keeps working afterwards (asserted after each case)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sam2_fast import SAM2AutomaticMaskGenerator, SAM2ImagePredictor, SAM2StreamPredictor, build_sam2
from sam2_fast.errors import (
    CheckpointError,
    InvalidInputError,
    InvalidStateError,
    InvalidTypeError,
    OutOfRangeError,
    SAM2FastError,
    UnsafeCheckpointError,
    VideoReadError,
)

NAME = "sam2.1-hiera-tiny"
H, W = 32, 48
IMAGE = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
CLICK = dict(point_coords=np.array([[10.0, 12.0]]), point_labels=np.array([1]))


@pytest.fixture(scope="module")
def model():
    return build_sam2(NAME, None, device="cpu")


@pytest.fixture(scope="module")
def predictor(model):
    p = SAM2ImagePredictor(model)
    p.set_image(IMAGE)
    return p


def assert_still_works(predictor: SAM2ImagePredictor) -> None:
    masks, scores, logits = predictor.predict(**CLICK)
    assert masks.shape == (3, H, W) and scores.shape == (3,) and logits.shape == (3, 256, 256)


# ---------------------------------------------------------------------------------------------
# image predictor: (call, error type, text the message must contain)

PREDICT_CASES = {
    "NaN click": (dict(point_coords=np.array([[np.nan, 1.0]]), point_labels=np.array([1])), InvalidInputError, "point_coords: contains NaN"),
    "infinite click": (dict(point_coords=np.array([[np.inf, 1.0]]), point_labels=np.array([1])), InvalidInputError, "point_coords: contains NaN or infinite"),
    "click right of the image": (dict(point_coords=np.array([[100.0, 1.0]]), point_labels=np.array([1])), InvalidInputError, "point_coords: point [100.0, 1.0] (x, y) lies outside the 48x32 image"),
    "negative click": (dict(point_coords=np.array([[-5.0, 1.0]]), point_labels=np.array([1])), InvalidInputError, "lies outside the 48x32 image"),
    "labels missing": (dict(point_coords=np.array([[1.0, 1.0]])), InvalidInputError, "point_labels must be supplied"),
    "coords missing": (dict(point_labels=np.array([1])), InvalidInputError, "point_labels was given without point_coords"),
    "one label for two points": (dict(point_coords=np.array([[1.0, 1.0], [2.0, 2.0]]), point_labels=np.array([1])), InvalidInputError, "point_labels: expected shape (2,)"),
    "unknown label": (dict(point_coords=np.array([[1.0, 1.0]]), point_labels=np.array([7])), InvalidInputError, "point_labels: expected 1 (foreground), 0 (background)"),
    "float labels": (dict(point_coords=np.array([[1.0, 1.0]]), point_labels=np.array([1.5])), InvalidTypeError, "point_labels: expected integers, got float64"),
    "coords of wrong rank": (dict(point_coords=np.array([1.0, 1.0, 1.0]), point_labels=np.array([1])), InvalidInputError, "point_coords: expected shape [N, 2] or [B, N, 2]"),
    "coords as text": (dict(point_coords="abc", point_labels=np.array([1])), InvalidTypeError, "point_coords: expected numbers, got str"),
    "empty prompt": (dict(point_coords=np.zeros((0, 2)), point_labels=np.zeros((0,), int)), InvalidInputError, "point_coords: no points given (N = 0)"),
    "box of 3 numbers": (dict(box=np.array([1.0, 2.0, 3.0])), InvalidInputError, "box: expected shape [4] or [B, 4]"),
    "inverted box": (dict(box=np.array([10.0, 10.0, 2.0, 2.0])), InvalidInputError, "box: expected x0 <= x1 and y0 <= y1"),
    "NaN box": (dict(box=np.array([np.nan, 1.0, 5.0, 5.0])), InvalidInputError, "box: contains NaN"),
    "no boxes": (dict(box=np.zeros((0, 4))), InvalidInputError, "box: no boxes given (B = 0)"),
    "mask of the wrong size": ({**CLICK, "mask_input": np.zeros((1, 64, 64))}, InvalidInputError, "mask_input: expected shape [1, 256, 256]"),
    "NaN mask": ({**CLICK, "mask_input": np.full((1, 256, 256), np.nan)}, InvalidInputError, "mask_input: contains NaN"),
    "batch sizes differ": (dict(point_coords=np.ones((2, 1, 2)), point_labels=np.ones((2, 1), int), box=np.array([[1.0, 1.0, 5.0, 5.0]] * 3)), InvalidInputError, "prompt batch sizes differ: point_coords=2, box=3"),
}


@pytest.mark.parametrize("case", list(PREDICT_CASES))
def test_predict(predictor, case) -> None:
    kwargs, error, text = PREDICT_CASES[case]
    with pytest.raises(error) as info:
        predictor.predict(**kwargs)
    assert text in str(info.value)
    assert_still_works(predictor)


SET_IMAGE_CASES = {
    "float image": (np.zeros((H, W, 3), np.float32), InvalidTypeError, "image: expected dtype uint8"),
    "grayscale image": (np.zeros((H, W), np.uint8), InvalidInputError, "image: expected shape [H, W, 3]"),
    "RGBA image": (np.zeros((H, W, 4), np.uint8), InvalidInputError, "got shape (32, 48, 4)"),
    "empty image": (np.zeros((0, W, 3), np.uint8), InvalidInputError, "image: the image is empty"),
    "nested list": ([[1, 2, 3]], InvalidTypeError, "image: expected a numpy array [H, W, 3] of uint8"),
    "torch tensor": (torch.zeros(H, W, 3, dtype=torch.uint8), InvalidTypeError, "got Tensor of dtype torch.uint8"),
}


@pytest.mark.parametrize("case", list(SET_IMAGE_CASES))
def test_set_image_keeps_the_previous_image(predictor, case) -> None:
    image, error, text = SET_IMAGE_CASES[case]
    with pytest.raises(error) as info:
        predictor.set_image(image)
    assert text in str(info.value)
    assert_still_works(predictor)  # the previous embedding is still set


def test_predict_before_set_image(model) -> None:
    fresh = SAM2ImagePredictor(model)
    with pytest.raises(InvalidStateError, match=r"set_image"):
        fresh.predict(**CLICK)
    fresh.set_image(IMAGE)
    assert_still_works(fresh)


@pytest.mark.parametrize(
    "images, error, text",
    [([], InvalidTypeError, "image_list: expected a non-empty list"),
     ([np.zeros((3, 3), np.uint8)], InvalidInputError, "image_list[0]: expected shape [H, W, 3]")],
    ids=["empty list", "grayscale in the list"],
)
def test_set_image_batch(model, images, error, text) -> None:
    p = SAM2ImagePredictor(model)
    with pytest.raises(error) as info:
        p.set_image_batch(images)
    assert text in str(info.value)
    p.set_image_batch([IMAGE, IMAGE])
    masks, _, _ = p.predict_batch([CLICK["point_coords"]] * 2, [CLICK["point_labels"]] * 2)
    assert len(masks) == 2


# ---------------------------------------------------------------------------------------------
# automatic mask generator


AMG_CASES = {
    "zero points per side": (dict(points_per_side=0), InvalidInputError, "points_per_side: expected an int >= 1, got 0"),
    "no grid at all": (dict(points_per_side=None, point_grids=None), InvalidInputError, "points_per_side / point_grids: give exactly one"),
    "unknown output mode": (dict(output_mode="png"), InvalidInputError, "output_mode: expected one of"),
    "NaN threshold": (dict(pred_iou_thresh=float("nan")), SAM2FastError, "pred_iou_thresh"),
}


@pytest.mark.parametrize("case", list(AMG_CASES))
def test_mask_generator_arguments(model, case) -> None:
    kwargs, error, text = AMG_CASES[case]
    with pytest.raises(error) as info:
        SAM2AutomaticMaskGenerator(model, **kwargs)
    assert text in str(info.value)


def test_mask_generator_bad_image_then_a_good_one(model) -> None:
    generator = SAM2AutomaticMaskGenerator(model, points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    with pytest.raises(InvalidInputError, match=r"image: expected shape \[H, W, 3\]"):
        generator.generate(np.zeros((5, 5), np.uint8))
    records = generator.generate(IMAGE)
    assert isinstance(records, list) and all(r["segmentation"].shape == (H, W) for r in records)


# ---------------------------------------------------------------------------------------------
# building models and loading checkpoints


@pytest.mark.parametrize(
    "kwargs, error, text",
    [
        (dict(config_file="sam2.1-hiera-tinny"), InvalidInputError, "unknown model 'sam2.1-hiera-tinny'. Did you mean 'sam2.1-hiera-tiny'"),
        (dict(config_file=NAME, mode="test"), InvalidInputError, "mode: expected 'eval' or 'train', got 'test'"),
        (dict(config_file=NAME, device="tpu"), InvalidInputError, "device: expected e.g. 'cpu', 'cuda'"),
        (dict(config_file=NAME, device="cpu", compute_dtype="int8"), InvalidInputError, "compute_dtype: expected None, 'auto'"),
    ],
    ids=["misspelt model", "unknown mode", "unknown device", "unknown compute dtype"],
)
def test_build(kwargs, error, text) -> None:
    with pytest.raises(error) as info:
        build_sam2(**kwargs)
    assert text in str(info.value)


def test_truncated_checkpoint(tiny_pt_file: Path, tmp_path: Path) -> None:
    broken = tmp_path / "truncated.pt"
    broken.write_bytes(tiny_pt_file.read_bytes()[: 1 << 16])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        build_sam2(NAME, str(broken), device="cpu")
    assert build_sam2(NAME, str(tiny_pt_file), device="cpu") is not None


def test_checkpoint_of_another_model(tiny_pt_file: Path) -> None:
    with pytest.raises(CheckpointError, match="sam2.1-hiera-small"):
        build_sam2("sam2.1-hiera-small", str(tiny_pt_file), device="cpu")


def test_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match="evil.pt"):
        build_sam2(NAME, str(path), device="cpu")


# ---------------------------------------------------------------------------------------------
# video and stream


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    from PIL import Image

    from sam2_fast import build_sam2_video_predictor

    folder = tmp_path_factory.mktemp("frames")
    for i in range(3):
        Image.fromarray(np.roll(IMAGE, 2 * i, axis=1)).save(folder / f"{i:05d}.jpg")
    predictor = build_sam2_video_predictor(NAME, None, device="cpu")
    predictor.show_progress = False
    state = predictor.init_state(str(folder))
    predictor.add_new_points_or_box(state, 0, 1, points=[[10.0, 12.0]], labels=[1])
    return predictor, state


def assert_video_still_works(predictor, state) -> None:
    frames = [f for f, obj_ids, masks in predictor.propagate_in_video(state)]
    assert frames == [0, 1, 2]


VIDEO_CASES = {
    "frame index past the end": (lambda p, s: p.add_new_points_or_box(s, 7, 1, points=[[1.0, 1.0]], labels=[1]), OutOfRangeError, "frame_idx: 7 is out of range for a video of 3 frames"),
    "negative frame index": (lambda p, s: p.add_new_points_or_box(s, -1, 1, points=[[1.0, 1.0]], labels=[1]), OutOfRangeError, "frame_idx: -1 is out of range"),
    "NaN click on a frame": (lambda p, s: p.add_new_points_or_box(s, 1, 1, points=[[np.nan, 1.0]], labels=[1]), InvalidInputError, "NaN"),
    "click outside the frame": (lambda p, s: p.add_new_points_or_box(s, 1, 1, points=[[500.0, 1.0]], labels=[1]), InvalidInputError, "outside"),
    "no prompt at all": (lambda p, s: p.add_new_points_or_box(s, 1, 1), InvalidInputError, "points"),
    "mask of the wrong size": (lambda p, s: p.add_new_mask(s, 1, 1, np.zeros((5, 5), bool)), InvalidInputError, "mask"),
    "remove an unknown object (strict)": (lambda p, s: p.remove_object(s, 99, strict=True), InvalidStateError, "Cannot remove object id 99"),
    "mask for an unknown frame": (lambda p, s: p.add_new_mask(s, 5, 1, np.zeros((H, W), bool)), OutOfRangeError, "frame_idx: 5"),
    "start frame past the end": (lambda p, s: list(p.propagate_in_video(s, start_frame_idx=9)), OutOfRangeError, "start_frame_idx: 9 is out of range"),
    "negative frame budget": (lambda p, s: list(p.propagate_in_video(s, max_frame_num_to_track=-1)), InvalidInputError, "max_frame_num_to_track"),
}


@pytest.mark.parametrize("case", list(VIDEO_CASES))
def test_video(video, case) -> None:
    predictor, state = video
    call, error, text = VIDEO_CASES[case]
    with pytest.raises(error) as info:
        call(predictor, state)
    assert text in str(info.value)
    assert_video_still_works(predictor, state)


def test_unreadable_video_path(tmp_path: Path) -> None:
    from sam2_fast import build_sam2_video_predictor

    predictor = build_sam2_video_predictor(NAME, None, device="cpu")
    with pytest.raises(VideoReadError, match="no_such_video.mp4"):
        predictor.init_state(str(tmp_path / "no_such_video.mp4"))


def test_errors_with_builtin_lookup_bases_keep_a_plain_message() -> None:
    from sam2_fast.errors import UnknownObjectError

    error = UnknownObjectError("obj_id: unknown object id 5; existing ids: [1]")
    assert isinstance(error, KeyError) and isinstance(error, ValueError)
    assert str(error) == "obj_id: unknown object id 5; existing ids: [1]"
    assert issubclass(OutOfRangeError, IndexError) and issubclass(OutOfRangeError, InvalidInputError)


def test_stream_prompt_before_the_first_frame_then_tracking_works() -> None:
    from sam2_fast import build_sam2_video_predictor

    stream = SAM2StreamPredictor(build_sam2_video_predictor(NAME, None, device="cpu"))
    with pytest.raises(InvalidStateError, match=r"track\(frame\)"):
        stream.add_new_prompt(1, points=[[10.0, 12.0]], labels=[1])
    with pytest.raises(SAM2FastError, match="frame"):
        stream.track(np.zeros((H, W), np.uint8))
    stream.track(IMAGE)
    obj_ids, masks = stream.add_new_prompt(1, points=[[10.0, 12.0]], labels=[1])
    assert obj_ids == [1] and masks.shape[-2:] == (H, W)
