"""Soak: 2 000 frames through ``SAM2StreamPredictor`` with the process's RSS sampled.

    pytest bench/bench_soak.py -s --benchmark-columns=mean,rounds
    python bench/bench_soak.py --frames 2000 [--image-size 64] [--json soak.json]

sam2.1-hiera-tiny with random weights at image size 64 on 96x128 generated frames, one
thread (the bookkeeping, not the resolution, is what could leak; see
``bench/soak_support.py``): two objects all along and, every 50 frames, a third one added,
clicked again and removed. RSS is sampled every 5 frames after ``gc.collect()`` and
``malloc_trim(0)``; the statistics are over the second half of the run. Goal: flat (slope
near 0 bytes/frame, session tensors the same from cycle to cycle). The samples, slope, growth
and session bytes go into ``extra_info`` of the pytest-benchmark JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sam2_fast import SAM2StreamPredictor
from soak_support import DEFAULT_MAX_SLOPE, SoakResult, run_soak, soak_video_predictor

NUM_FRAMES = 2000
IMAGE_SIZE = 64


def soak(num_frames: int = NUM_FRAMES, image_size: int = IMAGE_SIZE, log=None) -> SoakResult:
    """One soak run on a fresh stream; ``log(sample)`` every 100 frames if given."""
    stream = SAM2StreamPredictor(soak_video_predictor(image_size=image_size))

    def progress(sample) -> None:
        if log is not None and (sample.frame + 1) % 100 == 0:
            log(sample)

    return run_soak(stream, num_frames=num_frames, warmup_frames=num_frames // 2, progress=progress)


def test_soak_2000_frames(benchmark):
    benchmark.group = f"soak: stream, {NUM_FRAMES} frames (tiny, image size {IMAGE_SIZE}, cpu)"
    result = benchmark.pedantic(soak, rounds=1, iterations=1)
    benchmark.extra_info.update(result.as_dict())
    benchmark.extra_info["leak_reasons"] = result.leak_reasons()
    print("\n" + result.table())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=NUM_FRAMES)
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    parser.add_argument("--json", type=Path, help="write the summary and every sample here")
    args = parser.parse_args(argv)

    def log(s) -> None:
        print(f"frame {s.frame + 1:>5}  RSS {s.rss_bytes / 2**20:8.1f} MiB  "
              f"session {s.state_bytes / 1024:6.0f} KiB  {s.seconds:7.1f} s", flush=True)

    result = soak(args.frames, args.image_size, log=log)
    print(result.table(rows=20))
    reasons = result.leak_reasons()
    print(f"\nleak (limit {DEFAULT_MAX_SLOPE / 1024:.0f} KiB/frame): {'; '.join(reasons) or 'none'}")
    if args.json:
        args.json.write_text(json.dumps(result.as_dict(), indent=1))
    return 1 if reasons else 0


if __name__ == "__main__":
    sys.exit(main())
