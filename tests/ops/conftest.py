"""Fixtures of the compiled ops' tests (connected components, RLE, boxes)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(params=["cuda", "cpp", "reference"])
def backend(request: pytest.FixtureRequest) -> str:
    """A backend of an op of ``sam2_fast._C`` (modules may override the fixture). ``cpp``
    skips only when the extension was genuinely not built, ``cuda`` when there is no GPU (it
    runs wherever one is)."""
    if request.param in ("cpp", "cuda"):
        extension = request.getfixturevalue("extension")
    if request.param == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device (compilation is checked by build_info tests)")
        if not extension.build_info()["cuda"]:
            pytest.fail(f"CUDA device present but CUDA ops not compiled: {extension.build_info()}")
    return request.param
