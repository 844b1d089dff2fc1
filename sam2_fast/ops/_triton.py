"""When a Triton backend can run: shared by every op that has one.

Triton kernels run on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1`` (the
interpreter used by the tests on machines without a GPU). Importing this module does not import
triton; :func:`triton_refusal` does, once.
"""

from __future__ import annotations

import functools
import importlib

import torch

from sam2_fast.kernels._interpreter import interpreting


@functools.lru_cache(maxsize=1)
def _triton_import_error() -> str | None:
    try:
        importlib.import_module("triton.language")
    except Exception as exc:  # a broken install raises more than ImportError
        return f"triton is not importable ({type(exc).__name__}: {exc})"
    return None


def triton_refusal(*tensors: torch.Tensor) -> str | None:
    """None when a Triton kernel can take ``tensors``, else why not (devices are checked
    first, so a CPU-only process never pays for importing triton)."""
    devices = {t.device.type for t in tensors}
    if len(devices) > 1:
        return f"inputs are on several devices {sorted(devices)}"
    device = devices.pop() if devices else "cpu"
    if device == "cpu" and not interpreting():
        return "inputs are on cpu; Triton kernels run on cuda (or on cpu with TRITON_INTERPRET=1)"
    if device not in ("cuda", "cpu"):
        return f"inputs are on {device}; Triton kernels run on cuda"
    return _triton_import_error()


def interpreter_untimed(*args: object, **kwargs: object) -> str | None:
    """``timed`` check of Triton backends (:mod:`sam2_fast.ops._dispatch`): a kernel in the
    CPU interpreter is a test tool, never a measured candidate (it runs when forced)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            if value.device.type == "cpu":
                return "the Triton interpreter (TRITON_INTERPRET=1) is for tests: runs when forced"
            return None
    return None
