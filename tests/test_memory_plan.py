"""Memory selection and assembly (sam2_fast.modeling.memory_plan) as pure functions, no model.

The expected frames, orders and encodings below are worked out by hand from the official
``SAM2Base._prepare_memory_conditioned_features`` (sam2 1.1.0): conditioning frames first at
t_pos 0; then, for t_pos 1 .. num_maskmem - 1, the frame ``t_rel = num_maskmem - t_pos`` slots
back (the adjacent frame for t_rel 1, else ``((f - 2) // r) * r - (t_rel - 2) * r``); object
pointers of the selected conditioning frames at their distance, then of the frames 1 ..
max_obj_ptrs - 1 back. The last test runs the official method itself on a stand-in ``self``.
"""

from __future__ import annotations

import itertools
import random
from types import SimpleNamespace

import pytest
import torch

from sam2_fast.errors import InvalidInputError, InvalidStateError
from sam2_fast.modeling.memory_plan import (
    MemoryPlan,
    assemble_memory,
    select_closest_cond_frames,
    select_memories,
)

# the official defaults of the SAM 2.1 configs
RULES = dict(
    num_maskmem=7,
    max_cond_frames_in_attn=-1,
    memory_temporal_stride=1,
    use_obj_ptrs_in_encoder=True,
    max_obj_ptrs_in_encoder=16,
    only_obj_ptrs_in_the_past=False,
    use_signed_tpos_enc_to_obj_ptrs=False,
)


def out(frame: int) -> dict:
    """A stand-in stored frame output that names its frame."""
    return {"frame": frame}


def outputs(cond, non_cond) -> dict:
    return {
        "cond_frame_outputs": {t: out(t) for t in cond},
        "non_cond_frame_outputs": {t: out(t) for t in non_cond},
    }


def frames(pairs) -> list:
    """``(t_pos or distance, output)`` pairs -> ``(t_pos or distance, frame)``."""
    return [(k, o["frame"]) for k, o in pairs]


def plan_of(frame_idx, output_dict, num_frames, track_in_reverse=False, **rules):
    return select_memories(frame_idx, output_dict, num_frames, track_in_reverse=track_in_reverse, **{**RULES, **rules})


# ------------------------------------------------------------------ conditioning frames


def test_closest_cond_frames_take_the_one_before_the_one_after_then_the_nearest():
    cond = {t: out(t) for t in (0, 3, 8, 20, 30)}
    selected, unselected = select_closest_cond_frames(10, cond, 3)
    # 8 (closest before), 20 (closest at/after), then 3 (7 away) before 0 (10) and 30 (20)
    assert list(selected) == [8, 20, 3]
    assert list(unselected) == [0, 30]
    selected, unselected = select_closest_cond_frames(8, cond, 2)
    assert list(selected) == [3, 8]  # the frame itself counts as "at/after"


def test_closest_cond_frames_keep_all_when_unlimited_or_few_enough():
    cond = {t: out(t) for t in (9, 0, 5)}
    for limit in (-1, 3):
        selected, unselected = select_closest_cond_frames(4, cond, limit)
        assert list(selected) == [9, 0, 5]  # as stored, not re-ordered by distance
        assert unselected == {}


def test_closest_cond_frames_need_room_for_two():
    with pytest.raises(InvalidInputError, match="2 or more"):
        select_closest_cond_frames(4, {0: out(0), 5: out(5), 9: out(9)}, 1)


def test_max_cond_frames_in_attn_limits_the_conditioning_memories():
    d = outputs(cond=(0, 3, 8, 20, 30), non_cond=())
    plan = plan_of(10, d, 40, max_cond_frames_in_attn=3, use_obj_ptrs_in_encoder=False)
    assert frames(plan.spatial) == [(0, 8), (0, 20), (0, 3)]


def test_a_frame_without_conditioning_frames_is_refused():
    with pytest.raises(InvalidStateError, match="conditioning frame"):
        plan_of(3, outputs(cond=(), non_cond=(0, 1, 2)), 10)


# ------------------------------------------------------------------ recent frames


def test_recent_frames_are_the_last_num_maskmem_minus_one_oldest_first():
    d = outputs(cond=(0,), non_cond=range(1, 10))
    plan = plan_of(10, d, 20, use_obj_ptrs_in_encoder=False)
    # t_pos 1 is 6 frames back, t_pos 6 the adjacent frame
    assert frames(plan.spatial) == [(0, 0), (1, 4), (2, 5), (3, 6), (4, 7), (5, 8), (6, 9)]


