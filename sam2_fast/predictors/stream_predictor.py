"""Live tracking for cameras and streams, one frame at a time, in constant memory.

Usage::

    from sam2_fast import SAM2StreamPredictor

    stream = SAM2StreamPredictor.from_pretrained("sam2.1-hiera-tiny")
    stream.track(first_frame)                                  # frame 0 (no objects yet)
    stream.add_new_prompt(obj_id=1, points=[[320, 240]], labels=[1])
    for frame in camera:                                       # [H, W, 3] uint8 RGB
        obj_ids, masks = stream.track(frame)                   # masks: [N, 1, H, W] logits
        ...                                                    # masks > 0 are the objects
    stream.add_new_prompt(obj_id=2, box=[10, 20, 200, 220])    # at any frame, on the latest one
    stream.remove_object(1)

Tracking is the video predictor's (same memory selection, all objects batched), with the
video length unknown: object-pointer distances are normalised as in a long video. Only the
memories the next frame can read are kept (the last ``num_maskmem`` frames' spatial memories,
the last ``max_obj_ptrs_in_encoder`` object pointers, and the prompted frames), plus the
latest frame and its image features, so memory use does not grow with the stream's length.
"""

from __future__ import annotations

from typing import Any, Hashable, List, Optional, Tuple

import numpy as np
import torch

from sam2_fast.errors import InvalidInputError, InvalidStateError, InvalidTypeError
from sam2_fast.precision import in_compute_dtype
from sam2_fast.predictors.video_io import FrameSource, LazyVideoFrames, VideoReadError
from sam2_fast.predictors.video_predictor import InferenceState, SAM2VideoPredictor, new_inference_state
from sam2_fast.utils.validation import as_rgb_uint8

# the stream's length is unknown: as long as any video the model was trained on
_UNBOUNDED_FRAMES = 1 << 40


class StreamFrames(FrameSource):
    """The latest frames of a stream (older ones are dropped)."""

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self._frames: dict = {}
        self.num_frames = _UNBOUNDED_FRAMES
        self.count = 0
        self.height = self.width = 0

    def append(self, frame: np.ndarray) -> int:
        """Add the next frame; returns its index."""
        if self.count == 0:
            self.height, self.width = frame.shape[:2]
        elif frame.shape[:2] != (self.height, self.width):
            raise InvalidInputError(
                f"frame: expected {self.width}x{self.height} like the first frame of the stream, "
                f"got {frame.shape[1]}x{frame.shape[0]}"
            )
        index = self.count
        self._frames[index] = frame
        self._frames.pop(index - self.keep, None)
        self.count += 1
        return index

    def _read(self, index: int) -> np.ndarray:
        frame = self._frames.get(index)
        if frame is None:
            raise VideoReadError(
                f"frame {index} is no longer held by the stream (only the last {self.keep} "
                f"frames are kept; the latest is {self.count - 1})"
            )
        return frame


