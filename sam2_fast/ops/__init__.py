"""Fused operations. Each op has several backends (``reference``, ``cpp``, ``cuda``, ...) and a
small dispatcher that runs the fastest one able to handle the inputs, measured on this machine
(:mod:`sam2_fast.ops._tuning`); see :mod:`sam2_fast.ops._dispatch` for how to list, explain
and force backends.

Importing this package imports torch and registers every op; it does not load the compiled
extension or initialise CUDA.
"""

from sam2_fast.ops._dispatch import (
    STANDARD_BACKENDS,
    Backend,
    BackendError,
    Op,
    get_op,
    list_ops,
    use_backend,
)
from sam2_fast.ops._tuning import tuning
from sam2_fast.ops.attention import attention
from sam2_fast.ops.boxes import box_nms, masks_to_boxes
from sam2_fast.ops.connected_components import connected_components, fill_holes_and_sprinkles
from sam2_fast.ops.rope_attention import rope_attention
from sam2_fast.ops.mask_postprocess import UpsampledMasks, upsample_masks
from sam2_fast.ops.rle import (
    masks_to_rle,
    rle_area,
    rle_decode,
    rle_encode,
    rle_encode_compressed,
    rle_to_masks,
)
from sam2_fast.ops.window_attention import window_attention

__all__ = [
    "STANDARD_BACKENDS",
    "Backend",
    "BackendError",
    "Op",
    "UpsampledMasks",
    "attention",
    "box_nms",
    "connected_components",
    "fill_holes_and_sprinkles",
    "get_op",
    "list_ops",
    "masks_to_boxes",
    "masks_to_rle",
    "rle_area",
    "rle_decode",
    "rle_encode",
    "rle_encode_compressed",
    "rle_to_masks",
    "rope_attention",
    "tuning",
    "upsample_masks",
    "use_backend",
    "window_attention",
]
