"""The op ``neck_projection``: a neck level without top-down fusion and the mask decoder's
projection of it (``conv_s0`` / ``conv_s1``), as the official two 1x1 products or, in the
bfloat16 mode on a CPU, as one product with the composed weights."""

from __future__ import annotations

import pytest
import torch

from sam2_fast.modeling.common import Conv2d
from sam2_fast.modeling.image_encoder import FpnNeck, neck_projection_op
from sam2_fast.modeling.position_encoding import PositionEmbeddingSine
from sam2_fast.ops import use_backend

FUSED = neck_projection_op.backend("fused")


def _neck(top_down=(2, 3)):
    torch.manual_seed(0)
    neck = FpnNeck(PositionEmbeddingSine(num_pos_feats=32), d_model=32, backbone_channel_list=[64, 32, 16, 8],
                   fpn_top_down_levels=list(top_down)).eval()
    projections = {0: Conv2d(32, 4, kernel_size=1), 1: Conv2d(32, 8, kernel_size=1)}
    xs = [torch.randn(2, c, s, s) for c, s in ((8, 32), (16, 16), (32, 8), (64, 4))]
    return neck, projections, xs


def test_float32_keeps_the_official_two_products_bit_for_bit():
    neck, projections, xs = _neck()
    with torch.inference_mode():
        assert "exact float32" in FUSED.supports(neck.convs[3], projections[0], xs[0])
        plain, plain_pos = neck(xs)
        got, pos = neck(xs, projections)
        for level in (0, 1):
            assert torch.equal(got[level], projections[level](plain[level]))
    assert all(torch.equal(a, b) for a, b in zip(got[2:], plain[2:]))
    assert all(torch.equal(a, b) for a, b in zip(pos, plain_pos))


def test_bfloat16_fuses_the_two_products_within_bfloat16_rounding():
    neck, projections, xs = _neck()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert FUSED.supports(neck.convs[3], projections[0], xs[0]) is None
        with use_backend("reference", op="neck_projection"):
            expected, expected_pos = neck(xs, projections)
        with use_backend("fused", op="neck_projection"):
            got, pos = neck(xs, projections)
    for level in (0, 1):
        a, b = got[level].float(), expected[level].float()
        assert got[level].dtype == expected[level].dtype == torch.bfloat16 and a.shape == b.shape
        assert (a - b).norm() <= 1e-2 * b.norm()
        assert not torch.equal(a, torch.zeros_like(a))
    assert all(torch.equal(a, b) for a, b in zip(got[2:], expected[2:]))
    assert all(torch.equal(a, b) for a, b in zip(pos, expected_pos))


def test_a_level_with_top_down_fusion_is_projected_after_it():
    """Level 1 fused top-down: its lateral is needed, so it takes the plain sequence (level 0,
    whose lateral nothing else reads, still goes through the op)."""
    neck, projections, xs = _neck(top_down=(1, 2, 3))
    calls = []
    real = neck_projection_op.select
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        neck_projection_op.select = lambda *a, **k: calls.append(1) or real(*a, **k)
        try:
            got, _ = neck(xs, projections)
        finally:
            neck_projection_op.select = real
        plain, _ = neck(xs)
        assert calls == [1]
        assert torch.equal(got[1], projections[1](plain[1]))


def test_the_fused_weights_follow_a_weight_update():
    neck, projections, xs = _neck()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16), use_backend("fused", op="neck_projection"):
        before, _ = neck(xs, projections)
    with torch.no_grad():
        projections[0].weight.mul_(2.0)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16), use_backend("fused", op="neck_projection"):
        after, _ = neck(xs, projections)
        with use_backend("reference", op="neck_projection"):
            expected, _ = neck(xs, projections)
    assert not torch.equal(before[0], after[0])
    assert (after[0].float() - expected[0].float()).norm() <= 1e-2 * expected[0].float().norm()


@pytest.mark.parametrize("kernel", [3])
def test_other_convolutions_are_refused(kernel):
    neck, _, xs = _neck()
    wide = Conv2d(32, 4, kernel_size=kernel, padding=1)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert "1x1" in FUSED.supports(neck.convs[3], wide, xs[0])
