"""Input checks at the public boundary.

Every error names the argument, what was expected and what arrived, and is raised before
any state is changed, so a predictor stays usable after a bad call.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from sam2_fast.errors import InvalidInputError, InvalidTypeError


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {tuple(value.shape)}"
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        return f"{type(value).__name__} of dtype {value.dtype} and shape {tuple(shape)}"
    return f"{type(value).__name__} {value!r}"[:200]


def as_rgb_uint8(image, name: str = "image") -> np.ndarray:
    """An ``[H, W, 3]`` uint8 RGB array from a numpy array or a PIL image.

    PIL images of any mode are converted to RGB; numpy arrays must already be HWC uint8
    with 3 channels (as the official predictor expects).
    """
    try:
        from PIL import Image as PILImage
    except ImportError:  # pragma: no cover - pillow is a dependency
        PILImage = None
    if PILImage is not None and isinstance(image, PILImage.Image):
        if image.width == 0 or image.height == 0:
            raise InvalidInputError(f"{name}: the PIL image is empty ({image.width}x{image.height})")
        return np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise InvalidTypeError(
            f"{name}: expected a numpy array [H, W, 3] of uint8 (RGB) or a PIL image, "
            f"got {_describe(image)}"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidInputError(
            f"{name}: expected shape [H, W, 3] (HWC, RGB), got shape {tuple(image.shape)}"
            + ("; for a grayscale image use np.stack([img] * 3, -1)" if image.ndim == 2 else "")
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InvalidInputError(f"{name}: the image is empty (shape {tuple(image.shape)})")
    if image.dtype != np.uint8:
        raise InvalidTypeError(
            f"{name}: expected dtype uint8 with values in [0, 255], got {image.dtype}; "
            "convert with (img * 255).round().astype(np.uint8) for [0, 1] floats"
        )
    return image


def _as_float_array(value, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidTypeError(f"{name}: expected numbers, got {_describe(value)}") from None
    if not np.all(np.isfinite(arr)):
        raise InvalidInputError(f"{name}: contains NaN or infinite values")
    return arr


def check_points(
    point_coords,
    point_labels,
    orig_hw: Tuple[int, int],
    normalize_coords: bool,
    names: Tuple[str, str] = ("point_coords", "point_labels"),
) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """Validate click prompts: coords ``[N, 2]`` or ``[B, N, 2]`` (x, y), labels ``[N]`` /
    ``[B, N]`` in {-1, 0, 1, 2, 3}; points must lie inside the image. ``names`` are the
    caller's argument names, used in the messages."""
    c_name, l_name = names
    if point_coords is None:
        if point_labels is not None:
            raise InvalidInputError(f"{l_name} was given without {c_name}")
        return None, None
    if point_labels is None:
        raise InvalidInputError(f"{l_name} must be supplied if {c_name} is supplied")
    coords = _as_float_array(point_coords, c_name)
    labels = np.asarray(
        point_labels.detach().cpu() if hasattr(point_labels, "detach") else point_labels
    )
    if coords.ndim not in (2, 3) or coords.shape[-1] != 2:
        raise InvalidInputError(
            f"{c_name}: expected shape [N, 2] or [B, N, 2] of (x, y), got {tuple(coords.shape)}"
        )
    if coords.shape[-2] == 0:
        raise InvalidInputError(f"{c_name}: no points given (N = 0); pass None instead")
    if labels.shape != coords.shape[:-1]:
        raise InvalidInputError(
            f"{l_name}: expected shape {tuple(coords.shape[:-1])} (one label per point), "
            f"got {tuple(labels.shape)}"
        )
    if labels.dtype.kind not in "iub" and not (
        labels.dtype.kind == "f" and np.all(labels == np.round(labels))
    ):
        raise InvalidTypeError(f"{l_name}: expected integers, got {labels.dtype}")
    bad = ~np.isin(labels, (-1, 0, 1, 2, 3))
    if bad.any():
        raise InvalidInputError(
            f"{l_name}: expected 1 (foreground), 0 (background), 2/3 (box corners) or "
            f"-1 (padding), got {sorted(set(labels[bad].tolist()))}"
        )
    h, w = orig_hw
    limit = np.array([w, h]) if normalize_coords else np.array([1.0, 1.0])
    outside = (coords < 0).any(-1) | (coords > limit).any(-1)
    if outside.any():
        first = coords[outside][0].tolist()
        frame = f"the {w}x{h} image (0 <= x <= {w}, 0 <= y <= {h})" if normalize_coords else "[0, 1]"
        raise InvalidInputError(f"{c_name}: point {first} (x, y) lies outside {frame}")
    return coords.astype(np.float32), labels.astype(np.int32)


def check_box(box) -> Optional[np.ndarray]:
    """Validate box prompts ``[4]`` or ``[B, 4]`` as (x0, y0, x1, y1) with x0 <= x1, y0 <= y1."""
    if box is None:
        return None
    arr = _as_float_array(box, "box")
    if arr.ndim not in (1, 2) or arr.shape[-1] != 4:
        raise InvalidInputError(f"box: expected shape [4] or [B, 4] of (x0, y0, x1, y1), got {tuple(arr.shape)}")
    arr = arr.reshape(-1, 4)
    if arr.shape[0] == 0:
        raise InvalidInputError("box: no boxes given (B = 0); pass None instead")
    bad = (arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1])
    if bad.any():
        raise InvalidInputError(
            f"box: expected x0 <= x1 and y0 <= y1 in (x0, y0, x1, y1), got {arr[bad][0].tolist()}"
        )
    return arr.astype(np.float32)


def check_mask_input(mask_input, mask_hw: Tuple[int, int]) -> Optional[np.ndarray]:
    """Validate a low-res mask prompt ``[1, h, w]`` or ``[B, 1, h, w]`` (logits)."""
    if mask_input is None:
        return None
    arr = _as_float_array(mask_input, "mask_input")
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[1] != 1 or tuple(arr.shape[2:]) != tuple(mask_hw):
        raise InvalidInputError(
            f"mask_input: expected shape [1, {mask_hw[0]}, {mask_hw[1]}] or "
            f"[B, 1, {mask_hw[0]}, {mask_hw[1]}] (low-res logits from a previous predict), "
            f"got {tuple(np.shape(mask_input))}"
        )
    return arr.astype(np.float32)


def check_batch_sizes(**sizes: Optional[int]) -> int:
    """All given prompt batch sizes must agree (1 broadcasts); returns the batch size."""
    given = {k: v for k, v in sizes.items() if v is not None}
    distinct = {v for v in given.values() if v != 1}
    if len(distinct) > 1:
        detail = ", ".join(f"{k}={v}" for k, v in given.items())
        raise InvalidInputError(f"prompt batch sizes differ: {detail}; they must be equal (or 1)")
    return max(given.values(), default=1)
