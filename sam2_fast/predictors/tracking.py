"""Offline tracking of prompted objects through a whole video, as ``sam2-fast track`` and
``sam2-fast batch track`` run it: prompts per (frame, object), the propagation passes, the
masks as COCO RLE, the COCO-style annotations document and the overlay video (also for
``sam2-fast serve``'s exports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from sam2_fast.errors import InvalidInputError

if TYPE_CHECKING:  # pragma: no cover - for type hints only (imports torch)
    from sam2_fast.predictors.video_io import FrameSource

#: tracking results: frame index -> object id -> compressed COCO RLE of the mask
Tracked = Dict[int, Dict[int, dict]]


@dataclass
class FramePrompt:
    """Everything given for one object on one frame: clicks ``(x, y)`` in pixels with labels,
    a box ``(x0, y0, x1, y1)`` in pixels, or a mask (bool ``[H, W]`` of the video's size;
    ``mask_path`` names the file it is read from, when it comes from one)."""

    frame: int
    obj: int
    points: List[Tuple[float, float]] = field(default_factory=list)
    labels: List[int] = field(default_factory=list)
    box: Optional[Tuple[float, float, float, float]] = None
    mask_path: Optional[str] = None
    mask: Optional[np.ndarray] = None

    def describe(self) -> str:
        return f"the prompt for object {self.obj} on frame {self.frame}"


def add_prompts(predictor, state, prompts: Sequence[FramePrompt]) -> None:
    """Give every prompt to ``predictor`` (a :class:`SAM2VideoPredictor`); a prompt the
    predictor rejects raises :class:`InvalidInputError` (a ``ValueError``) naming the prompt."""
    for p in prompts:
        try:
            if p.mask is not None:
                predictor.add_new_mask(state, p.frame, p.obj, p.mask)
            else:
                predictor.add_new_points_or_box(
                    state,
                    p.frame,
                    p.obj,
                    points=np.array(p.points, np.float32) if p.points else None,
                    labels=np.array(p.labels, np.int32) if p.points else None,
                    box=np.array(p.box, np.float32) if p.box is not None else None,
                )
        except (ValueError, TypeError) as exc:
            raise InvalidInputError(f"{p.describe()}: {exc}") from None


def check_prompt_frames(prompts: Sequence[FramePrompt], num_frames: int, what: str = "the video") -> None:
    """Raise :class:`InvalidInputError` (a ``ValueError``) for a prompt on a frame the video does not have."""
    for p in prompts:
        if p.frame >= num_frames:
            raise InvalidInputError(f"{p.describe()} is outside {what}, which has {num_frames} frames (0..{num_frames - 1})")


def track_passes(
    prompts: Sequence[FramePrompt], start: Optional[int], reverse: bool, max_frames: Optional[int], num_frames: int
) -> List[Tuple[int, bool, int]]:
    """``(start frame, reverse, number of frames)`` of each propagation: forward from
    ``start`` (default: the first prompted frame), then with ``reverse`` backward from the
    later of that frame and the last prompted frame."""
    limit = num_frames if max_frames is None else max_frames
    first = min(p.frame for p in prompts) if start is None else start
    passes = [(first, False, min(limit, num_frames - first))]
    if reverse:
        back = max(first, max(p.frame for p in prompts))
        # the predictor tracks nothing backward from frame 0 (the forward pass covered it)
        passes.append((back, True, min(limit, back + 1) if back > 0 else 0))
    return passes


def propagate(
    predictor,
    state,
    passes: Sequence[Tuple[int, bool, int]],
    on_frame: Optional[Callable[[int, Sequence[int], np.ndarray], None]] = None,
) -> Tracked:
    """Run the tracking passes and return every tracked frame's masks as RLE; a frame tracked
    again (by the backward pass) keeps its latest masks. ``on_frame(frame_idx, obj_ids,
    masks)`` (bool ``[num_objects, H, W]``) is called as each frame comes."""
    from sam2_fast.ops.rle import mask_to_rle

    tracked: Tracked = {}
    for start, reverse, count in passes:
        frames = predictor.propagate_in_video(
            state, start_frame_idx=start, max_frame_num_to_track=max(count - 1, 0), reverse=reverse
        )
        for frame_idx, obj_ids, logits in frames:  # logits [num_objects, 1, H, W]
            masks = (logits[:, 0] > 0).cpu().numpy()
            for obj_id, mask in zip(obj_ids, masks):
                tracked.setdefault(frame_idx, {})[obj_id] = mask_to_rle(mask)
            if on_frame is not None:
                on_frame(frame_idx, list(obj_ids), masks)
    return tracked


def annotations_document(
    tracked: Tracked, video: str, height: int, width: int, length: int, fps: Optional[float], model: str, random_weights: bool
) -> dict:
    """The tracked masks as a COCO-style document.

    Format (``segmentation`` is a compressed COCO RLE as pycocotools writes it, ``bbox`` is
    ``[x, y, w, h]`` in pixels, ``area`` in pixels; one annotation per object and tracked
    frame, empty masks included)::

        {"info": {"description", "version", "model", "random_weights"},
         "videos": [{"id": 1, "file_name", "height", "width", "length", "fps"}],
         "annotations": [{"id", "video_id": 1, "frame_index", "obj_id",
                          "segmentation": {"size": [H, W], "counts": str}, "area", "bbox"}]}
    """
    import sam2_fast
    from sam2_fast.ops.rle import rle_area, rle_to_bbox

    annotations = []
    for frame_idx in sorted(tracked):
        for obj_id in sorted(tracked[frame_idx]):
            rle = tracked[frame_idx][obj_id]
            annotations.append({
                "id": len(annotations) + 1,
                "video_id": 1,
                "frame_index": frame_idx,
                "obj_id": obj_id,
                "segmentation": rle,
                "area": rle_area(rle),
                "bbox": rle_to_bbox(rle).tolist(),
            })
    return {
        "info": {
            "description": "sam2-fast track",
            "version": sam2_fast.__version__,
            "model": model,
            "random_weights": random_weights,
        },
        "videos": [
            {"id": 1, "file_name": video, "height": height, "width": width, "length": length, "fps": fps}
        ],
        "annotations": annotations,
    }


def write_overlay_video(
    path: Path, source: FrameSource, tracked: Tracked, prompts: Sequence[FramePrompt], fps: float
) -> str:
    """Encode the tracked frames, in frame order, with every object's mask in its own colour
    (and the clicks and boxes on the frames that have them); returns the codec used."""
    from sam2_fast.ops.rle import rle_to_mask
    from sam2_fast.utils.video_writer import VideoWriter
    from sam2_fast.utils.visualize import overlay_masks

    obj_ids = sorted({obj_id for masks in tracked.values() for obj_id in masks})
    with VideoWriter(path, source.height, source.width, fps) as writer:
        for frame_idx in sorted(tracked):
            masks = [rle_to_mask(tracked[frame_idx][obj_id]) for obj_id in obj_ids]
            on_frame = [p for p in prompts if p.frame == frame_idx]
            points = [xy for p in on_frame for xy in p.points]
            labels = [label for p in on_frame for label in p.labels]
            boxes = [p.box for p in on_frame if p.box is not None]
            writer.write(overlay_masks(
                source.read(frame_idx),
                masks,
                points=np.array(points) if points else None,
                labels=np.array(labels) if points else None,
                boxes=np.array(boxes) if boxes else None,
            ))
    return writer.codec
