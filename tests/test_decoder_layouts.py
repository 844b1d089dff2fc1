"""The mask decoder's layout choices: the same values whatever layout its inputs come in."""

import pytest
import torch

from sam2_fast.modeling.common import Linear
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
