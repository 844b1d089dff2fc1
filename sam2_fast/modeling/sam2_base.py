"""SAM 2 base model: holds the image encoder, SAM heads, memory attention and memory encoder,
and runs them on a frame: image features, memory-conditioned features, one tracking step.

Method names, arguments and outputs follow the official ``sam2.modeling.sam2_base.SAM2Base``
so code written against the official model keeps working; state-dict keys are identical. The
parts live next door: module builders (:mod:`~sam2_fast.modeling.builders`), the SAM heads
(:mod:`~sam2_fast.modeling.sam_heads`), memory selection and assembly
(:mod:`~sam2_fast.modeling.memory_plan`), compile setup (:mod:`~sam2_fast.modeling.compile`).

About 530 lines: the constructor takes the official model's ~40 arguments one per line, and
the official method names stay (``_track_step``, ``_encode_memory_in_output``, ...) for code
that calls them.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn.init import trunc_normal_

from sam2_fast.errors import InvalidInputError
from sam2_fast.modeling import compile as compile_setup
from sam2_fast.modeling import memory_plan
from sam2_fast.modeling.builders import (
    build_image_encoder,
    build_memory_attention,
    build_memory_encoder,
    build_spatial_perceiver,
)
from sam2_fast.modeling.common import Conv2d
from sam2_fast.modeling.config import SAM2Config
from sam2_fast.modeling.image_encoder import ImageEncoder
from sam2_fast.modeling.memory_attention import MemoryAttention
from sam2_fast.modeling.memory_encoder import MemoryEncoder
from sam2_fast.modeling.memory_plan import MemoryPlan
from sam2_fast.modeling.sam_heads import NO_OBJ_SCORE, SAMHeads

if TYPE_CHECKING:
    from sam2_fast.precision import ComputeDtype

__all__ = ["NO_OBJ_SCORE", "MemoryPlan", "SAM2Base"]

# SAM2Base constructor arguments that come from the config (everything but the modules)
_BASE_FIELDS = (
    "num_maskmem", "image_size", "backbone_stride", "sigmoid_scale_for_mem_enc",
    "sigmoid_bias_for_mem_enc", "binarize_mask_from_pts_for_mem_enc",
    "use_mask_input_as_output_without_sam", "max_cond_frames_in_attn",
    "directly_add_no_mem_embed", "use_high_res_features_in_sam", "multimask_output_in_sam",
    "multimask_min_pt_num", "multimask_max_pt_num", "multimask_output_for_tracking",
    "use_multimask_token_for_obj_ptr", "iou_prediction_use_sigmoid",
    "memory_temporal_stride_for_eval", "non_overlap_masks_for_mem_enc",
    "use_obj_ptrs_in_encoder", "max_obj_ptrs_in_encoder", "add_tpos_enc_to_obj_ptrs",
    "proj_tpos_enc_in_obj_ptrs", "use_signed_tpos_enc_to_obj_ptrs",
    "only_obj_ptrs_in_the_past_for_eval", "pred_obj_scores", "pred_obj_scores_mlp",
    "fixed_no_obj_ptr", "soft_no_obj_ptr", "use_mlp_for_obj_ptr_proj", "no_obj_embed_spatial",
)
_DECODER_EXTRA_FIELDS = (
    "dynamic_multimask_via_stability",
    "dynamic_multimask_stability_delta",
    "dynamic_multimask_stability_thresh",
)

class SAM2Base(SAMHeads, nn.Module):
    """The SAM 2 model (official ``SAM2Base`` semantics, weights-compatible)."""

    def __init__(
        self,
        image_encoder: ImageEncoder,
        memory_attention: MemoryAttention,
        memory_encoder: MemoryEncoder,
        num_maskmem: int = 7,
        image_size: int = 512,
        backbone_stride: int = 16,
        sigmoid_scale_for_mem_enc: float = 1.0,
        sigmoid_bias_for_mem_enc: float = 0.0,
        binarize_mask_from_pts_for_mem_enc: bool = False,
        use_mask_input_as_output_without_sam: bool = False,
        max_cond_frames_in_attn: int = -1,
        directly_add_no_mem_embed: bool = False,
        use_high_res_features_in_sam: bool = False,
        multimask_output_in_sam: bool = False,
        multimask_min_pt_num: int = 1,
        multimask_max_pt_num: int = 1,
        multimask_output_for_tracking: bool = False,
        use_multimask_token_for_obj_ptr: bool = False,
        iou_prediction_use_sigmoid: bool = False,
        memory_temporal_stride_for_eval: int = 1,
        non_overlap_masks_for_mem_enc: bool = False,
        use_obj_ptrs_in_encoder: bool = False,
        max_obj_ptrs_in_encoder: int = 16,
        add_tpos_enc_to_obj_ptrs: bool = True,
        proj_tpos_enc_in_obj_ptrs: bool = False,
        use_signed_tpos_enc_to_obj_ptrs: bool = False,
        only_obj_ptrs_in_the_past_for_eval: bool = False,
        pred_obj_scores: bool = False,
        pred_obj_scores_mlp: bool = False,
        fixed_no_obj_ptr: bool = False,
        soft_no_obj_ptr: bool = False,
        use_mlp_for_obj_ptr_proj: bool = False,
        no_obj_embed_spatial: bool = False,
        sam_mask_decoder_extra_args: Optional[Dict[str, Any]] = None,
        compile_image_encoder: bool = False,
        config: Optional[SAM2Config] = None,
        spatial_perceiver: Optional[nn.Module] = None,
    ) -> None:
        super().__init__()
        self.config = config
        # image backbone
        self.image_encoder = image_encoder
        self.use_high_res_features_in_sam = use_high_res_features_in_sam
        self.num_feature_levels = 3 if use_high_res_features_in_sam else 1
        self.use_obj_ptrs_in_encoder = use_obj_ptrs_in_encoder
        self.max_obj_ptrs_in_encoder = max_obj_ptrs_in_encoder
        if use_obj_ptrs_in_encoder:
            # downsamples a mask prompt to stride 4 and to SAM logit scale (to make a pointer)
            self.mask_downsample = Conv2d(1, 1, kernel_size=4, stride=4)
        self.add_tpos_enc_to_obj_ptrs = add_tpos_enc_to_obj_ptrs
        if proj_tpos_enc_in_obj_ptrs and not add_tpos_enc_to_obj_ptrs:
            raise InvalidInputError("proj_tpos_enc_in_obj_ptrs requires add_tpos_enc_to_obj_ptrs")
        self.proj_tpos_enc_in_obj_ptrs = proj_tpos_enc_in_obj_ptrs
        self.use_signed_tpos_enc_to_obj_ptrs = use_signed_tpos_enc_to_obj_ptrs
        self.only_obj_ptrs_in_the_past_for_eval = only_obj_ptrs_in_the_past_for_eval

        # memory attention and memory encoder
        self.memory_attention = memory_attention
        self.hidden_dim = image_encoder.neck.d_model
        self.memory_encoder = memory_encoder
        # EdgeTAM: compresses each new memory to latents (modeling/edgetam.py); None for SAM 2
        self.spatial_perceiver = spatial_perceiver
        self.mem_dim = self.hidden_dim
        out_proj = getattr(memory_encoder, "out_proj", None)
        if out_proj is not None and hasattr(out_proj, "weight"):
            self.mem_dim = out_proj.weight.shape[0]  # memories are compressed channel-wise
        self.num_maskmem = num_maskmem
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(num_maskmem, 1, 1, self.mem_dim))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, self.hidden_dim))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, self.hidden_dim))
        self.directly_add_no_mem_embed = directly_add_no_mem_embed
        self.sigmoid_scale_for_mem_enc = sigmoid_scale_for_mem_enc
        self.sigmoid_bias_for_mem_enc = sigmoid_bias_for_mem_enc
        self.binarize_mask_from_pts_for_mem_enc = binarize_mask_from_pts_for_mem_enc
        self.non_overlap_masks_for_mem_enc = non_overlap_masks_for_mem_enc
        self.memory_temporal_stride_for_eval = memory_temporal_stride_for_eval
        self.use_mask_input_as_output_without_sam = use_mask_input_as_output_without_sam
        self.multimask_output_in_sam = multimask_output_in_sam
        self.multimask_min_pt_num = multimask_min_pt_num
        self.multimask_max_pt_num = multimask_max_pt_num
        self.multimask_output_for_tracking = multimask_output_for_tracking
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr
        self.iou_prediction_use_sigmoid = iou_prediction_use_sigmoid

        # SAM prompt encoder and mask decoder
        self.image_size = image_size
        self.backbone_stride = backbone_stride
        self.sam_mask_decoder_extra_args = sam_mask_decoder_extra_args
        self.pred_obj_scores = pred_obj_scores
        self.pred_obj_scores_mlp = pred_obj_scores_mlp
        self.fixed_no_obj_ptr = fixed_no_obj_ptr
        self.soft_no_obj_ptr = soft_no_obj_ptr
        if fixed_no_obj_ptr and not (pred_obj_scores and use_obj_ptrs_in_encoder):
            raise InvalidInputError("fixed_no_obj_ptr requires pred_obj_scores and use_obj_ptrs_in_encoder")
        if pred_obj_scores and use_obj_ptrs_in_encoder:
            self.no_obj_ptr = nn.Parameter(torch.zeros(1, self.hidden_dim))
        self.use_mlp_for_obj_ptr_proj = use_mlp_for_obj_ptr_proj
        self.no_obj_embed_spatial = None
        if no_obj_embed_spatial:
            self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, self.mem_dim))
        self._build_sam_heads()
        self.max_cond_frames_in_attn = max_cond_frames_in_attn
        self._init_embeddings()

        if compile_image_encoder:
            compile_setup.compile_image_encoder(self.image_encoder)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: SAM2Config) -> "SAM2Base":
        """Build the modules of ``config`` (random weights) on the current default device."""
        extra = {name: getattr(config, name) for name in _DECODER_EXTRA_FIELDS}
        return cls(
            image_encoder=build_image_encoder(config),
            memory_attention=build_memory_attention(config),
            memory_encoder=build_memory_encoder(config),
            spatial_perceiver=build_spatial_perceiver(config),
            sam_mask_decoder_extra_args=extra,
            config=config,
            **{name: getattr(config, name) for name in _BASE_FIELDS},
            **cls._extra_config_kwargs(config),
        )

    @classmethod
    def _extra_config_kwargs(cls, config: SAM2Config) -> Dict[str, Any]:
        """Constructor arguments a subclass takes from the config (none here)."""
        return {}

    def _init_embeddings(self) -> None:
        for p in (self.maskmem_tpos_enc, self.no_mem_embed, self.no_mem_pos_enc):
            if p.device.type != "meta":
                trunc_normal_(p, std=0.02)
        for name in ("no_obj_ptr", "no_obj_embed_spatial"):
            p = getattr(self, name, None)
            if isinstance(p, nn.Parameter) and p.device.type != "meta":
                trunc_normal_(p, std=0.02)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # None: exact float32, as the official package; see sam2_fast.precision
    compute_dtype: Optional[torch.dtype] = None

    def set_compute_dtype(self, compute_dtype: ComputeDtype) -> Optional[torch.dtype]:
        """Choose the compute precision: None / ``"float32"`` (exact, the default),
        ``"bfloat16"`` / ``"float16"`` (autocast), or ``"auto"`` (16 bit where this device
        runs it faster; :mod:`sam2_fast.precision`). Returns the dtype in use (None = exact)."""
        from sam2_fast.precision import resolve_compute_dtype

        self.compute_dtype = resolve_compute_dtype(compute_dtype, self.device)
        return self.compute_dtype

    #: the backend-choice mode of this model's predictors: None follows ``SAM2_FAST_TUNE``,
    #: else True / False / "remeasure" (``build_sam2(..., tune=...)``; sam2_fast.ops._tuning)
    tune: Union[None, bool, str] = None

    def compute_context(self):
        """The autocast context of :attr:`compute_dtype` (a no-op in exact float32), inside
        the tuning mode of :attr:`tune` when it is set."""
        from sam2_fast.precision import autocast_context

        autocast = autocast_context(self.compute_dtype, self.device)
        if self.tune is None:
            return autocast
        from sam2_fast.ops import tuning

        stack = contextlib.ExitStack()
        stack.enter_context(tuning(self.tune))
        stack.enter_context(autocast)
        return stack

    #: what :meth:`compile_components` compiles. Each is compiled with ``dynamic=None``:
    #: static shapes first, then the dimensions that changed (the number of objects, the
    #: memory's length as it grows frame by frame) dynamic; the token grid stays static
    COMPILED_COMPONENTS = (
        "image_encoder", "sam_prompt_encoder", "sam_mask_decoder", "memory_encoder", "memory_attention",
    )

    def compile_components(self, mode: Optional[str] = None) -> List[str]:
        """``torch.compile`` the forward of the image encoder, prompt encoder, mask decoder,
        memory encoder and memory attention: the components the official ``vos_optimized=True``
        video predictor compiles (``build_sam2_video_predictor(..., vos_optimized=True)`` calls
        this). The first calls compile (minutes on a GPU with autotuning); later calls run
        Inductor's fused kernels, with this project's kernels (window / RoPE attention, mask
        post-processing) inside as custom ops.

        ``mode``: a ``torch.compile`` mode (``"default"``, ``"reduce-overhead"``,
        ``"max-autotune"``, ``"max-autotune-no-cudagraphs"``, ...); by default
        ``"max-autotune-no-cudagraphs"`` on CUDA and ``"default"`` elsewhere. The two modes
        with CUDA graphs (the official VOS predictor uses ``"max-autotune"``) replay each
        component from a recorded graph, which writes its outputs into the same memory every
        time; the predictors keep outputs across frames (memories, object pointers), so in
        those modes each component's outputs are cloned as they come out, as the official
        predictor does. Already compiled components are left as they are. Returns the names
        compiled now. On a CPU the generated code is not vectorised
        (:func:`sam2_fast.modeling.compile.compile_components` says why).
        """
        components = {name: getattr(self, name) for name in self.COMPILED_COMPONENTS}
        return compile_setup.compile_components(components, self.device, mode)

    def forward(self, *args, **kwargs):
        raise RuntimeError(
            "SAM2Base has no forward(); use SAM2ImagePredictor or SAM2VideoPredictor "
            "(or forward_image / track_step directly)"
        )

    # ------------------------------------------------------------------ image features
    def forward_image(self, img_batch: torch.Tensor) -> Dict[str, Any]:
        """Backbone features of ``img_batch [B, 3, S, S]`` (normalised, ``S = image_size``).

        The two high-resolution levels are projected by the decoder's ``conv_s0/conv_s1``
        here once, instead of on every click.
        """
        if not self.use_high_res_features_in_sam:
            return self.image_encoder(img_batch)
        # the neck projects them (the op neck_projection: on a CPU in the bfloat16 mode the
        # neck's lateral and the projection of a level are one product)
        decoder = self.sam_mask_decoder
        return self.image_encoder(img_batch, projections={0: decoder.conv_s0, 1: decoder.conv_s1})

    def _prepare_backbone_features(self, backbone_out: Dict[str, Any]):
        """Flatten the used levels to sequence-first ``[HW, B, C]``.

        Returns ``(backbone_out, vision_feats, vision_pos_embeds, feat_sizes)``.
        """
        backbone_out = backbone_out.copy()
        feature_maps = backbone_out["backbone_fpn"][-self.num_feature_levels :]
        vision_pos_embeds = backbone_out["vision_pos_enc"][-self.num_feature_levels :]
        feat_sizes = [(x.shape[-2], x.shape[-1]) for x in vision_pos_embeds]
        vision_feats = [x.flatten(2).permute(2, 0, 1) for x in feature_maps]
        vision_pos_embeds = [x.flatten(2).permute(2, 0, 1) for x in vision_pos_embeds]
        return backbone_out, vision_feats, vision_pos_embeds, feat_sizes

    # ------------------------------------------------------------------ memory
    def select_memories(
        self,
        frame_idx: int,
        output_dict: Dict[str, Dict[int, Any]],
        num_frames: int,
        track_in_reverse: bool = False,
    ) -> MemoryPlan:
        """Which stored frame outputs (of one object, or one batch) the memory attention
        reads on a non-conditioning frame ``frame_idx``, by the official selection rules
        (:func:`sam2_fast.modeling.memory_plan.select_memories`) with this model's settings."""
        return memory_plan.select_memories(
            frame_idx,
            output_dict,
            num_frames,
            num_maskmem=self.num_maskmem,
            max_cond_frames_in_attn=self.max_cond_frames_in_attn,
            memory_temporal_stride=1 if self.training else self.memory_temporal_stride_for_eval,
            use_obj_ptrs_in_encoder=self.use_obj_ptrs_in_encoder,
            max_obj_ptrs_in_encoder=self.max_obj_ptrs_in_encoder,
            only_obj_ptrs_in_the_past=not self.training and self.only_obj_ptrs_in_the_past_for_eval,
            use_signed_tpos_enc_to_obj_ptrs=self.use_signed_tpos_enc_to_obj_ptrs,
            track_in_reverse=track_in_reverse,
        )

    def assemble_memory(
        self, plans: Sequence[MemoryPlan], device: torch.device
    ) -> Tuple[torch.Tensor, torch.Tensor, int]:
        """Stack the memories of ``plans`` (same :attr:`MemoryPlan.signature`) into
        sequence-first ``memory [M, B, C_mem]``, ``memory_pos [M, B, C_mem]`` and the number
        of trailing object-pointer tokens (:func:`sam2_fast.modeling.memory_plan.assemble_memory`)."""
        return memory_plan.assemble_memory(
            plans,
            device,
            maskmem_tpos_enc=self.maskmem_tpos_enc,
            add_tpos_enc_to_obj_ptrs=self.add_tpos_enc_to_obj_ptrs,
            proj_tpos_enc_in_obj_ptrs=self.proj_tpos_enc_in_obj_ptrs,
            obj_ptr_tpos_proj=self.obj_ptr_tpos_proj,
        )

    def _prepare_memory_conditioned_features(
        self,
        frame_idx: int,
        is_init_cond_frame: bool,
        current_vision_feats: List[torch.Tensor],
        current_vision_pos_embeds: List[torch.Tensor],
        feat_sizes: List[Tuple[int, int]],
        output_dict: Dict[str, Dict[int, Any]],
        num_frames: int,
        track_in_reverse: bool = False,
    ) -> torch.Tensor:
        """Fuse the current frame's top-level features with the memory bank -> ``[B, C, h, w]``."""
        b = current_vision_feats[-1].size(1)
        c = self.hidden_dim
        h, w = feat_sizes[-1]
        device = current_vision_feats[-1].device
        if self.num_maskmem == 0:  # SAM on images: no memory
            return current_vision_feats[-1].permute(1, 2, 0).view(b, c, h, w)

        if not is_init_cond_frame:
            plan = self.select_memories(frame_idx, output_dict, num_frames, track_in_reverse)
            memory, memory_pos_embed, num_obj_ptr_tokens = self.assemble_memory([plan], device)
        elif self.directly_add_no_mem_embed:
            pix_feat_with_mem = current_vision_feats[-1] + self.no_mem_embed
            return pix_feat_with_mem.permute(1, 2, 0).view(b, c, h, w)
        else:
            # a dummy token on the first frame (the transformer needs a non-empty memory)
            memory = self.no_mem_embed.expand(1, b, self.mem_dim)
            memory_pos_embed = self.no_mem_pos_enc.expand(1, b, self.mem_dim)
            num_obj_ptr_tokens = 0

        pix_feat_with_mem = self.memory_attention(
            curr=current_vision_feats,
            curr_pos=current_vision_pos_embeds,
            memory=memory,
            memory_pos=memory_pos_embed,
            num_obj_ptr_tokens=num_obj_ptr_tokens,
        )
        return pix_feat_with_mem.permute(1, 2, 0).view(b, c, h, w)

    def _encode_new_memory(
        self,
        current_vision_feats: List[torch.Tensor],
        feat_sizes: List[Tuple[int, int]],
        pred_masks_high_res: torch.Tensor,
        object_score_logits: torch.Tensor,
        is_mask_from_pts: bool,
        across_batch_constraints: bool = True,
    ):
        """Encode the current frame and its predicted mask into ``(maskmem_features
        [B, mem_dim, h, w], maskmem_pos_enc [list of one [B, mem_dim, h, w]])`` (with a spatial
        perceiver, EdgeTAM: its latents, ``[B, mem_dim, 1, T]``).

        ``non_overlap_masks_for_mem_enc`` compares the masks across the batch; pass
        ``across_batch_constraints=False`` when the batch holds independently tracked objects
        (the official video predictor encodes each object alone, where it has no effect).
        """
        b = current_vision_feats[-1].size(1)
        c = self.hidden_dim
        h, w = feat_sizes[-1]
        pix_feat = current_vision_feats[-1].permute(1, 2, 0).view(b, c, h, w)
        if self.non_overlap_masks_for_mem_enc and not self.training and across_batch_constraints:
            pred_masks_high_res = self._apply_non_overlapping_constraints(pred_masks_high_res)
        binarize = self.binarize_mask_from_pts_for_mem_enc and is_mask_from_pts
        if binarize and not self.training:
            mask_for_mem = (pred_masks_high_res > 0).float()
        else:
            mask_for_mem = torch.sigmoid(pred_masks_high_res)
        if self.sigmoid_scale_for_mem_enc != 1.0:
            mask_for_mem = mask_for_mem * self.sigmoid_scale_for_mem_enc
        if self.sigmoid_bias_for_mem_enc != 0.0:
            mask_for_mem = mask_for_mem + self.sigmoid_bias_for_mem_enc
        maskmem_out = self.memory_encoder(pix_feat, mask_for_mem, skip_mask_sigmoid=True)
        maskmem_features = maskmem_out["vision_features"]
        maskmem_pos_enc = maskmem_out["vision_pos_enc"]
        if self.no_obj_embed_spatial is not None:
            # mark memories of frames where the object is predicted absent
            is_obj_appearing = (object_score_logits > 0).float()
            maskmem_features = maskmem_features + (
                1 - is_obj_appearing[..., None, None]
            ) * self.no_obj_embed_spatial[..., None, None]
        if self.spatial_perceiver is not None:
            maskmem_features, latent_pos = self.spatial_perceiver(maskmem_features, maskmem_pos_enc[0])
            maskmem_pos_enc = [latent_pos]
        return maskmem_features, maskmem_pos_enc

    def _track_step(
        self,
        frame_idx,
        is_init_cond_frame,
        current_vision_feats,
        current_vision_pos_embeds,
        feat_sizes,
        point_inputs,
        mask_inputs,
        output_dict,
        num_frames,
        track_in_reverse,
        prev_sam_mask_logits,
    ):
        current_out = {"point_inputs": point_inputs, "mask_inputs": mask_inputs}
        if len(current_vision_feats) > 1:
            high_res_features = [
                x.permute(1, 2, 0).view(x.size(1), x.size(2), *s)
                for x, s in zip(current_vision_feats[:-1], feat_sizes[:-1])
            ]
        else:
            high_res_features = None
        if mask_inputs is not None and self.use_mask_input_as_output_without_sam:
            pix_feat = current_vision_feats[-1].permute(1, 2, 0)
            pix_feat = pix_feat.view(-1, self.hidden_dim, *feat_sizes[-1])
            sam_outputs = self._use_mask_as_output(pix_feat, high_res_features, mask_inputs)
        else:
            pix_feat = self._prepare_memory_conditioned_features(
                frame_idx=frame_idx,
                is_init_cond_frame=is_init_cond_frame,
                current_vision_feats=current_vision_feats[-1:],
                current_vision_pos_embeds=current_vision_pos_embeds[-1:],
                feat_sizes=feat_sizes[-1:],
                output_dict=output_dict,
                num_frames=num_frames,
                track_in_reverse=track_in_reverse,
            )
            if prev_sam_mask_logits is not None:
                if point_inputs is None or mask_inputs is not None:
                    raise InvalidInputError("prev_sam_mask_logits needs point_inputs and no mask_inputs")
                mask_inputs = prev_sam_mask_logits
            multimask_output = self._use_multimask(is_init_cond_frame, point_inputs)
            sam_outputs = self._forward_sam_heads(
                backbone_features=pix_feat,
                point_inputs=point_inputs,
                mask_inputs=mask_inputs,
                high_res_features=high_res_features,
                multimask_output=multimask_output,
            )
        return current_out, sam_outputs, high_res_features, pix_feat

    def _encode_memory_in_output(
        self,
        current_vision_feats,
        feat_sizes,
        point_inputs,
        run_mem_encoder,
        high_res_masks,
        object_score_logits,
        current_out,
    ) -> None:
        if run_mem_encoder and self.num_maskmem > 0:
            maskmem_features, maskmem_pos_enc = self._encode_new_memory(
                current_vision_feats=current_vision_feats,
                feat_sizes=feat_sizes,
                pred_masks_high_res=high_res_masks,
                object_score_logits=object_score_logits,
                is_mask_from_pts=point_inputs is not None,
            )
            current_out["maskmem_features"] = maskmem_features
            current_out["maskmem_pos_enc"] = maskmem_pos_enc
        else:
            current_out["maskmem_features"] = None
            current_out["maskmem_pos_enc"] = None

    def track_step(
        self,
        frame_idx,
        is_init_cond_frame,
        current_vision_feats,
        current_vision_pos_embeds,
        feat_sizes,
        point_inputs,
        mask_inputs,
        output_dict,
        num_frames,
        track_in_reverse=False,
        run_mem_encoder=True,
        prev_sam_mask_logits=None,
    ) -> Dict[str, Any]:
        """One tracking step on one frame (all objects of the batch): predict masks from the
        prompts and the memory bank, then (optionally) encode the new memory."""
        current_out, sam_outputs, _, _ = self._track_step(
            frame_idx, is_init_cond_frame, current_vision_feats, current_vision_pos_embeds, feat_sizes,
            point_inputs, mask_inputs, output_dict, num_frames, track_in_reverse, prev_sam_mask_logits,
        )
        _, _, _, low_res_masks, high_res_masks, obj_ptr, object_score_logits = sam_outputs
        current_out["pred_masks"] = low_res_masks
        current_out["pred_masks_high_res"] = high_res_masks
        current_out["obj_ptr"] = obj_ptr
        if not self.training:
            current_out["object_score_logits"] = object_score_logits
        self._encode_memory_in_output(
            current_vision_feats, feat_sizes, point_inputs, run_mem_encoder, high_res_masks,
            object_score_logits, current_out,
        )
        return current_out

    def _apply_non_overlapping_constraints(self, pred_masks: torch.Tensor) -> torch.Tensor:
        """Keep only the highest-scoring object at each pixel (others clamped to <= -10)."""
        batch_size = pred_masks.size(0)
        if batch_size == 1:
            return pred_masks
        max_obj_inds = torch.argmax(pred_masks, dim=0, keepdim=True)
        batch_obj_inds = torch.arange(batch_size, device=pred_masks.device)[:, None, None, None]
        keep = max_obj_inds == batch_obj_inds
        return torch.where(keep, pred_masks, torch.clamp(pred_masks, max=-10.0))
