"""The video predictor's arguments, checked and turned into model inputs: frame indices, the
frame budget of a propagation, clicks and boxes, masks. Each error names the argument."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from sam2_fast.errors import InvalidInputError, InvalidTypeError, OutOfRangeError
from sam2_fast.utils import validation as V

PointInputs = Dict[str, torch.Tensor]


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def check_frame_idx(frame_idx: Any, num_frames: int, name: str = "frame_idx") -> int:
    """``frame_idx`` as an int in ``0..num_frames - 1``."""
    if not _is_int(frame_idx):
        raise InvalidTypeError(f"{name}: expected an int, got {type(frame_idx).__name__}")
    if not 0 <= frame_idx < num_frames:
        raise OutOfRangeError(
            f"{name}: {frame_idx} is out of range for a video of {num_frames} frames (0..{num_frames - 1})"
        )
    return int(frame_idx)


def check_frame_budget(max_frame_num_to_track: Any) -> None:
    """``max_frame_num_to_track``: None or an int >= 0."""
    if max_frame_num_to_track is None:
        return
    if not _is_int(max_frame_num_to_track):
        raise InvalidTypeError(
            f"max_frame_num_to_track: expected an int or None, got {type(max_frame_num_to_track).__name__}"
        )
    if max_frame_num_to_track < 0:
        raise InvalidInputError(f"max_frame_num_to_track: expected >= 0, got {max_frame_num_to_track}")


def click_inputs(
    points: Any,
    labels: Any,
    box: Any,
    clear_old_points: bool,
    normalize_coords: bool,
    video_hw: Tuple[int, int],
    image_size: int,
    device: torch.device,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One object's clicks ``points [N, 2]`` (x, y) with ``labels [N]`` and / or a ``box [4]``
    (x0, y0, x1, y1), in video pixels (or in ``[0, 1]`` with ``normalize_coords=False``), as
    model inputs: ``point_coords [1, M, 2]`` in pixels of the ``image_size`` input and
    ``point_labels [1, M]`` int32, the box first as two points labelled 2 and 3 (as in training)."""
    if (points is None) != (labels is None):
        raise InvalidInputError("points and labels must be provided together")
    if points is None and box is None:
        raise InvalidInputError("at least one of points or box must be provided as input")
    coords, lab = V.check_points(points, labels, video_hw, normalize_coords, names=("points", "labels"))
    if coords is not None and coords.ndim == 3:
        if coords.shape[0] != 1:
            raise InvalidInputError(f"points: one object at a time, expected [N, 2] or [1, N, 2], got {coords.shape}")
        coords, lab = coords[0], lab[0]
    boxes = V.check_box(box)
    if boxes is not None and boxes.shape[0] != 1:
        raise InvalidInputError(f"box: one box per object, got {boxes.shape[0]}")
    if boxes is not None and not clear_old_points:
        raise InvalidInputError(
            "cannot add box without clearing old points, since box prompt must be provided "
            "before any point prompt (please use clear_old_points=True instead)"
        )
    pts = torch.zeros(1, 0, 2) if coords is None else torch.from_numpy(coords)[None]
    lbl = torch.zeros(1, 0, dtype=torch.int32) if lab is None else torch.from_numpy(lab)[None]
    if boxes is not None:
        pts = torch.cat([torch.from_numpy(boxes).reshape(1, 2, 2), pts], dim=1)
        lbl = torch.cat([torch.tensor([[2, 3]], dtype=torch.int32), lbl], dim=1)
    if normalize_coords:
        pts = pts / torch.tensor([video_hw[1], video_hw[0]], dtype=torch.float32)
    return (pts * image_size).to(device), lbl.to(device)


def concat_points(
    old_point_inputs: Optional[PointInputs], new_points: torch.Tensor, new_labels: torch.Tensor
) -> PointInputs:
    """Append new clicks ``[1, N, 2]`` / ``[1, N]`` to previous point inputs."""
    if old_point_inputs is None:
        return {"point_coords": new_points, "point_labels": new_labels}
    return {
        "point_coords": torch.cat([old_point_inputs["point_coords"], new_points], dim=1),
        "point_labels": torch.cat([old_point_inputs["point_labels"], new_labels], dim=1),
    }


def mask_input(mask: Any, video_hw: Tuple[int, int], image_size: int, device: torch.device) -> torch.Tensor:
    """One object's mask ``[H, W]`` (bool, or 0 / 1, at the video's size) as the model's
    ``[1, 1, S, S]`` float 0 / 1 input (antialiased resize, then threshold at 0.5)."""
    if isinstance(mask, torch.Tensor):
        mask_t = mask.detach()
    else:
        try:
            mask_t = torch.as_tensor(np.asarray(mask))
        except (TypeError, ValueError):
            raise InvalidTypeError(f"mask: expected a [H, W] array, got {type(mask).__name__}") from None
    if mask_t.dim() != 2 or tuple(mask_t.shape) != video_hw:
        raise InvalidInputError(
            f"mask: expected shape {video_hw} (the video's height, width), got {tuple(mask_t.shape)}"
        )
    mask_inputs = mask_t.to(torch.bool)[None, None].float().to(device)
    if video_hw == (image_size, image_size):
        return mask_inputs
    size = (image_size, image_size)
    mask_inputs = F.interpolate(mask_inputs, size=size, align_corners=False, mode="bilinear", antialias=True)
    return (mask_inputs >= 0.5).float()
