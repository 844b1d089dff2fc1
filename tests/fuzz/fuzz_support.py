"""Strategies and backend helpers shared by the property-based tests in tests/fuzz.

Masks are drawn as a pattern (random at a drawn density, empty, full, stripes, a rectangle)
filled from a drawn seed: Hypothesis shrinks a failure to the smallest shape, the simplest
pattern and a low seed, and the arrays stay fast to build at 40x40.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
from hypothesis import strategies as st

from sam2_fast.ops import Op

MAX_SIDE = 40
PATTERNS = ("random", "zeros", "ones", "rows", "columns", "rectangle")


@st.composite
def sides(draw: st.DrawFn, max_side: int = MAX_SIDE, min_side: int = 1) -> tuple[int, int]:
    """``(H, W)``: a general shape, or a single row (1xN) or column (Nx1)."""
    kind = draw(st.sampled_from(["any", "row", "column"]))
    h = 1 if kind == "row" else draw(st.integers(min_side, max_side))
    w = 1 if kind == "column" else draw(st.integers(min_side, max_side))
    return max(h, min_side), max(w, min_side)


@st.composite
def mask_arrays(
    draw: st.DrawFn,
    batch_shapes: st.SearchStrategy[tuple[int, ...]] = st.tuples(st.integers(1, 3)),
    max_side: int = MAX_SIDE,
    min_side: int = 1,
) -> np.ndarray:
    """A bool array ``[*batch, H, W]``, each mask with its own pattern."""
    batch = draw(batch_shapes)
    h, w = draw(sides(max_side, min_side))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    masks = np.zeros((int(np.prod(batch, dtype=np.int64)), h, w), dtype=bool)
    for mask in masks:
        pattern = draw(st.sampled_from(PATTERNS))
        if pattern == "random":
            mask[:] = rng.random((h, w)) < draw(st.floats(0.0, 1.0))
        elif pattern == "ones":
            mask[:] = True
        elif pattern == "rows":
            mask[rng.random(h) < 0.5] = True
        elif pattern == "columns":
            mask[:, rng.random(w) < 0.5] = True
        elif pattern == "rectangle":
            y0, y1 = sorted(rng.integers(0, h + 1, size=2))
            x0, x1 = sorted(rng.integers(0, w + 1, size=2))
            mask[y0:y1, x0:x1] = True
    return masks.reshape(*batch, h, w)


@st.composite
def mask_tensors(
    draw: st.DrawFn,
    batch_shapes: st.SearchStrategy[tuple[int, ...]] = st.tuples(st.integers(1, 3)),
    max_side: int = MAX_SIDE,
    min_side: int = 1,
) -> torch.Tensor:
    """:func:`mask_arrays` as a tensor: bool, or uint8 with any nonzero value as foreground,
    contiguous or not (the last two dims stored transposed)."""
    masks = draw(mask_arrays(batch_shapes, max_side, min_side))
    if draw(st.booleans()):
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        masks = (masks * rng.integers(1, 256, size=masks.shape)).astype(np.uint8)
    if draw(st.booleans()):
        return torch.from_numpy(np.ascontiguousarray(masks.swapaxes(-1, -2))).transpose(-1, -2)
    return torch.from_numpy(masks)


def logit_arrays(shape: Sequence[int], seed: int, threshold: float = 0.0) -> np.ndarray:
    """Float32 logits ``shape`` of standard deviation 2 with a tenth of the values exactly at
    ``threshold`` (the boundary between foreground and background)."""
    rng = np.random.default_rng(seed)
    logits = (2 * rng.standard_normal(shape)).astype(np.float32)
    logits[rng.random(shape) < 0.1] = threshold
    return logits


# ---------------------------------------------------------------------------------------------
# backends


def device_of(backend: str) -> str:
    """Where a backend runs its inputs: ``cuda`` on the GPU, ``triton`` on the GPU when there
    is one (else on the CPU under the interpreter), the others on the CPU."""
    if backend == "cuda" or (backend == "triton" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def extension_runs() -> bool:
    """Whether ``sam2_fast._C`` loads; fails the test for a built extension that does not
    load (as the ``extension`` fixture does), False when it was genuinely not built."""
    from sam2_fast._ext import extension_was_built, load_extension

    module, reason = load_extension()
    if module is None and extension_was_built():
        pytest.fail(f"sam2_fast._C {reason}")
    return module is not None


def runnable_backends(op: Op) -> list[str]:
    """The backends of ``op`` that run in this process, without forcing an import of triton or
    a compilation: ``reference``, ``cpp`` when the extension loads, ``cuda`` on a GPU with the
    CUDA ops compiled, and ``chunked`` / ``blocked`` (CPU torch). Excludes ``compiled`` (a
    compilation per example) and ``triton`` (see tests/fuzz/test_fuzz_backends.py)."""
    names = []
    for name in op.backend_names:
        if name in ("compiled", "triton"):
            continue
        if name in ("cpp", "cuda") and not extension_runs():
            continue
        if name == "cuda":
            from sam2_fast._ext import load_extension

            if not torch.cuda.is_available() or not load_extension()[0].build_info()["cuda"]:
                continue
        names.append(name)
    return names
