"""sam2-fast: a drop-in, faster implementation of Segment Anything 2 (SAM 2 and SAM 2.1).

``import sam2_fast`` is cheap: it does not import torch, never initialises CUDA and never
compiles anything. The public names below are resolved on first use::

    from sam2_fast import build_sam2, SAM2ImagePredictor
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "build_sam2": "sam2_fast.build_sam",
    "build_sam2_hf": "sam2_fast.build_sam",
    "build_sam2_video_predictor": "sam2_fast.build_sam",
    "build_sam2_video_predictor_hf": "sam2_fast.build_sam",
    "SAM2ImagePredictor": "sam2_fast.predictors.image_predictor",
    "SAM2VideoPredictor": "sam2_fast.predictors.video_predictor",
    "SAM2StreamPredictor": "sam2_fast.predictors.stream_predictor",
    "SAM2AutomaticMaskGenerator": "sam2_fast.automatic_mask_generator",
    "SAM2Base": "sam2_fast.modeling.sam2_base",
    "SAM2Config": "sam2_fast.modeling.config",
    "list_models": "sam2_fast.zoo",
    "get_model_info": "sam2_fast.zoo",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from sam2_fast.build_sam import build_sam2, build_sam2_hf  # noqa: F401
    from sam2_fast.modeling.config import SAM2Config  # noqa: F401
    from sam2_fast.modeling.sam2_base import SAM2Base  # noqa: F401
    from sam2_fast.predictors.image_predictor import SAM2ImagePredictor  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sam2_fast' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
