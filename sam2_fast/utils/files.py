"""Writing files so that a reader, a crash or a killed job never sees half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Union


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file in ``path``'s folder, flush it to disk and rename
    it to ``path``: a reader sees the old file or the new one, never a half-written one, and a
    killed process leaves at most a hidden ``.<name>.*.tmp`` file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: Union[str, bytes]) -> None:
    """Write ``text`` (str as UTF-8, or bytes) to ``path`` atomically (:func:`atomic_write`)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))
