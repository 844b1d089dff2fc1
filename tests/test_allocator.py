"""The glibc allocator settings applied when a model is built on a CPU (sam2_fast.allocator)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

SCRIPT = """
import os, sys
from sam2_fast import allocator, build_sam2
build_sam2("sam2.1-hiera-tiny", None, device="cpu")
print(allocator.keep_large_blocks())
"""


def _run(env_value: str | None, cwd) -> str:
    import os

    env = dict(os.environ)
    env.pop("SAM2_FAST_MALLOC", None)
    if env_value is not None:
        env["SAM2_FAST_MALLOC"] = env_value
    # cwd: not the repository root, whose source tree would shadow the installed package
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300,
                          cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


def test_building_on_cpu_applies_the_settings_once_and_the_switch_turns_them_off(tmp_path):
    expected = "applied" if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc" else "unsupported"
    assert _run(None, tmp_path) == expected
    assert _run("0", tmp_path) == "disabled"


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_settings_are_accepted_by_mallopt():
    import ctypes

    from sam2_fast import allocator

    # mallopt returns 1 for a value it accepts (re-applying the same values changes nothing)
    libc = ctypes.CDLL("libc.so.6")
    assert libc.mallopt(-3, allocator.MMAP_THRESHOLD) == 1
    assert libc.mallopt(-2, allocator.TOP_PAD) == 1
    assert libc.mallopt(-1, allocator.TRIM_THRESHOLD) == 1
