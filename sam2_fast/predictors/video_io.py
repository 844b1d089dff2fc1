"""Lazily decoded video frames: a folder of images, a video file (PyAV) or frames in memory.

Nothing is decoded up front (the official package loads every frame, ~12 MiB each at 1024x1024
in float32, before tracking starts): frames are read when the predictor asks for them and only
the model-sized input of recent frames is cached.
"""

from __future__ import annotations

import abc
import bisect
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, List, Optional, Sequence, Union

import numpy as np
import torch

from sam2_fast.utils.transforms import IMAGENET_MEAN, IMAGENET_STD
from sam2_fast.utils.validation import as_rgb_uint8
from sam2_fast.errors import InvalidTypeError, OutOfRangeError, VideoReadError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")




class FrameSource(abc.ABC):
    """Random access to the RGB frames of a video, decoded on demand.

    Subclasses implement :meth:`_read` (frame ``i`` as ``[H, W, 3]`` uint8) and set
    ``num_frames``, ``height`` and ``width``.
    """

    num_frames: int
    height: int
    width: int
    #: frames per second of a video file (None where unknown: frames from a folder or arrays)
    fps: Optional[float] = None

    def __len__(self) -> int:
        return self.num_frames

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` as an ``[H, W, 3]`` uint8 RGB array (original size)."""
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise InvalidTypeError(f"frame_idx: expected an int, got {type(index).__name__}")
        if not 0 <= index < self.num_frames:
            raise OutOfRangeError(
                f"frame_idx: {index} is out of range for a video of {self.num_frames} frames "
                f"(valid: 0..{self.num_frames - 1})"
            )
        frame = self._read(int(index))
        if frame.shape[:2] != (self.height, self.width):
            raise VideoReadError(
                f"frame {index} is {frame.shape[1]}x{frame.shape[0]} but the video is "
                f"{self.width}x{self.height}; all frames must have the same size"
            )
        return frame

    @abc.abstractmethod
    def _read(self, index: int) -> np.ndarray:
        """Frame ``index`` (already range-checked) as ``[H, W, 3]`` uint8."""

    def describe(self) -> str:
        return f"{type(self).__name__}({self.num_frames} frames, {self.width}x{self.height})"


def _natural_key(path: Path):
    stem = path.stem
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


class FolderFrames(FrameSource):
    """A folder of JPEG/PNG frames, ordered by their numeric names (``00000.jpg``, ...)."""

    def __init__(self, folder: Union[str, Path]) -> None:
        from PIL import Image, UnidentifiedImageError

        self.folder = Path(folder)
        self.paths: List[Path] = sorted(
            (p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()),
            key=_natural_key,
        )
        if not self.paths:
            raise VideoReadError(
                f"video_path: no frames found in folder {str(self.folder)!r} "
                f"(looked for {', '.join(IMAGE_EXTENSIONS)} files)"
            )
        sizes = {}
        for p in self.paths:  # headers only: cheap, and catches bad files before tracking
            try:
                with Image.open(p) as im:
                    sizes.setdefault(im.size, p)
            except (UnidentifiedImageError, OSError) as exc:
                raise VideoReadError(f"video_path: frame {str(p)!r} is not a readable image ({exc})") from None
        if len(sizes) > 1:
            detail = ", ".join(f"{w}x{h} ({p.name})" for (w, h), p in list(sizes.items())[:4])
            raise VideoReadError(
                f"video_path: frames in {str(self.folder)!r} have different sizes: {detail}; "
                "all frames of a video must have the same size"
            )
        (self.width, self.height), = sizes
        self.num_frames = len(self.paths)

    def _read(self, index: int) -> np.ndarray:
        from PIL import Image

        path = self.paths[index]
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
        except OSError as exc:
            raise VideoReadError(f"frame {index} ({str(path)!r}) could not be decoded: {exc}") from None


class VideoFileFrames(FrameSource):
    """A video file decoded with PyAV (``pip install av``); sequential reads are cheap,
    random access seeks to the previous key frame."""

    def __init__(self, path: Union[str, Path]) -> None:
        try:
            import av
        except ImportError:
            raise VideoReadError(
                "video_path: reading video files needs PyAV: pip install av "
                "(or pass a folder of JPEG/PNG frames)"
            ) from None
        self.path = Path(path)
        self._av = av
        self._lock = threading.Lock()
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise VideoReadError(f"video_path: {str(self.path)!r} has no video stream")
                stream = container.streams.video[0]
                self._time_base = stream.time_base
                # demux only (no decoding) to learn every frame's timestamp and the key frames
                packets = [
                    (p.pts, p.pts if p.dts is None else p.dts, p.is_keyframe)
                    for p in container.demux(stream)
                    if p.pts is not None and p.size > 0
                ]
                self._pts = sorted(pts for pts, _, _ in packets)
                # (pts, dts) of the key frames in presentation order; the first packet is
                # a key frame in any decodable stream
                self._keyframes = sorted(
                    {(pts, dts) for i, (pts, dts, key) in enumerate(packets) if key or i == 0}
                )
                self.width, self.height = stream.codec_context.width, stream.codec_context.height
                rate = stream.average_rate or stream.guessed_rate
                self.fps = float(rate) if rate else None
        except VideoReadError:
            raise
        except Exception as exc:  # PyAV raises many error types for corrupt input
            raise VideoReadError(f"video_path: {str(self.path)!r} is not a readable video ({exc})") from None
        if not self._pts:
            raise VideoReadError(f"video_path: {str(self.path)!r} contains no frames")
        self.num_frames = len(self._pts)
        self._container = None
        self._decoder = None
        self._next_index: Optional[int] = None

    def _open_at(self, index: int) -> None:
        """Seek to the last key frame shown at or before frame ``index``. Demuxers seek by
        decode timestamp (mp4), which with B-frames can land on a later key frame than the
        frame's own timestamp would: seek to that key frame's decode timestamp instead."""
        if self._container is None:
            self._container = self._av.open(str(self.path))
        stream = self._container.streams.video[0]
        k = max(bisect.bisect_right(self._keyframes, (self._pts[index], float("inf"))) - 1, 0)
        self._container.seek(self._keyframes[k][1], stream=stream, backward=True, any_frame=False)
        self._decoder = self._container.decode(stream)
        self._next_index = None

    def _read(self, index: int) -> np.ndarray:
        target = self._pts[index]
        with self._lock:
            try:
                if self._decoder is None or self._next_index != index:
                    self._open_at(index)
                for frame in self._decoder:
                    if frame.pts is None or frame.pts < target:
                        continue
                    if frame.pts > target:  # never hand out a neighbouring frame instead
                        break
                    self._next_index = index + 1
                    return frame.to_ndarray(format="rgb24")
            except Exception as exc:
                self._decoder = None
                raise VideoReadError(f"frame {index} of {str(self.path)!r} could not be decoded ({exc})") from None
        self._decoder = None
        raise VideoReadError(
            f"frame {index} of {str(self.path)!r} could not be decoded (the decoder skipped it "
            "or the stream ended early)"
        )

    def close(self) -> None:
        with self._lock:
            if self._container is not None:
                self._container.close()
            self._container = self._decoder = None


class ArrayFrames(FrameSource):
    """Frames already in memory: a ``[T, H, W, 3]`` uint8 array or a sequence of
    ``[H, W, 3]`` uint8 arrays / PIL images."""

    def __init__(self, frames: Sequence[Any]) -> None:
        self._frames = frames
        self.num_frames = len(frames)
        if self.num_frames == 0:
            raise VideoReadError("video_path: the sequence of frames is empty")
        first = as_rgb_uint8(frames[0], "video_path[0]")
        self.height, self.width = first.shape[:2]
        if not isinstance(frames, np.ndarray):  # check every frame now, not mid-tracking
            from PIL import Image

            for i in range(1, self.num_frames):
                frame = frames[i]
                if isinstance(frame, Image.Image):  # header only: no decoding
                    h, w = frame.height, frame.width
                else:
                    h, w = as_rgb_uint8(frame, f"video_path[{i}]").shape[:2]
                if (h, w) != (self.height, self.width):
                    raise VideoReadError(
                        f"video_path[{i}]: frame is {w}x{h} but frame 0 is {self.width}x{self.height}; "
                        "all frames of a video must have the same size"
                    )

    def _read(self, index: int) -> np.ndarray:
        return as_rgb_uint8(self._frames[index], f"video_path[{index}]")


def open_video(video_path: Any) -> FrameSource:
    """A :class:`FrameSource` for a folder of frames, a video file, a ``[T, H, W, 3]`` array,
    a sequence of frames, or any other iterable of frames (read into memory)."""
    if isinstance(video_path, FrameSource):
        return video_path
    if isinstance(video_path, (str, os.PathLike)):
        path = Path(video_path)
        if path.is_dir():
            return FolderFrames(path)
        if path.is_file():
            return VideoFileFrames(path)
        raise VideoReadError(f"video_path: {str(path)!r} does not exist")
    if isinstance(video_path, np.ndarray):
        if video_path.ndim != 4:
            raise VideoReadError(
                f"video_path: an array of frames must be [T, H, W, 3] uint8, got shape {video_path.shape}"
            )
        return ArrayFrames(video_path)
    if isinstance(video_path, (list, tuple)):
        return ArrayFrames(video_path)
    if isinstance(video_path, Iterable):
        return ArrayFrames(list(video_path))
    raise VideoReadError(
        "video_path: expected a folder of JPEG/PNG frames, a video file, a [T, H, W, 3] uint8 "
        f"array or an iterable of frames, got {type(video_path).__name__}"
    )


def preprocess_frame(frame: np.ndarray, image_size: int) -> torch.Tensor:
    """``[H, W, 3]`` uint8 -> normalised ``[3, S, S]`` float32, as the official video loader:
    PIL bicubic resize of the uint8 frame, then ``/ 255`` and ImageNet normalisation."""
    from PIL import Image

    resized = np.asarray(Image.fromarray(frame).resize((image_size, image_size)))
    x = torch.from_numpy(resized / 255.0).permute(2, 0, 1).to(torch.float32)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    return (x - mean) / std


class LazyVideoFrames:
    """``inference_state["images"]``: indexable like the official tensor of frames
    (``images[i]`` is the normalised ``[3, S, S]`` input), decoded on demand, with a small
    LRU of model inputs and an optional background read-ahead of the next frames."""

    def __init__(
        self,
        source: FrameSource,
        image_size: int,
        device: torch.device,
        cache_size: int = 2,
        prefetch: int = 0,
    ) -> None:
        self.source = source
        self.image_size = image_size
        self.device = device
        self.cache_size = max(1, cache_size)
        self._cache: "OrderedDict[int, torch.Tensor]" = OrderedDict()
        self._lock = threading.Lock()
        self._prefetch = prefetch
        self._pending: dict = {}
        self._executor = None

    def __len__(self) -> int:
        return len(self.source)

    def _load(self, index: int) -> torch.Tensor:
        return preprocess_frame(self.source.read(index), self.image_size)

    def __getitem__(self, index: int) -> torch.Tensor:
        with self._lock:
            hit = self._cache.get(index)
            if hit is not None:
                self._cache.move_to_end(index)
                return hit
            future = self._pending.pop(index, None)
        img = future.result() if future is not None else self._load(index)
        img = img.to(self.device, non_blocking=True)
        with self._lock:
            self._cache[index] = img
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return img

    def prefetch(self, indices: Iterable[int]) -> None:
        """Start decoding ``indices`` in a background thread (no-op without ``prefetch``)."""
        if self._prefetch <= 0:
            return
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sam2-fast-frames")
        with self._lock:
            for index in list(indices)[: self._prefetch]:
                if 0 <= index < len(self) and index not in self._cache and index not in self._pending:
                    self._pending[index] = self._executor.submit(self._load, index)
            # forget read-aheads that fell out of the window
            while len(self._pending) > 2 * self._prefetch:
                self._pending.pop(next(iter(self._pending))).cancel()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        close = getattr(self.source, "close", None)
        if close is not None:
            close()
