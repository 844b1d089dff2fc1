"""The memory encoder's channels-last sequence against the official channels-first one."""

import pytest
import torch

from sam2_fast.modeling.memory_encoder import _channels_last, _encoder_example


def _encoder():
    torch.manual_seed(0)
    encoder, _, _ = _encoder_example("cpu")
    with torch.no_grad():
        for p in encoder.parameters():  # LayerNorms and layer scales away from their init values
            p.add_(torch.randn_like(p) * 0.1)
    return encoder


def _inputs(b: int, size: int = 32):
    torch.manual_seed(1)
    # the video predictor's features: a [HW, B, C] token view, as the tracker passes them
    tokens = torch.randn(size * size, b, 256)
    pix_feat = tokens.permute(1, 2, 0).reshape(b, 256, size, size)
    masks = torch.randn(b, 1, 16 * size, 16 * size).sigmoid()
    return pix_feat, masks


@pytest.mark.parametrize("b", [1, 3])
def test_channels_last_matches_the_official_sequence(b):
    encoder = _encoder()
    pix_feat, masks = _inputs(b)
    with torch.inference_mode():
        expected = encoder.fuse(pix_feat, masks)
        got = encoder.fuse_channels_last(pix_feat, masks)
        assert got.shape == expected.shape and got.is_contiguous()
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected_bf16 = encoder.fuse(pix_feat, masks)
            got_bf16 = encoder.fuse_channels_last(pix_feat, masks)
        assert got_bf16.dtype == expected_bf16.dtype
        # bfloat16: both within a few bfloat16 steps of the float32 result
        scale = expected.abs().max()
        assert (got_bf16.float() - expected).abs().max() <= 0.05 * scale
        assert (expected_bf16.float() - expected).abs().max() <= 0.05 * scale
    # with autograd (no in-place steps on saved values) the gradients flow
    pix_feat.requires_grad_(True)
    encoder.fuse_channels_last(pix_feat, masks).square().sum().backward()
    assert pix_feat.grad is not None and pix_feat.grad.abs().sum() > 0


def test_features_expanded_to_the_objects_give_each_object_its_memory():
    encoder = _encoder()
    pix_feat, _ = _inputs(1)
    _, masks = _inputs(3)
    expanded = pix_feat.expand(3, -1, -1, -1)  # one frame, three objects
    with torch.inference_mode():
        expected = encoder.fuse(expanded, masks)
        got = encoder.fuse_channels_last(expanded, masks)
    assert got.shape == expected.shape == (3, 64, 32, 32)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_channels_last_strides_are_those_of_a_fresh_tensor():
    pix_feat, _ = _inputs(1)
    assert pix_feat.is_contiguous(memory_format=torch.channels_last) and pix_feat.stride(0) == 256
    x = _channels_last(pix_feat)
    assert x.stride() == torch.empty_like(pix_feat, memory_format=torch.channels_last).stride()
    assert x.data_ptr() == pix_feat.data_ptr() and torch.equal(x, pix_feat)  # a view, no copy
    nchw = torch.randn(2, 8, 4, 5)
    assert torch.equal(_channels_last(nchw), nchw) and _channels_last(nchw).is_contiguous(memory_format=torch.channels_last)
