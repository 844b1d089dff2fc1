"""What the ``sam2-fast serve`` tests share: a tiny random-weights model, sample uploads."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Dict, Sequence

import numpy as np
from PIL import Image

from sam2_fast.sample import sample_image, sample_video_frame

MODEL = "sam2.1-hiera-tiny"
IMAGE_SIZE = 256  # the model's input size: small, so that a CPU answers a click in ~0.1 s
IMAGE_HW = (240, 320)
VIDEO_HW = (192, 256)


def tiny_model():
    """The video predictor ``sam2-fast serve --random-weights --image-size 256`` serves."""
    from sam2_fast.cli._shared import requested_random_weights_model

    model = requested_random_weights_model(MODEL, "cpu", video=True, overrides=[f"++model.image_size={IMAGE_SIZE}"])
    model.show_progress = False
    return model


def image() -> np.ndarray:
    return sample_image(*IMAGE_HW)


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def frames(n: int) -> np.ndarray:
    return np.stack([sample_video_frame(i, *VIDEO_HW) for i in range(n)])


def write_mp4(path: Path, n: int, fps: float = 12.0) -> Path:
    from sam2_fast.utils.video_writer import VideoWriter

    with VideoWriter(path, *VIDEO_HW, fps) as writer:
        for frame in frames(n):
            writer.write(frame)
    return path


def frames_zip(n: int, names: Sequence[str] = ()) -> bytes:
    """A zip of ``n`` PNG frames named ``names`` (default ``clip/0.png``, ``clip/1.png``, ...)."""
    names = list(names) or [f"clip/{i}.png" for i in range(n)]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, frame in zip(names, frames(n)):
            zf.writestr(name, png(frame))
    return buf.getvalue()


def sse_events(text: str) -> list:
    """``[(event, data dict), ...]`` of a Server-Sent Events body."""
    import json

    events = []
    for block in text.strip().split("\n\n"):
        fields: Dict[str, str] = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append((fields.get("event"), json.loads(fields.get("data", "{}"))))
    return events
