"""``batch --engine ray`` on a real local Ray cluster (``ray.init(num_cpus=2)``): the same
masks as the local engine, the corrupt input recorded as failed, a resumed run redoes
nothing; the command line and Parquet through Ray too."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_support import run_cli
from sam2_fast import batch
from sam2_fast.sample import sample_image

if os.environ.get("CI") == "true":
    import ray  # CI installs ray[data] (the test extra): missing it is a failure, not a skip
else:
    ray = pytest.importorskip("ray", reason="pip install 'sam2-fast[ray]' for the Ray engine tests")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

AMG = dict(model="sam2.1-hiera-tiny", random_weights=True, image_size=256, device="cpu",
           points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)


@pytest.fixture(scope="module")
def cluster():
    from sam2_fast.batch.engines import init_ray

    init_ray(num_cpus=2)  # run from the repository root: the source tree must not shadow the install
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ray") / "images"
    for i in range(5):
        (root / ("nested" if i % 2 else "")).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.roll(sample_image(88 + 8 * i, 120), 5 * i, axis=1)).save(
            root / ("nested" if i % 2 else "") / f"im{i}.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n then nothing that PIL can decode")
    return root


@pytest.fixture(scope="module")
def local(images, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local")
    assert batch.run("amg", [str(images)], out, progress=False, **AMG).ok == 5
    return out


def _same_records(got: list, want: list) -> None:
    """The same masks; scores equal up to float rounding (an actor's thread count changes the
    order of float sums)."""
    assert len(got) == len(want) > 0
    for g, w in zip(got, want):
        assert g["segmentation"] == w["segmentation"] and g["area"] == w["area"] and g["crop_box"] == w["crop_box"]
        assert g["bbox"] == pytest.approx(w["bbox"])
        np.testing.assert_allclose(g["point_coords"], w["point_coords"])
        assert g["predicted_iou"] == pytest.approx(w["predicted_iou"], abs=1e-5)
        assert g["stability_score"] == pytest.approx(w["stability_score"], abs=1e-5)


def test_ray_gives_the_local_masks_records_the_corrupt_input_and_resumes(cluster, images, local, tmp_path):
    out = tmp_path / "ray"
    result = batch.run("amg", [str(images)], out, engine="ray", num_workers=2, num_cpus=1, progress=False, **AMG)
    assert (result.ok, result.failed, result.skipped) == (5, 1, 0)
    assert result.failures[0]["path"].endswith("corrupt.png") and "image" in result.failures[0]["error"]
    outputs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json"))
    assert outputs == sorted(p.relative_to(local).as_posix() for p in local.rglob("*.json"))
    for name in outputs:
        _same_records(json.loads((out / name).read_text()), json.loads((local / name).read_text()))
    lines = [json.loads(line) for line in (out / "_summary.jsonl").read_text().splitlines()]
    assert sorted(line["status"] for line in lines) == ["failed"] + ["ok"] * 5

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.json")}
    again = batch.run("amg", [str(images)], out, engine="ray", num_workers=2, num_cpus=1, progress=False, **AMG)
    assert (again.ok, again.failed, again.skipped) == (0, 1, 5)  # only the corrupt input is retried
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.json")} == before


def test_ray_from_the_command_line_to_parquet(cluster, images, local, tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "pq"
    rc, stdout, stderr = run_cli([
        "batch", "amg", str(images), "--out", str(out), "--engine", "ray", "--num-workers", "1",
        "--format", "parquet", "--random-weights", "--image-size", "256", "--device", "cpu",
        "--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--quiet",
    ])
    assert rc == 1 and "5 ok, 1 failed, 0 skipped of 6" in stdout and "corrupt.png" in stderr, stderr
    rows = [r for shard in sorted(out.glob("part-*.parquet")) for r in pq.read_table(shard).to_pylist()]
    for path in local.rglob("*.json"):
        key = path.relative_to(local).with_suffix("").as_posix()
        got = [{k: v for k, v in r.items() if k not in ("path", "key")} for r in rows if r["key"] == key]
        _same_records(got, json.loads(path.read_text()))


def test_actors_no_node_can_hold_and_unknown_models_are_refused_before_running(cluster, images, tmp_path):
    from sam2_fast.batch import BatchUsageError
    from sam2_fast.errors import UnknownModelError

    with pytest.raises(BatchUsageError, match="num_cpus: each Ray actor asks for 4 CPU"):
        batch.run("amg", [str(images)], tmp_path / "a", engine="ray", num_cpus=4, progress=False, **AMG)
    with pytest.raises(BatchUsageError, match="num_gpus: each Ray actor asks for 1 GPU"):
        batch.run("amg", [str(images)], tmp_path / "b", engine="ray", num_gpus=1, progress=False, **AMG)
    with pytest.raises(UnknownModelError, match="unknown model 'sam3-nope'"):
        batch.run("amg", [str(images)], tmp_path / "c", engine="ray", progress=False, **dict(AMG, model="sam3-nope"))
    assert not (tmp_path / "c").exists()
