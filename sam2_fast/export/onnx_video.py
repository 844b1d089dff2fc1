"""The video parts of the ONNX export: the memory attention and the memory encoder as graphs
with a dynamic number of memory frames ``T`` and object pointers ``P``, one object per call.

``memory_attention.onnx``
  ``image_embed [1, C, h, w]`` (as ``image_encoder.onnx`` writes it), ``memory [T, C_mem, h, w]``
  (``maskmem_features`` of ``T`` earlier frames, in the official order: conditioning frames,
  then the recent frames, oldest first), ``memory_tpos [T]`` int64 (each memory's temporal
  slot ``t_pos``: 0 for a conditioning frame, ``num_maskmem - k`` for the frame ``k`` frames
  away), ``obj_ptrs [P, C]`` (object pointers of earlier frames), ``obj_ptr_tpos [P]`` float32
  (each pointer's temporal distance divided by ``min(num_frames, max_obj_ptrs) - 1``)
  -> ``pix_feat_with_mem [1, C, h, w]``, the ``image_embed`` of ``prompt_decoder.onnx`` on a
  tracked frame.

``memory_encoder.onnx``
  ``image_embed [1, C, h, w]``, ``mask_logits [1, 1, S/4, S/4]`` (the frame's low-res mask,
  ``NO_OBJ_SCORE`` where the object is absent), ``object_score_logits [1, 1]``,
  ``is_mask_from_pts [1]`` (1 on a prompted frame: the mask is binarised, 0 on a tracked frame:
  its sigmoid) -> ``maskmem_features [1, C_mem, h, w]``.

The graphs add what the official ``_prepare_memory_conditioned_features`` adds from weights:
the spatial sine encoding and ``maskmem_tpos_enc[num_maskmem - 1 - t_pos]`` of each memory,
the 1D sine encoding of each pointer's distance through ``obj_ptr_tpos_proj``, each pointer
split into ``C / C_mem`` tokens, the current frame's position encoding; they subtract the
``no_mem_embed`` that ``image_encoder.onnx`` adds. RoPE rotates channel pairs in real
arithmetic; the keys of the ``T`` memories are rotated as ``T`` copies of the query grid, the
pointer tokens are not (the official ``num_k_exclude_rope``, here the second input's length).
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from sam2_fast.modeling.position_encoding import get_1d_sine_pe


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of ``x [..., N, D]`` by ``cos/sin [N, D/2]``
    (:func:`sam2_fast.ops.rope.apply_rope` as plain elementwise ops, no in-place writes)."""
    pairs = x.unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


def _pix_feat(model: nn.Module, image_embed: torch.Tensor) -> torch.Tensor:
    """The raw top-level features of a frame from ``image_encoder.onnx``'s ``image_embed``."""
    if model.directly_add_no_mem_embed:
        return image_embed - model.no_mem_embed.reshape(1, -1, 1, 1)
    return image_embed


