"""Which memories a tracked frame attends to, and their assembly into the memory attention's input.

Pure functions of the stored frame outputs and the model's configuration numbers (no module,
no ``self``), with the selection rules of the official
``SAM2Base._prepare_memory_conditioned_features``: :func:`select_memories` picks the
conditioning frames, the recent frames and the object pointers of one frame as a
:class:`MemoryPlan`; :func:`assemble_memory` stacks the plans of objects with the same memory
layout into the sequence-first tensors the memory attention reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch

from sam2_fast.errors import InvalidInputError, InvalidStateError
from sam2_fast.modeling.common import host_tensor_to
from sam2_fast.modeling.position_encoding import get_1d_sine_pe


@dataclass
class MemoryPlan:
    """The memories one object (or one batch) attends to on a frame.

    ``spatial``: ``(t_pos, frame_output)`` pairs, in attention order (t_pos 0 =
    conditioning frame); ``pointers``: ``(temporal distance, frame_output)`` pairs;
    ``max_obj_ptrs``: the pointer window that normalises the distances.
    """

    spatial: List[Tuple[int, Dict[str, Any]]]
    pointers: List[Tuple[int, Dict[str, Any]]]
    max_obj_ptrs: int

    @property
    def signature(self) -> Tuple[Tuple[int, ...], Tuple[int, ...], int]:
        """Plans with equal signatures have equal memory lengths and position encodings,
        so their objects can run through the memory attention as one batch."""
        return (
            tuple(t for t, _ in self.spatial),
            tuple(d for d, _ in self.pointers),
            self.max_obj_ptrs,
        )


def select_closest_cond_frames(
    frame_idx: int, cond_frame_outputs: Dict[int, Any], max_cond_frame_num: int
) -> Tuple[Dict[int, Any], Dict[int, Any]]:
    """Up to ``max_cond_frame_num`` conditioning frames closest in time to ``frame_idx``:
    the closest before, the closest at/after, then the nearest others. Returns
    (selected, unselected)."""
    if max_cond_frame_num == -1 or len(cond_frame_outputs) <= max_cond_frame_num:
        return cond_frame_outputs, {}
    if max_cond_frame_num < 2:
        raise InvalidInputError("max_cond_frames_in_attn must allow 2 or more conditioning frames")
    selected: Dict[int, Any] = {}
    idx_before = max((t for t in cond_frame_outputs if t < frame_idx), default=None)
    if idx_before is not None:
        selected[idx_before] = cond_frame_outputs[idx_before]
    idx_after = min((t for t in cond_frame_outputs if t >= frame_idx), default=None)
    if idx_after is not None:
        selected[idx_after] = cond_frame_outputs[idx_after]
    num_remain = max_cond_frame_num - len(selected)
    remaining = sorted(
        (t for t in cond_frame_outputs if t not in selected), key=lambda t: abs(t - frame_idx)
    )[:num_remain]
    selected.update((t, cond_frame_outputs[t]) for t in remaining)
    unselected = {t: v for t, v in cond_frame_outputs.items() if t not in selected}
    return selected, unselected


def recent_frame_idx(frame_idx: int, t_rel: int, stride: int, track_in_reverse: bool) -> int:
    """The frame whose memory sits ``t_rel`` memory slots before ``frame_idx`` (after it when
    tracking in reverse): the adjacent frame for ``t_rel == 1``, else every ``stride``-th frame
    counted from the nearest multiple of ``stride`` two or more frames away."""
    if t_rel == 1:
        return frame_idx + t_rel if track_in_reverse else frame_idx - t_rel
    if not track_in_reverse:
        return ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride
    return -(-(frame_idx + 2) // stride) * stride + (t_rel - 2) * stride


def select_memories(
    frame_idx: int,
    output_dict: Dict[str, Dict[int, Any]],
    num_frames: int,
    *,
    num_maskmem: int,
    max_cond_frames_in_attn: int,
    memory_temporal_stride: int,
    use_obj_ptrs_in_encoder: bool,
    max_obj_ptrs_in_encoder: int,
    only_obj_ptrs_in_the_past: bool,
    use_signed_tpos_enc_to_obj_ptrs: bool,
    track_in_reverse: bool = False,
) -> MemoryPlan:
    """Which stored frame outputs (of one object, or one batch) the memory attention reads on
    a non-conditioning frame ``frame_idx`` of a video of ``num_frames`` frames.

    ``output_dict``: ``{"cond_frame_outputs": {frame: out}, "non_cond_frame_outputs": {frame:
    out}}``. The plan holds the (up to ``max_cond_frames_in_attn``, -1 = all) conditioning
    frames closest in time at t_pos 0, then the ``num_maskmem - 1`` recent frames that are
    stored (every ``memory_temporal_stride``-th, see :func:`recent_frame_idx`) at t_pos 1 (the
    oldest) to ``num_maskmem - 1`` (the adjacent frame). With ``use_obj_ptrs_in_encoder``, the
    object pointers: the selected conditioning frames (only those not in the future with
    ``only_obj_ptrs_in_the_past``) at their distance to ``frame_idx`` (signed with
    ``use_signed_tpos_enc_to_obj_ptrs``, negated when tracking in reverse), then the stored
    frames 1 to ``min(num_frames, max_obj_ptrs_in_encoder) - 1`` frames away inside the video.
    An unselected conditioning frame stands in for a missing non-conditioning one.
    """
    if len(output_dict["cond_frame_outputs"]) == 0:
        raise InvalidStateError("tracking a frame needs at least one conditioning frame")
    selected_cond, unselected_cond = select_closest_cond_frames(
        frame_idx, output_dict["cond_frame_outputs"], max_cond_frames_in_attn
    )
    spatial: List[Tuple[int, Dict[str, Any]]] = [(0, out) for out in selected_cond.values()]
    for t_pos in range(1, num_maskmem):
        prev_frame_idx = recent_frame_idx(frame_idx, num_maskmem - t_pos, memory_temporal_stride, track_in_reverse)
        out = output_dict["non_cond_frame_outputs"].get(prev_frame_idx, None)
        if out is None:
            # an unselected conditioning frame among the recent ones still counts
            out = unselected_cond.get(prev_frame_idx, None)
        if out is not None:
            spatial.append((t_pos, out))

    max_obj_ptrs = min(num_frames, max_obj_ptrs_in_encoder)
    pointers: List[Tuple[int, Dict[str, Any]]] = []
    if use_obj_ptrs_in_encoder:
        if only_obj_ptrs_in_the_past:
            ptr_cond = {
                t: out
                for t, out in selected_cond.items()
                if (t >= frame_idx if track_in_reverse else t <= frame_idx)
            }
        else:
            ptr_cond = selected_cond
        sign = -1 if track_in_reverse else 1
        for t, out in ptr_cond.items():
            dist = (frame_idx - t) * sign if use_signed_tpos_enc_to_obj_ptrs else abs(frame_idx - t)
            pointers.append((dist, out))
        for t_diff in range(1, max_obj_ptrs):
            t = frame_idx + t_diff if track_in_reverse else frame_idx - t_diff
            if t < 0 or (num_frames is not None and t >= num_frames):
                break
            out = output_dict["non_cond_frame_outputs"].get(t, unselected_cond.get(t, None))
            if out is not None:
                pointers.append((t_diff, out))
    return MemoryPlan(spatial, pointers, max_obj_ptrs)


def assemble_memory(
    plans: Sequence[MemoryPlan],
    device: torch.device,
    *,
    maskmem_tpos_enc: torch.Tensor,
    add_tpos_enc_to_obj_ptrs: bool,
    proj_tpos_enc_in_obj_ptrs: bool,
    obj_ptr_tpos_proj: Callable[[torch.Tensor], torch.Tensor],
) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """Stack the memories of ``plans`` (same :attr:`MemoryPlan.signature`; their stored
    tensors are concatenated along the batch) into sequence-first ``memory [M, B, mem_dim]``,
    ``memory_pos [M, B, mem_dim]`` and the number of trailing object-pointer tokens.

    Each spatial memory ``maskmem_features [b, mem_dim, h, w]`` gives ``h * w`` tokens, in plan
    order, whose position is its ``maskmem_pos_enc`` plus ``maskmem_tpos_enc[num_maskmem - 1 -
    t_pos]`` (``maskmem_tpos_enc``: ``[num_maskmem, 1, 1, mem_dim]``). The object pointers
    ``obj_ptr [b, C]`` follow, each split into ``C // mem_dim`` tokens when ``mem_dim < C``;
    their position is zero, or with ``add_tpos_enc_to_obj_ptrs`` the 1D sine encoding of
    ``distance / (max_obj_ptrs - 1)`` (``C`` wide with ``proj_tpos_enc_in_obj_ptrs``, else
    ``mem_dim``) passed through ``obj_ptr_tpos_proj`` (to ``mem_dim``).
    """
    first = plans[0]
    if any(p.signature != first.signature for p in plans[1:]):
        raise InvalidInputError("memory plans batched together must have the same signature")
    num_maskmem, mem_dim = maskmem_tpos_enc.shape[0], maskmem_tpos_enc.shape[-1]
    to_cat_memory, to_cat_pos = [], []
    for slot, (t_pos, out) in enumerate(first.spatial):
        # the spatial encoding is the same sine map for every frame and object
        enc = out["maskmem_pos_enc"][-1][:1].to(device)
        # memories may be stored in bf16; compute in the encoding's dtype
        feats = torch.cat(
            [
                p.spatial[slot][1]["maskmem_features"].to(device=device, dtype=enc.dtype, non_blocking=True)
                for p in plans
            ]
        )
        to_cat_memory.append(feats.flatten(2).permute(2, 0, 1))
        enc = enc.expand(feats.shape[0], -1, -1, -1).flatten(2).permute(2, 0, 1)
        to_cat_pos.append(enc + maskmem_tpos_enc[num_maskmem - t_pos - 1])
    num_obj_ptr_tokens = 0
    if first.pointers:
        # [P, B, C]: slot-major, objects concatenated along the batch
        obj_ptrs = torch.stack(
            [torch.cat([p.pointers[slot][1]["obj_ptr"] for p in plans]) for slot in range(len(first.pointers))]
        )
        b, c = obj_ptrs.shape[1], obj_ptrs.shape[2]
        if add_tpos_enc_to_obj_ptrs:
            t_diff_max = first.max_obj_ptrs - 1
            tpos_dim = c if proj_tpos_enc_in_obj_ptrs else mem_dim
            obj_pos = host_tensor_to([d for d, _ in first.pointers], device, torch.int64)
            obj_pos = get_1d_sine_pe(obj_pos / t_diff_max, dim=tpos_dim)
            obj_pos = obj_ptr_tpos_proj(obj_pos)
            obj_pos = obj_pos.unsqueeze(1).expand(-1, b, mem_dim)
        else:
            obj_pos = obj_ptrs.new_zeros(len(first.pointers), b, mem_dim)
        if mem_dim < c:
            # split each pointer into C // mem_dim tokens
            obj_ptrs = obj_ptrs.reshape(-1, b, c // mem_dim, mem_dim)
            obj_ptrs = obj_ptrs.permute(0, 2, 1, 3).flatten(0, 1)
            obj_pos = obj_pos.repeat_interleave(c // mem_dim, dim=0)
        to_cat_memory.append(obj_ptrs)
        to_cat_pos.append(obj_pos)
        num_obj_ptr_tokens = obj_ptrs.shape[0]
    return torch.cat(to_cat_memory, dim=0), torch.cat(to_cat_pos, dim=0), num_obj_ptr_tokens
