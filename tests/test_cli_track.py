"""``sam2-fast track``: per-object mask PNGs, COCO annotations and an overlay video from a
generated 8-frame video (a JPEG folder and an .mp4), and its error messages.

The tiny model with random weights takes seconds per frame at its 1024x1024 input on CPU, so
the tracking runs use ``--image-size 256`` (~0.2 s per frame), each video is tracked once
(module fixtures) and the checks share the outputs; one short run keeps the default size."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Dict, Iterable, List, Tuple

import av
import numpy as np
import pycocotools.mask as coco
import pytest
from PIL import Image

from cli_support import run_cli
from sam2_fast.sample import sample_video_frame, sample_video_objects
from sam2_fast.ops.rle import rle_area as area
from sam2_fast.ops.rle import rle_to_bbox, rle_to_mask

# pycocotools' Cython decode trips a numpy 2 deprecation of its own
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

H, W, T = 96, 128, 8
MP4_FPS = 12
FAST = ["--image-size", "256", "--device", "cpu"]


_run = run_cli


@pytest.fixture(scope="module")
def frames() -> List[np.ndarray]:
    return [sample_video_frame(i, H, W) for i in range(T)]


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory, frames) -> Path:
    folder = tmp_path_factory.mktemp("video") / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i:05d}.jpg", quality=95)
    return folder


@pytest.fixture(scope="module")
def mp4_file(tmp_path_factory, frames) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=MP4_FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def _disc(index: int) -> np.ndarray:
    """The disc of frame ``index`` as a bool [H, W] mask."""
    (x, y), r = sample_video_objects(index, H, W)["disc"], 0.1 * min(H, W)
    yy, xx = np.mgrid[:H, :W]
    return (xx - x) ** 2 + (yy - y) ** 2 < r**2


# object 1: a click on the disc and a background click on the square (one prompt), frame 0;
# object 2: a box around the square on frame 3
DISC0, SQUARE = sample_video_objects(0, H, W)["disc"], sample_video_objects(3, H, W)["square"]
FOLDER_PROMPTS = [
    "--point", f"0,{DISC0[0]},{DISC0[1]}",
    "--point", f"0,{SQUARE[0]},{SQUARE[1]},0,1",
    "--box", f"3,{SQUARE[0] - 11},{SQUARE[1] - 11},{SQUARE[0] + 11},{SQUARE[1] + 11},2",
]


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory, jpeg_folder, tiny_pt_file) -> Tuple[Path, str]:
    """Forward tracking of 2 objects through the JPEG folder, weights from a local .pt."""
    out = tmp_path_factory.mktemp("track") / "out"
    rc, stdout, stderr = _run(["track", str(jpeg_folder), *FOLDER_PROMPTS, "--model", str(tiny_pt_file),
                               "--out", str(out), *FAST, "--fps", "10", "--quiet"])
    assert rc == 0, stderr
    return out, stdout


@pytest.fixture(scope="module")
def mp4_run(tmp_path_factory, mp4_file) -> Tuple[Path, str, str, np.ndarray]:
    """A mask prompt (object 3, frame 2) and a click (object 5, frame 5) in the .mp4, forward
    then backward, 3 frames each way, random weights."""
    tmp = tmp_path_factory.mktemp("track")
    mask = _disc(2)
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp / "disc,2.png")  # a comma in the name
    out = tmp / "out"
    x, y = sample_video_objects(5, H, W)["square"]
    rc, stdout, stderr = _run(["track", str(mp4_file), "--mask", f"2,{tmp / 'disc,2.png'},3",
                               "--point", f"5,{x},{y},1,5", "--reverse", "--max-frames", "3",
                               "--random-weights", "--model", "sam2.1-hiera-tiny", "--out", str(out),
                               *FAST, "--quiet"])
    assert rc == 0, stderr
    return out, stdout, stderr, mask


def _png_masks(out: Path) -> Dict[Tuple[int, int], np.ndarray]:
    masks = {}
    for path in sorted((out / "masks").iterdir()):
        frame, obj = path.stem.split("_obj")
        masks[int(frame), int(obj)] = np.asarray(Image.open(path))
    return masks


def _check_outputs(out: Path, frame_ids: Iterable[int], obj_ids: Iterable[int], fps: float) -> None:
    """PNGs for exactly these frames and objects; annotations.json and overlay.mp4 agree."""
    expected = {(f, o) for f in frame_ids for o in obj_ids}
    pngs = _png_masks(out)
    assert set(pngs) == expected
    for key, png in pngs.items():
        assert png.shape == (H, W) and png.dtype == np.uint8, key
        assert set(np.unique(png)) <= {0, 255}, key
        assert (out / "masks" / f"{key[0]:05d}_obj{key[1]}.png").is_file()

    doc = json.loads((out / "annotations.json").read_text())
    video = doc["videos"][0]
    assert Path(video.pop("file_name")).name in ("frames", "clip.mp4")
    assert video == {"id": 1, "height": H, "width": W, "length": T, "fps": fps}
    annotations = doc["annotations"]
    assert [(a["frame_index"], a["obj_id"]) for a in annotations] == sorted(expected)
    assert [a["id"] for a in annotations] == list(range(1, len(expected) + 1))
    for a in annotations:
        png = pngs[a["frame_index"], a["obj_id"]] > 0
        seg = a["segmentation"]
        assert seg["size"] == [H, W] and isinstance(seg["counts"], str)
        np.testing.assert_array_equal(rle_to_mask(seg), png)
        np.testing.assert_array_equal(coco.decode(seg).astype(bool), png)
        assert a["area"] == int(png.sum()) == area(seg) == int(coco.area(seg))
        np.testing.assert_array_equal(a["bbox"], coco.toBbox(seg))
        np.testing.assert_array_equal(a["bbox"], rle_to_bbox(seg))

    with av.open(str(out / "overlay.mp4")) as container:
        stream = container.streams.video[0]
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        rate = stream.average_rate
    assert len(decoded) == len(set(frame_ids))
    assert all(f.shape == (H, W, 3) for f in decoded)
    assert rate == Fraction(fps).limit_denominator(1001)


def test_folder_writes_pngs_annotations_and_overlay_for_every_frame(folder_run):
    out, stdout = folder_run
    _check_outputs(out, range(T), (1, 2), fps=10.0)
    assert "tracked object(s) 1, 2 over 8 of 8 frames" in stdout
    assert "overlay.mp4" in stdout and "RANDOM" not in stdout


def test_prompted_frames_match_the_python_api(folder_run, jpeg_folder, tiny_pt_file):
    """The clicks and the box reach the predictor as given: the masks on the prompted
    frames equal what ``add_new_points_or_box`` returns for the same prompts."""
    from sam2_fast import SAM2VideoPredictor

    predictor = SAM2VideoPredictor.from_pretrained(
        str(tiny_pt_file), device="cpu", hydra_overrides_extra=["++model.image_size=256"]
    )
    state = predictor.init_state(str(jpeg_folder))
    _, obj_ids, logits = predictor.add_new_points_or_box(
        state, 0, 1, points=[DISC0, SQUARE], labels=[1, 0]
    )
    expected_obj1 = logits[obj_ids.index(1), 0].numpy() > 0
    box = [SQUARE[0] - 11, SQUARE[1] - 11, SQUARE[0] + 11, SQUARE[1] + 11]
    _, obj_ids, logits = predictor.add_new_points_or_box(state, 3, 2, box=box)
    expected_obj2 = logits[obj_ids.index(2), 0].numpy() > 0
    pngs = _png_masks(folder_run[0])
    np.testing.assert_array_equal(pngs[0, 1] > 0, expected_obj1)
    np.testing.assert_array_equal(pngs[3, 2] > 0, expected_obj2)


def test_mp4_with_mask_prompt_tracks_both_ways_at_the_source_frame_rate(mp4_run):
    out, stdout, stderr, mask = mp4_run
    # forward from frame 2 (the first prompt) to 4, backward from frame 5 (the last) to 3
    _check_outputs(out, range(2, 6), (3, 5), fps=float(MP4_FPS))
    assert "tracked object(s) 3, 5 over 4 of 8 frames" in stdout
    # a mask prompt is the object's mask on its frame
    tracked = _png_masks(out)[2, 3] > 0
    assert (tracked & mask).sum() / (tracked | mask).sum() > 0.9


def test_random_weights_warn_loudly(mp4_run):
    _, stdout, stderr, _ = mp4_run
    assert "RANDOM WEIGHTS" in stderr and "RANDOM weights" in stdout


def test_default_input_size_no_video_and_progress_bar(tmp_path, jpeg_folder, tiny_pt_file):
    out = tmp_path / "out"
    rc, _, stderr = _run(["track", str(jpeg_folder), "--point", f"0,{DISC0[0]},{DISC0[1]}", "--max-frames", "1",
                          "--no-video", "--model", str(tiny_pt_file), "--out", str(out), "--device", "cpu"])
    assert rc == 0, stderr
    assert set(_png_masks(out)) == {(0, 1)}
    assert (out / "annotations.json").is_file() and not (out / "overlay.mp4").exists()
    assert "track: 100%" in stderr and "1/1" in stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["--point", "0,1"], "--point FRAME,X,Y[,LABEL][,OBJ] expects 3 or 4 or 5"),
        (["--point", "0.5,1,2"], "FRAME must be an integer >= 0"),
        (["--point=-1,1,2"], "FRAME must be an integer >= 0"),
        (["--point", "0,1,2,3"], "label must be 1 (foreground) or 0"),
        (["--point", "0,1,2,1,x"], "--point FRAME,X,Y[,LABEL][,OBJ] expects"),
        (["--point", "0,1,2,1,1.5"], "OBJ must be an integer >= 0"),
        (["--box", "0,1,2,3"], "--box FRAME,X0,Y0,X1,Y1[,OBJ] expects 5 or 6"),
        (["--mask", "mask.png"], "--mask FRAME,PNG[,OBJ] expects"),
        (["--mask", "a,mask.png"], "--mask FRAME,PNG[,OBJ] expects"),
        (["--max-frames", "0"], "argument --max-frames: expected a count (an integer >= 1)"),
        (["--fps", "0"], "argument --fps: expected a number > 0"),
        (["--start", "-2"], "argument --start: expected a frame index"),
        (["--image-size", "100"], "argument --image-size: expected a multiple of 32"),
        (["--image-size", "0"], "argument --image-size: expected a size in pixels"),
    ],
)
def test_malformed_options_are_argparse_errors_naming_the_option(jpeg_folder, args, message):
    rc, _, stderr = _run(["track", str(jpeg_folder), *args])
    assert rc == 2
    assert message in stderr


@pytest.mark.parametrize(
    "args,message",
    [
        ([], "give at least one --point FRAME,X,Y, --box"),
        (["--point", "8,10,10"], "the prompt for object 1 on frame 8 is outside VIDEO, which has 8 frames (0..7)"),
        (["--box", "0,1,1,9,9,4", "--mask", "9,m.png,4"], "object 4 on frame 9 is outside VIDEO"),
        (["--point", "0,10,10", "--start", "8"], "--start 8 is outside VIDEO"),
        (["--box", "0,1,1,5,5", "--box", "0,2,2,6,6"], "two --box for object 1 on frame 0"),
        (["--point", "0,1,1", "--mask", "0,m.png"], "--mask for object 1 on frame 0 cannot be combined"),
        (["--mask", "0,missing.png"], "--mask 'missing.png' does not exist"),
    ],
)
def test_bad_prompts_fail_before_the_model_loads(jpeg_folder, args, message):
    rc, _, stderr = _run(["track", str(jpeg_folder), *args, "--model", "no-such-model", "--no-video"])
    assert rc == 1 and stderr.startswith("error: ")
    assert message in stderr


def test_mask_of_the_wrong_size_is_refused(tmp_path, jpeg_folder):
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "small.png")
    rc, _, stderr = _run(["track", str(jpeg_folder), "--mask", f"0,{tmp_path / 'small.png'}", "--model", "x"])
    assert rc == 1 and "is 5x4 but the video is 128x96" in stderr


def test_unreadable_videos_are_reported(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "text.mp4").write_text("not a video")
    cases = [
        (tmp_path / "missing.mp4", "does not exist"),
        (tmp_path / "empty", "no frames found"),
        (tmp_path / "text.mp4", "is not a readable video"),
    ]
    for video, message in cases:
        rc, _, stderr = _run(["track", str(video), "--point", "0,1,1", "--model", "x"])
        assert rc == 1 and f"error: VIDEO {str(video)!r} could not be read" in stderr
        assert message in stderr


def test_missing_checkpoint_fails_with_the_hub_error_not_random_weights(offline_hub, jpeg_folder, tmp_path):
    rc, stdout, stderr = _run(["track", str(jpeg_folder), "--point", "0,10,10", "--model", "sam2.1-hiera-tiny",
                               "--out", str(tmp_path / "out")])
    assert rc == 2
    assert stderr.startswith("error: ") and "Tried, in order" in stderr
    assert "RANDOM" not in stderr + stdout
    assert not (tmp_path / "out").exists()


def test_random_weights_need_a_variant_name_not_a_file(jpeg_folder, tiny_pt_file):
    rc, _, stderr = _run(["track", str(jpeg_folder), "--point", "0,10,10", "--random-weights",
                          "--model", str(tiny_pt_file)])
    assert rc == 1 and "give a zoo name or Hub id" in stderr


def test_prompt_outside_the_frame_names_the_prompt(jpeg_folder, tiny_pt_file, tmp_path):
    rc, _, stderr = _run(["track", str(jpeg_folder), "--point", "0,10,10", "--point", "2,500,10,1,7",
                          "--model", str(tiny_pt_file), "--device", "cpu", "--out", str(tmp_path / "out")])
    assert rc == 1
    assert "error: the prompt for object 7 on frame 2: " in stderr and "outside" in stderr
