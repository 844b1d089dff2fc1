"""The SAM heads of the SAM 2 model: prompt encoder + mask decoder on a frame's features ->
masks, IoU scores, the object pointer and the object score (or a mask prompt used as the
output as it is), as a mixin of :class:`~sam2_fast.modeling.sam2_base.SAM2Base`."""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from sam2_fast.modeling.common import MLP, Linear
from sam2_fast.modeling.mask_decoder import MaskDecoder
from sam2_fast.modeling.prompt_encoder import PromptEncoder
from sam2_fast.modeling.transformer import TwoWayTransformer

# a large negative value as a placeholder score for missing objects
NO_OBJ_SCORE = -1024.0


class SAMHeads:
    """The official ``SAM2Base`` methods of the SAM heads, mixed into an ``nn.Module`` whose
    constructor sets the configuration they read (``image_size``, ``backbone_stride``,
    ``hidden_dim``, ``mem_dim``, the ``pred_obj_scores`` / ``*_obj_ptr*`` flags, ...) and then
    calls :meth:`_build_sam_heads`."""

    def _build_sam_heads(self) -> None:
        self.sam_prompt_embed_dim = self.hidden_dim
        self.sam_image_embedding_size = self.image_size // self.backbone_stride
        self.sam_prompt_encoder = PromptEncoder(
            embed_dim=self.sam_prompt_embed_dim,
            image_embedding_size=(self.sam_image_embedding_size, self.sam_image_embedding_size),
            input_image_size=(self.image_size, self.image_size),
            mask_in_chans=16,
        )
        self.sam_mask_decoder = MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=self.sam_prompt_embed_dim, mlp_dim=2048, num_heads=8
            ),
            transformer_dim=self.sam_prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
            use_high_res_features=self.use_high_res_features_in_sam,
            iou_prediction_use_sigmoid=self.iou_prediction_use_sigmoid,
            pred_obj_scores=self.pred_obj_scores,
            pred_obj_scores_mlp=self.pred_obj_scores_mlp,
            use_multimask_token_for_obj_ptr=self.use_multimask_token_for_obj_ptr,
            **(self.sam_mask_decoder_extra_args or {}),
        )
        if self.use_obj_ptrs_in_encoder:
            self.obj_ptr_proj = (
                MLP(self.hidden_dim, self.hidden_dim, self.hidden_dim, 3)
                if self.use_mlp_for_obj_ptr_proj
                else Linear(self.hidden_dim, self.hidden_dim)
            )
        else:
            self.obj_ptr_proj = nn.Identity()
        if self.proj_tpos_enc_in_obj_ptrs:
            self.obj_ptr_tpos_proj = Linear(self.hidden_dim, self.mem_dim)
        else:
            self.obj_ptr_tpos_proj = nn.Identity()

    def _forward_sam_heads(
        self,
        backbone_features: torch.Tensor,
        point_inputs: Optional[Dict[str, torch.Tensor]] = None,
        mask_inputs: Optional[torch.Tensor] = None,
        high_res_features: Optional[List[torch.Tensor]] = None,
        multimask_output: bool = False,
        high_res_multimasks: bool = True,
    ):
        """Prompt encoder + mask decoder on ``backbone_features [B, C, h, w]``.

        ``point_inputs``: ``{"point_coords": [B, P, 2] pixels (x, y) in the model's input
        frame, "point_labels": [B, P] int}``; ``mask_inputs``: ``[B, 1, H, W]``.

        Returns ``(low_res_multimasks [B, M, 4h, 4w], high_res_multimasks [B, M, H, W],
        ious [B, M], low_res_masks [B, 1, 4h, 4w], high_res_masks [B, 1, H, W],
        obj_ptr [B, C], object_score_logits [B, 1])`` (the single masks are the best by IoU).
        ``high_res_multimasks=False``: the second item is None and only the best mask is
        upsampled to the input size (the same values: bilinear upsampling is per mask).
        """
        b = backbone_features.size(0)
        device = backbone_features.device
        if point_inputs is not None:
            sam_point_coords = point_inputs["point_coords"]
            sam_point_labels = point_inputs["point_labels"]
        else:
            sam_point_coords = torch.zeros(b, 1, 2, device=device)
            sam_point_labels = -torch.ones(b, 1, dtype=torch.int32, device=device)

        if mask_inputs is not None:
            if mask_inputs.shape[-2:] != self.sam_prompt_encoder.mask_input_size:
                sam_mask_prompt = F.interpolate(
                    mask_inputs.float(),
                    size=self.sam_prompt_encoder.mask_input_size,
                    align_corners=False,
                    mode="bilinear",
                    antialias=True,
                )
            else:
                sam_mask_prompt = mask_inputs
        else:
            sam_mask_prompt = None

        sparse_embeddings, dense_embeddings = self.sam_prompt_encoder(
            points=(sam_point_coords, sam_point_labels), boxes=None, masks=sam_mask_prompt
        )
        low_res_multimasks, ious, sam_output_tokens, object_score_logits = self.sam_mask_decoder(
            image_embeddings=backbone_features,
            image_pe=self.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse_embeddings,
            dense_prompt_embeddings=dense_embeddings,
            multimask_output=multimask_output,
            repeat_image=False,
            high_res_features=high_res_features,
        )
        if self.pred_obj_scores:
            is_obj_appearing = object_score_logits > 0
            # memories use a hard choice between object and no object
            low_res_multimasks = torch.where(
                is_obj_appearing[:, None, None], low_res_multimasks, NO_OBJ_SCORE
            )
        low_res_multimasks = low_res_multimasks.float()

        def upsample(masks: torch.Tensor) -> torch.Tensor:
            size = (self.image_size, self.image_size)
            return F.interpolate(masks, size=size, mode="bilinear", align_corners=False)

        sam_output_token = sam_output_tokens[:, 0]
        if multimask_output:
            best_iou_inds = torch.argmax(ious, dim=-1)
            batch_inds = torch.arange(b, device=device)
            low_res_masks = low_res_multimasks[batch_inds, best_iou_inds].unsqueeze(1)
            high_res_masks = upsample(low_res_masks)
            high_res_multimasks = upsample(low_res_multimasks) if high_res_multimasks else None
            if sam_output_tokens.size(1) > 1:
                sam_output_token = sam_output_tokens[batch_inds, best_iou_inds]
        else:
            low_res_masks = low_res_multimasks
            high_res_masks = upsample(low_res_masks)
            high_res_multimasks = high_res_masks if high_res_multimasks else None

        obj_ptr = self.obj_ptr_proj(sam_output_token)
        if self.pred_obj_scores:
            if self.soft_no_obj_ptr:
                lambda_is_obj_appearing = object_score_logits.sigmoid()
            else:
                lambda_is_obj_appearing = is_obj_appearing.float()
            obj_ptr = self._mix_no_obj_ptr(obj_ptr, lambda_is_obj_appearing)
        return (
            low_res_multimasks,
            high_res_multimasks,
            ious,
            low_res_masks,
            high_res_masks,
            obj_ptr,
            object_score_logits,
        )

    def _mix_no_obj_ptr(self, obj_ptr: torch.Tensor, lambda_is_obj_appearing: torch.Tensor) -> torch.Tensor:
        """``obj_ptr [B, C]`` moved towards the learned no-object pointer as
        ``lambda_is_obj_appearing [B, 1]`` goes from 1 (object) to 0 (no object)."""
        if self.fixed_no_obj_ptr:
            obj_ptr = lambda_is_obj_appearing * obj_ptr
        return obj_ptr + (1 - lambda_is_obj_appearing) * self.no_obj_ptr

    def _use_mask_as_output(
        self,
        backbone_features: torch.Tensor,
        high_res_features: Optional[List[torch.Tensor]],
        mask_inputs: torch.Tensor,
    ):
        """Turn a binary ``mask_inputs [B, 1, H, W]`` directly into output logits (+/-10),
        with the same outputs as :meth:`_forward_sam_heads`."""
        out_scale, out_bias = 20.0, -10.0
        mask_inputs_float = mask_inputs.float()
        high_res_masks = mask_inputs_float * out_scale + out_bias
        low_res_masks = F.interpolate(
            high_res_masks,
            size=(high_res_masks.size(-2) // 4, high_res_masks.size(-1) // 4),
            align_corners=False,
            mode="bilinear",
            antialias=True,
        )
        ious = mask_inputs.new_ones(mask_inputs.size(0), 1).float()
        if not self.use_obj_ptrs_in_encoder:
            obj_ptr = torch.zeros(mask_inputs.size(0), self.hidden_dim, device=mask_inputs.device)
        else:
            _, _, _, _, _, obj_ptr, _ = self._forward_sam_heads(
                backbone_features=backbone_features,
                mask_inputs=self.mask_downsample(mask_inputs_float),
                high_res_features=high_res_features,
            )
        is_obj_appearing = torch.any(mask_inputs.flatten(1).float() > 0.0, dim=1)[..., None]
        lambda_is_obj_appearing = is_obj_appearing.float()
        object_score_logits = out_scale * lambda_is_obj_appearing + out_bias
        if self.pred_obj_scores:
            obj_ptr = self._mix_no_obj_ptr(obj_ptr, lambda_is_obj_appearing)
        return (
            low_res_masks,
            high_res_masks,
            ious,
            low_res_masks,
            high_res_masks,
            obj_ptr,
            object_score_logits,
        )

    def _use_multimask(self, is_init_cond_frame: bool, point_inputs) -> bool:
        """Multimask output on the first click(s) of a frame, as configured."""
        num_pts = 0 if point_inputs is None else point_inputs["point_labels"].size(1)
        return (
            self.multimask_output_in_sam
            and (is_init_cond_frame or self.multimask_output_for_tracking)
            and (self.multimask_min_pt_num <= num_pts <= self.multimask_max_pt_num)
        )
