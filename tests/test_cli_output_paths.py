"""The command line writes only inside the output the user chose.

Every file a command writes is either the path given with ``--out`` / ``--overlay``, a fixed
name inside the ``--out`` folder, or a name formatted from integers there (track's
``masks/{frame:05d}_obj{id}.png``): nothing derived from the input's file names or from free
text can point elsewhere. Each test runs a command from a scratch working directory and lists
every file that appeared anywhere under it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Set

import numpy as np
import pytest
from PIL import Image

from cli_support import run_cli
from sam2_fast.sample import sample_image, sample_video_frame


def _files(root: Path) -> Set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()}


@pytest.fixture()
def scratch(tmp_path, monkeypatch) -> Path:
    """An empty working directory; the inputs live elsewhere."""
    root = tmp_path / "cwd"
    root.mkdir()
    monkeypatch.chdir(root)
    return root


@pytest.fixture(scope="module")
def frame_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("video") / "frames"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(sample_video_frame(i, 64, 96)).save(folder / f"{i:05d}.jpg", quality=95)
    return folder


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("image") / "photo.png"
    Image.fromarray(sample_image(96, 128)).save(path)
    return path


def test_track_writes_only_inside_its_output_folder(scratch, frame_folder):
    rc, _, err = run_cli([
        "track", str(frame_folder), "--point", "0,30,20,1,7", "--box", "0,40,10,90,60,12",
        "--random-weights", "--model", "sam2.1-hiera-tiny", "--image-size", "256", "--device", "cpu",
        "--out", "run/out", "--quiet",
    ])
    assert rc == 0, err
    written = _files(scratch)
    assert written and all(p.parts[:2] == ("run", "out") for p in written), sorted(written)
    inside = {p.relative_to("run/out").as_posix() for p in written}
    masks = {name for name in inside if name.startswith("masks/")}
    assert inside - masks == {"annotations.json", "overlay.mp4"}
    assert all(re.fullmatch(r"masks/\d{5}_obj\d+\.png", name) for name in masks), sorted(masks)
    assert len(masks) == 3 * 2  # 3 frames x objects 7 and 12


@pytest.mark.parametrize("obj", ["../../escape", "-1", "1/2", "1e3x", ".."])
def test_track_object_ids_cannot_name_paths(scratch, frame_folder, obj):
    rc, _, err = run_cli([
        "track", str(frame_folder), "--point", f"0,30,20,1,{obj}", "--random-weights",
        "--model", "sam2.1-hiera-tiny", "--image-size", "256", "--out", "out",
    ])
    assert rc == 2, err
    assert "--point" in err
    assert _files(scratch) == set()


def test_mask_prompt_path_is_only_read(scratch, frame_folder, tmp_path):
    """A ``--mask FRAME,PNG`` path is an input: reading it writes nothing next to it."""
    mask = np.zeros((64, 96), dtype=np.uint8)
    mask[20:40, 30:60] = 255
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    Image.fromarray(mask).save(inputs / "m.png")
    rc, _, err = run_cli([
        "track", str(frame_folder), "--mask", f"0,{inputs / 'm.png'},3", "--random-weights",
        "--model", "sam2.1-hiera-tiny", "--image-size", "256", "--device", "cpu", "--out", "out",
        "--no-video", "--quiet",
    ])
    assert rc == 0, err
    assert sorted(p.name for p in inputs.iterdir()) == ["m.png"]
    assert {p.parts[0] for p in _files(scratch)} == {"out"}


def test_amg_writes_its_json_and_overlay_side_by_side(scratch, image_file):
    rc, _, err = run_cli([
        "amg", str(image_file), "--random-weights", "--model", "sam2.1-hiera-tiny",
        "--points-per-side", "2", "--device", "cpu", "--out", "sub/dir/masks.json", "--quiet",
    ])
    assert rc == 0, err
    assert _files(scratch) == {Path("sub/dir/masks.json"), Path("sub/dir/masks_overlay.png")}
    assert sorted(p.name for p in image_file.parent.iterdir()) == ["photo.png"]


def test_segment_writes_only_the_mask_and_its_overlay(scratch, image_file, tiny_pt_file):
    rc, _, err = run_cli([
        "segment", str(image_file), "--point", "40,30", "--model", str(tiny_pt_file),
        "--device", "cpu", "--out", "a/mask.png",
    ])
    assert rc == 0, err
    assert _files(scratch) == {Path("a/mask.png"), Path("a/mask_overlay.png")}
    assert sorted(p.name for p in tiny_pt_file.parent.iterdir()) == [tiny_pt_file.name]
