"""Boxes for the automatic mask generator: the tight box of each mask, and greedy non-maximum
suppression, without torchvision.

Ops, backends in order of preference:

* ``masks_to_boxes``: ``cuda`` (``csrc/cuda/boxes.cu``: one thread block per mask), ``cpp``
  (``csrc/boxes.cpp``: first / last non-empty rows, then only the columns outside the box so
  far, eight pixels per load, masks in parallel), ``reference`` (torch, any device).
* ``box_nms``: ``cpp`` (``csrc/boxes.cpp``: torchvision's CPU algorithm on boxes stored as
  score-sorted columns), ``reference`` (torch, any device: the IoU matrix and a greedy loop).

Both match official SAM 2: :func:`masks_to_boxes` is ``sam2.utils.amg.batched_mask_to_box``,
:func:`box_nms` is ``torchvision.ops.nms`` (which official SAM 2 calls through
``batched_nms`` with a single category), down to the float rounding of the IoU.
"""

from __future__ import annotations

import math
import numbers

import torch

from sam2_fast._ext import register_fake_on_load
from sam2_fast.errors import InvalidInputError, InvalidTypeError
from sam2_fast.ops._common import (
    check_binary_dtype,
    check_tensor,
    extension_refusal,
    masks_cpp_refusal,
    masks_cuda_refusal,
    measured_slower_on_gpu,
)
from sam2_fast.ops._dispatch import Op

__all__ = ["box_nms", "box_nms_reference", "masks_to_boxes", "masks_to_boxes_reference"]

NMS_CPP_DTYPES = (torch.float32, torch.float64)


def _example_masks(device: str) -> tuple[torch.Tensor]:
    return (torch.zeros(64, 256, 256, dtype=torch.bool, device=device),)


def _example_boxes(device: str) -> tuple[torch.Tensor, torch.Tensor, float]:
    """An automatic-mask-generator crop: 3000 candidate boxes, the default threshold."""
    return torch.zeros(3000, 4, device=device), torch.zeros(3000, device=device), 0.7


masks_to_boxes_op = Op("masks_to_boxes", example=_example_masks)
box_nms_op = Op("box_nms", example=_example_boxes)


# ---------------------------------------------------------------------------------------------
# public functions


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY box of each mask, as official ``sam2.utils.amg.batched_mask_to_box``.

    Args:
        masks: ``[..., H, W]`` bool or uint8 (nonzero = foreground), any device.

    Returns:
        ``[..., 4]`` int64 on ``masks.device``: ``[x_min, y_min, x_max, y_max]`` in pixels, max
        inclusive; ``[0, 0, 0, 0]`` for a mask without foreground. (The official function
        returns float32 zeros instead when ``masks`` has no elements at all; here it is int64
        in every case.)
    """
    check_tensor("masks_to_boxes", "masks", masks)
    if masks.dim() < 2:
        raise InvalidInputError(f"masks_to_boxes: masks must be [..., H, W], got {list(masks.shape)}")
    check_binary_dtype("masks_to_boxes", "masks", masks)
    return masks_to_boxes_op(masks)


def _check_nms_args(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> None:
    check_tensor("box_nms", "boxes", boxes)
    check_tensor("box_nms", "scores", scores)
    if boxes.dim() != 2 or boxes.size(1) != 4:
        raise InvalidInputError(
            f"box_nms: boxes must be [N, 4] (x1, y1, x2, y2), got {list(boxes.shape)}"
        )
    if scores.dim() != 1 or scores.size(0) != boxes.size(0):
        raise InvalidInputError(
            f"box_nms: scores must be [N] with N = boxes.size(0) = {boxes.size(0)}, got "
            f"{list(scores.shape)}"
        )
    for name, value in (("boxes", boxes), ("scores", scores)):
        if not value.is_floating_point():
            raise InvalidTypeError(f"box_nms: {name} must be floating point, got {value.dtype}")
    if boxes.device != scores.device:
        raise InvalidInputError(
            f"box_nms: boxes and scores must be on one device, got {boxes.device} and "
            f"{scores.device}"
        )
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, numbers.Real):
        raise InvalidTypeError(
            f"box_nms: iou_threshold must be a real number, got {type(iou_threshold).__name__}"
        )
    if math.isnan(iou_threshold):
        raise InvalidInputError("box_nms: iou_threshold must not be NaN")


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression, the same result as ``torchvision.ops.nms``.

    Boxes are taken by decreasing score; a box is kept unless a kept box overlaps it with
    IoU ``> iou_threshold``. IoU uses areas ``(x2 - x1) * (y2 - y1)`` (no +1), in the boxes'
    dtype, compared with the threshold in float64, as torchvision does. Ties: the sort is
    stable, so boxes of equal score are taken in input order (the lower index first).

    Args:
        boxes: ``[N, 4]`` floating ``(x1, y1, x2, y2)``, any device.
        scores: ``[N]`` floating, on the same device.
        iou_threshold: IoU above which the lower-scored box is dropped.

    Returns:
        ``[K]`` int64 indices into ``boxes`` of the kept boxes, by decreasing score, on
        ``boxes.device``.
    """
    _check_nms_args(boxes, scores, iou_threshold)
    return box_nms_op(boxes, scores, float(iou_threshold))


