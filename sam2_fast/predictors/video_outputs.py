"""What the video predictor keeps of each object's output on a frame, and how the objects'
outputs merge into the frame's masks: compact stored outputs (memories in bfloat16, holes
filled), batched outputs split per object, every object's latest mask on a frame consolidated
into one tensor, and masks resized to the video."""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch
import torch.nn.functional as F

from sam2_fast.modeling.sam2_base import NO_OBJ_SCORE
from sam2_fast.ops.connected_components import fill_holes_and_sprinkles
from sam2_fast.predictors.video_state import FrameOutput, InferenceState


def fill_holes_in_mask_scores(mask: torch.Tensor, max_area: int) -> torch.Tensor:
    """Fill background holes of up to ``max_area`` pixels in low-res mask logits with 0.1
    (the official video post-processing; here on every device)."""
    return fill_holes_and_sprinkles(mask, 0.0, max_area, 0, hole_fill_value=0.1)


def stored_output(
    state: InferenceState,
    maskmem_features: Optional[torch.Tensor],
    maskmem_pos_enc: Optional[List[torch.Tensor]],
    pred_masks: torch.Tensor,
    obj_ptr: torch.Tensor,
    object_score_logits: torch.Tensor,
    fill_hole_area: int,
) -> Tuple[FrameOutput, torch.Tensor]:
    """What is stored of a model output (a batch of objects on one frame): the memory as
    :meth:`InferenceState.stored_memory` keeps it, the low-res masks after hole filling on the
    storage device; and those masks on the compute device."""
    maskmem_features, maskmem_pos_enc = state.stored_memory(maskmem_features, maskmem_pos_enc)
    if fill_hole_area > 0:
        pred_masks = fill_holes_in_mask_scores(pred_masks, fill_hole_area)
    compact = {
        "maskmem_features": maskmem_features,
        "maskmem_pos_enc": maskmem_pos_enc,
        "pred_masks": pred_masks.to(state.storage_device, non_blocking=True),
        "obj_ptr": obj_ptr,  # small: always on the compute device
        "object_score_logits": object_score_logits,
    }
    return compact, pred_masks


def _row(value: Any, j: int, n: int) -> Any:
    """Row ``j`` of a batched stored value (a copy, so objects can be freed one by one)."""
    if isinstance(value, torch.Tensor):
        return value[j : j + 1].clone() if n > 1 else value
    if isinstance(value, list):
        return [v[j : j + 1] for v in value]
    return value


def split_objects(batched: FrameOutput, n: int) -> List[FrameOutput]:
    """A stored output of ``n`` objects as one output per object."""
    return [{k: _row(v, j, n) for k, v in batched.items()} for j in range(n)]


def consolidate_masks(state: InferenceState, frame_idx: int, is_cond: bool) -> torch.Tensor:
    """Every object's latest mask logits on ``frame_idx`` (see :meth:`ObjectState.latest_output`)
    at the video's size, ``[num_objects, 1, H, W]`` on the storage device; ``NO_OBJ_SCORE``
    for objects without an output there."""
    size = state.video_hw
    consolidated = torch.full(
        (state.num_objects, 1, *size), NO_OBJ_SCORE, dtype=torch.float32, device=state.storage_device
    )
    for obj_idx, obj in enumerate(state.objects):
        out = obj.latest_output(frame_idx, is_cond)
        if out is None:
            continue
        obj_mask = out["pred_masks"]
        if obj_mask.shape[-2:] != size:
            obj_mask = F.interpolate(obj_mask, size=size, mode="bilinear", align_corners=False)
        consolidated[obj_idx : obj_idx + 1] = obj_mask
    return consolidated


def resize_to_video(state: InferenceState, masks: torch.Tensor) -> torch.Tensor:
    """Mask logits ``[N, 1, h, w]`` of any size on the compute device at the video's size."""
    masks = masks.to(state.device, non_blocking=True)
    if masks.shape[-2:] == state.video_hw:
        return masks
    return F.interpolate(masks, size=state.video_hw, mode="bilinear", align_corners=False)
