"""Compute precision of a model: exact float32 (the default, as the official package), or a
16-bit fast mode run under ``torch.autocast``.

``build_sam2(..., compute_dtype="auto")`` (or ``model.set_compute_dtype("auto")``) picks:

* on a GPU: bfloat16 (float16 where the GPU has no bfloat16), the official package's own
  recommendation (it runs under ``torch.autocast("cuda", torch.bfloat16)``);
* on a CPU: bfloat16 only where this machine multiplies bfloat16 matrices at least
  ``CPU_BF16_MIN_SPEEDUP`` times faster than float32 (measured once per process, ~0.1 s; CPUs
  with AMX or fast AVX512-BF16 do, others run bfloat16 slower than float32), else float32.

In the 16-bit mode weights stay float32 and autocast runs convolutions, linear layers and
attention in 16 bit; what ranks and gates masks stays float32: softmax accumulation, layer
norms, positional encodings, and the IoU and object-score heads. ``tests/test_precision.py``
measures and bounds how far its masks and logits move from the exact path.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any, Optional, Tuple, TypeVar, Union

import torch

from sam2_fast.errors import InvalidInputError, InvalidTypeError

CPU_BF16_MIN_SPEEDUP = 1.2
_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
ComputeDtype = Union[None, str, torch.dtype]


def matmul_flops(dtype: torch.dtype, size: int, repeats: int = 5, warmup: int = 1) -> float:
    """Median FLOP/s of a ``size``^3 matrix product in ``dtype`` on the CPU."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    for _ in range(warmup):
        a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


def matmul_rate(dtype: torch.dtype, size: int, repeats: int = 5, warmup: int = 1,
                budget_s: Optional[float] = None) -> Tuple[float, int]:
    """``(median FLOP/s, size)`` of a ``size``^3 matrix product in ``dtype`` on the CPU. With
    ``budget_s`` the size is halved (down to 256) while one product, estimated from a 256^3
    one, would take longer: a dtype without a fast kernel here (bfloat16 under
    ``ONEDNN_MAX_CPU_ISA=AVX2``: 2 GFLOP/s) is measured in a fraction of a second, not
    minutes."""
    if budget_s is not None:
        probe = 256
        seconds = 2 * probe**3 / matmul_flops(dtype, probe, repeats=1, warmup=1)
        while size > probe and seconds * (size / probe) ** 3 > budget_s:
            size //= 2
    return matmul_flops(dtype, size, repeats, warmup), size


#: seconds one product of :func:`cpu_gemm_rates` may take (``compute_dtype="auto"`` pays it)
CPU_RATE_BUDGET_S = 0.1


@functools.lru_cache(maxsize=1)
def cpu_gemm_rates(size: int = 1024, repeats: int = 5) -> dict:
    """Median GFLOP/s of a float32 and a bfloat16 matrix product on this CPU, ``size``^3 or
    smaller where one product would take over :data:`CPU_RATE_BUDGET_S` (a dtype that slow
    is far from the other's rate: the choice stays clear)."""
    return {dtype: matmul_rate(dtype, size, repeats, budget_s=CPU_RATE_BUDGET_S)[0] / 1e9
            for dtype in (torch.float32, torch.bfloat16)}


def resolve_compute_dtype(value: ComputeDtype, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for ``value`` on ``device``; None means exact float32 (no autocast)."""
    if isinstance(value, str) and value != "auto":
        if value not in _NAMES:
            raise InvalidInputError(
                f"compute_dtype: expected None, 'auto', 'float32', 'bfloat16', 'float16' or a "
                f"torch dtype, got {value!r}"
            )
        value = _NAMES[value]
    if value is None or value == torch.float32:
        return None
    if value == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu":
            rates = cpu_gemm_rates()
            fast = rates[torch.bfloat16] >= CPU_BF16_MIN_SPEEDUP * rates[torch.float32]
            return torch.bfloat16 if fast else None
        return None
    if value in (torch.bfloat16, torch.float16):
        return value
    raise InvalidInputError(
        f"compute_dtype: expected None, 'auto', 'float32', 'bfloat16', 'float16' or a torch "
        f"dtype among float32 / bfloat16 / float16, got {value!r}"
    )


def autocast_context(dtype: Optional[torch.dtype], device: torch.device):
    """``torch.autocast`` for a 16-bit ``dtype`` on ``device``, a no-op for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


F = TypeVar("F", bound=Callable[..., Any])


def _model_of(owner: Any) -> Any:
    """The model behind a model (video predictor), an image predictor (``.model``) or a
    wrapper of either (``.predictor``: stream predictor, mask generator)."""
    for _ in range(3):
        if hasattr(owner, "compute_context"):
            return owner
        owner = getattr(owner, "model", None) or getattr(owner, "predictor")
    raise InvalidTypeError(f"{type(owner).__name__} has no model with a compute context")


def in_compute_dtype(method: F) -> F:
    """Run a method of a model, predictor or mask generator under its model's compute
    precision (:meth:`SAM2Base.compute_context`)."""

    @functools.wraps(method)
    def wrapper(self, *args: Any, **kwargs: Any) -> Any:
        with _model_of(self).compute_context():
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
