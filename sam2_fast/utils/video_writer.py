"""Writing RGB frames to a video file with PyAV (``pip install av``).

Usage::

    with VideoWriter("overlay.mp4", height=480, width=640, fps=24) as writer:
        for frame in frames:            # [H, W, 3] uint8 RGB
            writer.write(frame)
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Optional, Tuple, Type, Union

import numpy as np

from sam2_fast.errors import InvalidInputError


def choose_codec(height: int, width: int) -> Tuple[str, str]:
    """``(codec, pixel format)`` for a ``height`` x ``width`` video: H.264 (``libx264``,
    ``yuv420p``, playable everywhere) when PyAV's FFmpeg has it and both sides are even
    (4:2:0 H.264 needs even sizes), else MPEG-4 part 2 (``mpeg4``), which takes any size."""
    import av

    if "libx264" in av.codecs_available and height % 2 == 0 and width % 2 == 0:
        return "libx264", "yuv420p"
    return "mpeg4", "yuv420p"


class VideoWriter:
    """Encode ``[H, W, 3]`` uint8 RGB frames of one size into ``path`` at ``fps`` frames per
    second; the container follows the file extension (``.mp4``, ``.mkv``, ...)."""

    def __init__(self, path: Union[str, Path], height: int, width: int, fps: float) -> None:
        try:
            import av
        except ImportError:
            raise RuntimeError("writing videos needs PyAV: pip install av") from None
        if fps <= 0:
            raise InvalidInputError(f"fps: expected a positive frame rate, got {fps}")
        self.path = Path(path)
        self.height, self.width = int(height), int(width)
        self.codec, pix_fmt = choose_codec(self.height, self.width)
        self.num_frames = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._av = av
        self._container = av.open(str(self.path), mode="w")
        try:
            rate = Fraction(fps).limit_denominator(1001)
            self._stream = self._container.add_stream(self.codec, rate=rate)
            self._stream.width, self._stream.height = self.width, self.height
            self._stream.pix_fmt = pix_fmt
            if self.codec == "libx264":
                self._stream.options = {"crf": "20"}
            else:  # mpeg4's default 200 kbit/s blurs the mask edges
                self._stream.bit_rate = max(1_000_000, int(self.width * self.height * float(rate)))
        except Exception:
            self._container.close()
            raise

    def write(self, frame: np.ndarray) -> None:
        """Append one ``[H, W, 3]`` uint8 RGB frame."""
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise InvalidInputError(
                f"frame: expected a [{self.height}, {self.width}, 3] uint8 RGB array, "
                f"got {list(frame.shape)} {frame.dtype}"
            )
        video_frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts = self.num_frames
        video_frame.time_base = 1 / self._stream.codec_context.framerate
        self._container.mux(self._stream.encode(video_frame))
        self.num_frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (idempotent)."""
        if self._container is None:
            return
        try:
            self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()
            self._container = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()
