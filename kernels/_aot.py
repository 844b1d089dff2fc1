"""Ahead-of-time compilation of every Triton kernel for real GPUs, without a GPU.

Each kernel module of this package defines ``aot_specs() -> list[AotSpec]``: one spec per
shipped configuration (dtype, head dim, block sizes, ...). :func:`compile_all` compiles each
spec with ``triton.compile(ASTSource(...), target=GPUTarget("cuda", cc, 32))`` for sm_80 and
sm_90, then runs the ptxas bundled with Triton (``ptxas -v``) on the emitted PTX to read the
register count, spill stores / loads and shared memory. ``python -m sam2_fast.kernels aot``
prints the table and exits non-zero on any compile error or spill.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any

TARGETS = (80, 90)
# registers per thread above which a kernel is reported (it still passes; spills fail)
REGISTER_WARNING = 255


@dataclass(frozen=True)
class AotSpec:
    """One kernel configuration to compile.

    ``signature`` maps every argument of ``fn`` to a Triton type (``"*fp32"``, ``"*bf16"``,
    ``"i32"``, ``"fp32"``, ...) or ``"constexpr"``; ``constexprs`` gives each constexpr's value.
    """

    name: str
    fn: Any
    signature: dict[str, str]
    constexprs: dict[str, Any] = field(default_factory=dict)
    num_warps: int = 4
    num_stages: int = 2
    # compute capabilities this configuration is shipped for (None: every target)
    targets: tuple[int, ...] | None = None
    # arguments known to be multiples of 16 (pointers: 16-byte aligned), as Triton's JIT
    # specializes them on real tensors; without it an ahead-of-time compile cannot vectorise
    divisible_by_16: tuple[str, ...] = ()


@dataclass
class AotResult:
    spec: str
    cc: int
    ok: bool
    registers: int | None = None
    spill_stores: int | None = None
    spill_loads: int | None = None
    shared_bytes: int | None = None
    error: str | None = None

    @property
    def spilled(self) -> bool:
        return bool(self.spill_stores) or bool(self.spill_loads)


def kernel_modules() -> list[str]:
    """Names of the kernel modules of this package (every non-private module)."""
    import sam2_fast.kernels as package

    return sorted(
        f"{package.__name__}.{m.name}"
        for m in pkgutil.iter_modules(package.__path__)
        if not m.name.startswith("_")
    )


def all_specs() -> list[AotSpec]:
    specs: list[AotSpec] = []
    for name in kernel_modules():
        module = importlib.import_module(name)
        if hasattr(module, "aot_specs"):
            specs += module.aot_specs()
    return specs


def _ptxas() -> str | None:
    import triton

    bundled = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    if os.path.exists(bundled):
        return bundled
    return shutil.which("ptxas")


_PTXAS_PATTERNS = {
    "registers": re.compile(r"Used (\d+) registers"),
    "spill_stores": re.compile(r"(\d+) bytes spill stores"),
    "spill_loads": re.compile(r"(\d+) bytes spill loads"),
}


def _ptxas_report(ptx: str, cc: int) -> dict[str, int]:
    """Register / spill counts from ``ptxas -v`` on ``ptx`` (max over the kernels in it)."""
    ptxas = _ptxas()
    if ptxas is None:
        raise RuntimeError("ptxas not found (neither bundled with Triton nor on PATH)")
    arch = f"sm_{cc}a" if cc >= 90 else f"sm_{cc}"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "kernel.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        proc = subprocess.run(
            [ptxas, "-v", f"--gpu-name={arch}", src, "-o", os.path.join(tmp, "kernel.cubin")],
            capture_output=True,
            text=True,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"ptxas failed: {proc.stderr.strip()[-500:]}")
    report: dict[str, int] = {}
    for key, pattern in _PTXAS_PATTERNS.items():
        values = [int(v) for v in pattern.findall(proc.stderr)]
        report[key] = max(values) if values else 0
    return report


def compile_spec(spec: AotSpec, cc: int) -> AotResult:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    try:
        attrs = {(spec.fn.arg_names.index(name),): [["tt.divisibility", 16]] for name in spec.divisible_by_16}
        src = ASTSource(spec.fn, signature=spec.signature, constexprs=spec.constexprs, attrs=attrs)
        kernel = triton.compile(
            src,
            target=GPUTarget("cuda", cc, 32),
            options={"num_warps": spec.num_warps, "num_stages": spec.num_stages},
        )
        report = _ptxas_report(kernel.asm["ptx"], cc)
    except Exception as exc:  # report every failure, keep compiling the others
        first = str(exc).strip().splitlines()
        return AotResult(spec.name, cc, False, error=f"{type(exc).__name__}: {first[0] if first else ''}")
    return AotResult(
        spec.name,
        cc,
        True,
        registers=report["registers"],
        spill_stores=report["spill_stores"],
        spill_loads=report["spill_loads"],
        shared_bytes=int(kernel.metadata.shared),
    )


def compile_all(targets: tuple[int, ...] = TARGETS, name_filter: str | None = None) -> list[AotResult]:
    results = []
    for spec in all_specs():
        if name_filter and name_filter not in spec.name:
            continue
        for cc in targets:
            if spec.targets is None or cc in spec.targets:
                results.append(compile_spec(spec, cc))
    return results


def format_results(results: list[AotResult]) -> str:
    lines = [f"{'kernel configuration':<58} {'sm':>3} {'regs':>5} {'spill':>6} {'smem KiB':>9}  status"]
    for r in results:
        if r.ok:
            spill = (r.spill_stores or 0) + (r.spill_loads or 0)
            status = "SPILL" if r.spilled else ("ok (many registers)" if (r.registers or 0) > REGISTER_WARNING else "ok")
            lines.append(
                f"{r.spec:<58} {r.cc:>3} {r.registers:>5} {spill:>6} {r.shared_bytes / 1024:>9.1f}  {status}"
            )
        else:
            lines.append(f"{r.spec:<58} {r.cc:>3} {'':>5} {'':>6} {'':>9}  FAILED {r.error}")
    failed = sum(not r.ok for r in results)
    spilled = sum(r.ok and r.spilled for r in results)
    lines.append(f"{len(results)} compilations: {failed} failed, {spilled} with spills")
    return "\n".join(lines)