def test_recent_frames_at_a_stride_keep_the_adjacent_frame():
    d = outputs(cond=(0,), non_cond=range(1, 10))
    plan = plan_of(10, d, 20, memory_temporal_stride=3, use_obj_ptrs_in_encoder=False)
    # adjacent 9; then ((10 - 2) // 3) * 3 = 6, 3, 0 (a selected conditioning frame: not
    # again), -3, -6 (before the video): skipped
    assert frames(plan.spatial) == [(0, 0), (4, 3), (5, 6), (6, 9)]


def test_recent_frames_in_reverse_are_the_following_frames():
    d = outputs(cond=(19,), non_cond=range(10, 19))
    plan = plan_of(10, d, 20, track_in_reverse=True, num_maskmem=4, use_obj_ptrs_in_encoder=False)
    assert frames(plan.spatial) == [(0, 19), (1, 13), (2, 12), (3, 11)]
    plan = plan_of(9, d, 20, track_in_reverse=True, num_maskmem=4, memory_temporal_stride=4,
                   use_obj_ptrs_in_encoder=False)
    # adjacent 10; then -(-(9 + 2) // 4) * 4 = 12, then 16
    assert frames(plan.spatial) == [(0, 19), (1, 16), (2, 12), (3, 10)]


def test_frames_before_the_start_are_skipped():
    d = outputs(cond=(0,), non_cond=(1,))
    plan = plan_of(2, d, 20)
    assert frames(plan.spatial) == [(0, 0), (6, 1)]
    # pointers: frame 0 at distance 2, then 1 frame back; the walk stops before frame -1
    assert frames(plan.pointers) == [(2, 0), (1, 1)]


def test_an_unselected_conditioning_frame_stands_in_for_a_recent_frame():
    d = outputs(cond=(2, 5, 12), non_cond=(1, 3, 4))
    plan = plan_of(6, d, 20, max_cond_frames_in_attn=2)
    # selected: 5 (before), 12 (after); 2 is unselected and fills t_rel 4; 5 (t_rel 1) is
    # selected, so not a recent frame again; 0 (t_rel 6) is not stored
    assert frames(plan.spatial) == [(0, 5), (0, 12), (2, 1), (3, 2), (4, 3), (5, 4)]
    # pointers: the selected conditioning frames at |6 - t|, then 1.. frames back (5 is
    # stored as a selected conditioning frame only: skipped; 2 stands in)
    assert frames(plan.pointers) == [(1, 5), (6, 12), (2, 4), (3, 3), (4, 2), (5, 1)]


# ------------------------------------------------------------------ object pointers


def test_only_pointers_in_the_past_drop_future_conditioning_frames():
    d = outputs(cond=(2, 5, 12), non_cond=(1, 3, 4))
    plan = plan_of(6, d, 20, max_cond_frames_in_attn=2, only_obj_ptrs_in_the_past=True)
    assert frames(plan.pointers) == [(1, 5), (2, 4), (3, 3), (4, 2), (5, 1)]
    # the spatial memories keep it
    assert (0, 12) in frames(plan.spatial)


def test_signed_pointer_distances_follow_the_tracking_direction():
    d = outputs(cond=(2, 12), non_cond=())
    assert frames(plan_of(6, d, 20, use_signed_tpos_enc_to_obj_ptrs=True).pointers) == [(4, 2), (-6, 12)]
    assert frames(plan_of(6, d, 20).pointers) == [(4, 2), (6, 12)]
    reverse = plan_of(6, d, 20, track_in_reverse=True, use_signed_tpos_enc_to_obj_ptrs=True)
    assert frames(reverse.pointers) == [(-4, 2), (6, 12)]


def test_pointers_are_limited_to_max_obj_ptrs_in_encoder():
    d = outputs(cond=(0,), non_cond=range(1, 50))
    plan = plan_of(50, d, 100, max_obj_ptrs_in_encoder=4)
    assert frames(plan.pointers) == [(50, 0), (1, 49), (2, 48), (3, 47)]
    assert plan.max_obj_ptrs == 4


def test_a_short_video_limits_the_pointer_window():
    d = outputs(cond=(0,), non_cond=(1,))
    plan = plan_of(2, d, 3)
    assert plan.max_obj_ptrs == 3
    assert frames(plan.pointers) == [(2, 0), (1, 1)]


