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

The session is a typed :class:`~sam2_fast.predictors.video_state.InferenceState` that also
reads as the official dict; arguments are checked in :mod:`~sam2_fast.predictors.video_inputs`
and outputs stored and merged in :mod:`~sam2_fast.predictors.video_outputs`.
"""

from __future__ import annotations

from typing import Any, Dict, Hashable, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sam2_fast.errors import InvalidInputError, InvalidStateError
from sam2_fast.modeling.common import host_tensor_to
from sam2_fast.modeling.config import SAM2Config
from sam2_fast.modeling.sam2_base import MemoryPlan, SAM2Base
from sam2_fast.precision import in_compute_dtype
from sam2_fast.predictors.video_compat import OfficialVideoHelpers
from sam2_fast.predictors.video_inputs import (
    check_frame_budget, check_frame_idx, click_inputs, concat_points, mask_input,
)
from sam2_fast.predictors.video_io import LazyVideoFrames, open_video
from sam2_fast.predictors.video_outputs import consolidate_masks, resize_to_video, split_objects, stored_output
from sam2_fast.predictors.video_state import FrameOutput, InferenceState, ObjectState

__all__ = ["InferenceState", "SAM2VideoPredictor"]


class SAM2VideoPredictor(OfficialVideoHelpers, SAM2Base):
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
        #: objects per memory-attention call; None: one at a time on CPU (with the C++ flash
        #: kernel one or all 8 at once measured the same on the AMX Xeon: bench/README.md),
        #: all objects with the same memory layout at once on GPU
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
        from sam2_fast.factory import build_from_hub, compile_for_vos

        vos = kwargs.pop("vos_optimized", False)
        model = build_from_hub(model_id, kwargs, model_cls=cls, video=True)
        return compile_for_vos(model) if vos else model

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
        state = InferenceState(
            images, len(images), source.height, source.width, compute_device,
            offload_video_to_cpu=offload_video_to_cpu, offload_state_to_cpu=offload_state_to_cpu,
        )
        # warm up on frame 0, where users usually click first
        self._get_image_feature(state, frame_idx=0, batch_size=1)
        return state

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
        state = inference_state
        frame_idx = check_frame_idx(frame_idx, state.num_frames)
        pts, lbl = click_inputs(
            points, labels, box, clear_old_points, normalize_coords, state.video_hw, self.image_size, state.device
        )
        known_idx = state.index_of(obj_id)
        old = None
        if not clear_old_points and known_idx is not None:
            old = state.objects[known_idx].point_inputs.get(frame_idx, None)
        return self._apply_prompt(state, frame_idx, obj_id, point_inputs=concat_points(old, pts, lbl))

    def add_new_points(self, *args: Any, **kwargs: Any):
        """Deprecated alias of :meth:`add_new_points_or_box`."""
        return self.add_new_points_or_box(*args, **kwargs)

    @torch.inference_mode()
    @in_compute_dtype
    def add_new_mask(
        self, inference_state: InferenceState, frame_idx: int, obj_id: Hashable, mask
    ) -> Tuple[int, List[Hashable], torch.Tensor]:
        """Give ``obj_id``'s mask ``[H, W]`` (bool, or 0/1, at the video's size) on ``frame_idx``."""
        state = inference_state
        frame_idx = check_frame_idx(frame_idx, state.num_frames)
        mask_inputs = mask_input(mask, state.video_hw, self.image_size, state.device)
        return self._apply_prompt(state, frame_idx, obj_id, mask_inputs=mask_inputs)

    def _apply_prompt(
        self,
        state: InferenceState,
        frame_idx: int,
        obj_id: Hashable,
        point_inputs: Optional[Dict[str, torch.Tensor]] = None,
        mask_inputs: Optional[torch.Tensor] = None,
    ) -> Tuple[int, List[Hashable], torch.Tensor]:
        """Run the model for one object's prompt (clicks or a mask) on a frame, store the
        result as a temporary output (its memory is encoded when tracking starts) and return
        every object's masks on that frame. The state changes only if the model ran."""
        is_new_object = state.index_of(obj_id) is None
        obj = state.objects[state.index_or_add(obj_id)]
        # a frame the object was not tracked on starts from scratch (like SAM on an image);
        # otherwise the prompt corrects the tracked mask
        is_init_cond_frame = frame_idx not in obj.frames_tracked
        reverse = False if is_init_cond_frame else obj.frames_tracked[frame_idx]["reverse"]
        is_cond = is_init_cond_frame or self.add_all_frames_to_correct_as_cond
        prev_sam_mask_logits = None
        if point_inputs is not None:
            # feed the previously predicted logits of this frame with the new clicks
            prev_out = obj.latest_output(frame_idx, is_cond)
            if prev_out is not None and prev_out["pred_masks"] is not None:
                prev_sam_mask_logits = torch.clamp(
                    prev_out["pred_masks"].to(state.device, non_blocking=True), -32.0, 32.0
                )
        try:
            _, _, vision_feats, vision_pos_embeds, feat_sizes = self._get_image_feature(state, frame_idx, 1)
            out = self.track_step(
                frame_idx, is_init_cond_frame, vision_feats, vision_pos_embeds, feat_sizes, point_inputs,
                mask_inputs, obj.outputs, state.num_frames, reverse,
                # memories are encoded when propagation starts (after the user's last prompt)
                run_mem_encoder=False, prev_sam_mask_logits=prev_sam_mask_logits,
            )
            current_out, _ = stored_output(
                state, out["maskmem_features"], out["maskmem_pos_enc"], out["pred_masks"], out["obj_ptr"],
                out["object_score_logits"], self.fill_hole_area,
            )
        except BaseException:
            # a new object whose first prompt failed (an error, a KeyboardInterrupt) is not
            # added: otherwise tracking would stop on an object without prompts
            if is_new_object:
                self.remove_object(state, obj_id, need_output=False)
            raise
        obj.set_prompt(frame_idx, point_inputs, mask_inputs)
        obj.temp_outputs.frames(is_cond)[frame_idx] = current_out
        return self._frame_output_at_video_res(state, frame_idx, is_cond)

    def _frame_output_at_video_res(self, state: InferenceState, frame_idx: int, is_cond: bool):
        """``(frame_idx, obj_ids, video_res_masks [num_objects, 1, H, W])``: every object's
        latest mask on ``frame_idx`` (see :func:`consolidate_masks`)."""
        return frame_idx, state.obj_ids, self._video_res_masks(state, consolidate_masks(state, frame_idx, is_cond))

    def _video_res_masks(self, state: InferenceState, masks: torch.Tensor) -> torch.Tensor:
        """Mask logits at the video's size, ``non_overlap_masks`` applied."""
        masks = resize_to_video(state, masks)
        return self._apply_non_overlapping_constraints(masks) if self.non_overlap_masks else masks

    # ------------------------------------------------------------------ propagation
    @torch.inference_mode()
    @in_compute_dtype
    def propagate_in_video_preflight(self, inference_state: InferenceState) -> None:
        """Encode the memories of the frames that received prompts and move them from the
        temporary outputs into the tracking state."""
        state = inference_state
        if state.num_objects == 0:
            raise InvalidStateError("No input points or masks are provided for any object; please add inputs first.")
        for obj in state.objects:
            for cond in (False, True):
                pending = obj.temp_outputs.frames(cond)
                for frame_idx, out in pending.items():
                    if out["maskmem_features"] is None:
                        self._encode_prompt_memory(state, frame_idx, out)
                    obj.outputs.frames(cond)[frame_idx] = out
                    if self.clear_non_cond_mem_around_input:
                        self._clear_obj_non_cond_mem_around_input(obj, frame_idx)
                pending.clear()
            if not obj.outputs.cond_frame_outputs:
                raise InvalidStateError(
                    f"No input points or masks are provided for object id {obj.obj_id}; please add inputs first."
                )
            # a frame that became a conditioning frame is not also a non-conditioning one
            obj.forget_tracked(obj.outputs.cond_frame_outputs)

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
        state = inference_state
        # check the arguments before the preflight changes the state
        if start_frame_idx is not None:
            start_frame_idx = check_frame_idx(start_frame_idx, state.num_frames, "start_frame_idx")
        check_frame_budget(max_frame_num_to_track)
        self.propagate_in_video_preflight(state)
        obj_ids = state.obj_ids
        num_frames = state.num_frames
        if start_frame_idx is None:
            start_frame_idx = state.first_cond_frame()
        if max_frame_num_to_track is None:
            max_frame_num_to_track = num_frames
        if reverse:
            end_frame_idx = max(start_frame_idx - max_frame_num_to_track, 0)
            processing_order = range(start_frame_idx, end_frame_idx - 1, -1) if start_frame_idx > 0 else range(0)
        else:
            end_frame_idx = min(start_frame_idx + max_frame_num_to_track, num_frames - 1)
            processing_order = range(start_frame_idx, end_frame_idx + 1)

        step = -1 if reverse else 1
        for frame_idx in tqdm(processing_order, desc="propagate in video", disable=not self.show_progress):
            state.images.prefetch(frame_idx + step * k for k in range(1, 3))
            video_res_masks = self._propagate_frame(state, frame_idx, reverse)
            yield frame_idx, obj_ids, video_res_masks

    @in_compute_dtype
    def _propagate_frame(self, state: InferenceState, frame_idx: int, reverse: bool) -> torch.Tensor:
        """Track every object without a prompt on ``frame_idx`` (one batched pass), store the
        results, and return all objects' masks at video resolution ``[N, 1, H, W]``.

        The state is only modified after the model ran, so an exception (or an interrupt)
        leaves it as it was before this frame.
        """
        to_track = [i for i, obj in enumerate(state.objects) if frame_idx not in obj.outputs.cond_frame_outputs]
        new_outputs, new_masks = self._track_objects(state, frame_idx, to_track, reverse)
        pred_masks_per_obj = []
        for obj_idx, obj in enumerate(state.objects):
            if obj_idx in new_outputs:
                obj.outputs.non_cond_frame_outputs[frame_idx] = new_outputs[obj_idx]
                pred_masks = new_masks[obj_idx]
            else:
                # frames with prompts keep their consolidated outputs
                pred_masks = obj.outputs.cond_frame_outputs[frame_idx]["pred_masks"].to(state.device, non_blocking=True)
                if self.clear_non_cond_mem_around_input:
                    self._clear_obj_non_cond_mem_around_input(obj, frame_idx)
            obj.frames_tracked[frame_idx] = {"reverse": reverse}
            pred_masks_per_obj.append(pred_masks)
        return self._video_res_masks(state, torch.cat(pred_masks_per_obj, dim=0))

    def _track_objects(
        self,
        state: InferenceState,
        frame_idx: int,
        obj_indices: Sequence[int],
        reverse: bool,
    ) -> Tuple[Dict[int, FrameOutput], Dict[int, torch.Tensor]]:
        """Track ``obj_indices`` on a non-conditioning frame in one batched pass.

        Returns each object's compact stored output and its low-res mask logits (on the
        compute device). Nothing in ``state`` is modified.
        """
        if not obj_indices:
            return {}, {}
        _, _, vision_feats, vision_pos_embeds, feat_sizes = self._get_image_feature(state, frame_idx, batch_size=1)
        plans = [
            self.select_memories(frame_idx, state.objects[obj_idx].outputs, state.num_frames, track_in_reverse=reverse)
            for obj_idx in obj_indices
        ]
        pix_feat = self._condition_on_memories(vision_feats, vision_pos_embeds, feat_sizes, plans, state.device)
        n = len(obj_indices)
        high_res_features = [
            x.permute(1, 2, 0).reshape(1, x.size(2), *s).expand(n, -1, -1, -1)
            for x, s in zip(vision_feats[:-1], feat_sizes[:-1])
        ]
        (_, _, _, low_res_masks, high_res_masks, obj_ptr, object_score_logits) = self._forward_sam_heads(
            backbone_features=pix_feat, point_inputs=None, mask_inputs=None, high_res_features=high_res_features,
            multimask_output=self._use_multimask(False, None), high_res_multimasks=False,
        )
        maskmem_features, maskmem_pos_enc = self._encode_new_memory(
            [vision_feats[-1].expand(-1, n, -1)], feat_sizes[-1:], high_res_masks, object_score_logits,
            is_mask_from_pts=False,
            across_batch_constraints=False,  # each object is tracked on its own, as officially
        )
        compact, pred_masks = stored_output(
            state, maskmem_features, maskmem_pos_enc, low_res_masks, obj_ptr, object_score_logits, self.fill_hole_area
        )
        outputs = dict(zip(obj_indices, split_objects(compact, n)))
        masks = {obj_idx: pred_masks[j : j + 1] for j, obj_idx in enumerate(obj_indices)}
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
        # channels-last, the memory attention's own layout: the decoder reads its image tokens as
        # contiguous [HW, C] rows (an NCHW buffer made every token add there a transposing pass)
        out = torch.empty(len(plans), h, w, c, device=device, dtype=vision_feats[-1].dtype).permute(0, 3, 1, 2)
        # the first layer's self-attention reads the frame only: once for all the objects
        share = getattr(self.memory_attention, "first_self_attention", None) if len(plans) > 1 else None
        first = None if share is None else share([vision_feats[-1]], [vision_pos_embeds[-1]])
        shared = {} if first is None else {"first_self_attention": first}
        for members in (g[i : i + chunk] for g in groups.values() for i in range(0, len(g), chunk)):
            memory, memory_pos, num_ptr_tokens = self.assemble_memory([plans[i] for i in members], device)
            b = len(members)
            fused = self.memory_attention(
                curr=[vision_feats[-1].expand(-1, b, -1)],
                curr_pos=[vision_pos_embeds[-1].expand(-1, b, -1)],
                memory=memory,
                memory_pos=memory_pos,
                num_obj_ptr_tokens=num_ptr_tokens,
                **shared,
            )
            fused = fused.permute(1, 2, 0).reshape(b, c, h, w).to(out.dtype)
            if b == len(plans):  # one group: the common case
                return fused
            if members == list(range(members[0], members[0] + b)):
                out[members[0] : members[0] + b] = fused  # a slice: no index tensor to copy
            else:
                out.index_copy_(0, host_tensor_to(members, device, torch.int64), fused)
        return out

    # ------------------------------------------------------------------ editing
    @torch.inference_mode()
    @in_compute_dtype
    def clear_all_prompts_in_frame(
        self, inference_state: InferenceState, frame_idx: int, obj_id: Hashable, need_output: bool = True
    ):
        """Remove ``obj_id``'s clicks / mask on ``frame_idx`` (its output there becomes an
        ordinary tracked frame)."""
        state = inference_state
        frame_idx = check_frame_idx(frame_idx, state.num_frames)
        state.objects[state.existing_index(obj_id)].clear_prompts(frame_idx)
        if not need_output:
            return None
        return self._frame_output_at_video_res(state, frame_idx, state.has_temp_cond_output(frame_idx))

    @torch.inference_mode()
    def reset_state(self, inference_state: InferenceState) -> None:
        """Remove every object and prompt (the video stays open)."""
        inference_state.clear_objects()

    @torch.inference_mode()
    @in_compute_dtype
    def remove_object(
        self, inference_state: InferenceState, obj_id: Hashable, strict: bool = False, need_output: bool = True
    ):
        """Remove ``obj_id`` (the objects after it move down one index). Returns
        ``(remaining obj_ids, [(frame_idx, video_res_masks), ...])`` for the frames where it
        had prompts (their masks may change)."""
        state = inference_state
        obj_idx = state.index_of(obj_id)
        updated_frames: List[Tuple[int, torch.Tensor]] = []
        if obj_idx is None:
            if not strict:
                return state.obj_ids, updated_frames
            raise InvalidStateError(
                f"Cannot remove object id {obj_id} as it doesn't exist. All existing object ids: {state.obj_ids}."
            )
        if state.num_objects == 1:
            self.reset_state(state)
            return state.obj_ids, updated_frames
        input_frames = state.remove_object(obj_idx).prompted_frames()
        if need_output:
            for frame_idx in sorted(input_frames):
                _, _, video_res_masks = self._frame_output_at_video_res(
                    state, frame_idx, state.has_temp_cond_output(frame_idx)
                )
                updated_frames.append((frame_idx, video_res_masks))
        return state.obj_ids, updated_frames

    def _clear_obj_non_cond_mem_around_input(self, obj: ObjectState, frame_idx: int) -> None:
        """Forget one object's tracked memories within ``num_maskmem`` (strided) frames of a
        frame that received a correction."""
        r = self.memory_temporal_stride_for_eval * self.num_maskmem
        obj.forget_tracked(range(frame_idx - r, frame_idx + r + 1))

    # ------------------------------------------------------------------ per-frame model calls
    def _get_image_feature(self, inference_state: InferenceState, frame_idx: int, batch_size: int):
        """Backbone features of ``frame_idx`` (from a small LRU), expanded to ``batch_size``.

        Returns ``(image, backbone_out, vision_feats, vision_pos_embeds, feat_sizes)`` as the
        official method does.
        """
        image, backbone_out = inference_state.image_features(frame_idx, self.forward_image, self.feature_cache_size)
        expanded = {
            "backbone_fpn": [f.expand(batch_size, -1, -1, -1) for f in backbone_out["backbone_fpn"]],
            "vision_pos_enc": [p.expand(batch_size, -1, -1, -1) for p in backbone_out["vision_pos_enc"]],
        }
        return (image.expand(batch_size, -1, -1, -1),) + self._prepare_backbone_features(expanded)

    def _encode_prompt_memory(self, state: InferenceState, frame_idx: int, out: FrameOutput) -> None:
        """Encode the memory of a prompt's output ``out`` on ``frame_idx`` (a frame the user
        interacted with: ``is_mask_from_pts``) into ``out``, as it is stored."""
        high_res_masks = F.interpolate(
            out["pred_masks"].to(state.device), size=(self.image_size,) * 2, mode="bilinear", align_corners=False
        )
        _, _, vision_feats, _, feat_sizes = self._get_image_feature(state, frame_idx, batch_size=1)
        maskmem_features, maskmem_pos_enc = self._encode_new_memory(
            vision_feats, feat_sizes, high_res_masks, out["object_score_logits"], is_mask_from_pts=True
        )
        out["maskmem_features"], out["maskmem_pos_enc"] = state.stored_memory(maskmem_features, maskmem_pos_enc)
