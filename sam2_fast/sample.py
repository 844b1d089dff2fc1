"""A generated sample image for the demo and tests (no binary files in the repository)."""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

#: Objects drawn by :func:`sample_image`, with a click inside each, as (x, y) pixels.
SAMPLE_OBJECTS: Dict[str, Tuple[int, int]] = {
    "red disc": (230, 250),
    "blue square": (520, 220),
    "green triangle": (600, 420),
}


def sample_image(height: int = 512, width: int = 768) -> np.ndarray:
    """A ``[H, W, 3]`` uint8 RGB scene: three coloured shapes on a textured background.

    Deterministic; object positions scale with the size (the defaults match
    :data:`SAMPLE_OBJECTS`).
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    sy, sx = height / 512.0, width / 768.0
    img = np.empty((height, width, 3), np.float32)
    img[..., 0] = 150 + 30 * np.sin(xx / 37.0) * np.cos(yy / 53.0)
    img[..., 1] = 160 + 25 * np.cos((xx + yy) / 61.0)
    img[..., 2] = 140 + 20 * np.sin(yy / 29.0)

    disc = (xx - 230 * sx) ** 2 + (yy - 250 * sy) ** 2 < (110 * min(sx, sy)) ** 2
    img[disc] = (205, 40, 45)
    square = (np.abs(xx - 520 * sx) < 80 * sx) & (np.abs(yy - 220 * sy) < 80 * sy)
    img[square] = (35, 70, 200)
    # triangle with apex at the top: inside when below both slanted edges
    ty, tx, half, height_t = 330 * sy, 600 * sx, 110 * sx, 170 * sy
    rel = (yy - ty) / height_t
    triangle = (rel >= 0) & (rel <= 1) & (np.abs(xx - tx) <= rel * half)
    img[triangle] = (40, 170, 70)
    return np.clip(img, 0, 255).astype(np.uint8)


def sample_video_frame(index: int, height: int = 384, width: int = 512) -> np.ndarray:
    """Frame ``index`` of a generated video: a disc, a square and a triangle moving across a
    textured background; the disc passes in front of the square around frame 12.

    Object centres at frame ``t`` are given by :func:`sample_video_objects`.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    shift = 3.0 * index
    img[..., 0] = 150 + 30 * np.sin((xx + shift) / 37.0) * np.cos(yy / 53.0)
    img[..., 1] = 160 + 25 * np.cos((xx + yy - shift) / 61.0)
    img[..., 2] = 140 + 20 * np.sin(yy / 29.0)
    centres = sample_video_objects(index, height, width)
    r = 0.1 * min(height, width)
    (sx, sy), (dx, dy), (tx, ty) = centres["square"], centres["disc"], centres["triangle"]
    img[(np.abs(xx - sx) < r) & (np.abs(yy - sy) < r)] = (35, 70, 200)
    img[(xx - dx) ** 2 + (yy - dy) ** 2 < r**2] = (205, 40, 45)
    rel = (yy - (ty - r)) / (2 * r)
    img[(rel >= 0) & (rel <= 1) & (np.abs(xx - tx) <= rel * r)] = (40, 170, 70)
    return np.clip(img, 0, 255).astype(np.uint8)


def sample_video_objects(index: int, height: int = 384, width: int = 512) -> Dict[str, Tuple[int, int]]:
    """Centres ``(x, y)`` in pixels of the moving objects of :func:`sample_video_frame`."""
    t = float(index)
    return {
        "disc": (int(0.2 * width + 0.025 * width * t), int(0.45 * height + 0.05 * height * np.sin(t / 4))),
        "square": (int(0.55 * width), int(0.45 * height)),
        "triangle": (int(0.8 * width - 0.01 * width * t), int(0.75 * height)),
    }
