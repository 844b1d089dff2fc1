"""Drop-in ``SAM2VideoPredictor``: prompt objects on any frames, then track them through a video.

Same methods, arguments, ``inference_state`` keys and return shapes as the official
``sam2.sam2_video_predictor.SAM2VideoPredictor`` 1.1.0. What is different:

* **all objects of a frame run in one batched pass** through memory attention, mask decoder
  and memory encoder (the official predictor loops over objects); objects whose memories
  have the same layout share one memory-attention call, each still reading its own memory
  bank, and the image encoder runs once per frame;
* **frames are decoded lazily** (folder of JPEG/PNG, any video file PyAV reads, arrays or
  iterables of frames) instead of being loaded, resized and kept in memory up front; only a
  small LRU of frame inputs and image features is kept;
* post-processing (``fill_hole_area``) runs on every device, and bad input raises clear errors
  that leave the state usable.

Results equal running each object on its own (up to float rounding of batched GEMMs).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Dict, Hashable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sam2_fast.errors import InvalidInputError, InvalidStateError, InvalidTypeError, OutOfRangeError, UnknownObjectError
from sam2_fast.modeling.common import host_tensor_to
from sam2_fast.modeling.config import SAM2Config
from sam2_fast.modeling.sam2_base import NO_OBJ_SCORE, MemoryPlan, SAM2Base
from sam2_fast.ops.connected_components import fill_holes_and_sprinkles
from sam2_fast.precision import in_compute_dtype
from sam2_fast.predictors.video_io import LazyVideoFrames, open_video
from sam2_fast.utils import validation as V

logger = logging.getLogger(__name__)

InferenceState = Dict[str, Any]


def concat_points(old_point_inputs, new_points: torch.Tensor, new_labels: torch.Tensor):
    """Append new clicks ``[1, N, 2]`` / ``[1, N]`` to previous point inputs."""
    if old_point_inputs is None:
        return {"point_coords": new_points, "point_labels": new_labels}
    return {
        "point_coords": torch.cat([old_point_inputs["point_coords"], new_points], dim=1),
        "point_labels": torch.cat([old_point_inputs["point_labels"], new_labels], dim=1),
    }


def fill_holes_in_mask_scores(mask: torch.Tensor, max_area: int) -> torch.Tensor:
    """Fill background holes of up to ``max_area`` pixels in low-res mask logits with 0.1
    (the official video post-processing; here on every device)."""
    return fill_holes_and_sprinkles(mask, 0.0, max_area, 0, hole_fill_value=0.1)


def new_inference_state(
    images: LazyVideoFrames,
    num_frames: int,
    video_hw: Tuple[int, int],
    device: torch.device,
    offload_video_to_cpu: bool = False,
    offload_state_to_cpu: bool = False,
) -> InferenceState:
    """An empty tracking session over ``images`` (the official ``inference_state`` keys)."""
    return {
        "images": images,
        "num_frames": num_frames,
        "offload_video_to_cpu": offload_video_to_cpu,
        "offload_state_to_cpu": offload_state_to_cpu,
        "video_height": video_hw[0],
        "video_width": video_hw[1],
        "device": device,
        "storage_device": torch.device("cpu") if offload_state_to_cpu else device,
        # prompts per object: {obj_idx: {frame_idx: inputs}}
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        # image features of recent frames (LRU)
        "cached_features": OrderedDict(),
        # values shared by all frames (the memory position encoding)
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        # per object: {"cond_frame_outputs": {...}, "non_cond_frame_outputs": {...}}
        "output_dict_per_obj": {},
        # outputs of prompts not yet encoded into memory (merged when tracking starts)
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }


class SAM2VideoPredictor(SAM2Base):
    """The SAM 2 model with the interactive video-tracking API."""

    def __init__(
        self,
        fill_hole_area: int = 0,
        non_overlap_masks: bool = False,
        clear_non_cond_mem_around_input: bool = False,
        add_all_frames_to_correct_as_cond: bool = False,
        feature_cache_size: int = 2,
        **kwargs: Any,
    ) -> None:
        """
        Arguments (beyond :class:`SAM2Base`'s):
          fill_hole_area: fill holes of up to this many low-res pixels in output masks.
          non_overlap_masks: keep only the highest-scoring object at each output pixel.
          clear_non_cond_mem_around_input: after a correction click, drop the surrounding
            frames' (outdated) memories of that object.
          add_all_frames_to_correct_as_cond: frames that receive correction clicks become
            conditioning frames.
          feature_cache_size: image features of this many recent frames are kept, so that
            clicks on a recently seen frame do not re-run the image encoder.
        """
        super().__init__(**kwargs)
        self.fill_hole_area = fill_hole_area
        self.non_overlap_masks = non_overlap_masks
        self.clear_non_cond_mem_around_input = clear_non_cond_mem_around_input
        self.add_all_frames_to_correct_as_cond = add_all_frames_to_correct_as_cond
        self.feature_cache_size = max(1, int(feature_cache_size))
        self.show_progress = True
        #: objects per memory-attention call; None: one at a time on CPU (measured faster there:
        #: batched attention temporaries no longer fit in cache), all objects with the same
        #: memory layout at once on GPU
        self.memory_attention_batch_size: Optional[int] = None

    @classmethod
    def _extra_config_kwargs(cls, config: SAM2Config) -> Dict[str, Any]:
        return {
            "fill_hole_area": config.fill_hole_area,
            "non_overlap_masks": config.non_overlap_masks,
            "clear_non_cond_mem_around_input": config.clear_non_cond_mem_around_input,
            "add_all_frames_to_correct_as_cond": config.add_all_frames_to_correct_as_cond,
        }

    @classmethod
    def from_pretrained(cls, model_id: str, **kwargs: Any) -> "SAM2VideoPredictor":
        """Load by Hub id, zoo name or checkpoint path (see :func:`build_sam2_video_predictor_hf`)."""
        from sam2_fast.build_sam import build_sam2_video_predictor_hf

        return build_sam2_video_predictor_hf(model_id, **kwargs)

    # ------------------------------------------------------------------ session
    @torch.inference_mode()
    def init_state(
        self,
        video_path: Any,
        offload_video_to_cpu: bool = False,
        offload_state_to_cpu: bool = False,
        async_loading_frames: bool = False,
    ) -> InferenceState:
        """Open a video and start a tracking session.

        ``video_path``: a folder of JPEG/PNG frames (ordered by their numeric names), a video
        file (PyAV), a ``[T, H, W, 3]`` uint8 array, or a sequence / iterable of ``[H, W, 3]``
        uint8 frames or PIL images. Frames are decoded when needed.

        ``offload_video_to_cpu``: keep decoded frame inputs on the CPU (they move to the
        model's device only for the image encoder). ``offload_state_to_cpu``: keep stored
        masks and memories on the CPU. ``async_loading_frames``: decode upcoming frames in a
        background thread while the model runs (always done when the model is on a GPU, where
        decoding on the calling thread would leave the GPU idle).
        """
        compute_device = self.device
        source = open_video(video_path)
        images = LazyVideoFrames(
            source,
            self.image_size,
            device=torch.device("cpu") if offload_video_to_cpu else compute_device,
            cache_size=2,
            prefetch=2 if async_loading_frames or compute_device.type == "cuda" else 0,
        )
        state = new_inference_state(
            images,
            num_frames=len(images),
            video_hw=(source.height, source.width),
            device=compute_device,
            offload_video_to_cpu=offload_video_to_cpu,
            offload_state_to_cpu=offload_state_to_cpu,
        )
        # warm up on frame 0, where users usually click first
        self._get_image_feature(state, frame_idx=0, batch_size=1)
        return state

    def _check_frame_idx(self, inference_state: InferenceState, frame_idx: Any, name: str = "frame_idx") -> int:
        if isinstance(frame_idx, bool) or not isinstance(frame_idx, (int, np.integer)):
            raise InvalidTypeError(f"{name}: expected an int, got {type(frame_idx).__name__}")
        n = inference_state["num_frames"]
        if not 0 <= frame_idx < n:
            raise OutOfRangeError(f"{name}: {frame_idx} is out of range for a video of {n} frames (0..{n - 1})")
        return int(frame_idx)

    def _obj_id_to_idx(self, inference_state: InferenceState, obj_id: Hashable) -> int:
        """Model-side index of ``obj_id``; a new id gets a new slot (objects may be added at
        any time, also after tracking started)."""
        obj_idx = inference_state["obj_id_to_idx"].get(obj_id, None)
        if obj_idx is not None:
            return obj_idx
        obj_idx = len(inference_state["obj_id_to_idx"])
        inference_state["obj_id_to_idx"][obj_id] = obj_idx
        inference_state["obj_idx_to_id"][obj_idx] = obj_id
        inference_state["obj_ids"] = list(inference_state["obj_id_to_idx"])
        inference_state["point_inputs_per_obj"][obj_idx] = {}
        inference_state["mask_inputs_per_obj"][obj_idx] = {}
        inference_state["output_dict_per_obj"][obj_idx] = {
            "cond_frame_outputs": {},
            "non_cond_frame_outputs": {},
        }
        inference_state["temp_output_dict_per_obj"][obj_idx] = {
            "cond_frame_outputs": {},
            "non_cond_frame_outputs": {},
        }
        inference_state["frames_tracked_per_obj"][obj_idx] = {}
        return obj_idx

    def _existing_obj_idx(self, inference_state: InferenceState, obj_id: Hashable) -> int:
        obj_idx = inference_state["obj_id_to_idx"].get(obj_id, None)
        if obj_idx is None:
            raise UnknownObjectError(
                f"obj_id: unknown object id {obj_id!r}; existing ids: {inference_state['obj_ids']}"
            )
        return obj_idx

    def _obj_idx_to_id(self, inference_state: InferenceState, obj_idx: int) -> Hashable:
        return inference_state["obj_idx_to_id"][obj_idx]

    def _get_obj_num(self, inference_state: InferenceState) -> int:
        return len(inference_state["obj_idx_to_id"])

    # ------------------------------------------------------------------ prompts
    @torch.inference_mode()
    @in_compute_dtype
    def add_new_points_or_box(
        self,
        inference_state: InferenceState,
        frame_idx: int,
        obj_id: Hashable,
        points=None,
        labels=None,
        clear_old_points: bool = True,
        normalize_coords: bool = True,
        box=None,
    ) -> Tuple[int, List[Hashable], torch.Tensor]:
        """Add clicks and/or a box for ``obj_id`` on ``frame_idx``.

        ``points [N, 2]`` (x, y) and ``labels [N]`` (1 object, 0 background), ``box [4]``
        (x0, y0, x1, y1), in pixels of the video (or in ``[0, 1]`` with
        ``normalize_coords=False``). On a frame this object was already tracked on, the
        clicks refine the tracked mask.

        Returns ``(frame_idx, obj_ids, video_res_masks [num_objects, 1, H, W])`` logits.
        """
        frame_idx = self._check_frame_idx(inference_state, frame_idx)
        if (points is None) != (labels is None):
            raise InvalidInputError("points and labels must be provided together")
        if points is None and box is None:
            raise InvalidInputError("at least one of points or box must be provided as input")
        hw = (inference_state["video_height"], inference_state["video_width"])
        coords, lab = V.check_points(points, labels, hw, normalize_coords, names=("points", "labels"))
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
            # a box is the first two points, labels 2 and 3 (as in training)
            pts = torch.cat([torch.from_numpy(boxes).reshape(1, 2, 2), pts], dim=1)
            lbl = torch.cat([torch.tensor([[2, 3]], dtype=torch.int32), lbl], dim=1)
        if normalize_coords:
            pts = pts / torch.tensor([hw[1], hw[0]], dtype=torch.float32)
        pts = (pts * self.image_size).to(inference_state["device"])
        lbl = lbl.to(inference_state["device"])

        known_idx = inference_state["obj_id_to_idx"].get(obj_id)
        old = None
        if not clear_old_points and known_idx is not None:
            old = inference_state["point_inputs_per_obj"][known_idx].get(frame_idx, None)
        return self._apply_prompt(inference_state, frame_idx, obj_id, point_inputs=concat_points(old, pts, lbl))

    def add_new_points(self, *args: Any, **kwargs: Any):
        """Deprecated alias of :meth:`add_new_points_or_box`."""
        return self.add_new_points_or_box(*args, **kwargs)

    @torch.inference_mode()
    @in_compute_dtype
    def add_new_mask(
        self, inference_state: InferenceState, frame_idx: int, obj_id: Hashable, mask
    ) -> Tuple[int, List[Hashable], torch.Tensor]:
        """Give ``obj_id``'s mask ``[H, W]`` (bool, or 0/1, at the video's size) on ``frame_idx``."""
        frame_idx = self._check_frame_idx(inference_state, frame_idx)
        hw = (inference_state["video_height"], inference_state["video_width"])
        if isinstance(mask, torch.Tensor):
            mask_t = mask.detach()
        else:
            try:
                mask_t = torch.as_tensor(np.asarray(mask))
            except (TypeError, ValueError):
                raise InvalidTypeError(f"mask: expected a [H, W] array, got {type(mask).__name__}") from None
        if mask_t.dim() != 2 or tuple(mask_t.shape) != hw:
            raise InvalidInputError(
                f"mask: expected shape {hw} (the video's height, width), got {tuple(mask_t.shape)}"
            )
        mask_inputs_orig = mask_t.to(torch.bool)[None, None].float().to(inference_state["device"])
        if hw != (self.image_size, self.image_size):
            mask_inputs = F.interpolate(
                mask_inputs_orig,
                size=(self.image_size, self.image_size),
                align_corners=False,
                mode="bilinear",
                antialias=True,
            )
            mask_inputs = (mask_inputs >= 0.5).float()
        else:
            mask_inputs = mask_inputs_orig

        return self._apply_prompt(inference_state, frame_idx, obj_id, mask_inputs=mask_inputs)

    def _apply_prompt(
        self,
        inference_state: InferenceState,
        frame_idx: int,
        obj_id: Hashable,
        point_inputs: Optional[Dict[str, torch.Tensor]] = None,
        mask_inputs: Optional[torch.Tensor] = None,
    ) -> Tuple[int, List[Hashable], torch.Tensor]:
        """Run the model for one object's prompt (clicks or a mask) on a frame, store the
        result as a temporary output (its memory is encoded when tracking starts) and return
        every object's masks on that frame. The state changes only if the model ran."""
        is_new_object = obj_id not in inference_state["obj_id_to_idx"]
        obj_idx = self._obj_id_to_idx(inference_state, obj_id)
        is_init_cond_frame, reverse, is_cond, storage_key = self._frame_role(inference_state, obj_idx, frame_idx)
        prev_sam_mask_logits = None
        if point_inputs is not None:
            # feed the previously predicted logits of this frame with the new clicks
            prev_out = self._latest_output(inference_state, obj_idx, frame_idx, storage_key)
            if prev_out is not None and prev_out["pred_masks"] is not None:
                prev_sam_mask_logits = torch.clamp(
                    prev_out["pred_masks"].to(inference_state["device"], non_blocking=True), -32.0, 32.0
                )
        with self._discard_new_object_on_error(inference_state, obj_id, is_new_object):
            current_out, _ = self._run_single_frame_inference(
                inference_state=inference_state,
                output_dict=inference_state["output_dict_per_obj"][obj_idx],
                frame_idx=frame_idx,
                batch_size=1,
                is_init_cond_frame=is_init_cond_frame,
                point_inputs=point_inputs,
                mask_inputs=mask_inputs,
                reverse=reverse,
                # memories are encoded when propagation starts (after the user's last prompt)
                run_mem_encoder=False,
                prev_sam_mask_logits=prev_sam_mask_logits,
            )
        points, masks = inference_state["point_inputs_per_obj"][obj_idx], inference_state["mask_inputs_per_obj"][obj_idx]
        if point_inputs is not None:
            points[frame_idx] = point_inputs
            masks.pop(frame_idx, None)
        else:
            masks[frame_idx] = mask_inputs
            points.pop(frame_idx, None)
        inference_state["temp_output_dict_per_obj"][obj_idx][storage_key][frame_idx] = current_out
        return self._frame_output_at_video_res(inference_state, frame_idx, is_cond)

    @contextmanager
    def _discard_new_object_on_error(self, inference_state: InferenceState, obj_id: Hashable, is_new: bool):
        """If the first prompt of a new object fails (an error, a KeyboardInterrupt), the
        object is not added: otherwise tracking would stop on an object without prompts."""
        try:
            yield
        except BaseException:
            if is_new:
                self.remove_object(inference_state, obj_id, need_output=False)
            raise

    def _frame_role(self, inference_state: InferenceState, obj_idx: int, frame_idx: int):
        """(is_init_cond_frame, reverse, is_cond, storage_key) of a prompt on a frame: a frame
        the object was not tracked on starts from scratch (like SAM on an image); otherwise
        the prompt corrects the tracked mask."""
        tracked = inference_state["frames_tracked_per_obj"][obj_idx]
        is_init_cond_frame = frame_idx not in tracked
        reverse = False if is_init_cond_frame else tracked[frame_idx]["reverse"]
        is_cond = is_init_cond_frame or self.add_all_frames_to_correct_as_cond
        return is_init_cond_frame, reverse, is_cond, "cond_frame_outputs" if is_cond else "non_cond_frame_outputs"

    def _latest_output(self, inference_state, obj_idx: int, frame_idx: int, storage_key: str):
        out = inference_state["temp_output_dict_per_obj"][obj_idx][storage_key].get(frame_idx)
        if out is None:
            output_dict = inference_state["output_dict_per_obj"][obj_idx]
            out = output_dict["cond_frame_outputs"].get(frame_idx)
            if out is None:
                out = output_dict["non_cond_frame_outputs"].get(frame_idx)
        return out

    def _frame_output_at_video_res(self, inference_state, frame_idx: int, is_cond: bool):
        consolidated = self._consolidate_temp_output_across_obj(
            inference_state, frame_idx, is_cond=is_cond, consolidate_at_video_res=True
        )
        _, video_res_masks = self._get_orig_video_res_output(
            inference_state, consolidated["pred_masks_video_res"]
        )
        return frame_idx, inference_state["obj_ids"], video_res_masks

    def _get_orig_video_res_output(self, inference_state: InferenceState, any_res_masks: torch.Tensor):
        """Resize mask logits to the video's size (and apply ``non_overlap_masks``)."""
        device = inference_state["device"]
        video_hw = (inference_state["video_height"], inference_state["video_width"])
        any_res_masks = any_res_masks.to(device, non_blocking=True)
        if any_res_masks.shape[-2:] == video_hw:
            video_res_masks = any_res_masks
        else:
            video_res_masks = F.interpolate(any_res_masks, size=video_hw, mode="bilinear", align_corners=False)
        if self.non_overlap_masks:
            video_res_masks = self._apply_non_overlapping_constraints(video_res_masks)
        return any_res_masks, video_res_masks

    def _consolidate_temp_output_across_obj(
        self,
        inference_state: InferenceState,
        frame_idx: int,
        is_cond: bool,
        consolidate_at_video_res: bool = False,
    ) -> Dict[str, torch.Tensor]:
        """Every object's latest mask logits on ``frame_idx`` in one tensor
        (``NO_OBJ_SCORE`` for objects without an output there)."""
        batch_size = self._get_obj_num(inference_state)
        storage_key = "cond_frame_outputs" if is_cond else "non_cond_frame_outputs"
        if consolidate_at_video_res:
            size = (inference_state["video_height"], inference_state["video_width"])
            key = "pred_masks_video_res"
        else:
            size = (self.image_size // 4, self.image_size // 4)
            key = "pred_masks"
        consolidated = torch.full(
            (batch_size, 1, *size), NO_OBJ_SCORE, dtype=torch.float32, device=inference_state["storage_device"]
        )
        for obj_idx in range(batch_size):
            out = self._latest_output(inference_state, obj_idx, frame_idx, storage_key)
            if out is None:
                continue
            obj_mask = out["pred_masks"]
            if obj_mask.shape[-2:] != size:
                obj_mask = F.interpolate(obj_mask, size=size, mode="bilinear", align_corners=False)
            consolidated[obj_idx : obj_idx + 1] = obj_mask
        return {key: consolidated}

    # ------------------------------------------------------------------ propagation
    @torch.inference_mode()
    @in_compute_dtype
    def propagate_in_video_preflight(self, inference_state: InferenceState) -> None:
        """Encode the memories of the frames that received prompts and move them from the
        temporary outputs into the tracking state."""
        batch_size = self._get_obj_num(inference_state)
        if batch_size == 0:
            raise InvalidStateError("No input points or masks are provided for any object; please add inputs first.")
        for obj_idx in range(batch_size):
            obj_output_dict = inference_state["output_dict_per_obj"][obj_idx]
            obj_temp_output_dict = inference_state["temp_output_dict_per_obj"][obj_idx]
            for storage_key in ("non_cond_frame_outputs", "cond_frame_outputs"):
                for frame_idx, out in obj_temp_output_dict[storage_key].items():
                    if out["maskmem_features"] is None:
                        high_res_masks = F.interpolate(
                            out["pred_masks"].to(inference_state["device"]),
                            size=(self.image_size, self.image_size),
                            mode="bilinear",
                            align_corners=False,
                        )
                        out["maskmem_features"], out["maskmem_pos_enc"] = self._run_memory_encoder(
                            inference_state=inference_state,
                            frame_idx=frame_idx,
                            batch_size=1,
                            high_res_masks=high_res_masks,
                            object_score_logits=out["object_score_logits"],
                            is_mask_from_pts=True,  # the frames the user interacted with
                        )
                    obj_output_dict[storage_key][frame_idx] = out
                    if self.clear_non_cond_mem_around_input:
                        self._clear_obj_non_cond_mem_around_input(inference_state, frame_idx, obj_idx)
                obj_temp_output_dict[storage_key].clear()
            if len(obj_output_dict["cond_frame_outputs"]) == 0:
                obj_id = self._obj_idx_to_id(inference_state, obj_idx)
                raise InvalidStateError(
                    f"No input points or masks are provided for object id {obj_id}; please add inputs first."
                )
            # a frame that became a conditioning frame is not also a non-conditioning one
            for frame_idx in obj_output_dict["cond_frame_outputs"]:
                obj_output_dict["non_cond_frame_outputs"].pop(frame_idx, None)

    @torch.inference_mode()
    def propagate_in_video(
        self,
        inference_state: InferenceState,
        start_frame_idx: Optional[int] = None,
        max_frame_num_to_track: Optional[int] = None,
        reverse: bool = False,
    ) -> Iterator[Tuple[int, List[Hashable], torch.Tensor]]:
        """Track every object through the video, yielding
        ``(frame_idx, obj_ids, video_res_masks [num_objects, 1, H, W])`` per frame.

        Starts at ``start_frame_idx`` (default: the first prompted frame) and goes forward,
        or backward with ``reverse=True``, for at most ``max_frame_num_to_track`` frames.
        Each frame's results are stored before it is yielded, so stopping the generator (or
        an interrupt) leaves a consistent state from which propagation can resume.
        """
        # check the arguments before the preflight changes the state
        if start_frame_idx is not None:
            start_frame_idx = self._check_frame_idx(inference_state, start_frame_idx, "start_frame_idx")
        if max_frame_num_to_track is not None:
            if isinstance(max_frame_num_to_track, bool) or not isinstance(max_frame_num_to_track, (int, np.integer)):
                raise InvalidTypeError(
                    f"max_frame_num_to_track: expected an int or None, got {type(max_frame_num_to_track).__name__}"
                )
            if max_frame_num_to_track < 0:
                raise InvalidInputError(f"max_frame_num_to_track: expected >= 0, got {max_frame_num_to_track}")
        self.propagate_in_video_preflight(inference_state)
        obj_ids = inference_state["obj_ids"]
        num_frames = inference_state["num_frames"]
        if start_frame_idx is None:
            start_frame_idx = min(
                t
                for obj_output_dict in inference_state["output_dict_per_obj"].values()
                for t in obj_output_dict["cond_frame_outputs"]
            )
        if max_frame_num_to_track is None:
            max_frame_num_to_track = num_frames
        if reverse:
            end_frame_idx = max(start_frame_idx - max_frame_num_to_track, 0)
            processing_order = range(start_frame_idx, end_frame_idx - 1, -1) if start_frame_idx > 0 else range(0)
        else:
            end_frame_idx = min(start_frame_idx + max_frame_num_to_track, num_frames - 1)
            processing_order = range(start_frame_idx, end_frame_idx + 1)

        images: LazyVideoFrames = inference_state["images"]
        step = -1 if reverse else 1
        for frame_idx in tqdm(processing_order, desc="propagate in video", disable=not self.show_progress):
            images.prefetch(frame_idx + step * k for k in range(1, 3))
            video_res_masks = self._propagate_frame(inference_state, frame_idx, reverse)
            yield frame_idx, obj_ids, video_res_masks

    @in_compute_dtype
    def _propagate_frame(self, inference_state: InferenceState, frame_idx: int, reverse: bool) -> torch.Tensor:
        """Track every object without a prompt on ``frame_idx`` (one batched pass), store the
        results, and return all objects' masks at video resolution ``[N, 1, H, W]``.

        The state is only modified after the model ran, so an exception (or an interrupt)
        leaves it as it was before this frame.
        """
        batch_size = self._get_obj_num(inference_state)
        to_track = [
            obj_idx
            for obj_idx in range(batch_size)
            if frame_idx not in inference_state["output_dict_per_obj"][obj_idx]["cond_frame_outputs"]
        ]
        new_outputs, new_masks = self._track_objects(inference_state, frame_idx, to_track, reverse)
        pred_masks_per_obj = []
        for obj_idx in range(batch_size):
            obj_output_dict = inference_state["output_dict_per_obj"][obj_idx]
            if obj_idx in new_outputs:
                obj_output_dict["non_cond_frame_outputs"][frame_idx] = new_outputs[obj_idx]
                pred_masks = new_masks[obj_idx]
            else:
                # frames with prompts keep their consolidated outputs
                out = obj_output_dict["cond_frame_outputs"][frame_idx]
                pred_masks = out["pred_masks"].to(inference_state["device"], non_blocking=True)
                if self.clear_non_cond_mem_around_input:
                    self._clear_obj_non_cond_mem_around_input(inference_state, frame_idx, obj_idx)
            inference_state["frames_tracked_per_obj"][obj_idx][frame_idx] = {"reverse": reverse}
            pred_masks_per_obj.append(pred_masks)
        all_pred_masks = torch.cat(pred_masks_per_obj, dim=0)
        _, video_res_masks = self._get_orig_video_res_output(inference_state, all_pred_masks)
        return video_res_masks

    def _track_objects(
        self,
        inference_state: InferenceState,
        frame_idx: int,
        obj_indices: Sequence[int],
        reverse: bool,
    ) -> Tuple[Dict[int, Dict[str, Any]], Dict[int, torch.Tensor]]:
        """Track ``obj_indices`` on a non-conditioning frame in one batched pass.

        Returns each object's compact stored output and its low-res mask logits (on the
        compute device). Nothing in ``inference_state`` is modified.
        """
        if not obj_indices:
            return {}, {}
        device = inference_state["device"]
        _, _, vision_feats, vision_pos_embeds, feat_sizes = self._get_image_feature(
            inference_state, frame_idx, batch_size=1
        )
        plans = [
            self.select_memories(
                frame_idx,
                inference_state["output_dict_per_obj"][obj_idx],
                inference_state["num_frames"],
                track_in_reverse=reverse,
            )
            for obj_idx in obj_indices
        ]
        pix_feat = self._condition_on_memories(vision_feats, vision_pos_embeds, feat_sizes, plans, device)
        n = len(obj_indices)
        high_res_features = [
            x.permute(1, 2, 0).reshape(1, x.size(2), *s).expand(n, -1, -1, -1)
            for x, s in zip(vision_feats[:-1], feat_sizes[:-1])
        ]
        (_, _, _, low_res_masks, high_res_masks, obj_ptr, object_score_logits) = self._forward_sam_heads(
            backbone_features=pix_feat,
            point_inputs=None,
            mask_inputs=None,
            high_res_features=high_res_features,
            multimask_output=self._use_multimask(False, None),
            high_res_multimasks=False,
        )
        maskmem_features, maskmem_pos_enc = self._encode_new_memory(
            current_vision_feats=[vision_feats[-1].expand(-1, n, -1)],
            feat_sizes=feat_sizes[-1:],
            pred_masks_high_res=high_res_masks,
            object_score_logits=object_score_logits,
            is_mask_from_pts=False,
            across_batch_constraints=False,  # each object is tracked on its own, as officially
        )
        compact, pred_masks = self._compact_outputs(
            inference_state, maskmem_features, maskmem_pos_enc, low_res_masks, obj_ptr, object_score_logits
        )
        outputs = {}
        masks = {}
        for j, obj_idx in enumerate(obj_indices):
            outputs[obj_idx] = {k: _slice(v, j, n) for k, v in compact.items()}
            masks[obj_idx] = pred_masks[j : j + 1]
        return outputs, masks

    def _condition_on_memories(
        self,
        vision_feats: List[torch.Tensor],
        vision_pos_embeds: List[torch.Tensor],
        feat_sizes: List[Tuple[int, int]],
        plans: List[MemoryPlan],
        device: torch.device,
    ) -> torch.Tensor:
        """Memory attention for every plan, batching plans with the same memory layout.
        Returns ``[len(plans), C, h, w]`` in the order of ``plans``."""
        c = self.hidden_dim
        h, w = feat_sizes[-1]
        groups: Dict[Any, List[int]] = {}
        for i, plan in enumerate(plans):
            groups.setdefault(plan.signature, []).append(i)
        chunk = self.memory_attention_batch_size
        if chunk is None:
            chunk = 1 if device.type == "cpu" else len(plans)
        elif not isinstance(chunk, int) or chunk < 1:
            raise InvalidInputError(f"memory_attention_batch_size must be None or an int >= 1, got {chunk!r}")
        out = torch.empty(len(plans), c, h, w, device=device, dtype=vision_feats[-1].dtype)
        for members in (g[i : i + chunk] for g in groups.values() for i in range(0, len(g), chunk)):
            memory, memory_pos, num_ptr_tokens = self.assemble_memory([plans[i] for i in members], device)
            b = len(members)
            fused = self.memory_attention(
                curr=[vision_feats[-1].expand(-1, b, -1)],
                curr_pos=[vision_pos_embeds[-1].expand(-1, b, -1)],
                memory=memory,
                memory_pos=memory_pos,
                num_obj_ptr_tokens=num_ptr_tokens,
            )
            fused = fused.permute(1, 2, 0).reshape(b, c, h, w).to(out.dtype)
            if b == len(plans):  # one group: the common case
                return fused
            if members == list(range(members[0], members[0] + b)):
                out[members[0] : members[0] + b] = fused  # a slice: no index tensor to copy
            else:
                out.index_copy_(0, host_tensor_to(members, device, torch.int64), fused)
        return out

    def _compact_outputs(
        self,
        inference_state: InferenceState,
        maskmem_features: Optional[torch.Tensor],
        maskmem_pos_enc: Optional[List[torch.Tensor]],
        pred_masks: torch.Tensor,
        obj_ptr: torch.Tensor,
        object_score_logits: torch.Tensor,
    ) -> Tuple[Dict[str, Any], torch.Tensor]:
        """What is stored per frame (memories in bf16, masks after hole filling) and the
        output masks on the compute device."""
        storage_device = inference_state["storage_device"]
        if maskmem_features is not None:
            maskmem_features = maskmem_features.to(torch.bfloat16).to(storage_device, non_blocking=True)
        if self.fill_hole_area > 0:
            pred_masks = fill_holes_in_mask_scores(pred_masks, self.fill_hole_area)
        compact = {
            "maskmem_features": maskmem_features,
            "maskmem_pos_enc": self._get_maskmem_pos_enc(inference_state, {"maskmem_pos_enc": maskmem_pos_enc}),
            "pred_masks": pred_masks.to(storage_device, non_blocking=True),
            "obj_ptr": obj_ptr,  # small: always on the compute device
            "object_score_logits": object_score_logits,
        }
        return compact, pred_masks

    @torch.inference_mode()
    @in_compute_dtype
    def clear_all_prompts_in_frame(
        self, inference_state: InferenceState, frame_idx: int, obj_id: Hashable, need_output: bool = True
    ):
        """Remove ``obj_id``'s clicks / mask on ``frame_idx`` (its output there becomes an
        ordinary tracked frame)."""
        frame_idx = self._check_frame_idx(inference_state, frame_idx)
        obj_idx = self._existing_obj_idx(inference_state, obj_id)
        inference_state["point_inputs_per_obj"][obj_idx].pop(frame_idx, None)
        inference_state["mask_inputs_per_obj"][obj_idx].pop(frame_idx, None)
        temp_output_dict_per_obj = inference_state["temp_output_dict_per_obj"]
        temp_output_dict_per_obj[obj_idx]["cond_frame_outputs"].pop(frame_idx, None)
        temp_output_dict_per_obj[obj_idx]["non_cond_frame_outputs"].pop(frame_idx, None)
        obj_output_dict = inference_state["output_dict_per_obj"][obj_idx]
        out = obj_output_dict["cond_frame_outputs"].pop(frame_idx, None)
        if out is not None:
            obj_output_dict["non_cond_frame_outputs"][frame_idx] = out
            inference_state["frames_tracked_per_obj"][obj_idx].pop(frame_idx, None)
        if not need_output:
            return None
        is_cond = any(frame_idx in d["cond_frame_outputs"] for d in temp_output_dict_per_obj.values())
        return self._frame_output_at_video_res(inference_state, frame_idx, is_cond)

    @torch.inference_mode()
    def reset_state(self, inference_state: InferenceState) -> None:
        """Remove every object and prompt (the video stays open)."""
        self._reset_tracking_results(inference_state)
        for key in ("obj_id_to_idx", "obj_idx_to_id", "point_inputs_per_obj", "mask_inputs_per_obj",
                    "output_dict_per_obj", "temp_output_dict_per_obj", "frames_tracked_per_obj"):
            inference_state[key].clear()
        inference_state["obj_ids"] = []

    def _reset_tracking_results(self, inference_state: InferenceState) -> None:
        for v in inference_state["point_inputs_per_obj"].values():
            v.clear()
        for v in inference_state["mask_inputs_per_obj"].values():
            v.clear()
        for d in ("output_dict_per_obj", "temp_output_dict_per_obj"):
            for v in inference_state[d].values():
                v["cond_frame_outputs"].clear()
                v["non_cond_frame_outputs"].clear()
        for v in inference_state["frames_tracked_per_obj"].values():
            v.clear()

    @torch.inference_mode()
    @in_compute_dtype
    def remove_object(
        self, inference_state: InferenceState, obj_id: Hashable, strict: bool = False, need_output: bool = True
    ):
        """Remove ``obj_id``. Returns ``(remaining obj_ids, [(frame_idx, video_res_masks),
        ...])`` for the frames where it had prompts (their masks may change)."""
        old_obj_idx = inference_state["obj_id_to_idx"].get(obj_id, None)
        updated_frames: List[Tuple[int, torch.Tensor]] = []
        if old_obj_idx is None:
            if not strict:
                return inference_state["obj_ids"], updated_frames
            raise InvalidStateError(
                f"Cannot remove object id {obj_id} as it doesn't exist. "
                f"All existing object ids: {inference_state['obj_ids']}."
            )
        if len(inference_state["obj_id_to_idx"]) == 1:
            self.reset_state(inference_state)
            return inference_state["obj_ids"], updated_frames

        input_frames = set(inference_state["point_inputs_per_obj"][old_obj_idx])
        input_frames.update(inference_state["mask_inputs_per_obj"][old_obj_idx])
        for frame_idx in input_frames:
            self.clear_all_prompts_in_frame(inference_state, frame_idx, obj_id, need_output=False)

        old_obj_ids = inference_state["obj_ids"]
        remaining = [i for i in range(len(old_obj_ids)) if i != old_obj_idx]
        new_obj_ids = [old_obj_ids[i] for i in remaining]
        old_to_new = {old: new for new, old in enumerate(remaining)}
        inference_state["obj_id_to_idx"] = OrderedDict((oid, i) for i, oid in enumerate(new_obj_ids))
        inference_state["obj_idx_to_id"] = OrderedDict((i, oid) for i, oid in enumerate(new_obj_ids))
        inference_state["obj_ids"] = new_obj_ids
        for key in ("point_inputs_per_obj", "mask_inputs_per_obj", "output_dict_per_obj",
                    "temp_output_dict_per_obj", "frames_tracked_per_obj"):
            container = inference_state[key]
            moved = {old_to_new[k]: v for k, v in container.items() if k in old_to_new}
            container.clear()
            container.update(moved)

        if need_output:
            temp = inference_state["temp_output_dict_per_obj"]
            for frame_idx in sorted(input_frames):
                is_cond = any(frame_idx in d["cond_frame_outputs"] for d in temp.values())
                _, _, video_res_masks = self._frame_output_at_video_res(inference_state, frame_idx, is_cond)
                updated_frames.append((frame_idx, video_res_masks))
        return inference_state["obj_ids"], updated_frames

    def _clear_obj_non_cond_mem_around_input(self, inference_state, frame_idx: int, obj_idx: int) -> None:
        """Forget one object's tracked memories within ``num_maskmem`` (strided) frames of a
        frame that received a correction."""
        r = self.memory_temporal_stride_for_eval
        non_cond = inference_state["output_dict_per_obj"][obj_idx]["non_cond_frame_outputs"]
        for t in range(frame_idx - r * self.num_maskmem, frame_idx + r * self.num_maskmem + 1):
            non_cond.pop(t, None)

    # ------------------------------------------------------------------ per-frame model calls
    def _get_image_feature(self, inference_state: InferenceState, frame_idx: int, batch_size: int):
        """Backbone features of ``frame_idx`` (from a small LRU), expanded to ``batch_size``.

        Returns ``(image, backbone_out, vision_feats, vision_pos_embeds, feat_sizes)`` as the
        official method does.
        """
        cache: "OrderedDict[int, Tuple[torch.Tensor, Dict[str, Any]]]" = inference_state["cached_features"]
        image, backbone_out = cache.get(frame_idx, (None, None))
        if backbone_out is None:
            image = inference_state["images"][frame_idx].to(inference_state["device"]).float().unsqueeze(0)
            backbone_out = self.forward_image(image)
            cache[frame_idx] = (image, backbone_out)
            while len(cache) > self.feature_cache_size:
                cache.popitem(last=False)
        else:
            cache.move_to_end(frame_idx)
        expanded = {
            "backbone_fpn": [f.expand(batch_size, -1, -1, -1) for f in backbone_out["backbone_fpn"]],
            "vision_pos_enc": [p.expand(batch_size, -1, -1, -1) for p in backbone_out["vision_pos_enc"]],
        }
        return (image.expand(batch_size, -1, -1, -1),) + self._prepare_backbone_features(expanded)

    def _run_single_frame_inference(
        self,
        inference_state: InferenceState,
        output_dict: Dict[str, Dict[int, Any]],
        frame_idx: int,
        batch_size: int,
        is_init_cond_frame: bool,
        point_inputs,
        mask_inputs,
        reverse: bool,
        run_mem_encoder: bool,
        prev_sam_mask_logits=None,
    ):
        """One ``track_step`` on a frame (used for prompts, one object at a time)."""
        _, _, current_vision_feats, current_vision_pos_embeds, feat_sizes = self._get_image_feature(
            inference_state, frame_idx, batch_size
        )
        if point_inputs is not None and mask_inputs is not None:
            raise InvalidInputError("points and a mask cannot be given on the same frame at once")
        current_out = self.track_step(
            frame_idx=frame_idx,
            is_init_cond_frame=is_init_cond_frame,
            current_vision_feats=current_vision_feats,
            current_vision_pos_embeds=current_vision_pos_embeds,
            feat_sizes=feat_sizes,
            point_inputs=point_inputs,
            mask_inputs=mask_inputs,
            output_dict=output_dict,
            num_frames=inference_state["num_frames"],
            track_in_reverse=reverse,
            run_mem_encoder=run_mem_encoder,
            prev_sam_mask_logits=prev_sam_mask_logits,
        )
        compact, pred_masks = self._compact_outputs(
            inference_state,
            current_out["maskmem_features"],
            current_out["maskmem_pos_enc"],
            current_out["pred_masks"],
            current_out["obj_ptr"],
            current_out["object_score_logits"],
        )
        return compact, pred_masks

    def _run_memory_encoder(
        self,
        inference_state: InferenceState,
        frame_idx: int,
        batch_size: int,
        high_res_masks: torch.Tensor,
        object_score_logits: torch.Tensor,
        is_mask_from_pts: bool,
    ):
        """Encode the memory of ``frame_idx`` for ``high_res_masks``; stored in bf16."""
        _, _, current_vision_feats, _, feat_sizes = self._get_image_feature(inference_state, frame_idx, batch_size)
        maskmem_features, maskmem_pos_enc = self._encode_new_memory(
            current_vision_feats=current_vision_feats,
            feat_sizes=feat_sizes,
            pred_masks_high_res=high_res_masks,
            object_score_logits=object_score_logits,
            is_mask_from_pts=is_mask_from_pts,
        )
        maskmem_features = maskmem_features.to(torch.bfloat16).to(
            inference_state["storage_device"], non_blocking=True
        )
        maskmem_pos_enc = self._get_maskmem_pos_enc(inference_state, {"maskmem_pos_enc": maskmem_pos_enc})
        return maskmem_features, maskmem_pos_enc

    def _get_maskmem_pos_enc(self, inference_state: InferenceState, current_out: Dict[str, Any]):
        """The memory position encoding is the same for every frame and object: keep one
        copy (batch 1) in ``inference_state["constants"]`` and hand out expanded views."""
        out_pos = current_out["maskmem_pos_enc"]
        if out_pos is None:
            return None
        constants = inference_state["constants"]
        if "maskmem_pos_enc" not in constants:
            constants["maskmem_pos_enc"] = [x[0:1].clone() for x in out_pos]
        batch_size = out_pos[0].size(0)
        return [x.expand(batch_size, -1, -1, -1) for x in constants["maskmem_pos_enc"]]


def _slice(value: Any, j: int, n: int) -> Any:
    """Row ``j`` of a batched stored value (a copy, so objects can be freed one by one)."""
    if isinstance(value, torch.Tensor):
        return value[j : j + 1].clone() if n > 1 else value
    if isinstance(value, list):
        return [v[j : j + 1] for v in value]
    return value
