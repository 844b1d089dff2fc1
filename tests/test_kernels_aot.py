"""Every shipped Triton kernel configuration compiles for sm_80 and sm_90 without register
spills (``python -m sam2_fast.kernels aot``; no GPU needed), and the check itself fails on a
broken kernel."""

from __future__ import annotations

import subprocess
import tempfile
import sys

import pytest

pytest.importorskip("triton")

# run outside the source tree: there `sam2_fast` would be the checkout, without kernels/
_OUTSIDE = tempfile.gettempdir()


def test_every_kernel_compiles_for_sm80_and_sm90_without_spills():
    proc = subprocess.run(
        [sys.executable, "-m", "sam2_fast.kernels", "aot"], capture_output=True, text=True, timeout=1800, cwd=_OUTSIDE
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    assert lines[-1].endswith(": 0 failed, 0 with spills"), lines[-1]
    for family in ("rope_attention", "window_attention", "mask_postprocess"):
        rows = [line for line in lines if line.startswith(family)]
        assert any(" 80 " in r for r in rows) and any(" 90 " in r for r in rows), family


def test_aot_reports_compile_errors_and_spills():
    import triton
    import triton.language as tl

    from sam2_fast.kernels._aot import AotSpec, compile_spec, format_results

    @triton.jit
    def broken(X, BLOCK: tl.constexpr):
        tl.store(X + tl.arange(0, BLOCK), undefined_name)  # noqa: F821

    result = compile_spec(AotSpec("broken", broken, {"X": "*fp32", "BLOCK": "constexpr"}, {"BLOCK": 16}), 80)
    assert not result.ok and result.error
    assert "FAILED" in format_results([result])


def test_aot_usage_errors():
    proc = subprocess.run(
        [sys.executable, "-m", "sam2_fast.kernels", "aot", "--cc", "eighty"], capture_output=True, text=True, cwd=_OUTSIDE
    )
    assert proc.returncode == 2 and "--cc" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "sam2_fast.kernels", "aot", "--filter", "no such kernel"],
        capture_output=True,
        text=True,
        cwd=_OUTSIDE,
    )
    assert proc.returncode == 1 and "no kernel configuration matched" in proc.stderr
