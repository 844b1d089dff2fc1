"""Output of the GPU check scripts: markdown printed and appended to a file as each part
completes (a run cut short still leaves what finished), and the failures collected."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from pathlib import Path


class Report:
    def __init__(self) -> None:
        self.out: Path | None = None
        self.failures: list[str] = []

    def start(self, out: Path | None) -> None:
        self.out = out
        if out is not None:
            out.write_text("")

    def emit(self, text: str) -> None:
        print(text, flush=True)
        if self.out is not None:
            with self.out.open("a") as f:
                f.write(text + "\n")

    def section(self, name: str, fn: Callable[[], None]) -> None:
        """Run one part; an exception is reported as a failure and the next part runs."""
        start = time.perf_counter()
        try:
            fn()
        except Exception:
            self.failures.append(f"{name}: raised")
            self.emit(f"\n{name} raised:\n```\n{traceback.format_exc()}```")
        self.emit(f"\n({name}: {time.perf_counter() - start:.1f} s)\n")

    def finish(self) -> int:
        """Print the failures (or that all checks passed); the exit status."""
        if self.failures:
            self.emit("\nFAILURES:\n" + "\n".join(f"- {f}" for f in self.failures))
            return 1
        self.emit("\nall checks passed")
        return 0
