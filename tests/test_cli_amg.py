"""``sam2-fast amg``: COCO-RLE JSON and overlay PNG for a generated image, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pycocotools.mask as coco
import pytest
from PIL import Image

from cli_support import run_cli
from sam2_fast.sample import sample_image

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

LOOSE = ["--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--points-per-side", "4", "--device", "cpu"]


_run = run_cli


@pytest.fixture(scope="module")
def image_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("amg") / "scene.png"
    Image.fromarray(sample_image(120, 160)).save(path)
    return path


def test_amg_writes_coco_rle_json_and_overlay(image_path, tmp_path):
    out = tmp_path / "out" / "masks.json"
    rc, stdout, stderr = _run(["amg", str(image_path), "--out", str(out), "--random-weights", *LOOSE])
    assert rc == 0, stderr
    assert "RANDOM WEIGHTS" in stderr and "automatic masks" in stderr  # warning + progress bar
    records = json.loads(out.read_text())
    assert len(records) > 0 and f"{len(records)} masks" in stdout
    for r in records:
        rle = r["segmentation"]
        assert rle["size"] == [120, 160]
        mask = coco.decode(dict(rle, counts=rle["counts"].encode()))
        assert int(mask.sum()) == r["area"] == int(coco.area(dict(rle, counts=rle["counts"].encode())))
        assert len(r["bbox"]) == 4 and len(r["crop_box"]) == 4
    overlay = np.asarray(Image.open(out.with_name("masks_overlay.png")))
    assert overlay.shape == (120, 160, 3)


def test_amg_quiet_without_overlay(image_path, tmp_path):
    out = tmp_path / "m.json"
    rc, _, stderr = _run(["amg", str(image_path), "--out", str(out), "--random-weights", "--quiet",
                          "--no-overlay", *LOOSE])
    assert rc == 0, stderr
    assert "automatic masks" not in stderr
    assert out.exists() and not (tmp_path / "m_overlay.png").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--out", "masks.png"], "--out must name a .json file"),
        (["--pred-iou-thresh", "2"], "expected a number in [0, 1]"),
        (["--points-per-side", "0"], "points-per-side"),
        (["--crop-n-layers", "-1"], "crop-n-layers"),
    ],
)
def test_amg_bad_arguments(image_path, tmp_path, args, message):
    rc, _, stderr = _run(["amg", str(image_path), "--random-weights", *args])
    assert rc in (1, 2) and message in stderr, stderr


def test_amg_missing_image(tmp_path):
    rc, _, stderr = _run(["amg", str(tmp_path / "nope.png"), "--random-weights"])
    assert rc == 1 and "does not exist" in stderr