# ---------------------------------------------------------------------------------------------
# cuda / cpp backends: ops of sam2_fast._C, registered per device (csrc/ops.cpp)


def _boxes_extension(masks: torch.Tensor) -> torch.Tensor:
    return torch.ops.sam2_fast.masks_to_boxes(masks)


def _nms_extension(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    return torch.ops.sam2_fast.box_nms(boxes, scores, iou_threshold)


def _fake_masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    return masks.new_empty((*masks.shape[:-2], 4), dtype=torch.int64)


def _fake_box_nms(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    return boxes.new_empty(torch.library.get_ctx().new_dynamic_size(), dtype=torch.int64)


register_fake_on_load("sam2_fast::masks_to_boxes", _fake_masks_to_boxes)
register_fake_on_load("sam2_fast::box_nms", _fake_box_nms)


def _supports_nms_cpp(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float
) -> str | None:
    if boxes.dtype not in NMS_CPP_DTYPES:
        return f"boxes are {boxes.dtype}, this backend runs float32 and float64"
    return extension_refusal("cpu", boxes=boxes, scores=scores)


masks_to_boxes_op.add_backend("cuda", _boxes_extension, masks_cuda_refusal, measured_slower_on_gpu)
masks_to_boxes_op.add_backend("cpp", _boxes_extension, masks_cpp_refusal)
box_nms_op.add_backend("cpp", _nms_extension, _supports_nms_cpp)


# ---------------------------------------------------------------------------------------------
# reference backends


@masks_to_boxes_op.register("reference")
def masks_to_boxes_reference(masks: torch.Tensor) -> torch.Tensor:
    """Plain-torch :func:`masks_to_boxes` on any device (same inputs and outputs): the first
    and last row and column that hold a pixel."""
    *batch, h, w = masks.shape
    if masks.numel() == 0:
        return torch.zeros(*batch, 4, dtype=torch.int64, device=masks.device)
    foreground = masks.reshape(-1, h, w) != 0
    rows = foreground.any(dim=2)  # [B, H]
    columns = foreground.any(dim=1)  # [B, W]
    ys = torch.arange(h, device=masks.device)
    xs = torch.arange(w, device=masks.device)
    boxes = torch.stack(
        [
            torch.where(columns, xs, w).amin(dim=1),
            torch.where(rows, ys, h).amin(dim=1),
            torch.where(columns, xs, -1).amax(dim=1),
            torch.where(rows, ys, -1).amax(dim=1),
        ],
        dim=1,
    )
    boxes = torch.where(rows.any(dim=1, keepdim=True), boxes, 0)
    return boxes.reshape(*batch, 4)


@box_nms_op.register("reference")
def box_nms_reference(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Plain-torch :func:`box_nms` on any device (same inputs and outputs): the IoU of every
    pair in score order, then the greedy pass over the ``[N, N]`` overlap matrix on the CPU.
    IoU is computed with torchvision's operations in torchvision's order (same roundings)."""
    order = torch.sort(scores, descending=True, stable=True).indices
    x1, y1, x2, y2 = boxes[order].unbind(dim=1)
    areas = (x2 - x1) * (y2 - y1)
    # row i: the higher-scored box i against every box j
    w = (torch.minimum(x2[:, None], x2) - torch.maximum(x1[:, None], x1)).clamp(min=0)
    h = (torch.minimum(y2[:, None], y2) - torch.maximum(y1[:, None], y1)).clamp(min=0)
    inter = w * h
    iou = inter / (areas[:, None] + areas - inter)
    overlaps = (iou.double() > iou_threshold).cpu()
    suppressed = torch.zeros(order.numel(), dtype=torch.bool)
    keep = []
    for i in range(order.numel()):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= overlaps[i]
    return order[torch.tensor(keep, dtype=torch.int64, device=order.device)]
