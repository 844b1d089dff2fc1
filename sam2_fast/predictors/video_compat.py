"""The official video predictor's private helpers that code written against ``sam2`` calls on
the predictor (``_obj_id_to_idx``, ``_get_orig_video_res_output``, ...), kept with their
official signatures and results over the typed state. The predictor itself does this work
through :class:`~sam2_fast.predictors.video_state.InferenceState`."""

from __future__ import annotations

from typing import Hashable, Tuple

import torch

from sam2_fast.predictors.video_state import InferenceState


class OfficialVideoHelpers:
    """Mixed into :class:`~sam2_fast.predictors.video_predictor.SAM2VideoPredictor`."""

    def _obj_id_to_idx(self, inference_state: InferenceState, obj_id: Hashable) -> int:
        """The model-side index of ``obj_id``; a new id is added as the next object."""
        return inference_state.index_or_add(obj_id)

    def _obj_idx_to_id(self, inference_state: InferenceState, obj_idx: int) -> Hashable:
        """The client-side id of the object at ``obj_idx``."""
        return inference_state.obj_idx_to_id[obj_idx]

    def _get_obj_num(self, inference_state: InferenceState) -> int:
        """How many objects the session tracks."""
        return inference_state.num_objects

    def _get_orig_video_res_output(
        self, inference_state: InferenceState, any_res_masks: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(any_res_masks on the device, the masks at the video's size)`` with
        ``non_overlap_masks`` applied to the latter, as the official helper returns them."""
        any_res_masks = any_res_masks.to(inference_state.device, non_blocking=True)
        return any_res_masks, self._video_res_masks(inference_state, any_res_masks)

    def _reset_tracking_results(self, inference_state: InferenceState) -> None:
        """Forget every object's prompts and outputs; the objects stay (as officially)."""
        for obj in inference_state.objects:
            obj.clear()
