"""SAM 2 mask decoder: two-way transformer + upscaler + hypernetwork mask heads."""

from __future__ import annotations

from typing import List, Optional, Tuple, Type

import torch
from torch import nn

from sam2_fast.errors import InvalidInputError
from sam2_fast.modeling.common import Conv2d, ConvTranspose2d, LayerNorm2d, Linear, MLP, is_channels_last
from sam2_fast.modeling.shared_image_decoder import (
    SharedImage,
    predict_masks_shared_image,
    prepare_shared_image,
    score_heads,
)
from sam2_fast.modeling.transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """Predicts mask logits (at 4x the embedding resolution), IoU scores, output tokens and
    object-presence logits from image and prompt embeddings."""

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        activation: Type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        use_high_res_features: bool = False,
        iou_prediction_use_sigmoid: bool = False,
        dynamic_multimask_via_stability: bool = False,
        dynamic_multimask_stability_delta: float = 0.05,
        dynamic_multimask_stability_thresh: float = 0.98,
        pred_obj_scores: bool = False,
        pred_obj_scores_mlp: bool = False,
        use_multimask_token_for_obj_ptr: bool = False,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.pred_obj_scores = pred_obj_scores
        if pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, transformer_dim)
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr

        self.output_upscaling = nn.Sequential(
            ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            self.conv_s0 = Conv2d(transformer_dim, transformer_dim // 8, kernel_size=1)
            self.conv_s1 = Conv2d(transformer_dim, transformer_dim // 4, kernel_size=1)

        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim,
            iou_head_hidden_dim,
            self.num_mask_tokens,
            iou_head_depth,
            sigmoid_output=iou_prediction_use_sigmoid,
        )
        if pred_obj_scores:
            self.pred_obj_score_head = (
                MLP(transformer_dim, transformer_dim, 1, 3)
                if pred_obj_scores_mlp
                else Linear(transformer_dim, 1)
            )
        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.dynamic_multimask_stability_delta = dynamic_multimask_stability_delta
        self.dynamic_multimask_stability_thresh = dynamic_multimask_stability_thresh

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        repeat_image: bool,
        high_res_features: Optional[List[torch.Tensor]] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``masks [B, M, 4h, 4w]``, ``iou_pred [B, M]``, ``sam_tokens_out [B, M', C]``
        and ``object_score_logits [B, 1]`` (M = 3 with ``multimask_output`` else 1)."""
        masks, iou_pred, mask_tokens_out, object_score_logits = self.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse_prompt_embeddings,
            dense_prompt_embeddings=dense_prompt_embeddings,
            repeat_image=repeat_image,
            high_res_features=high_res_features,
        )
        return self._select_outputs(masks, iou_pred, mask_tokens_out, object_score_logits, multimask_output)

    def prepare_shared_image(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        high_res_features: Optional[List[torch.Tensor]] = None,
    ) -> SharedImage:
        """The share of one image (``[1, C, h, w]`` inputs, one dense prompt embedding for all
        prompts) that :meth:`forward_shared_image` reuses for every batch of prompts.

        Always float32, also under autocast: the term algebra subtracts LayerNorm means and
        adds low-rank corrections, which 16-bit rounding would not survive."""
        if self.use_high_res_features and high_res_features is None:
            raise InvalidInputError("high_res_features: this decoder uses high-res features; got None")
        high_res = high_res_features if self.use_high_res_features else None
        with torch.autocast(image_embeddings.device.type, enabled=False):
            return prepare_shared_image(
                image_embeddings.float(), image_pe.float(), dense_prompt_embeddings.float(),
                None if high_res is None else [x.float() for x in high_res],
            )

    def forward_shared_image(
        self,
        shared: SharedImage,
        sparse_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        skip_masks_at_or_below: Optional[float] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`forward` with ``repeat_image=True`` for ``n`` prompts ``[n, T, C]`` on one
        image without a mask prompt, computing the image's share once
        (:mod:`sam2_fast.modeling.shared_image_decoder`); same outputs up to float rounding.

        ``skip_masks_at_or_below``: a prompt all of whose returned IoU predictions are at or
        below it gets NaN masks instead of computed ones (the automatic mask generator drops
        them by ``pred_iou_thresh`` anyway, and the upscaling is half of the work). Ignored
        when the choice of the returned mask needs the logits (dynamic multimask output).
        """
        needed = None
        dynamic = not multimask_output and self.dynamic_multimask_via_stability and not self.training
        if skip_masks_at_or_below is not None and not dynamic:
            threshold = float(skip_masks_at_or_below)
            returned = slice(1, None) if multimask_output else slice(0, 1)
            needed = lambda iou_pred: (iou_pred[:, returned] > threshold).any(dim=1)  # noqa: E731
        with torch.autocast(sparse_prompt_embeddings.device.type, enabled=False):  # float32, see above
            masks, iou_pred, mask_tokens_out, object_score_logits = predict_masks_shared_image(
                self, shared, sparse_prompt_embeddings.float(), needed
            )
        return self._select_outputs(masks, iou_pred, mask_tokens_out, object_score_logits, multimask_output)

    def _select_outputs(
        self,
        masks: torch.Tensor,
        iou_pred: torch.Tensor,
        mask_tokens_out: torch.Tensor,
        object_score_logits: torch.Tensor,
        multimask_output: bool,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if multimask_output:
            masks, iou_pred = masks[:, 1:], iou_pred[:, 1:]
        elif self.dynamic_multimask_via_stability and not self.training:
            masks, iou_pred = self._dynamic_multimask_via_stability(masks, iou_pred)
        else:
            masks, iou_pred = masks[:, 0:1], iou_pred[:, 0:1]

        if multimask_output and self.use_multimask_token_for_obj_ptr:
            sam_tokens_out = mask_tokens_out[:, 1:]
        else:
            # the single-mask token is the object-memory token (as in training)
            sam_tokens_out = mask_tokens_out[:, 0:1]
        return masks, iou_pred, sam_tokens_out, object_score_logits

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        repeat_image: bool,
        high_res_features: Optional[List[torch.Tensor]] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """All ``num_mask_tokens`` masks and IoU scores, mask tokens and object-score logits."""
        weights = [self.iou_token.weight, self.mask_tokens.weight]
        s = 0
        if self.pred_obj_scores:
            weights.insert(0, self.obj_score_token.weight)
            s = 1
        output_tokens = torch.cat(weights, dim=0)
        n = sparse_prompt_embeddings.shape[0]
        output_tokens = output_tokens.unsqueeze(0).expand(n, -1, -1)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)

        if repeat_image:
            if image_embeddings.shape[0] != 1:
                src = torch.repeat_interleave(image_embeddings, n, dim=0)
            else:
                src = image_embeddings.expand(n, -1, -1, -1)
        else:
            if image_embeddings.shape[0] != n:
                raise InvalidInputError(
                    f"image_embeddings batch {image_embeddings.shape[0]} != prompt batch {n}"
                )
            src = image_embeddings
        src = src + dense_prompt_embeddings
        if image_pe.shape[0] != 1:
            raise InvalidInputError("image_pe must have batch size 1 (from get_dense_pe())")
        pos_src = image_pe.expand(n, -1, -1, -1)
        b, c, h, w = src.shape

        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, s, :]
        mask_tokens_out = hs[:, s + 1 : s + 1 + self.num_mask_tokens, :]

        src = src.transpose(1, 2).reshape(b, c, h, w)
        if not self.use_high_res_features:
            upscaled = self.output_upscaling(src)
        else:
            dc1, ln1, act1, dc2, act2 = self.output_upscaling
            feat_s0, feat_s1 = high_res_features
            upscaled = act1(ln1(dc1(src) + feat_s1))
            upscaled = act2(dc2(upscaled) + feat_s0)

        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )
        masks = hypernetwork_masks(hyper_in, upscaled)

        iou_pred, object_score_logits = score_heads(self, iou_token_out, hs[:, 0, :])
        return masks, iou_pred, mask_tokens_out, object_score_logits

    def _get_stability_scores(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """IoU between the masks thresholded at +delta and -delta, ``[B, M]``."""
        mask_logits = mask_logits.flatten(-2)
        delta = self.dynamic_multimask_stability_delta
        area_i = torch.sum(mask_logits > delta, dim=-1).float()
        area_u = torch.sum(mask_logits > -delta, dim=-1).float()
        return torch.where(area_u > 0, area_i / area_u, 1.0)

    def _dynamic_multimask_via_stability(
        self, all_mask_logits: torch.Tensor, all_iou_scores: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Single-mask output, falling back to the best multimask output (by predicted IoU)
        when the single mask's stability score is below the threshold."""
        multimask_logits = all_mask_logits[:, 1:]
        multimask_iou = all_iou_scores[:, 1:]
        best = torch.argmax(multimask_iou, dim=-1)
        rows = torch.arange(multimask_iou.size(0), device=all_iou_scores.device)
        best_logits = multimask_logits[rows, best].unsqueeze(1)
        best_iou = multimask_iou[rows, best].unsqueeze(1)

        single_logits = all_mask_logits[:, 0:1]
        single_iou = all_iou_scores[:, 0:1]
        is_stable = self._get_stability_scores(single_logits) >= self.dynamic_multimask_stability_thresh
        mask_out = torch.where(is_stable[..., None, None], single_logits, best_logits)
        iou_out = torch.where(is_stable, single_iou, best_iou)
        return mask_out, iou_out


def hypernetwork_masks(hyper_in: torch.Tensor, upscaled: torch.Tensor) -> torch.Tensor:
    """``hyper_in [B, M, C] @ upscaled [B, C, H, W]`` -> masks ``[B, M, H, W]`` (contiguous).

    A channels-last ``upscaled`` (the tiled transposed convolution keeps its input's layout) is
    read as the left operand, ``[B, HW, C] @ [B, C, M]``: its rows are contiguous, where the
    ``[C, HW]`` view the other order needs is a transposed one the GEMM copies first (2.1 against
    0.3 ms for one 256x256 mask set on the 2-core AMX Xeon). The dot products are the same."""
    b, c, h, w = upscaled.shape
    if is_channels_last(upscaled):
        rows = upscaled.permute(0, 2, 3, 1).reshape(b, h * w, c)
        return (rows @ hyper_in.transpose(1, 2)).transpose(1, 2).reshape(b, -1, h, w).contiguous()
    return (hyper_in @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)