class MemoryAttentionGraph(nn.Module):
    """One object's memory attention on one frame (the module docstring has the inputs),
    as :meth:`SAM2Base._prepare_memory_conditioned_features` on a tracked frame."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def _attention(self, attn: nn.Module, q: torch.Tensor, k_rope: torch.Tensor, k_plain: torch.Tensor,
                   v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """``attn`` (a RoPEAttention) on batch-first ``q [1, Nq, C]``, keys ``k_rope`` (copies of
        the query grid, rotated) and ``k_plain`` (not rotated), values ``v`` (keys' order)."""
        nq = q.shape[1]
        heads, head_dim = attn.num_heads, attn.internal_dim // attn.num_heads

        def separate_heads(x: torch.Tensor) -> torch.Tensor:
            # the token count as -1 and the widths as numbers: onnxruntime reshapes 0 pointers
            return x.reshape(1, -1, heads, head_dim).transpose(1, 2)

        q = _rotate(separate_heads(attn.q_proj(q)), cos, sin)
        k = separate_heads(attn.k_proj(k_rope))
        k = _rotate(k.reshape(1, heads, -1, nq, head_dim), cos, sin).reshape(1, heads, -1, head_dim)
        if k_plain is not None:
            k = torch.cat([k, separate_heads(attn.k_proj(k_plain))], dim=2)
        out = F.scaled_dot_product_attention(q, k, separate_heads(attn.v_proj(v)))
        return attn.out_proj(out.transpose(1, 2).reshape(1, -1, heads * head_dim))

    def forward(
        self,
        image_embed: torch.Tensor,
        memory: torch.Tensor,
        memory_tpos: torch.Tensor,
        obj_ptrs: torch.Tensor,
        obj_ptr_tpos: torch.Tensor,
    ) -> torch.Tensor:
        model = self.model
        stack = model.memory_attention
        _, c, h, w = image_embed.shape
        mem_dim = model.mem_dim
        num_maskmem = model.num_maskmem
        curr = _pix_feat(model, image_embed).flatten(2).transpose(1, 2)  # [1, hw, C]
        curr_pos = model.image_encoder.neck.position_encoding.encoding(h, w, image_embed.device)
        curr_pos = curr_pos.flatten(1).t().unsqueeze(0)
        # spatial memories: [1, T * hw, C_mem], frame-major as assemble_memory stacks them
        mem = memory.flatten(2).transpose(1, 2).reshape(1, -1, mem_dim)
        spatial_pos = model.memory_encoder.position_encoding.encoding(h, w, image_embed.device)
        tpos = model.maskmem_tpos_enc.reshape(num_maskmem, mem_dim)[num_maskmem - 1 - memory_tpos]
        mem_pos = (spatial_pos.flatten(1).t().unsqueeze(0) + tpos.unsqueeze(1)).reshape(1, -1, mem_dim)
        # object pointers: [1, P * C / C_mem, C_mem], each split into C / C_mem tokens
        split = c // mem_dim
        ptr = obj_ptrs.reshape(1, -1, mem_dim)
        if model.add_tpos_enc_to_obj_ptrs:
            tpos_dim = c if model.proj_tpos_enc_in_obj_ptrs else mem_dim
            ptr_pos = model.obj_ptr_tpos_proj(get_1d_sine_pe(obj_ptr_tpos, dim=tpos_dim))
        else:
            ptr_pos = obj_ptrs.new_zeros(obj_ptrs.shape[0], mem_dim)
        ptr_pos = ptr_pos.unsqueeze(1).expand(-1, split, -1).reshape(1, -1, mem_dim)

        output = curr
        if stack.pos_enc_at_input:
            output = output + 0.1 * curr_pos
        for layer in stack.layers:
            cos, sin = layer.self_attn.rope_tables(h * w, image_embed.device)
            tgt2 = layer.norm1(output)
            q = tgt2 + curr_pos if layer.pos_enc_at_attn else tgt2
            output = output + self._attention(layer.self_attn, q, q, None, tgt2, cos, sin)
            tgt2 = layer.norm2(output)
            q = tgt2 + curr_pos if layer.pos_enc_at_cross_attn_queries else tgt2
            keys = layer.pos_enc_at_cross_attn_keys
            k_mem, k_ptr = (mem + mem_pos, ptr + ptr_pos) if keys else (mem, ptr)
            cos, sin = layer.cross_attn_image.rope_tables(h * w, image_embed.device)
            output = output + self._attention(
                layer.cross_attn_image, q, k_mem, k_ptr, torch.cat([mem, ptr], dim=1), cos, sin
            )
            output = output + layer.linear2(layer.activation(layer.linear1(layer.norm3(output))))
        output = stack.norm(output)
        return output.transpose(1, 2).reshape(1, c, h, w)


class MemoryEncoderGraph(nn.Module):
    """One object's new memory on one frame (the module docstring has the inputs), as
    :meth:`SAM2Base._encode_new_memory` with the low-res mask upsampled to the input size."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        image_embed: torch.Tensor,
        mask_logits: torch.Tensor,
        object_score_logits: torch.Tensor,
        is_mask_from_pts: torch.Tensor,
    ) -> torch.Tensor:
        model = self.model
        s = int(model.image_size)
        high_res = F.interpolate(mask_logits, size=(s, s), mode="bilinear", align_corners=False)
        # is_mask_from_pts is 0 or 1: exactly one of the two terms survives
        binarize = is_mask_from_pts.reshape(-1, 1, 1, 1)
        mask = binarize * (high_res > 0).float() + (1 - binarize) * torch.sigmoid(high_res)
        mask = mask * model.sigmoid_scale_for_mem_enc + model.sigmoid_bias_for_mem_enc
        features = model.memory_encoder.fuse(_pix_feat(model, image_embed), mask)
        if model.no_obj_embed_spatial is not None:
            is_obj_appearing = (object_score_logits > 0).float()
            features = features + (1 - is_obj_appearing[..., None, None]) * model.no_obj_embed_spatial[..., None, None]
        return features


def video_example_inputs(model: nn.Module, device: torch.device) -> Tuple[tuple, tuple]:
    """Tracing inputs of the two graphs: 2 memories, 3 pointers; a mask of a prompted frame."""
    s = int(model.image_size)
    c, e = model.hidden_dim, s // model.backbone_stride
    image_embed = torch.zeros(1, c, e, e, device=device)
    attention = (
        image_embed,
        torch.zeros(2, model.mem_dim, e, e, device=device),
        torch.tensor([0, model.num_maskmem - 1], device=device),
        torch.zeros(3, c, device=device),
        torch.tensor([0.0, 0.1, 0.2], device=device),
    )
    encoder = (
        image_embed,
        torch.zeros(1, 1, s // 4, s // 4, device=device),
        torch.ones(1, 1, device=device),
        torch.ones(1, device=device),
    )
    return attention, encoder
