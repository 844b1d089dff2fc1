"""Soak: the stream API over hundreds of frames holds a constant amount of memory.

A 300-frame run (image size 64, 96x128 frames, one thread; ~0.13 s/frame on the 2-core Xeon)
with objects added, re-prompted and removed in every 50-frame cycle must show no RSS trend
and identical session tensors from cycle to cycle. The detector is proven by runs that leak
on purpose. The 2 000-frame version is ``bench/bench_soak.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, List

import pytest
import torch

from sam2_fast import SAM2StreamPredictor

# the soak harness is measuring tooling, not library code: it lives with its bench
# (bench/soak_support.py), which this file runs on 300 frames
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from soak_support import DEFAULT_MAX_SLOPE, run_soak, soak_video_predictor  # noqa: E402


@pytest.fixture(scope="module")
def video_predictor():
    return soak_video_predictor(image_size=64)


class LeakyStream:
    """A stream predictor that keeps ``leak(stream)`` after every frame: the bug to catch."""

    def __init__(self, stream: SAM2StreamPredictor, leak: Callable[[SAM2StreamPredictor], Any]) -> None:
        self.stream = stream
        self.leak = leak
        self.kept: List[Any] = []

    def track(self, frame):
        out = self.stream.track(frame)
        self.kept.append(self.leak(self.stream))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def keep_mask(stream: SAM2StreamPredictor) -> torch.Tensor:
    return torch.rand(256, 256)  # 256 KiB, written (so its pages are resident)


def keep_image_features(stream: SAM2StreamPredictor) -> Any:
    entry = stream.state["cached_features"].get(stream.frame_idx)  # none before the first prompt
    return None if entry is None else entry[1]["vision_features"]  # [1, 256, 4, 4]: 16 KiB


def keep_tensor_in_session(stream: SAM2StreamPredictor) -> None:
    stream.state.setdefault("leaked", []).append(torch.zeros(4))  # 16 bytes: below any RSS noise


def test_stream_memory_is_flat_over_300_frames(video_predictor):
    result = run_soak(SAM2StreamPredictor(video_predictor), num_frames=300, warmup_frames=100)
    print("\n" + result.table())
    assert not result.leak_reasons(), result.table()
    # the clean run sits far below the threshold, so noise cannot make this test flaky
    assert max(abs(s) for s in result.rss_half_slopes) < DEFAULT_MAX_SLOPE / 2, result.table()
    # the workload ran: the transient object came and went in every cycle
    assert {s.num_objects for s in result.window} == {2, 3}


@pytest.mark.parametrize(
    "leak, expected",
    [
        (keep_mask, "RSS grows"),
        (keep_image_features, "RSS grows"),
        (keep_tensor_in_session, "session tensors"),
    ],
    ids=["256x256-mask", "image-features", "session-tensor"],
)
def test_soak_detects_memory_kept_every_frame(video_predictor, leak, expected):
    stream = LeakyStream(SAM2StreamPredictor(video_predictor), leak)
    result = run_soak(stream, num_frames=150, warmup_frames=50)
    reasons = result.leak_reasons()
    assert any(r.startswith(expected) for r in reasons), f"{reasons}\n{result.table()}"


def test_corrections_of_tracked_objects_are_forgotten(video_predictor):
    stream = SAM2StreamPredictor(video_predictor)
    result = run_soak(stream, num_frames=150, warmup_frames=50, correct_tracked_objects=True)
    assert not result.leak_reasons(), result.table()
