"""The installed package: cheap import, metadata, package_dir mapping, compiled extension."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import sam2_fast

_IMPORT_PROBE = """
import json, sys, time
start = time.perf_counter()
import {module}
elapsed = time.perf_counter() - start
print(json.dumps({{"elapsed": elapsed, "torch": "torch" in sys.modules,
                  "numpy": "numpy" in sys.modules, "file": {module}.__file__}}))
"""


def _probe_import(module: str) -> dict[str, object]:
    # run outside the repository so that the installed package is what gets imported
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE.format(module=module)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent,
    )
    return json.loads(result.stdout)


@pytest.mark.parametrize("module", ["sam2_fast", "sam2_fast._ext"])
def test_import_is_cheap_and_does_not_import_torch(module: str) -> None:
    probe = _probe_import(module)
    assert probe["torch"] is False, f"importing {module} imported torch"
    assert probe["numpy"] is False, f"importing {module} imported numpy"
    assert probe["elapsed"] < 1.0, f"importing {module} took {probe['elapsed']:.2f} s"


def test_metadata_version_matches_package() -> None:
    assert importlib.metadata.version("sam2-fast") == sam2_fast.__version__


def test_console_script_is_declared() -> None:
    scripts = importlib.metadata.entry_points(group="console_scripts")
    (script,) = [ep for ep in scripts if ep.name == "sam2-fast"]
    assert script.value == "sam2_fast.cli:main"


def test_kernels_folder_is_installed_as_sam2_fast_kernels() -> None:
    import sam2_fast.kernels

    assert Path(sam2_fast.kernels.__file__).parent.name == "kernels"


def test_extension_loads_and_reports_build_info(extension: ModuleType) -> None:
    import torch

    info = extension.build_info()
    assert info["version"] == sam2_fast.__version__
    assert info["torch_version"] == torch.__version__
    assert info["compiler"] and info["build_type"]
    assert isinstance(info["cuda"], bool)
    assert hasattr(torch.ops.sam2_fast, "connected_components")


def _cuda_compiler() -> str | None:
    """Where CMake's check_language(CUDA) would find nvcc (CUDACXX, CUDA_HOME, PATH)."""
    if os.environ.get("CUDACXX"):
        return os.environ["CUDACXX"]
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        nvcc = Path(os.environ.get(variable, "/nonexistent")) / "bin" / "nvcc"
        if nvcc.is_file():
            return str(nvcc)
    return shutil.which("nvcc")


def test_cuda_ops_compiled_with_cuda_torch_and_nvcc(
    extension: ModuleType, expect_cuda_build: bool
) -> None:
    import torch

    info = extension.build_info()
    if expect_cuda_build:
        assert info["cuda"], f"CUDA ops were not compiled: {info['cuda_skip_reason']}"
    if torch.version.cuda is None:
        assert info["cuda"] is False
        pytest.skip(f"torch {torch.__version__} is a CPU build")
    if _cuda_compiler() is None or info["build_cuda_mode"] == "0":
        pytest.skip(f"no CUDA compiler here or CUDA disabled: {info['cuda_skip_reason']}")
    assert info["cuda"], f"CUDA ops were not compiled: {info['cuda_skip_reason']}"
    assert info["cuda_version"].split(".")[0] == torch.version.cuda.split(".")[0]
    assert info["cuda_archs"]
