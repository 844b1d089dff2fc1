"""Shared fixtures. This file lives in tests/ (not at the repository root) and tests/ has no
__init__.py, so pytest does not put the repository root on sys.path: ``import sam2_fast``
imports the installed package (editable or not), with its compiled extension."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

_REPO_ROOT = Path(__file__).resolve().parents[1]
# `python -m pytest` run from the repository root puts the root first on sys.path; a
# non-editable install must win over the source tree, which has no compiled extension.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _REPO_ROOT]


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
