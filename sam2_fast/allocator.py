"""Large CPU tensors without page faults: glibc's allocator settings for a process that runs
the model on a CPU.

glibc's ``malloc`` maps every block above its mmap threshold (at most 32 MB by default) fresh
from the kernel and unmaps it on free, and gives freed memory at the top of its heap back to
the kernel. A model on a CPU allocates and frees tensors of 10-130 MB every frame (feed-forward
hidden activations, a memory encoder's inputs at 1024 x 1024, eight objects' decoder
activations), so each of them is mapped again and its pages fault in, one 4 KiB page at a
time, on first touch: on the 2-core VMs this project is measured on, a 33 MB broadcast multiply
took 16-18 ms fresh against 2.5 ms in reused memory. With the settings below freed blocks stay
in the heap and are reused (measured in separate processes, A/B: ``set_image`` about 5 %
faster, a tracked frame with 8 objects about 8 %). The cost: the process keeps its peak heap
size instead of returning freed memory to the system.

Applied once, when a model is built on a CPU (:func:`sam2_fast.build_sam2` and the other
builders), on Linux with glibc only; ``SAM2_FAST_MALLOC=0`` leaves the allocator alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import threading

__all__ = ["ENV_MALLOC", "keep_large_blocks"]

log = logging.getLogger(__name__)

ENV_MALLOC = "SAM2_FAST_MALLOC"
# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
#: blocks up to this size come from the heap and are reused (mallopt takes an int)
MMAP_THRESHOLD = 1 << 30
#: extra heap grown at once, so the heap grows in few steps
TOP_PAD = 1 << 29
#: free memory at the heap's top kept up to this size
TRIM_THRESHOLD = (1 << 31) - 1

_lock = threading.Lock()
_state: dict[str, object] = {}


def keep_large_blocks() -> str:
    """Apply the settings (once per process) and return what was done: ``"applied"``,
    ``"disabled"`` (``SAM2_FAST_MALLOC=0``), ``"unsupported"`` (no glibc) or ``"failed"``."""
    with _lock:
        if "result" in _state:
            return str(_state["result"])
        _state["result"] = result = _apply()
        log.info("glibc malloc settings for large CPU tensors: %s", result)
        return result


def _apply() -> str:
    if os.environ.get(ENV_MALLOC, "1").strip().lower() in ("0", "off", "false", "no"):
        return "disabled"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "unsupported"
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = all(
            libc.mallopt(param, value) == 1
            for param, value in (
                (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                (_M_TOP_PAD, TOP_PAD),
                (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            )
        )
    except (OSError, AttributeError):
        return "failed"
    return "applied" if ok else "failed"
