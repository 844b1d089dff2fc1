"""Running the ``sam2-fast`` command line in-process in tests."""

from __future__ import annotations

import contextlib
import io
from typing import List, Tuple

from sam2_fast.cli import main


def run_cli(argv: List[str]) -> Tuple[int, str, str]:
    """``main(argv)`` -> (exit code, stdout, stderr); a ``SystemExit`` with a message becomes
    exit code 1 with the message on stderr, as the interpreter does."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:
            if isinstance(exc.code, str):
                print(exc.code, file=err)
                rc = 1
            else:
                rc = exc.code
    return rc, out.getvalue(), err.getvalue()
