"""The op ``max_pool_nhwc`` (Hiera's query pooling and stage-change shortcut): the C++ pass
(csrc/pool.cpp) and the strided maxima against torch's ``max_pool2d``, value for value."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sam2_fast.ops import use_backend
from sam2_fast.ops.window_attention import max_pool_nhwc, max_pool_op

CPP = max_pool_op.backend("cpp")
needs_cpp = pytest.mark.skipif(CPP.supports(torch.zeros(1, 2, 2, 16), 2) is not None,
                               reason="the C++ extension is not built")


def _expected(x, stride):
    return F.max_pool2d(x.permute(0, 3, 1, 2).float(), stride, stride).permute(0, 2, 3, 1).to(x.dtype)


@needs_cpp
@pytest.mark.parametrize("backend", ["cpp", "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape, stride", [((1, 16, 12, 192), 2), ((2, 9, 11, 40), 2), ((1, 9, 7, 21), 3), ((1, 4, 4, 5), 2)])
def test_matches_max_pool2d(backend, dtype, shape, stride):
    """Channels in vectors of 16 and a scalar tail, sizes floored, several images."""
    x = torch.randn(shape).to(dtype)
    with torch.inference_mode(), use_backend(backend, op="max_pool_nhwc"):
        out = max_pool_nhwc(x, stride)
    assert out.dtype == dtype and out.is_contiguous()
    assert torch.equal(out, _expected(x, stride))


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpp_reads_the_query_out_of_qkv_in_place(dtype):
    """A query pooled straight out of a qkv projection: a strided view, not copied first."""
    qkv = torch.randn(2, 8, 10, 3 * 48).to(dtype)
    q = qkv[..., :48]
    assert not q.is_contiguous()
    with torch.inference_mode(), use_backend("cpp", op="max_pool_nhwc"):
        out = max_pool_nhwc(q, 2)
    assert torch.equal(out, _expected(q.contiguous(), 2))


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpp_propagates_nan_like_torch(dtype):
    x = torch.randn(1, 4, 4, 33).to(dtype)
    x[0, 1, 0, 3] = float("nan")  # window (0, 0), a vector lane
    x[0, 3, 3, 32] = float("nan")  # window (1, 1), the scalar tail
    with torch.inference_mode(), use_backend("cpp", op="max_pool_nhwc"):
        out = max_pool_nhwc(x, 2)
    reference = _expected(x, 2)
    assert torch.equal(out.isnan(), reference.isnan()) and out.isnan().sum() == 2
    assert torch.equal(out.nan_to_num(0.0), reference.nan_to_num(0.0))


@needs_cpp
@pytest.mark.parametrize("x, match", [
    (torch.zeros(1, 4, 4, 8, dtype=torch.float16), "float32 or bfloat16"),
    (torch.zeros(1, 4, 8, 4).transpose(2, 3), "contiguous channels"),
    (torch.zeros(4, 4, 8), "B, H, W, C"),
])
def test_cpp_bad_input_names_the_argument(x, match):
    with pytest.raises(ValueError, match=match):
        torch.ops.sam2_fast.max_pool_nhwc(x, 2)


def test_autograd_and_tracing_keep_max_pool2d():
    x = torch.randn(1, 4, 4, 8, requires_grad=True)
    out = max_pool_nhwc(x, 2)
    out.sum().backward()
    # max_pool2d's gradient: 1 on one element of each window (maximum's would be split on ties)
    assert x.grad is not None and set(x.grad.unique().tolist()) <= {0.0, 1.0} and x.grad.sum() == out.numel()
