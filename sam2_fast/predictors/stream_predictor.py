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

from typing import Any, Hashable, List, Tuple

import numpy as np
import torch

from sam2_fast.errors import InvalidInputError, InvalidStateError, InvalidTypeError
from sam2_fast.precision import in_compute_dtype
from sam2_fast.predictors.video_io import FrameSource, LazyVideoFrames, VideoReadError
from sam2_fast.predictors.video_predictor import SAM2VideoPredictor
from sam2_fast.predictors.video_state import InferenceState
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
        self.state = InferenceState(
            LazyVideoFrames(self._frames, model.image_size, device=device, cache_size=1),
            num_frames=_UNBOUNDED_FRAMES,
            video_height=0,
            video_width=0,
            device=device,
            offload_state_to_cpu=self.offload_state_to_cpu,
        )

    @property
    def frame_idx(self) -> int:
        """Index of the latest frame (-1 before the first)."""
        return self._frames.count - 1

    @property
    def obj_ids(self) -> List[Hashable]:
        return self.state.obj_ids

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
        if state.has_temp_outputs():
            # encode the memories of the prompts given on the previous frame
            model.propagate_in_video_preflight(state)
        frame_idx = self._frames.append(image)
        if frame_idx == 0:
            state.video_height, state.video_width = self._frames.height, self._frames.width
        if state.num_objects == 0:
            return [], torch.zeros(0, 1, *state.video_hw, device=state.device)
        masks = model._propagate_frame(state, frame_idx, reverse=False)
        # drop what no later frame reads: memories outside the spatial window (strided
        # num_maskmem frames) and the object-pointer window, old tracking marks and prompts
        state.forget_old_frames(
            frame_idx,
            spatial_window=model.memory_temporal_stride_for_eval * model.num_maskmem + 1,
            pointer_window=model.max_obj_ptrs_in_encoder,
        )
        return self.obj_ids, masks

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
        self.state.existing_index(obj_id)
        obj_ids, _ = self.predictor.remove_object(self.state, obj_id, need_output=False)
        return list(obj_ids)

    def state_tensor_bytes(self) -> int:
        """Bytes of all tensors held by the session (distinct storages), for monitoring."""
        return self.state.tensor_bytes()
