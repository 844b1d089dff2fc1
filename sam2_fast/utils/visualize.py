"""Mask overlays and PNG output (PIL only)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from sam2_fast.errors import InvalidInputError

# distinct colours for object ids (RGB)
PALETTE = np.array(
    [(30, 144, 255), (255, 99, 71), (50, 205, 50), (255, 215, 0), (186, 85, 211),
     (0, 206, 209), (255, 140, 0), (199, 21, 133), (127, 255, 0), (70, 130, 180)],
    dtype=np.uint8,
)


def overlay_masks(
    image: np.ndarray,
    masks: Union[np.ndarray, Sequence[np.ndarray]],
    points: Optional[np.ndarray] = None,
    labels: Optional[np.ndarray] = None,
    boxes: Optional[np.ndarray] = None,
    alpha: float = 0.55,
) -> np.ndarray:
    """Blend boolean masks ``[K, H, W]`` (one colour each) onto an ``[H, W, 3]`` uint8 image;
    draw clicks (green = positive, red = negative) and boxes. Returns a new uint8 image."""
    out = image.astype(np.float32).copy()
    h, w = image.shape[:2]
    for k, mask in enumerate(masks):
        m = np.asarray(mask).astype(bool)
        if m.shape != (h, w):
            raise InvalidInputError(f"masks[{k}]: expected shape {(h, w)}, got {m.shape}")
        color = PALETTE[k % len(PALETTE)].astype(np.float32)
        out[m] = (1 - alpha) * out[m] + alpha * color
        edge = m & ~(_erode(m))
        out[edge] = color
    result = out.clip(0, 255).astype(np.uint8)
    if boxes is not None:
        for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4).round().astype(int):
            _draw_rect(result, x0, y0, x1, y1, (255, 255, 0))
    if points is not None:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2).round().astype(int)
        lbl = np.ones(len(pts), int) if labels is None else np.asarray(labels).reshape(-1)
        for (x, y), lab in zip(pts, lbl):
            _draw_marker(result, x, y, (0, 230, 0) if lab == 1 else (230, 0, 0))
    return result


def _erode(m: np.ndarray) -> np.ndarray:
    e = m.copy()
    e[1:, :] &= m[:-1, :]
    e[:-1, :] &= m[1:, :]
    e[:, 1:] &= m[:, :-1]
    e[:, :-1] &= m[:, 1:]
    return e


def _draw_rect(img: np.ndarray, x0: int, y0: int, x1: int, y1: int, color) -> None:
    h, w = img.shape[:2]
    x0, x1 = np.clip([x0, x1], 0, w - 1)
    y0, y1 = np.clip([y0, y1], 0, h - 1)
    for t in range(2):
        img[np.clip(y0 + t, 0, h - 1), x0 : x1 + 1] = color
        img[np.clip(y1 - t, 0, h - 1), x0 : x1 + 1] = color
        img[y0 : y1 + 1, np.clip(x0 + t, 0, w - 1)] = color
        img[y0 : y1 + 1, np.clip(x1 - t, 0, w - 1)] = color


def _draw_marker(img: np.ndarray, x: int, y: int, color, radius: int = 6) -> None:
    h, w = img.shape[:2]
    yy, xx = np.ogrid[max(0, y - radius) : min(h, y + radius + 1), max(0, x - radius) : min(w, x + radius + 1)]
    d2 = (yy - y) ** 2 + (xx - x) ** 2
    patch = img[max(0, y - radius) : min(h, y + radius + 1), max(0, x - radius) : min(w, x + radius + 1)]
    patch[d2 <= radius**2] = (255, 255, 255)
    patch[d2 <= (radius - 2) ** 2] = color


def save_png(array: np.ndarray, path: Union[str, Path]) -> Path:
    """Write a uint8 ``[H, W]`` or ``[H, W, 3]`` array (bool masks become 0/255) as PNG."""
    from PIL import Image

    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path