def test_pointers_in_reverse_stop_at_the_end_of_the_video():
    d = outputs(cond=(9,), non_cond=(7, 8, 10))
    plan = plan_of(6, d, 10, track_in_reverse=True)
    # 9 at |6 - 9| = 3, then 7, 8, 9 (a selected conditioning frame: skipped), 10: past the
    # last frame, stop (even with an output stored there)
    assert frames(plan.pointers) == [(3, 9), (1, 7), (2, 8)]


def test_no_pointers_without_use_obj_ptrs_in_encoder():
    plan = plan_of(5, outputs(cond=(0,), non_cond=range(1, 5)), 30, use_obj_ptrs_in_encoder=False)
    assert plan.pointers == []
    assert plan.max_obj_ptrs == 16


# ------------------------------------------------------------------ signature


def test_plans_with_the_same_layout_share_a_signature():
    a = plan_of(10, outputs(cond=(0,), non_cond=range(1, 10)), 20)
    b = plan_of(10, outputs(cond=(0,), non_cond=range(1, 10)), 20)
    assert a.signature == b.signature
    assert a.signature[0] == (0, 1, 2, 3, 4, 5, 6)
    assert a.signature[1] == (10, 1, 2, 3, 4, 5, 6, 7, 8, 9)
    assert a.signature[2] == 16
    missing = plan_of(10, outputs(cond=(0,), non_cond=[t for t in range(1, 10) if t != 7]), 20)
    assert missing.signature != a.signature  # one memory and one pointer fewer
    cond_elsewhere = plan_of(10, outputs(cond=(1,), non_cond=[0, *range(2, 10)]), 20)
    assert cond_elsewhere.signature != a.signature  # same lengths, another pointer distance
    assert plan_of(10, outputs(cond=(0,), non_cond=range(1, 10)), 12).signature != a.signature


# ------------------------------------------------------------------ assembly

C, MEM, H, W, NUM_MASKMEM = 8, 4, 2, 3, 7


def stored(frame: int, seed: int = 0) -> dict:
    """A stored output of one object: random memory and pointer (by frame and object
    ``seed``), and a spatial encoding by frame (the same for every object, as in a model)."""
    g = torch.Generator().manual_seed(1000 * seed + frame)
    return {
        "frame": frame,
        "maskmem_features": torch.randn(1, MEM, H, W, generator=g),
        "maskmem_pos_enc": [torch.randn(1, MEM, H, W, generator=torch.Generator().manual_seed(frame))],
        "obj_ptr": torch.randn(1, C, generator=g),
    }


def tpos_enc() -> torch.Tensor:
    """``[NUM_MASKMEM, 1, 1, MEM]`` whose row i is i * 1000 everywhere."""
    return (torch.arange(NUM_MASKMEM, dtype=torch.float32) * 1000).view(-1, 1, 1, 1).expand(-1, 1, 1, MEM).clone()


