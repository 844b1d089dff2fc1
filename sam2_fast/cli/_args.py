"""Argument types and defaults that several ``sam2-fast`` commands share."""

from __future__ import annotations

import argparse
from typing import List, Sequence, Tuple

from sam2_fast.zoo.registry import DEFAULT_MODEL  # noqa: F401  (re-exported for the commands)


def _numbers(text: str, option: str, counts: Sequence[int]) -> List[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in counts:
        raise argparse.ArgumentTypeError(f"{option} expects {' or '.join(map(str, counts))} comma-separated numbers, got {text!r}")
    return values


def _int_at_least(text: str, minimum: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {what} (an integer >= {minimum}), got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a count")


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0, "a count")


def unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _index(value: float, what: str, option: str, text: str) -> int:
    if not value.is_integer() or value < 0:
        raise argparse.ArgumentTypeError(f"{option}: {what} must be an integer >= 0, got {text!r}")
    return int(value)


def track_point_arg(text: str) -> Tuple[int, float, float, int, int]:
    """``FRAME,X,Y[,LABEL][,OBJ]`` -> (frame, x, y, label, obj); LABEL defaults to 1, OBJ to 1."""
    option = "--point FRAME,X,Y[,LABEL][,OBJ]"
    values = _numbers(text, option, (3, 4, 5))
    label = values[3] if len(values) >= 4 else 1
    if label not in (0, 1):
        raise argparse.ArgumentTypeError(f"--point label must be 1 (foreground) or 0 (background), got {text!r}")
    obj = _index(values[4], "OBJ", option, text) if len(values) == 5 else 1
    return _index(values[0], "FRAME", option, text), values[1], values[2], int(label), obj


def track_box_arg(text: str) -> Tuple[int, Tuple[float, float, float, float], int]:
    """``FRAME,X0,Y0,X1,Y1[,OBJ]`` -> (frame, box, obj); OBJ defaults to 1."""
    option = "--box FRAME,X0,Y0,X1,Y1[,OBJ]"
    values = _numbers(text, option, (5, 6))
    obj = _index(values[5], "OBJ", option, text) if len(values) == 6 else 1
    return _index(values[0], "FRAME", option, text), tuple(values[1:5]), obj


def frame_index_arg(text: str) -> int:
    return _int_at_least(text, 0, "a frame index")


def image_size_arg(text: str) -> int:
    value = _int_at_least(text, 32, "a size in pixels")
    if value % 32:
        raise argparse.ArgumentTypeError(f"expected a multiple of 32 (e.g. 512 or 1024), got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


# ---------------------------------------------------------------- prompts
def point_arg(text: str) -> Tuple[float, float, int]:
    """``X,Y`` or ``X,Y,LABEL`` (label 1 = foreground, 0 = background)."""
    values = _numbers(text, "--point X,Y[,LABEL]", (2, 3))
    label = int(values[2]) if len(values) == 3 else 1
    if label not in (0, 1):
        raise argparse.ArgumentTypeError(f"--point label must be 1 (foreground) or 0 (background), got {text!r}")
    return values[0], values[1], label


def box_arg(text: str) -> Tuple[float, float, float, float]:
    """``X0,Y0,X1,Y1`` in pixels."""
    x0, y0, x1, y1 = _numbers(text, "--box X0,Y0,X1,Y1", (4,))
    return x0, y0, x1, y1
