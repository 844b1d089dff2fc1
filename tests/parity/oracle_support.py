"""Helpers for parity tests against the official ``sam2`` 1.1.0 package (the oracle).

The oracle is installed by ``.ci/run`` (``SAM2_BUILD_CUDA=0``). Its absence is an error,
not a skip: set ``SAM2_FAST_ALLOW_NO_ORACLE=1`` to skip these tests on a machine without it.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest
import torch

from sam2_fast.modeling.config import PRESETS, SAM2Config
from sam2_fast.modeling.init import random_state_dict
from sam2_fast.modeling.sam2_base import SAM2Base
from sam2_fast.ops import get_op

# zoo name -> official hydra config name
OFFICIAL_CONFIGS = {
    "sam2-hiera-tiny": "configs/sam2/sam2_hiera_t.yaml",
    "sam2-hiera-small": "configs/sam2/sam2_hiera_s.yaml",
    "sam2-hiera-base-plus": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2-hiera-large": "configs/sam2/sam2_hiera_l.yaml",
    "sam2.1-hiera-tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1-hiera-small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1-hiera-base-plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1-hiera-large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}


def import_oracle():
    try:
        import sam2.build_sam  # noqa: F401
    except ImportError as exc:
        if os.environ.get("SAM2_FAST_ALLOW_NO_ORACLE") == "1":
            pytest.skip(f"official sam2 package not installed ({exc}); SAM2_FAST_ALLOW_NO_ORACLE=1")
        pytest.fail(
            f"the official sam2 1.1.0 package (the oracle) is not importable: {exc}. Install it as "
            ".ci/run does, or set SAM2_FAST_ALLOW_NO_ORACLE=1 to skip parity tests."
        )
    import sam2

    return sam2


class ModelPair:
    """The same random weights in this project's model and in the official one."""

    def __init__(self, name: str, seed: int = 1) -> None:
        import_oracle()
        from sam2.build_sam import build_sam2 as official_build

        self.name = name
        self.state_dict = random_state_dict(PRESETS[name], seed=seed)
        self.official = official_build(OFFICIAL_CONFIGS[name], None, device="cpu")
        self.official.load_state_dict(self.state_dict)
        self.official.eval()
        cfg: SAM2Config = PRESETS[name].with_postprocessing()
        with torch.device("meta"):
            self.ours = SAM2Base.from_config(cfg)
        self.ours.load_state_dict(self.state_dict, assign=True)
        self.ours.eval()


def scipy_connected_components(mask: torch.Tensor):
    """An independent 8-connectivity labelling with the official op's contract, used to let
    the oracle run its (CUDA-only) post-processing on CPU in tests."""
    from scipy import ndimage

    m = mask.cpu().numpy().astype(bool)
    labels = np.zeros(m.shape, np.int32)
    counts = np.zeros(m.shape, np.int32)
    for i in range(m.shape[0]):
        lab, _ = ndimage.label(m[i, 0], structure=np.ones((3, 3), int))
        areas = np.bincount(lab.ravel())
        labels[i, 0] = lab
        counts[i, 0] = np.where(lab > 0, areas[lab], 0)
    return torch.from_numpy(labels).to(mask.device), torch.from_numpy(counts).to(mask.device)


def official_video_predictor(name: str, state_dict, overrides=(), device: str = "cpu"):
    """:func:`sam2_fast._bench.official.official_video_predictor` (the fp32 memory shim) with the
    official CUDA-only hole filling given the independent scipy labelling."""
    import sam2.utils.misc as official_misc

    from sam2_fast._bench.official import official_video_predictor as build

    import_oracle()
    official_misc.get_connected_components = scipy_connected_components
    return build(name, state_dict, overrides, device)


@contextlib.contextmanager
def windows_in_place(dtype: torch.dtype = torch.float32):
    """Every windowed ``window_attention`` call runs ``cpp_grid`` (the C++ kernel reading the
    windows in place), the others (global attention) what automatic selection picks; yields
    the list of the backends picked, call by call; skips where the kernel cannot run ``dtype``
    (no AVX-512, no extension, or no oneDNN micro-kernel for it)."""
    op = get_op("window_attention")
    grid = op.backend("cpp_grid")
    reason = grid.supports(torch.zeros(1, 8, 8, 6, dtype=dtype), 1, 4, 1, None)
    if reason is not None:
        pytest.skip(f"cpp_grid cannot run here: {reason}")
    select = op.select
    picked: list[str] = []  # the backend of each call, for the test to check

    def in_place_first(*args, **kwargs):
        backend = grid if grid.supports(*args, **kwargs) is None else select(*args, **kwargs)
        picked.append(backend.name)
        return backend

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(op, "select", in_place_first)
        yield picked
