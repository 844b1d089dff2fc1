"""The op ``attention`` (the mask decoder's plain multi-head attention): the C++ flash attention
without rotation against torch's SDPA in float64, and its dispatch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from sam2_fast.ops import attention, use_backend
from sam2_fast.ops.attention import attention_op

# max |error| relative to max |reference| (float32 accumulation; bfloat16 rounds the weights)
TOLERANCE = {torch.float32: 2e-6, torch.bfloat16: 2e-2}
CPP = attention_op.backend("cpp")
needs_cpp = pytest.mark.skipif(
    any(CPP.supports(*(t.to(d) for t in attention_op.example("cpu"))) is not None for d in TOLERANCE),
    reason="the C++ flash attention cannot run on this CPU (test_refusals_are_explained checks why)",
)

SHAPES = {
    "image to tokens (4096 queries, 8 keys)": ((1, 8, 4096, 16), (1, 8, 8, 16), (1, 8, 8, 16)),
    "tokens to image (8 queries, 4096 keys)": ((2, 8, 8, 16), (2, 8, 4096, 16), (2, 8, 4096, 16)),
    "token self-attention, odd sizes": ((3, 2, 7, 12), (3, 2, 7, 12), (3, 2, 7, 10)),
}


def _inputs(shapes, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).to(dtype) for s in shapes]


@needs_cpp
@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("backend", ["cpp", "reference"])
def test_backends_match_sdpa_in_float64(name, backend, dtype):
    q, k, v = _inputs(SHAPES[name], dtype)
    expected = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
    with torch.inference_mode(), use_backend(backend, op="attention"):
        out = attention(q, k, v)
    assert out.dtype == dtype and out.shape == expected.shape
    assert (out.double() - expected).abs().max() / expected.abs().max() < TOLERANCE[dtype]


@needs_cpp
def test_cpp_reads_head_split_views_and_a_scale():
    """The decoder splits heads with a transpose: strided views, read without a copy."""
    q, k, v = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in _inputs(SHAPES["tokens to image (8 queries, 4096 keys)"], torch.float32))
    assert not q.is_contiguous()
    expected = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), scale=0.3)
    with torch.inference_mode(), use_backend("cpp", op="attention"):
        out = attention(q, k, v, scale=0.3)
    assert (out.double() - expected).abs().max() / expected.abs().max() < TOLERANCE[torch.float32]


def test_refusals_are_explained():
    q, k, v = _inputs(SHAPES["token self-attention, odd sizes"], torch.float16)
    assert "float16" in CPP.supports(q, k, v) or "extension" in CPP.supports(q, k, v)
    verdicts = attention_op.explain(q, k, v)
    assert verdicts["reference"] is None


def test_autograd_uses_sdpa():
    q, k, v = _inputs(SHAPES["token self-attention, odd sizes"], torch.float32)
    q.requires_grad_(True)
    out = attention(q, k, v)
    out.sum().backward()
    assert q.grad is not None and q.grad.shape == q.shape


@pytest.mark.parametrize("mutate, match", [
    (lambda q, k, v: (q[0], k, v), "q must be"),
    (lambda q, k, v: (q, k.double(), v), "one dtype"),
    (lambda q, k, v: (q, k[:, :1], v), "k must be"),
    (lambda q, k, v: (q, k, "v"), "torch.Tensor"),
])
def test_bad_input_names_the_argument(mutate, match):
    q, k, v = _inputs(SHAPES["token self-attention, odd sizes"], torch.float32)
    with pytest.raises((ValueError, TypeError), match=match):
        attention(*mutate(q, k, v))


def test_flop_counter_sees_one_attention_node():
    """Under a dispatch mode the op goes through its custom op (one node the FLOP counter can
    count once the bench registers its formula)."""
    from sam2_fast._bench.runner import _fused_op_flops

    _fused_op_flops()
    q, k, v = _inputs(SHAPES["image to tokens (4096 queries, 8 keys)"], torch.float32)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        attention(q, k, v)
    b, h, nq, d = q.shape
    assert counter.get_total_flops() == 2 * b * h * nq * k.shape[2] * (d + v.shape[3])