class SAM2StreamPredictor:
    """Track objects in a live stream: ``track(frame)`` per frame, prompts on the latest frame."""

    def __init__(self, predictor: SAM2VideoPredictor, offload_state_to_cpu: bool = False) -> None:
        """
        Arguments:
          predictor: a video predictor (``build_sam2_video_predictor(...)``) — its weights and
            settings are used; it can still serve other (offline) sessions.
          offload_state_to_cpu: keep stored memories on the CPU.
        """
        if not isinstance(predictor, SAM2VideoPredictor):
            raise InvalidTypeError(
                "predictor: expected a SAM2VideoPredictor (from build_sam2_video_predictor), got "
                f"{type(predictor).__name__}"
            )
        self.predictor = predictor
        self.offload_state_to_cpu = offload_state_to_cpu
        self.reset()

    @classmethod
    def from_pretrained(cls, model_id: str, **kwargs: Any) -> "SAM2StreamPredictor":
        """Load by zoo name, Hub id or checkpoint path (arguments as
        :func:`sam2_fast.build_sam2_video_predictor_hf`)."""
        offload = kwargs.pop("offload_state_to_cpu", False)
        return cls(SAM2VideoPredictor.from_pretrained(model_id, **kwargs), offload_state_to_cpu=offload)

    def reset(self) -> None:
        """Forget the stream and every object (the next frame is frame 0)."""
        model = self.predictor
        self._frames = StreamFrames(keep=2)
        device = model.device
        self.state: InferenceState = new_inference_state(
            LazyVideoFrames(self._frames, model.image_size, device=device, cache_size=1),
            num_frames=_UNBOUNDED_FRAMES,
            video_hw=(0, 0),
            device=device,
            offload_state_to_cpu=self.offload_state_to_cpu,
        )

    @property
    def frame_idx(self) -> int:
        """Index of the latest frame (-1 before the first)."""
        return self._frames.count - 1

    @property
    def obj_ids(self) -> List[Hashable]:
        return list(self.state["obj_ids"])

    def _latest_frame(self) -> int:
        if self._frames.count == 0:
            raise InvalidStateError("no frame yet: call track(frame) with the first frame before adding prompts")
        return self.frame_idx

    # ------------------------------------------------------------------ frames
    @torch.inference_mode()
    @in_compute_dtype
    def track(self, frame) -> Tuple[List[Hashable], torch.Tensor]:
        """Add the next frame and track every object on it.

        ``frame``: ``[H, W, 3]`` uint8 RGB array or PIL image (same size as the first).
        Returns ``(obj_ids, masks)`` with mask logits ``[num_objects, 1, H, W]`` (empty
        before the first prompt).
        """
        image = as_rgb_uint8(frame, "frame")
        model, state = self.predictor, self.state
        if state["temp_output_dict_per_obj"] and any(
            d["cond_frame_outputs"] or d["non_cond_frame_outputs"]
            for d in state["temp_output_dict_per_obj"].values()
        ):
            # encode the memories of the prompts given on the previous frame
            model.propagate_in_video_preflight(state)
        frame_idx = self._frames.append(image)
        if frame_idx == 0:
            state["video_height"], state["video_width"] = self._frames.height, self._frames.width
        if model._get_obj_num(state) == 0:
            h, w = state["video_height"], state["video_width"]
            return [], torch.zeros(0, 1, h, w, device=state["device"])
        masks = model._propagate_frame(state, frame_idx, reverse=False)
        self._forget_old_memories(frame_idx)
        return self.obj_ids, masks

    def _forget_old_memories(self, frame_idx: int) -> None:
        """Drop what no later frame can read: spatial memories older than the memory
        window, outputs older than the object-pointer window, old tracking marks and prompts."""
        model = self.predictor
        stride = model.memory_temporal_stride_for_eval
        spatial_window = stride * model.num_maskmem + 1
        pointer_window = model.max_obj_ptrs_in_encoder
        for obj_idx, output_dict in self.state["output_dict_per_obj"].items():
            non_cond = output_dict["non_cond_frame_outputs"]
            for t in [t for t in non_cond if t <= frame_idx - pointer_window]:
                del non_cond[t]
            old = frame_idx - spatial_window
            if old in non_cond and non_cond[old].get("maskmem_features") is not None:
                # keep only the object pointer of frames outside the spatial window
                non_cond[old] = {**non_cond[old], "maskmem_features": None, "pred_masks": None}
            tracked = self.state["frames_tracked_per_obj"][obj_idx]
            cond = output_dict["cond_frame_outputs"]
            for t in [t for t in tracked if t < frame_idx - 1 and t not in cond]:
                del tracked[t]
            # prompts are only added on the latest frame: older clicks / masks are never read
            # again (a 1024x1024 float mask per correction otherwise stays for good)
            for key in ("point_inputs_per_obj", "mask_inputs_per_obj"):
                inputs = self.state[key][obj_idx]
                for t in [t for t in inputs if t < frame_idx - 1]:
                    del inputs[t]

    # ------------------------------------------------------------------ prompts
    @in_compute_dtype
    def add_new_prompt(
        self,
        obj_id: Hashable,
        points=None,
        labels=None,
        box=None,
        clear_old_points: bool = True,
        normalize_coords: bool = True,
    ) -> Tuple[List[Hashable], torch.Tensor]:
        """Clicks and/or a box for ``obj_id`` on the latest frame (a new id adds an object;
        on an object already tracked there, they refine its mask). Returns
        ``(obj_ids, masks [num_objects, 1, H, W])`` for the latest frame."""
        frame_idx = self._latest_frame()
        _, obj_ids, masks = self.predictor.add_new_points_or_box(
            self.state, frame_idx, obj_id, points=points, labels=labels, box=box,
            clear_old_points=clear_old_points, normalize_coords=normalize_coords,
        )
        return list(obj_ids), masks

    @in_compute_dtype
    def add_new_mask(self, obj_id: Hashable, mask) -> Tuple[List[Hashable], torch.Tensor]:
        """A mask ``[H, W]`` for ``obj_id`` on the latest frame."""
        frame_idx = self._latest_frame()
        _, obj_ids, masks = self.predictor.add_new_mask(self.state, frame_idx, obj_id, mask)
        return list(obj_ids), masks

    @in_compute_dtype
    def remove_object(self, obj_id: Hashable) -> List[Hashable]:
        """Stop tracking ``obj_id`` (a KeyError if it is unknown); returns the remaining ids."""
        self.predictor._existing_obj_idx(self.state, obj_id)
        obj_ids, _ = self.predictor.remove_object(self.state, obj_id, need_output=False)
        return list(obj_ids)

    def state_tensor_bytes(self) -> int:
        """Bytes of all tensors held by the session (distinct storages), for monitoring."""
        seen, total = set(), 0

        def visit(value: Optional[Any]) -> None:
            nonlocal total
            if isinstance(value, torch.Tensor):
                key = (value.untyped_storage().data_ptr(), value.device)
                if key not in seen:
                    seen.add(key)
                    total += value.untyped_storage().nbytes()
            elif isinstance(value, dict):
                for v in value.values():
                    visit(v)
            elif isinstance(value, (list, tuple)):
                for v in value:
                    visit(v)

        visit({k: v for k, v in self.state.items() if k != "images"})
        visit(list(self.state["images"]._cache.values()))
        return total
