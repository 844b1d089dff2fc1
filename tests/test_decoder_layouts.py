"""The mask decoder's layout choices: the same values whatever layout its inputs come in."""

import pytest
import torch

from sam2_fast.modeling.common import LayerNorm2d, Linear
from sam2_fast.modeling.mask_decoder import hypernetwork_masks
from sam2_fast.modeling.transformer import positioned_keys


@pytest.mark.parametrize("b", [1, 3])
def test_hypernetwork_masks_reads_either_layout(b):
    torch.manual_seed(0)
    hyper_in = torch.randn(b, 4, 8)
    upscaled = torch.randn(b, 8, 6, 10)
    expected = torch.einsum("bmc,bchw->bmhw", hyper_in, upscaled)
    for x in (upscaled, upscaled.contiguous(memory_format=torch.channels_last)):
        got = hypernetwork_masks(hyper_in, x)
        assert got.shape == (b, 4, 6, 10) and got.is_contiguous()
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        nchw = hypernetwork_masks(hyper_in, upscaled.bfloat16())
        cl = hypernetwork_masks(hyper_in, upscaled.bfloat16().contiguous(memory_format=torch.channels_last))
    assert nchw.dtype == cl.dtype == torch.bfloat16
    torch.testing.assert_close(cl.float(), nchw.float(), rtol=1.6e-2, atol=1e-2)


def test_positioned_keys_are_the_rounded_float32_sum_under_autocast():
    torch.manual_seed(0)
    keys = torch.randn(2, 64, 16)
    pe = torch.randn(1, 64, 16).bfloat16()
    proj = Linear(16, 8)
    with torch.inference_mode():
        plain = positioned_keys(keys, pe, proj)
        assert plain.dtype == torch.float32 and torch.equal(plain, keys + pe)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rounded = positioned_keys(keys, pe, proj)
            # what the projection reads: the same as casting the float32 sum
            torch.testing.assert_close(proj(rounded), proj(keys + pe), rtol=0, atol=0)
        assert rounded.dtype == torch.bfloat16 and torch.equal(rounded, (keys + pe).bfloat16())
    # with autograd, the float32 sum (gradients flow through the add)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert positioned_keys(keys, pe, proj).dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layer_norm_2d_of_a_channels_last_input_is_the_formulas(dtype):
    torch.manual_seed(0)
    norm = LayerNorm2d(16)
    with torch.no_grad():
        norm.weight.add_(torch.randn(16))
        norm.bias.add_(torch.randn(16))
    x = (torch.randn(2, 16, 6, 10) * 3 + 1).to(dtype)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    expected = norm(x)  # channels-first: the official formula
    got = norm(x_cl)
    assert got.dtype == expected.dtype == torch.float32  # float32 weights promote, as the formula does
    assert got.is_contiguous(memory_format=torch.channels_last)
    # float32: the same up to rounding; bfloat16: the formula rounds each step to bfloat16,
    # the row LayerNorm computes in float32 (closer to the float32 result)
    tol = 1e-5 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol)
    exact = norm(x.float())
    assert (got - exact).abs().max() <= (expected - exact).abs().max() + 1e-5
    got.sum().backward()  # differentiable
    assert norm.weight.grad is not None
    # under autocast (the bfloat16 fast mode) the statistics are float32 and the output keeps
    # the input's dtype for the activation and the product after it
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fast = norm(x_cl)
    assert fast.dtype == dtype and fast.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast.float(), exact, rtol=1.6e-2, atol=3e-2)
