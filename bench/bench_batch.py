"""``sam2-fast batch amg``: throughput of the engines, the runner's overhead, flat memory.

    pytest bench/bench_batch.py --benchmark-group-by=group --benchmark-columns=mean,rounds -s

* **throughput**: 20 generated 480x640 images, points_per_side 16, every candidate kept
  (thresholds 0: with random weights the default thresholds keep nothing, and writing the
  masks is part of the job), sam2.1-hiera-tiny with seeded random weights on the CPU. Four
  jobs, each loading its model once: a bare ``generator.generate`` loop that reads each image
  with PIL and writes its records with ``json.dumps`` (what people write by hand), ``batch``
  with the local engine, and Ray Data with 1 worker (all CPUs) and 2 workers (half each) on a
  local cluster started beforehand. ``extra_info["items_per_s"]`` is the number to compare.
* **memory**: 1 000 small images through the local engine (256-pixel model input, points_per_side
  4); the process's resident memory is sampled with the number of inputs done;
  ``extra_info["rss_mb"]`` lists (inputs done, MB) pairs: flat after the first inputs.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam2_fast import batch
from sam2_fast.sample import sample_image

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

N_IMAGES = 20
AMG = dict(model="sam2.1-hiera-tiny", random_weights=True, device="cpu", points_per_side=16,
           pred_iou_thresh=0.0, stability_score_thresh=0.0)
GROUP = f"batch amg: {N_IMAGES} images 480x640, points_per_side 16, all masks (tiny, fp32, cpu)"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench_batch") / "images"
    root.mkdir()
    for i in range(N_IMAGES):
        Image.fromarray(np.roll(sample_image(480, 640), 17 * i, axis=1)).save(root / f"img{i:02d}.jpg", quality=92)
    return root


def _bare_loop(images: Path, out: Path) -> int:
    from sam2_fast.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from sam2_fast.build_sam import build_sam2_random

    generator = SAM2AutomaticMaskGenerator(
        build_sam2_random(AMG["model"], "cpu"), points_per_side=16, pred_iou_thresh=0.0,
        stability_score_thresh=0.0, output_mode="coco_rle",
    )
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(images.glob("*.jpg")):
        image = np.asarray(Image.open(path).convert("RGB"))
        records = generator.generate(image)
        (out / f"{path.stem}.json").write_text(json.dumps(records))
    return N_IMAGES


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    from sam2_fast.batch.engines import init_ray

    init_ray(num_cpus=os.cpu_count())
    yield
    ray.shutdown()


@pytest.mark.parametrize("job", ["bare generate loop", "batch local", "batch ray 1 worker", "batch ray 2 workers"])
def test_batch_amg_throughput(benchmark, images, tmp_path, job, request):
    benchmark.group = GROUP
    out = tmp_path / "out"
    if job == "bare generate loop":
        run = lambda: _bare_loop(images, out)  # noqa: E731
    else:
        options = dict(AMG, progress=False, overwrite=True)
        if job != "batch local":
            request.getfixturevalue("ray_cluster")
            workers = 1 if "1 worker" in job else 2
            options.update(engine="ray", num_workers=workers, num_cpus=max(1, (os.cpu_count() or 2) // workers))

        def run():
            result = batch.run("amg", [str(images)], out, **options)
            assert result.ok == N_IMAGES, result.failures
            return result.ok

    start = time.perf_counter()
    done = benchmark.pedantic(run, rounds=1, iterations=1)
    seconds = time.perf_counter() - start
    benchmark.extra_info.update(items=done, seconds=round(seconds, 2), items_per_s=round(done / seconds, 4))
    print(f"\n{job}: {done} images in {seconds:.1f}s = {done / seconds:.3f} images/s")


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def test_batch_memory_1000_images(benchmark, tmp_path):
    benchmark.group = "batch amg: memory over 1 000 images (tiny, 256-pixel input, points_per_side 4, cpu)"
    images = tmp_path / "images"
    images.mkdir()
    for i in range(1000):
        Image.fromarray(np.roll(sample_image(96, 128), i % 128, axis=1)).save(images / f"img{i:04d}.png")
    out = tmp_path / "out"
    samples = []
    stop = threading.Event()

    def sample() -> None:
        summary = out / "_summary.jsonl"
        while not stop.wait(1.0):
            done = summary.read_text().count("\n") if summary.exists() else 0
            samples.append((done, round(_rss_mb(), 1)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    def run():
        return batch.run("amg", [str(images)], out, model="sam2.1-hiera-tiny", random_weights=True, device="cpu",
                         image_size=256, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                         progress=False)

    result = benchmark.pedantic(run, rounds=1, iterations=1)
    stop.set()
    sampler.join()
    assert result.ok == 1000
    by_hundred = {}
    for done, mb in samples:
        by_hundred.setdefault(done // 100 * 100, mb)
    benchmark.extra_info.update(rss_mb=sorted(by_hundred.items()), peak_mb=max(mb for _, mb in samples))
    print("\nRSS (inputs done -> MB):", sorted(by_hundred.items()))


def test_batch_runner_overhead_interleaved(benchmark, images, tmp_path):
    """The runner's overhead over the bare loop, read from alternating runs on the first 8
    images (A B A B A B), so that a change of load on a shared machine hits both sides."""
    benchmark.group = "batch amg: runner overhead over a bare generate loop, interleaved (tiny, fp32, cpu)"
    subset = tmp_path / "subset"
    subset.mkdir()
    for path in sorted(images.glob("*.jpg"))[:8]:
        (subset / path.name).write_bytes(path.read_bytes())
    options = dict(AMG, progress=False, overwrite=True)
    pairs = []

    def run():
        for _ in range(3):
            t0 = time.perf_counter()
            _bare_loop(subset, tmp_path / "bare")
            t1 = time.perf_counter()
            assert batch.run("amg", [str(subset)], tmp_path / "batch", **options).ok == 8
            pairs.append((t1 - t0, time.perf_counter() - t1))

    benchmark.pedantic(run, rounds=1, iterations=1)
    ratios = sorted(b / a for a, b in pairs)
    benchmark.extra_info.update(pairs_s=[(round(a, 1), round(b, 1)) for a, b in pairs], median_ratio=round(ratios[1], 4))
    print(f"\n(bare s, batch s): {[(round(a, 1), round(b, 1)) for a, b in pairs]}; median batch/bare {ratios[1]:.3f}")


def test_batch_runner_own_work_per_image(benchmark, images, tmp_path):
    """What the runner adds per input on top of ``generate``, timed alone (so that other load
    on a shared machine cannot hide it): reading the image ahead, ``json.dumps`` of the
    records, the atomic write (temporary file, fsync, rename) and the summary line."""
    from sam2_fast.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from sam2_fast.batch.inputs import Item
    from sam2_fast.batch.outputs import JsonSink, Summary
    from sam2_fast.batch.tasks import read_image
    from sam2_fast.build_sam import build_sam2_random

    benchmark.group = "batch amg: the runner's own work per image vs generate (tiny, fp32, cpu)"
    generator = SAM2AutomaticMaskGenerator(build_sam2_random(AMG["model"], "cpu"), points_per_side=16,
                                           pred_iou_thresh=0.0, stability_score_thresh=0.0, output_mode="coco_rle")
    paths = sorted(images.glob("*.jpg"))[:2]
    sink, summary = JsonSink(tmp_path, "amg"), Summary(tmp_path)
    generate_s, own_s, masks = [], [], []

    def run():
        for path in paths:
            item = Item(str(path), path.stem)
            t0 = time.perf_counter()
            image = read_image(item.path)
            t1 = time.perf_counter()
            records = generator.generate(image)
            t2 = time.perf_counter()
            payload = json.dumps(records)
            sink.write(item, payload, lambda i, out: summary.add(i, "ok", seconds=t2 - t0, masks=len(records), output=out))
            t3 = time.perf_counter()
            generate_s.append(t2 - t1)
            own_s.append((t1 - t0) + (t3 - t2))
            masks.append(len(records))

    benchmark.pedantic(run, rounds=1, iterations=1)
    # random weights keep few distinct masks after the NMS; a real image keeps ~100: time the
    # writing of 100 masks of the image's size in the same record format as well
    from sam2_fast.ops.rle import mask_to_rle, rle_area, rle_to_bbox

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:480, :640]
    records = []
    for _ in range(100):
        cy, cx, ry, rx = rng.uniform(0, 480), rng.uniform(0, 640), rng.uniform(5, 120), rng.uniform(5, 160)
        rle = mask_to_rle(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1)
        records.append({"segmentation": rle, "area": rle_area(rle), "bbox": rle_to_bbox(rle).tolist(),
                        "predicted_iou": 0.9, "point_coords": [[cx, cy]], "stability_score": 0.95,
                        "crop_box": [0, 0, 640, 480]})
    item = Item(str(paths[0]), "synthetic_100_masks")
    t0 = time.perf_counter()
    payload = json.dumps(records)
    sink.write(item, payload, lambda i, out: summary.add(i, "ok", seconds=0.0, masks=100, output=out))
    own_100 = time.perf_counter() - t0
    summary.close()
    share = sum(own_s) / sum(generate_s)
    benchmark.extra_info.update(own_ms_100_masks=round(1e3 * own_100, 1), json_kb_100_masks=len(payload) // 1024)
    print(f"\n100 masks of 480x640: {len(payload) // 1024} KB of JSON written in {1e3 * own_100:.1f} ms")
    benchmark.extra_info.update(generate_s=[round(s, 2) for s in generate_s], own_ms=[round(1e3 * s, 1) for s in own_s],
                                masks=masks, own_share=round(share, 5))
    print(f"\ngenerate s {[round(s, 2) for s in generate_s]}, runner's own ms {[round(1e3 * s, 1) for s in own_s]}, "
          f"masks {masks}: {100 * share:.2f} % of generate")
