"""sam2_fast.utils.video_writer: frames in, the same number of frames of the same size out."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from sam2_fast.utils.video_writer import VideoWriter, choose_codec


@pytest.mark.parametrize("height,width,fps", [(48, 64, 24.0), (33, 47, 30000 / 1001), (2, 2, 12.5)])
def test_written_video_reads_back_with_its_size_rate_and_frames(tmp_path, height, width, fps):
    frames = [np.full((height, width, 3), 30 * i, np.uint8) for i in range(6)]
    path = tmp_path / "out.mp4"
    with VideoWriter(path, height, width, fps) as writer:
        for frame in frames:
            writer.write(frame)
    assert writer.num_frames == 6
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert stream.average_rate == Fraction(fps).limit_denominator(1001)
        assert stream.codec_context.name == ("h264" if writer.codec == "libx264" else "mpeg4")
    assert len(decoded) == 6
    for got, want in zip(decoded, frames):
        assert got.shape == (height, width, 3)
        assert np.abs(got.astype(int) - want).mean() < 4  # lossy, but the right frame


def test_odd_sizes_use_mpeg4_even_sizes_prefer_h264():
    assert choose_codec(33, 47) == ("mpeg4", "yuv420p")
    expected = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    assert choose_codec(48, 64) == (expected, "yuv420p")


def test_rejects_frames_of_another_size_and_bad_rates(tmp_path):
    with pytest.raises(ValueError, match="fps: expected a positive frame rate"):
        VideoWriter(tmp_path / "a.mp4", 8, 8, 0)
    with VideoWriter(tmp_path / "b.mp4", 8, 8, 24) as writer:
        with pytest.raises(ValueError, match=r"frame: expected a \[8, 8, 3\] uint8 RGB array, got \[8, 9, 3\]"):
            writer.write(np.zeros((8, 9, 3), np.uint8))
        with pytest.raises(ValueError, match="uint8"):
            writer.write(np.zeros((8, 8, 3), np.float32))
