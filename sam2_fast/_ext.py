"""Loading the compiled extension ``sam2_fast._C``, lazily and without ever raising.

``sam2_fast._C`` registers the C++/CUDA ops with the torch dispatcher (``torch.ops.sam2_fast.*``)
when it is imported, and exposes ``build_info()``. It links against torch's libraries, so torch
is imported first. Importing this module imports nothing heavy; only :func:`load_extension` does.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

logger = logging.getLogger(__name__)

_REBUILD_HINT = "rebuild with `pip install --no-build-isolation -e .` (or without -e)"

_lock = threading.Lock()
_result: tuple[ModuleType | None, str | None] | None = None
# qualified op name ("sam2_fast::op") -> fake (meta) implementation, registered on load
_fakes: dict[str, Callable[..., Any]] = {}


def extension_was_built() -> bool | None:
    """Whether the install built ``sam2_fast._C`` (from ``_build_info.py``, written by setup.py).

    None when the package was never built by setup.py (e.g. a bare source checkout).
    """
    try:
        from sam2_fast import _build_info
    except ImportError:
        return None
    return bool(_build_info.EXTENSION_BUILT)


def _not_built_reason() -> str:
    try:
        from sam2_fast import _build_info
    except ImportError:
        return f"not built (no build of this source tree was found); {_REBUILD_HINT}"
    if _build_info.EXTENSION_BUILT:
        return f"built but missing from the install; {_REBUILD_HINT}"
    return f"not built: {_build_info.SKIP_REASON}"


def _load() -> tuple[ModuleType | None, str | None]:
    try:
        import torch
    except Exception as exc:  # a broken torch install raises more than ImportError
        return None, f"unavailable: torch is not importable ({type(exc).__name__}: {exc})"
    try:
        module = importlib.import_module("sam2_fast._C")
    except ModuleNotFoundError as exc:
        if exc.name != "sam2_fast._C":
            return None, f"failed to load ({exc}); {_REBUILD_HINT}"
        return None, _not_built_reason()
    except Exception as exc:  # undefined symbols, wrong ABI, ...: report, never raise
        return None, f"failed to load ({type(exc).__name__}: {exc}); {_REBUILD_HINT}"
    built_against = module.build_info()["torch_version"]
    if built_against != torch.__version__:
        return None, (
            f"built against torch {built_against} but torch {torch.__version__} is installed; "
            f"{_REBUILD_HINT}"
        )
    for qualname, fake in _fakes.items():
        _register_fake(qualname, fake)
    return module, None


def load_extension() -> tuple[ModuleType | None, str | None]:
    """Import ``sam2_fast._C`` once (after torch) and return ``(module, None)``.

    Returns ``(None, reason)`` when the extension is not built or cannot be loaded; ``reason``
    completes the sentence "sam2_fast._C ..." ("not built: installed with
    SAM2_FAST_BUILD_EXT=0", "failed to load (...); rebuild with ...") and says how to fix it.
    The result is cached; this never raises.
    """
    global _result
    with _lock:
        if _result is None:
            _result = _load()
            if _result[0] is None:
                logger.info("sam2_fast._C %s", _result[1])
        return _result


def register_fake_on_load(qualname: str, fake: Callable[..., Any]) -> None:
    """Register ``fake`` as the fake (meta) kernel of compiled op ``qualname`` once it exists.

    The op (``"sam2_fast::<name>"``) is defined by ``sam2_fast._C``, so the registration waits
    until :func:`load_extension` succeeds; it happens at once when the extension is loaded
    already. The fake lets ``torch.compile`` trace through the op.
    """
    with _lock:
        _fakes[qualname] = fake
        loaded = _result is not None and _result[0] is not None
    if loaded:
        _register_fake(qualname, fake)


def _register_fake(qualname: str, fake: Callable[..., Any]) -> None:
    import torch.library

    # torch >= 2.4 calls it register_fake; older releases impl_abstract
    register = getattr(torch.library, "register_fake", None) or torch.library.impl_abstract
    register(qualname)(fake)
