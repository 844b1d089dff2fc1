"""``sam2-fast batch`` / ``sam2_fast.batch`` on the local engine: inputs and output names,
manifests, the three tasks, failures, resume, Parquet, exit codes, Ctrl-C and a killed job.

The model is sam2.1-hiera-tiny with seeded random weights at a 256-pixel input, so that a
job over a few small generated images takes about a second.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pycocotools.mask as coco
import pytest
from PIL import Image

from cli_support import run_cli
from sam2_fast import batch
from sam2_fast.batch.inputs import BatchUsageError, resolve_inputs
from sam2_fast.sample import sample_image

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

FAST = dict(model="sam2.1-hiera-tiny", random_weights=True, image_size=256, device="cpu")
AMG = dict(FAST, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
AMG_ARGS = ["--random-weights", "--image-size", "256", "--device", "cpu", "--points-per-side", "4",
            "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--quiet"]


def _image(path: Path, h: int = 96, w: int = 128, shift: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.roll(sample_image(h, w), shift, axis=1)).save(path)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """photos/a.png, photos/b.jpg, photos/sub/c.png, a corrupt photos/broken.jpg and a
    notes.txt that is not an input."""
    root = tmp_path_factory.mktemp("batch") / "photos"
    _image(root / "a.png")
    _image(root / "b.jpg", 80, 112, shift=7)
    _image(root / "sub" / "c.png", 100, 90, shift=13)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    (root / "notes.txt").write_text("not an image\n")
    return root


def _summary(out: Path) -> dict:
    lines = [json.loads(line) for line in (out / "_summary.jsonl").read_text().splitlines()]
    return {Path(line["path"]).name: line for line in lines}


# ------------------------------------------------------------------------------ inputs
def test_the_batch_package_imports_no_torch():
    code = "import sys, sam2_fast.batch, sam2_fast.batch.engines; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tempfile.gettempdir(), check=True)
    assert out.stdout.strip() == "False"


def test_folders_recurse_and_keep_their_relative_paths(photos):
    items = resolve_inputs([str(photos)], "amg")
    assert [i.key for i in items] == ["a", "b", "broken", "sub/c"]
    assert all(Path(i.path).is_absolute() for i in items)


def test_globs_files_and_txt_manifests(photos, tmp_path):
    assert [i.key for i in resolve_inputs([str(photos / "**" / "*.png")], "amg")] == ["a", "sub/c"]
    assert [i.key for i in resolve_inputs([str(photos / "sub" / "c.png")], "amg")] == ["c"]
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"# my images\n{photos / 'a.png'}\n\n{os.path.relpath(photos / 'sub' / 'c.png', tmp_path)}\n")
    items = resolve_inputs([str(manifest)], "amg")
    assert [Path(i.path) for i in items] == [photos / "a.png", photos / "sub" / "c.png"]
    # outside the manifest's folder: keyed by the absolute path, never with '..'
    assert items[0].key == str(photos / "a").lstrip("/") and ".." not in items[1].key


def test_the_same_file_twice_is_one_input_and_two_files_with_one_output_are_refused(photos, tmp_path):
    assert len(resolve_inputs([str(photos), str(photos / "a.png")], "amg")) == 4
    _image(tmp_path / "x.png")
    _image(tmp_path / "x.jpg")
    with pytest.raises(BatchUsageError, match=r"x\.jpg.*x\.png.*both be written to x"):
        resolve_inputs([str(tmp_path)], "amg")


@pytest.mark.parametrize("text, match", [
    ("nowhere/", "does not exist"),
    ("nowhere/*.png", "holds no image"),
])
def test_inputs_that_give_nothing_are_usage_errors(text, match, tmp_path):
    with pytest.raises(BatchUsageError, match=match):
        resolve_inputs([str(tmp_path / text)], "amg")


@pytest.mark.parametrize("row, match", [
    ({"file": "a.png"}, "needs a 'path'"),
    ({"path": "a.png", "points": [[1, 2, 3]]}, "pairs"),
    ({"path": "a.png", "points": [[1, 2]], "labels": [1, 1]}, "one 0/1 label per point"),
    ({"path": "a.png", "box": [10, 10, 5, 20]}, "x0 <= x1"),
    ({"path": "a.png", "labels": [1]}, "'labels' without 'points'"),
    ({"path": "a.png", "points": [[1, 2]], "frame_idx": 3}, "for batch track"),
])
def test_bad_manifest_rows_name_the_row_and_column(row, match, tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"path": "a.png", "points": [[1, 2]]}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(BatchUsageError, match=f"row 2: .*{match}"):
        resolve_inputs([str(manifest)], "segment")


def test_csv_and_parquet_manifests_read_like_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"path": "a.png", "points": [[10.0, 20.0]], "labels": [1], "box": None},
            {"path": "a.png", "points": None, "labels": None, "box": [1.0, 2.0, 30.0, 40.0]}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with open(tmp_path / "m.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["path", "points", "labels", "box"])
        w.writeheader()
        for r in rows:
            w.writerow({k: (json.dumps(v) if k != "path" and v is not None else v or "") for k, v in r.items()})
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    got = [resolve_inputs([str(tmp_path / f"m.{ext}")], "segment") for ext in ("jsonl", "csv", "parquet")]
    assert got[0] == got[1] == got[2]
    (item,) = got[0]
    assert item.key == "a" and [p.points for p in item.prompts] == [((10.0, 20.0),), None]
    assert item.prompts[1].box == (1.0, 2.0, 30.0, 40.0)


# ------------------------------------------------------------------------------ amg
@pytest.fixture(scope="module")
def amg_run(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("amg_out")
    return out, batch.run("amg", [str(photos)], out, progress=False, **AMG)


def test_amg_writes_the_generators_records_per_input(amg_run, photos):
    from sam2_fast import SAM2AutomaticMaskGenerator
    from sam2_fast.build_sam import build_sam2_random

    out, result = amg_run
    assert (result.ok, result.failed, result.skipped, result.exit_code) == (3, 1, 0, 1)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json")) == ["a.json", "b.json", "sub/c.json"]
    model = build_sam2_random("sam2.1-hiera-tiny", "cpu", hydra_overrides_extra=["++model.image_size=256"])
    generator = SAM2AutomaticMaskGenerator(model, points_per_side=4, pred_iou_thresh=0.0,
                                           stability_score_thresh=0.0, output_mode="coco_rle")
    image = np.asarray(Image.open(photos / "b.jpg").convert("RGB"))
    expected = generator.generate(image)
    records = json.loads((out / "b.json").read_text())
    assert len(records) == len(expected) > 0
    for got, want in zip(records, expected):
        assert got["segmentation"] == want["segmentation"] and got["area"] == want["area"]
        assert got["bbox"] == pytest.approx(want["bbox"]) and got["predicted_iou"] == pytest.approx(want["predicted_iou"])
        assert set(got) == {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"}
        assert coco.decode(got["segmentation"]).shape == (80, 112)


def test_amg_summary_has_one_line_per_input_and_the_failure(amg_run):
    out, result = amg_run
    lines = _summary(out)
    assert set(lines) == {"a.png", "b.jpg", "c.png", "broken.jpg"}
    assert lines["broken.jpg"]["status"] == "failed" and "corrupt image" in lines["broken.jpg"]["error"]
    assert lines["broken.jpg"]["output"] is None and not (out / "broken.json").exists()
    ok = lines["a.png"]
    assert ok["status"] == "ok" and ok["masks"] == len(json.loads((out / "a.json").read_text())) and ok["seconds"] > 0
    assert result.failures[0]["path"].endswith("broken.jpg")


def test_a_rerun_skips_what_is_done_and_retries_failures(amg_run, photos):
    out, _ = amg_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.json")}
    result = batch.run("amg", [str(photos)], out, progress=False, **AMG)
    assert (result.ok, result.failed, result.skipped) == (0, 1, 3)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.json")} == before
    assert {n: line["status"] for n, line in _summary(out).items()} == {
        "a.png": "skipped", "b.jpg": "skipped", "c.png": "skipped", "broken.jpg": "failed"}


def test_a_cut_short_output_is_redone_and_overwrite_redoes_all(amg_run, photos, tmp_path):
    out = tmp_path / "out"
    first = batch.run("amg", [str(photos / "a.png"), str(photos / "b.jpg")], out, progress=False, **AMG)
    assert first.ok == 2
    good = (out / "b.json").read_text()
    (out / "a.json").write_text(good[: len(good) // 2])  # a file cut short (not by us: we rename)
    again = batch.run("amg", [str(photos / "a.png"), str(photos / "b.jpg")], out, progress=False, **AMG)
    assert (again.ok, again.skipped) == (1, 1)
    assert json.loads((out / "a.json").read_text())
    redo = batch.run("amg", [str(photos / "a.png"), str(photos / "b.jpg")], out, overwrite=True, progress=False, **AMG)
    assert (redo.ok, redo.skipped) == (2, 0) and (out / "b.json").read_text() == good


def test_parquet_shards_hold_the_same_records_and_resume(photos, amg_run, tmp_path):
    import pyarrow.parquet as pq

    json_out, _ = amg_run
    out = tmp_path / "pq"
    result = batch.run("amg", [str(photos)], out, format="parquet", shard_size=2, progress=False, **AMG)
    assert (result.ok, result.failed) == (3, 1)
    shards = sorted(out.glob("part-*.parquet"))
    assert [s.name for s in shards] == ["part-00000.parquet", "part-00001.parquet"]
    rows = [r for s in shards for r in pq.read_table(s).to_pylist()]
    for key in ("a", "b", "sub/c"):
        want = json.loads((json_out / f"{key}.json").read_text())
        got = [{k: v for k, v in r.items() if k not in ("path", "key")} for r in rows if r["key"] == key]
        assert got == want
    assert {line["output"] for line in _summary(out).values() if line["status"] == "ok"} == {str(s) for s in shards}
    again = batch.run("amg", [str(photos)], out, format="parquet", shard_size=2, progress=False, **AMG)
    assert (again.ok, again.skipped) == (0, 3) and sorted(out.glob("part-*.parquet")) == shards


# ------------------------------------------------------------------------------ segment, track
def test_segment_runs_every_prompt_row_of_a_manifest(photos, tmp_path):
    from sam2_fast import SAM2ImagePredictor
    from sam2_fast.build_sam import build_sam2_random

    manifest = photos.parent / "prompts.jsonl"  # paths relative to the manifest's folder
    rows = [
        {"path": "photos/a.png", "points": [[30, 40], [90, 60]], "labels": [1, 0]},
        {"path": "photos/a.png", "box": [10, 12, 100, 80]},
        {"path": "photos/b.jpg", "points": [[500, 40]]},  # outside the 112x80 image
    ]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "seg"
    result = batch.run("segment", [str(manifest)], out, multimask=True, progress=False, **FAST)
    assert (result.ok, result.failed) == (1, 1)
    assert "prompt row 0: the point (500, 40) is outside the 112x80 image" in result.failures[0]["error"]
    doc = json.loads((out / "photos" / "a.json").read_text())
    assert doc["image"]["height"] == 96 and len(doc["prompts"]) == 2
    predictor = SAM2ImagePredictor(build_sam2_random("sam2.1-hiera-tiny", "cpu", hydra_overrides_extra=["++model.image_size=256"]))
    predictor.set_image(np.asarray(Image.open(photos / "a.png").convert("RGB")))
    masks, scores, _ = predictor.predict(point_coords=np.array([[30, 40], [90, 60]], np.float32),
                                         point_labels=np.array([1, 0]), multimask_output=True)
    row = doc["prompts"][0]
    assert row["points"] == [[30.0, 40.0], [90.0, 60.0]] and row["labels"] == [1, 0] and row["box"] is None
    assert len(row["masks"]) == 3 and row["scores"] == pytest.approx(scores.tolist())
    for rle, mask, area in zip(row["masks"], masks, row["areas"]):
        np.testing.assert_array_equal(coco.decode(rle).astype(bool), mask > 0.5)
        assert area == int((mask > 0.5).sum())
    assert doc["prompts"][1]["box"] == [10.0, 12.0, 100.0, 80.0]


def test_segment_default_prompts_from_the_command_line(photos, tmp_path):
    out = tmp_path / "seg"
    rc, stdout, stderr = run_cli(["batch", "segment", str(photos / "a.png"), str(photos / "b.jpg"), "--out", str(out),
                                  "--point", "20,30", "--box", "5,5,60,60", *AMG_ARGS[:5], "--quiet"])
    assert rc == 0, stderr
    assert "2 ok, 0 failed, 0 skipped of 2" in stdout
    doc = json.loads((out / "b.json").read_text())
    assert doc["prompts"][0]["points"] == [[20.0, 30.0]] and doc["prompts"][0]["box"] == [5.0, 5.0, 60.0, 60.0]
    assert len(doc["prompts"][0]["masks"]) == 1


def test_track_folders_of_frames_and_video_files(tmp_path):
    from sam2_fast.utils.video_writer import VideoWriter

    videos = tmp_path / "videos"
    for t in range(3):
        _image(videos / "clip" / f"{t:05d}.jpg", shift=4 * t)
    with VideoWriter(videos / "film.mp4", 96, 128, 12) as writer:
        for t in range(4):
            writer.write(np.roll(sample_image(96, 128), 3 * t, axis=0))
    (videos / "bad.mp4").write_bytes(b"not a video")
    out = tmp_path / "tracks"
    rc, stdout, stderr = run_cli(["batch", "track", str(videos), "--out", str(out), "--point", "0,40,40",
                                  "--box", "1,10,10,60,60,2", "--reverse", *AMG_ARGS[:5], "--quiet"])
    assert rc == 1 and "2 ok, 1 failed" in stdout and "unreadable video" in stderr
    film = json.loads((out / "film.json").read_text())
    assert film["videos"][0]["length"] == 4 and film["videos"][0]["fps"] == pytest.approx(12)
    assert sorted({(a["frame_index"], a["obj_id"]) for a in film["annotations"]}) == [
        (f, o) for f in range(4) for o in (1, 2)]
    clip = json.loads((out / "clip.json").read_text())
    assert clip["videos"][0]["length"] == 3 and clip["videos"][0]["fps"] is None
    for a in clip["annotations"]:
        assert coco.decode(a["segmentation"]).shape == (96, 128) and a["area"] == int(coco.area(a["segmentation"]))


# ------------------------------------------------------------------------------ the command line
@pytest.mark.parametrize("argv, match", [
    (["amg", "{photos}", "--point", "1,2"], "--point / --box are for batch segment and track"),
    (["amg", "{photos}", "--multimask"], "--multimask is for batch segment"),
    (["segment", "{photos}"], "have no prompt"),
    (["amg", "{photos}/nothing*.png"], "holds no image"),
    (["amg", "{photos}", "--num-workers", "2"], "--num-workers is for --engine ray"),
    (["amg", "{photos}", "--random-weights", "--model", "{photos}/a.png"], "not the file"),
    (["amg", "{photos}", "--out", "{photos}/a.png"], "is not a folder"),
    (["segment", "{photos}", "--point", "1,2,3,4"], "--point X,Y"),
])
def test_bad_arguments_exit_2_with_a_message(argv, match, photos, tmp_path):
    argv = [a.format(photos=photos) for a in argv]
    out = [] if "--out" in argv else ["--out", str(tmp_path / "o")]
    rc, _, stderr = run_cli(["batch", *argv, *out])
    assert rc == 2 and match in stderr, stderr
    assert not (tmp_path / "o").exists()


def test_a_model_that_cannot_load_leaves_the_last_summary_alone(amg_run, photos):
    out, _ = amg_run
    summary = (out / "_summary.jsonl").read_text()
    rc, _, stderr = run_cli(["batch", "amg", str(photos), "--out", str(out), "--overwrite", "--model", "sam3-nope"])
    assert rc == 2 and "unknown model 'sam3-nope'" in stderr
    rc, _, stderr = run_cli(["batch", "amg", str(photos), "--out", str(out), "--overwrite", "--model", str(photos / "a.png")])
    assert rc == 2 and "a.png" in stderr, stderr
    assert (out / "_summary.jsonl").read_text() == summary


def test_exit_0_when_everything_is_done(photos, tmp_path):
    rc, stdout, stderr = run_cli(["batch", "amg", str(photos / "a.png"), "--out", str(tmp_path), *AMG_ARGS])
    assert rc == 0 and "1 ok, 0 failed" in stdout and "RANDOM WEIGHTS" in stderr


def _default_sigint() -> None:
    # a test run started in the background of a non-interactive shell inherits an ignored
    # SIGINT, and Python then installs no KeyboardInterrupt handler: give the child Ctrl-C back
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _child(args, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sam2_fast.cli", "batch", "amg", *args, "--out", str(out), *AMG_ARGS],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tempfile.gettempdir(),
        preexec_fn=_default_sigint,
    )


def _wait_for_ok(out: Path, child: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        summary = out / "_summary.jsonl"
        if summary.exists() and '"status": "ok"' in summary.read_text():
            return
        assert child.poll() is None, child.communicate()
        time.sleep(0.05)
    raise AssertionError("the job wrote no output in time")


#: inputs of the interrupted job
MANY = 24


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("many")
    for i in range(MANY):
        _image(root / f"img{i:02d}.png", shift=i)
    return root


@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])
def test_a_stopped_job_leaves_only_whole_outputs_and_a_rerun_finishes(how, many, tmp_path):
    out = tmp_path / "out"
    child = _child([str(many)], out)
    _wait_for_ok(out, child)
    child.send_signal(getattr(signal, how))
    _, stderr = child.communicate(timeout=60)
    if how == "SIGINT":  # Ctrl-C: a clean stop with a message
        assert child.returncode == 130 and "run the same command again" in stderr, stderr
    done = sorted(out.glob("*.json"))
    assert 0 < len(done) < MANY
    for path in done:
        json.loads(path.read_text())  # every output is whole
    rc, stdout, stderr = run_cli(["batch", "amg", str(many), "--out", str(out), *AMG_ARGS])
    assert rc == 0, stderr
    assert f"{MANY - len(done)} ok, 0 failed, {len(done)} skipped of {MANY}" in stdout
    assert len(list(out.glob("*.json"))) == MANY and not list(out.glob(".*.tmp"))
