"""Video tracking, this project vs the official sam2 1.1.0 package, in one run.

    pytest bench/bench_video.py --benchmark-group-by=group --benchmark-columns=mean,stddev,rounds

* ``per-frame``: one tracked frame (image encoder + memory attention + heads + memory
  encoder) with 1, 2, 4 and 8 objects and a full memory bank (7 past frames), sam2.1-hiera-tiny
  at 1024x1024, same random weights, fp32 on CPU. The official predictor loops over objects;
  this project runs them as one batch.
* ``stream peak RSS``: peak resident memory of a process that tracks 50 or 500 frames of a
  generated stream (``SAM2StreamPredictor``, image_size 256 to keep it quick; memory use does
  not depend on the resolution's share of it), against the official predictor's
  ``init_state`` on the same number of frames (it loads every frame up front).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from PIL import Image

from oracle_support import official_video_predictor
from sam2_fast import build_sam2_video_predictor
from sam2_fast.modeling.config import PRESETS
from sam2_fast.modeling.init import random_state_dict
from sam2_fast.sample import sample_video_frame, sample_video_objects

NAME = "sam2.1-hiera-tiny"
H, W = 384, 512
WARM_FRAMES = 8  # frame 8 then reads a full memory bank: the prompt frame + 6 previous frames


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("video")
    for i in range(WARM_FRAMES + 1):
        Image.fromarray(sample_video_frame(i, H, W)).save(folder / f"{i:05d}.jpg", quality=95)
    return folder


@pytest.fixture(scope="module")
def predictors():
    sd = random_state_dict(PRESETS[NAME], seed=1)
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += 3.0
    ours = build_sam2_video_predictor(NAME, None, device="cpu")
    ours.load_state_dict(sd)
    ours.show_progress = False
    return {"sam2_fast": ours.eval(), "official": official_video_predictor(NAME, sd)}


def prompts(num_objects: int):
    """Clicks on ``num_objects`` points spread over frame 0."""
    objects = list(sample_video_objects(0, H, W).values())
    for k in range(num_objects):
        x, y = objects[k % len(objects)]
        yield k + 1, (x + 7 * (k // len(objects)), y + 5 * (k // len(objects)))


@pytest.mark.parametrize("num_objects", [1, 2, 4, 8])
@pytest.mark.parametrize("impl", ["sam2_fast", "official"])
def test_per_frame(benchmark, predictors, frames_dir, impl, num_objects):
    benchmark.group = f"video per-frame, {num_objects} object(s), full memory (tiny, 1024, fp32, cpu)"
    predictor = predictors[impl]
    state = predictor.init_state(str(frames_dir))
    for obj_id, point in prompts(num_objects):
        predictor.add_new_points_or_box(state, 0, obj_id, points=[point], labels=[1])
    for _ in predictor.propagate_in_video(state, max_frame_num_to_track=WARM_FRAMES - 1):
        pass

    def one_frame():
        for _ in predictor.propagate_in_video(state, start_frame_idx=WARM_FRAMES, max_frame_num_to_track=0):
            pass

    def drop_cached_features():
        # the image encoder is part of a frame's cost (the official predictor replaces the
        # dict, so look it up each time)
        state["cached_features"].clear()

    benchmark.pedantic(one_frame, setup=drop_cached_features, rounds=3, warmup_rounds=0)


_RSS_SCRIPT = textwrap.dedent(
    """
    import json, os, shutil, sys, tempfile
    from PIL import Image
    from sam2_fast.sample import sample_video_frame, sample_video_objects
    impl, n = sys.argv[1], int(sys.argv[2])
    H, W = 240, 320
    click = sample_video_objects(0, H, W)["disc"]
    if impl == "sam2_fast stream (track every frame, image_size 256)":
        from sam2_fast import SAM2StreamPredictor, build_sam2_video_predictor
        model = build_sam2_video_predictor("sam2.1-hiera-tiny", None, device="cpu",
                                           hydra_overrides_extra=["++model.image_size=256"])
        stream = SAM2StreamPredictor(model)
        stream.track(sample_video_frame(0, H, W))
        stream.add_new_prompt(1, points=[click], labels=[1])
        for i in range(1, n):
            stream.track(sample_video_frame(i % 32, H, W))
    else:  # open a folder of n frames and click once, at 1024
        folder = tempfile.mkdtemp()
        for i in range(n):
            Image.fromarray(sample_video_frame(i % 32, H, W)).save(os.path.join(folder, f"{i:05d}.jpg"))
        if impl.startswith("official"):
            from sam2.build_sam import build_sam2_video_predictor
            model = build_sam2_video_predictor("configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu")
        else:
            from sam2_fast import build_sam2_video_predictor
            model = build_sam2_video_predictor("sam2.1-hiera-tiny", None, device="cpu")
        state = model.init_state(folder)
        model.add_new_points_or_box(state, 0, 1, points=[click], labels=[1])
    # VmHWM, not ru_maxrss: the latter keeps the forking parent's peak across exec
    with open("/proc/self/status") as f:
        hwm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    if impl.endswith("(1024)"):
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps({"peak_rss_mb": hwm_kb / 1024}))
    """
)

RSS_CASES = [
    "sam2_fast stream (track every frame, image_size 256)",
    "sam2_fast init_state + click (1024)",
    "official init_state + click (1024)",
]


@pytest.mark.parametrize("num_frames", [50, 500])
@pytest.mark.parametrize("impl", RSS_CASES)
def test_peak_rss(benchmark, impl, num_frames, tmp_path):
    """Wall time of the whole subprocess; the peak RSS is in ``extra_info`` (and printed)."""
    benchmark.group = f"peak RSS: {impl}"

    def run():
        out = subprocess.run(
            [sys.executable, "-c", _RSS_SCRIPT, impl, str(num_frames)],
            capture_output=True, text=True, check=True, cwd=tmp_path,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]

    rss = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["peak_rss_mb"] = round(rss, 1)
    print(f"\npeak RSS {impl}, {num_frames} frames: {rss:.0f} MiB")
