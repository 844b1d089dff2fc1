"""The op ``residual_norm``: a residual add and the LayerNorm of its sum, as torch's add,
LayerNorm and cast, or -- under bfloat16 autocast on a CPU -- one C++ pass per row
(csrc/layer_norm.cpp) that writes the normalised tokens in bfloat16."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sam2_fast.modeling.common import residual_norm, residual_norm_op
from sam2_fast.modeling.hiera import MultiScaleBlock
from sam2_fast.ops import use_backend

CPP = residual_norm_op.backend("cpp")
needs_cpp = pytest.mark.skipif(
    CPP.supports(nn.LayerNorm(8), torch.zeros(2, 8), None) not in (None, "the exact float32 mode (and autograd) keeps torch's LayerNorm"),
    reason="the C++ extension is not built",
)


def _norm(c, seed=0):
    torch.manual_seed(seed)
    norm = nn.LayerNorm(c, eps=1e-6)
    with torch.no_grad():
        norm.weight.add_(torch.randn(c))
        norm.bias.add_(torch.randn(c))
    return norm


def _ulps_apart(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """How many bfloat16 steps apart two bfloat16 tensors are (same-sign values)."""
    return (a.view(torch.int16).int() - b.view(torch.int16).int()).abs()


@needs_cpp
@pytest.mark.parametrize("x_dtype, delta_dtype", [(torch.float32, torch.bfloat16), (torch.bfloat16, torch.bfloat16),
                                                  (torch.float32, torch.float32), (torch.bfloat16, torch.float32),
                                                  (torch.float32, None), (torch.bfloat16, None)])
@pytest.mark.parametrize("shape", [(1, 40, 24, 96), (2, 5, 7, 37), (3, 768)])
def test_cpp_matches_torch_add_layernorm_and_cast(shape, x_dtype, delta_dtype):
    """Sums bit-equal to torch's (bfloat16 only when both inputs are); normalised values equal
    after rounding to bfloat16 but for rare one-step differences (statistics summed in
    another order)."""
    norm = _norm(shape[-1])
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(shape, generator=g) * 3 + 1).to(x_dtype)
    delta = None if delta_dtype is None else torch.randn(shape, generator=g).to(delta_dtype)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert CPP.supports(norm, x, delta) is None
        with use_backend("cpp", op="residual_norm"):
            s, normed = residual_norm(norm, x, delta)
        with use_backend("reference", op="residual_norm"):
            s_ref, normed_ref = residual_norm(norm, x, delta)
    expected_sum = x if delta is None else x + delta
    assert s.dtype == expected_sum.dtype and torch.equal(s, expected_sum) and torch.equal(s_ref, expected_sum)
    torch.testing.assert_close(normed_ref, F.layer_norm(expected_sum.float(), shape[-1:], norm.weight, norm.bias, 1e-6).bfloat16())
    assert normed.dtype == torch.bfloat16 and normed.shape == x.shape
    steps = _ulps_apart(normed, normed_ref)
    assert steps.max() <= 1 and (steps > 0).float().mean() < 1e-3


def test_float32_mode_and_autograd_keep_torchs_layernorm():
    norm = _norm(16)
    x, delta = torch.randn(4, 16), torch.randn(4, 16)
    with torch.inference_mode():
        assert "exact float32" in CPP.supports(norm, x, delta)
        s, normed = residual_norm(norm, x, delta)
    assert torch.equal(s, x + delta) and torch.equal(normed, norm(x + delta))
    x.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert CPP.supports(norm, x, delta) is not None
        s, normed = residual_norm(norm, x, delta)
    normed.float().sum().backward()
    assert x.grad is not None


@needs_cpp
def test_cpp_refuses_what_it_cannot_read():
    norm = _norm(16)
    x = torch.randn(4, 16)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert "not contiguous" in CPP.supports(norm, x.t().contiguous().t(), None)
        assert "float16" in CPP.supports(norm, x.half(), None)
        assert "shape" in CPP.supports(norm, x, torch.randn(1, 16))
        assert "LayerNorm" in CPP.supports(nn.LayerNorm(16, elementwise_affine=False), x, None)


@needs_cpp
@pytest.mark.parametrize("call, match", [
    (lambda: torch.ops.sam2_fast.layer_norm_bf16(torch.randn(2, 8).half(), torch.ones(8), torch.zeros(8), 1e-6), "x must be"),
    (lambda: torch.ops.sam2_fast.layer_norm_bf16(torch.randn(2, 8), torch.ones(7), torch.zeros(8), 1e-6), "weight must be"),
    (lambda: torch.ops.sam2_fast.add_layer_norm_bf16(torch.randn(2, 8), torch.randn(3, 8), torch.ones(8), torch.zeros(8), 1e-6),
     "delta must be"),
])
def test_cpp_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@needs_cpp
@pytest.mark.parametrize("dim_out, q_stride", [(16, None), (32, (2, 2))])
def test_hiera_block_under_autocast_with_either_backend(dim_out, q_stride):
    """A whole Hiera block (both norms through the op) gives the same tokens with the C++ pass
    as with torch's sequence, within bfloat16 rounding."""
    torch.manual_seed(0)
    block = MultiScaleBlock(16, dim_out, 2, q_stride=q_stride, window_size=4).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(1, 16, 12, 16)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        with use_backend("cpp", op="residual_norm"):
            got = block._forward(x)
        with use_backend("reference", op="residual_norm"):
            expected = block._forward(x)
    assert got.dtype == expected.dtype
    torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=2e-2)