def sine(positions, dim: int) -> torch.Tensor:
    """The official 1D sine encoding (sam2_utils.get_1d_sine_pe), written out."""
    pos = torch.tensor(positions, dtype=torch.float32)
    half = dim // 2
    freqs = torch.tensor([10000 ** (2 * (i // 2) / half) for i in range(half)])
    return torch.cat([torch.sin(pos[:, None] / freqs), torch.cos(pos[:, None] / freqs)], dim=1)


def assemble(plans, **kw):
    args = dict(
        maskmem_tpos_enc=tpos_enc(),
        add_tpos_enc_to_obj_ptrs=True,
        proj_tpos_enc_in_obj_ptrs=False,
        obj_ptr_tpos_proj=lambda x: x,
    )
    return assemble_memory(plans, torch.device("cpu"), **{**args, **kw})


def tokens(x: torch.Tensor) -> torch.Tensor:
    """``[b, MEM, H, W]`` -> the ``[H * W, b, MEM]`` tokens, row-major over the grid."""
    return torch.stack([x[:, :, i, j] for i in range(H) for j in range(W)])


def test_assembled_memory_is_spatial_memories_then_pointer_tokens():
    plan = MemoryPlan(
        spatial=[(0, stored(0)), (2, stored(7)), (4, stored(9))],
        pointers=[(9, stored(0)), (1, stored(9))],
        max_obj_ptrs=16,
    )
    memory, memory_pos, num_ptr_tokens = assemble([plan])
    hw = H * W
    # 3 spatial memories of H * W tokens, then 2 pointers of C // MEM = 2 tokens each
    assert memory.shape == memory_pos.shape == (3 * hw + 4, 1, MEM)
    assert num_ptr_tokens == 4
    for slot, (t_pos, o) in enumerate(plan.spatial):
        rows = slice(slot * hw, (slot + 1) * hw)
        assert torch.equal(memory[rows], tokens(o["maskmem_features"]))
        # spatial encoding + temporal encoding row num_maskmem - 1 - t_pos
        expected = tokens(o["maskmem_pos_enc"][-1]) + 1000 * (NUM_MASKMEM - 1 - t_pos)
        torch.testing.assert_close(memory_pos[rows], expected)
    # each pointer split into two MEM-wide tokens, pointer after pointer
    ptr_tokens = memory[3 * hw :, 0]
    for p, (_, o) in enumerate(plan.pointers):
        assert torch.equal(ptr_tokens[2 * p], o["obj_ptr"][0, :MEM])
        assert torch.equal(ptr_tokens[2 * p + 1], o["obj_ptr"][0, MEM:])
    # the pointers' temporal encoding: sine of distance / (max_obj_ptrs - 1), once per token
    pos = sine([9 / 15, 1 / 15], MEM)
    torch.testing.assert_close(memory_pos[3 * hw :, 0], pos.repeat_interleave(2, dim=0))


def test_batched_plans_concatenate_their_objects_along_the_batch():
    plans = [
        MemoryPlan([(0, stored(0, seed=s)), (3, stored(4, seed=s))], [(4, stored(0, seed=s))], 8)
        for s in (1, 2, 3)
    ]
    memory, memory_pos, num_ptr_tokens = assemble(plans)
    assert memory.shape == (2 * H * W + 2, 3, MEM)
    for b, plan in enumerate(plans):
        alone, alone_pos, alone_ptrs = assemble([plan])
        assert torch.equal(memory[:, b], alone[:, 0])
        torch.testing.assert_close(memory_pos[:, b], alone_pos[:, 0])
        assert num_ptr_tokens == alone_ptrs == 2


def test_plans_of_another_layout_cannot_be_batched():
    a = MemoryPlan([(0, stored(0))], [], 16)
    b = MemoryPlan([(0, stored(0)), (6, stored(3))], [], 16)
    with pytest.raises(InvalidInputError, match="same signature"):
        assemble([a, b])


def test_pointer_positions_without_temporal_encoding_are_zero():
    plan = MemoryPlan([(0, stored(0))], [(3, stored(0)), (1, stored(2))], 16)
    memory, memory_pos, num_ptr_tokens = assemble([plan], add_tpos_enc_to_obj_ptrs=False)
    assert num_ptr_tokens == 4
    assert torch.count_nonzero(memory_pos[H * W :]) == 0


def test_projected_pointer_encoding_starts_c_wide():
    seen = []

    def proj(x):
        seen.append(x)
        return x[:, :MEM] * 2

    plan = MemoryPlan([(0, stored(0))], [(3, stored(0))], 4)
    _, memory_pos, _ = assemble([plan], proj_tpos_enc_in_obj_ptrs=True, obj_ptr_tpos_proj=proj)
    torch.testing.assert_close(seen[0], sine([3 / 3], C))
    torch.testing.assert_close(memory_pos[H * W :, 0], (sine([1.0], C)[:, :MEM] * 2).repeat(2, 1))


def test_pointers_as_wide_as_the_memory_are_one_token_each():
    def stored_wide(frame):
        return {**stored(frame), "obj_ptr": torch.full((1, MEM), float(frame))}

    plan = MemoryPlan([(0, stored_wide(0))], [(2, stored_wide(5)), (1, stored_wide(6))], 16)
    memory, _, num_ptr_tokens = assemble([plan])
    assert num_ptr_tokens == 2
    assert memory[H * W :, 0, 0].tolist() == [5.0, 6.0]


def test_memories_stored_in_bfloat16_are_computed_in_the_encodings_dtype():
    o = stored(0)
    o["maskmem_features"] = o["maskmem_features"].bfloat16()
    memory, _, _ = assemble([MemoryPlan([(0, o)], [], 16)])
    assert memory.dtype == torch.float32
    assert torch.equal(memory, tokens(o["maskmem_features"].float()))


# ------------------------------------------------------------------ against the official method


def _official_memory(rules: dict, frame_idx, output_dict, num_frames, reverse, proj):
    """Run the official ``_prepare_memory_conditioned_features`` on a stand-in model that
    records what its memory attention receives."""
    official = pytest.importorskip("sam2.modeling.sam2_base")
    seen = {}

    def memory_attention(curr, curr_pos, memory, memory_pos, num_obj_ptr_tokens):
        seen.update(memory=memory, memory_pos=memory_pos, num_obj_ptr_tokens=num_obj_ptr_tokens)
        return curr[-1]

    model = SimpleNamespace(
        training=False,
        num_maskmem=rules["num_maskmem"],
        hidden_dim=C,
        mem_dim=MEM,
        maskmem_tpos_enc=tpos_enc()[: rules["num_maskmem"]],
        max_cond_frames_in_attn=rules["max_cond_frames_in_attn"],
        memory_temporal_stride_for_eval=rules["memory_temporal_stride"],
        use_obj_ptrs_in_encoder=rules["use_obj_ptrs_in_encoder"],
        max_obj_ptrs_in_encoder=rules["max_obj_ptrs_in_encoder"],
        only_obj_ptrs_in_the_past_for_eval=rules["only_obj_ptrs_in_the_past"],
        use_signed_tpos_enc_to_obj_ptrs=rules["use_signed_tpos_enc_to_obj_ptrs"],
        add_tpos_enc_to_obj_ptrs=rules["add_tpos_enc_to_obj_ptrs"],
        proj_tpos_enc_in_obj_ptrs=rules["proj_tpos_enc_in_obj_ptrs"],
        obj_ptr_tpos_proj=proj,
        memory_attention=memory_attention,
    )
    feats = torch.zeros(H * W, 1, C)
    official.SAM2Base._prepare_memory_conditioned_features(
        model, frame_idx, False, [feats], [feats], [(H, W)], output_dict, num_frames, reverse
    )
    return seen


def test_selection_and_assembly_match_the_official_method():
    """Random stored frames and every combination of the selection settings: the same memory
    tokens, positions and pointer count as the official method, bit for bit."""
    rng = random.Random(0)
    proj = torch.nn.Linear(C, MEM)
    settings = itertools.product(
        (1, 4, 7),  # num_maskmem
        (-1, 2),  # max_cond_frames_in_attn
        (1, 3),  # memory_temporal_stride
        (False, True),  # use_obj_ptrs_in_encoder
        (False, True),  # only_obj_ptrs_in_the_past
        (False, True),  # use_signed_tpos_enc_to_obj_ptrs
        ((False, False), (True, False), (True, True)),  # add / project the pointers' encoding
        (False, True),  # track_in_reverse
    )
    checked = 0
    for num_maskmem, max_cond, stride, use_ptrs, past, signed, (add, project), reverse in settings:
        num_frames = rng.choice((5, 12, 30))
        frame_idx = rng.randrange(num_frames)
        shuffled = rng.sample(range(num_frames), num_frames)
        cond = shuffled[: rng.randint(1, 4)]
        non_cond = [t for t in shuffled[len(cond) :] if t != frame_idx and rng.random() < 0.7]
        output_dict = {
            "cond_frame_outputs": {t: stored(t) for t in cond},
            "non_cond_frame_outputs": {t: stored(t) for t in non_cond},
        }
        rules = dict(
            num_maskmem=num_maskmem,
            max_cond_frames_in_attn=max_cond,
            memory_temporal_stride=stride,
            use_obj_ptrs_in_encoder=use_ptrs,
            max_obj_ptrs_in_encoder=rng.choice((4, 16)),
            only_obj_ptrs_in_the_past=past,
            use_signed_tpos_enc_to_obj_ptrs=signed,
        )
        encoding = dict(add_tpos_enc_to_obj_ptrs=add, proj_tpos_enc_in_obj_ptrs=project)
        ptr_proj = proj if project else torch.nn.Identity()
        plan = select_memories(frame_idx, output_dict, num_frames, track_in_reverse=reverse, **rules)
        with torch.no_grad():
            expected = _official_memory({**rules, **encoding}, frame_idx, output_dict, num_frames, reverse, ptr_proj)
            memory, memory_pos, num_ptr_tokens = assemble_memory(
                [plan],
                torch.device("cpu"),
                maskmem_tpos_enc=tpos_enc()[:num_maskmem],
                obj_ptr_tpos_proj=ptr_proj,
                **encoding,
            )
        assert torch.equal(memory, expected["memory"])
        assert torch.equal(memory_pos, expected["memory_pos"])
        assert num_ptr_tokens == expected["num_obj_ptr_tokens"]
        checked += 1
    assert checked == 3 * 2 * 2 * 2 * 2 * 2 * 3 * 2
