"""Whether Triton kernels run in the CPU interpreter: kernels pick exact dot products there
and the ops (``sam2_fast.ops._triton``) decide which devices a kernel can take."""

from __future__ import annotations

import os


def interpreting() -> bool:
    """Whether Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
