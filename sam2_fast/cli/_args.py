"""Argument types and defaults that several ``sam2-fast`` commands share."""

from __future__ import annotations

import argparse
from typing import List, Sequence

DEFAULT_MODEL = "sam2.1-hiera-tiny"


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
