"""Shared fixtures. This file lives in tests/ (not at the repository root) and tests/ has no
__init__.py, so pytest does not put the repository root on sys.path: ``import sam2_fast``
imports the installed package (editable or not) with its compiled extension, as users do."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

# results must not depend on timings: the built-in backend defaults, nothing measured (the
# tuner's own tests turn it on with a temporary cache and a fake clock)
os.environ["SAM2_FAST_TUNE"] = "0"

_REPO_ROOT = Path(__file__).resolve().parents[1]


def _check_the_installed_package_is_tested() -> None:
    """``python -m pytest`` from the repository root puts the root first on sys.path: a
    non-editable install would then be shadowed by the source tree, which has no compiled
    extension and no ``sam2_fast.kernels`` / ``sam2_fast.zoo``. Say so instead of testing the
    wrong code."""
    spec = importlib.util.find_spec("sam2_fast")
    if spec is None or spec.origin is None:
        raise pytest.UsageError("sam2_fast is not installed: bash scripts/setup_env.sh --test")
    try:
        installed = Path(importlib.metadata.distribution("sam2-fast").locate_file("sam2_fast/__init__.py"))
    except importlib.metadata.PackageNotFoundError:
        raise pytest.UsageError("sam2_fast is not installed: bash scripts/setup_env.sh --test") from None
    # an editable install has no copy of the package (its finder maps the source tree)
    if installed.is_file() and installed.resolve() != Path(spec.origin).resolve():
        raise pytest.UsageError(
            f"sam2_fast is installed at {installed.parent} but would be imported from "
            f"{Path(spec.origin).parent} (that folder is on sys.path, as `python -m pytest` puts "
            "the current one): run `.venv/bin/pytest` or `python -P -m pytest`"
        )


_check_the_installed_package_is_tested()


def _expect_cuda_build() -> bool:
    return os.environ.get("SAM2_FAST_EXPECT_CUDA_BUILD") == "1"


@pytest.fixture(scope="session")
def expect_cuda_build() -> bool:
    """``SAM2_FAST_EXPECT_CUDA_BUILD=1`` (set by CI): the extension and its CUDA ops must be
    built, so tests that would skip without them fail instead."""
    return _expect_cuda_build()


@pytest.fixture(scope="session")
def extension() -> ModuleType:
    """``sam2_fast._C``. Skips only when the install genuinely did not build it; a built but
    unloadable extension fails the test."""
    from sam2_fast._ext import extension_was_built, load_extension

    module, reason = load_extension()
    if module is None:
        if extension_was_built() or _expect_cuda_build():
            pytest.fail(f"sam2_fast._C {reason}")
        pytest.skip(f"sam2_fast._C {reason}")
    return module


# ----------------------------------------------------------------------------------------
# checkpoints (tests/test_checkpoint.py, tests/test_hub.py, tests/test_cli*.py)


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache with downloads disabled; returns the cache folder."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf" / "hub"


TINY = "sam2.1-hiera-tiny"


@pytest.fixture(scope="session")
def tiny_state_dict() -> dict:
    """Random float32 weights of sam2.1-hiera-tiny with the official keys (~156 MB)."""
    from sam2_fast.modeling.config import PRESETS
    from sam2_fast.modeling.init import random_state_dict

    return random_state_dict(PRESETS[TINY], seed=0)


@pytest.fixture(scope="session")
def tiny_pt_file(tmp_path_factory: pytest.TempPathFactory, tiny_state_dict: dict) -> Path:
    """``tiny_state_dict`` saved as Meta does: ``torch.save({"model": sd})``."""
    import torch

    path = tmp_path_factory.mktemp("ckpt") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": tiny_state_dict}, path)
    return path


@pytest.fixture(scope="session")
def tiny_safetensors_file(tmp_path_factory: pytest.TempPathFactory, tiny_state_dict: dict) -> Path:
    """``tiny_state_dict`` as a safetensors file with the official keys."""
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("ckpt") / "sam2.1_hiera_tiny.safetensors"
    save_file(tiny_state_dict, str(path))
    return path


# ----------------------------------------------------------------------------------------
# Triton kernels under the CPU interpreter (tests/ops/test_*.py)


def _triton_module(name: str) -> bool:
    """Modules re-imported for the interpreter (the compiled triton._C cannot be, and need not)."""
    if name == "triton._C" or name.startswith("triton._C."):
        return False
    return name == "triton" or name.startswith(("triton.", "sam2_fast.kernels"))


def _swap_triton_modules(replacement: dict) -> dict:
    current = {name: module for name, module in sys.modules.items() if _triton_module(name)}
    for name in current:
        del sys.modules[name]
    sys.modules.update(replacement)
    return current


@pytest.fixture(scope="session")
def _interpreted_triton_modules() -> dict:
    """triton (and our kernel modules, once imported) as imported under TRITON_INTERPRET=1."""
    pytest.importorskip("triton")
    import importlib

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRITON_INTERPRET", "1")
        originals = _swap_triton_modules({})
        importlib.import_module("triton")  # fresh, interpreted

        interpreted = _swap_triton_modules(originals)
    return interpreted


@pytest.fixture
def triton_interpreter(_interpreted_triton_modules: dict, monkeypatch: pytest.MonkeyPatch):
    """Run Triton kernels on CPU tensors with ``TRITON_INTERPRET=1`` during one test.

    Triton decides at ``@triton.jit`` time whether a function is compiled or interpreted, for
    its own ``triton.language`` helpers too, so the test sees a triton (and kernel modules)
    imported under the variable; the originals are back after it. Returns
    ``importlib.import_module`` for importing kernel modules in that state.
    """
    import importlib

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    originals = _swap_triton_modules(_interpreted_triton_modules)
    try:
        yield importlib.import_module
    finally:
        _interpreted_triton_modules.clear()
        _interpreted_triton_modules.update(_swap_triton_modules(originals))
