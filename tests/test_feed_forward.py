"""``modeling.common.feed_forward``: on a CPU, without autograd, a large hidden activation is
computed in bands of tokens (they stay in the caches); the result is the plain
``second(act(first(x)))`` up to float32 summation order, autograd and 16-bit autocast included.
The Hiera blocks' MLP and the memory-attention layers run through it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sam2_fast.modeling.common as common
from sam2_fast.modeling.common import MLP, Linear, feed_forward, feed_forward_op
from sam2_fast.ops import use_backend


@pytest.fixture
def small_bands(monkeypatch):
    """Bands of 64 tokens for a hidden width of 64 (the smallest band), so small inputs band."""
    monkeypatch.setattr(common, "FF_BAND_BYTES", 64 * 64 * 4)


def _layers(c: int = 16, hidden: int = 64, seed: int = 0):
    torch.manual_seed(seed)
    return Linear(c, hidden), Linear(hidden, c)


@pytest.mark.parametrize("shape", [(3, 150, 16), (301, 16), (2, 7, 23, 16)])
@pytest.mark.parametrize("act", [F.gelu, F.relu], ids=["gelu", "relu"])
def test_bands_give_the_plain_result(small_bands, shape, act):
    first, second = _layers()
    x = torch.randn(shape)
    calls = []
    first.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    with torch.inference_mode():
        got = feed_forward(x, first, act, second)
        expected = second(act(first(x)))
    assert len(calls) > 2 and all(n <= 64 for n in calls[:-1]), calls  # banded: 64 tokens a band
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_an_image_in_a_batch_gets_its_own_result_bit_for_bit(small_bands):
    """Batch-first inputs: bands never cross images and the choice is per image, so each image
    of a batch gets exactly what it gets alone (predict_batch == predict)."""
    first, second = _layers()
    images = torch.randn(3, 10, 23, 16)  # 230 tokens per image: 64 + 64 + 64 + 38
    with torch.inference_mode():
        batch = feed_forward(images, first, F.gelu, second)
        for i in range(3):
            assert torch.equal(batch[i], feed_forward(images[i : i + 1], first, F.gelu, second)[0]), i
        sequence_first = feed_forward(images.transpose(0, 1), first, F.gelu, second, batch_first=False)
    torch.testing.assert_close(sequence_first.transpose(0, 1), batch, rtol=1e-6, atol=1e-6)


def test_small_inputs_and_autograd_take_the_plain_path(small_bands):
    first, second = _layers()
    calls = []
    first.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    with torch.inference_mode():
        feed_forward(torch.randn(100, 16), first, F.gelu, second)  # 2 bands' worth or less
    x = torch.randn(400, 16, requires_grad=True)
    out = feed_forward(x, first, F.gelu, second)  # autograd: one pass, differentiable
    out.sum().backward()
    assert [tuple(s) for s in calls] == [(100, 16), (400, 16)]
    assert x.grad is not None and x.grad.shape == x.shape


def test_bands_under_bfloat16_autocast(small_bands):
    first, second = _layers()
    x = torch.randn(5, 90, 16)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16), use_backend("banded", op="feed_forward"):
        got = feed_forward(x, first, F.gelu, second)
        expected = second(F.gelu(first(x)))
    assert got.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_mlp_and_memory_attention_layers_use_it(monkeypatch):
    """Hiera's MLP, and the memory-attention layers of the model at its real size (4096 tokens
    x 2048 hidden: banded with the default band size), run through the banded path and match
    the plain sequence."""
    import sam2_fast.modeling.memory_attention as memory_attention
    from sam2_fast.modeling.config import PRESETS
    from sam2_fast.modeling.sam2_base import SAM2Base

    used = []
    real = common.feed_forward

    def spy(x, first, act, second, **kwargs):
        used.append(first)
        return real(x, first, act, second, **kwargs)

    monkeypatch.setattr(common, "feed_forward", spy)
    monkeypatch.setattr(memory_attention, "feed_forward", spy)
    monkeypatch.setattr(common, "FF_BAND_BYTES", 64 * 64 * 4)
    mlp = MLP(16, 64, 16, num_layers=2, activation=nn.GELU).eval()
    x = torch.randn(2, 150, 16)
    with torch.inference_mode():
        torch.testing.assert_close(mlp(x), mlp.layers[1](F.gelu(mlp.layers[0](x))), rtol=1e-6, atol=1e-6)
    assert used == [mlp.layers[0]]

    monkeypatch.undo()
    monkeypatch.setattr(memory_attention, "feed_forward", spy)
    used.clear()
    attention = SAM2Base.from_config(PRESETS["sam2.1-hiera-tiny"]).memory_attention.eval()
    torch.manual_seed(0)
    curr, pos = torch.randn(4096, 1, 256), torch.randn(4096, 1, 256)
    memory, memory_pos = torch.randn(4096 + 4, 1, 64), torch.randn(4096 + 4, 1, 64)
    with torch.inference_mode():
        got = attention(curr, memory, pos, memory_pos, num_obj_ptr_tokens=4)
    assert used == [layer.linear1 for layer in attention.layers]
    monkeypatch.setattr(memory_attention, "feed_forward", lambda x, first, act, second, **kw: second(act(first(x))))
    with torch.inference_mode():
        expected = attention(curr, memory, pos, memory_pos, num_obj_ptr_tokens=4)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


ONEDNN = feed_forward_op.backend("onednn")


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch without oneDNN")
@pytest.mark.parametrize("act", [F.gelu, F.relu, nn.GELU(), nn.ReLU()], ids=["gelu", "relu", "GELU", "ReLU"])
@pytest.mark.parametrize("shape", [(1, 40, 23, 16), (301, 16), (3, 150, 16)])
def test_onednn_fused_products_under_bfloat16_autocast(shape, act):
    """The ``onednn`` backend (both products in oneDNN, the activation as a post-op) is the
    bfloat16 path: within bfloat16 rounding of torch's (rel-L2 <= 1e-2; measured ~4e-3: the
    activation is taken before the product's rounding), and an image of a batch gets exactly
    what it gets alone."""
    first, second = _layers(hidden=96)
    x = torch.randn(shape)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert ONEDNN.supports(x, first, act, second) is None
        with use_backend("onednn", op="feed_forward"):
            got = feed_forward(x, first, act, second)
        expected = second(act(first(x)))
        assert got.dtype == expected.dtype == torch.bfloat16 and got.shape == expected.shape
        assert (got.float() - expected.float()).norm() <= 1e-2 * expected.float().norm()
        assert not torch.equal(got, second(F.silu(first(x))))  # the activation is applied
        if x.dim() == 4:
            with use_backend("onednn", op="feed_forward"):
                alone = feed_forward(x[:1], first, act, second)
            assert torch.equal(alone[0], got[0])


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch without oneDNN")
def test_onednn_refuses_what_it_does_not_fuse():
    first, second = _layers()
    x = torch.randn(10, 16)
    with torch.inference_mode():
        assert "bfloat16" in ONEDNN.supports(x, first, F.gelu, second)  # float32: torch's products
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert "post-op" in ONEDNN.supports(x, first, nn.GELU(approximate="tanh"), second)
            assert "post-op" in ONEDNN.supports(x, first, F.silu, second)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch without oneDNN")
def test_large_bfloat16_linear_products_go_through_the_linear_op(monkeypatch):
    """A bfloat16 Linear of LINEAR_OP_FROM_ROWS rows or more on a CPU is the op ``linear``;
    its ``onednn`` backend (bias inside the product) gives torch's product bit for bit, and
    refuses float32 (the exact mode keeps torch's products)."""
    from sam2_fast.modeling.common import LINEAR_OP_FROM_ROWS, linear_op

    layer = Linear(16, 48)
    small, large = torch.randn(LINEAR_OP_FROM_ROWS - 1, 16), torch.randn(2, LINEAR_OP_FROM_ROWS // 2, 16)
    calls = []
    real_select = linear_op.select
    monkeypatch.setattr(linear_op, "select", lambda *a, **k: calls.append(a[0].shape) or real_select(*a, **k))
    with torch.inference_mode():
        assert "bfloat16" in linear_op.backend("onednn").supports(large, layer)
        layer(large)  # float32: torch's product, no op
        with torch.autocast("cpu", dtype=torch.bfloat16):
            layer(small)
            with use_backend("onednn", op="linear"):
                got = layer(large)
            with use_backend("reference", op="linear"):
                expected = layer(large)
    assert calls == [large.shape, large.shape]
    assert got.dtype == torch.bfloat16 and torch.equal(got, expected)


# ---------------------------------------------------------------------------------------------
# the exact GELU by table (csrc/lookup.cpp) and the feed-forward backend that uses it

def _lookup_available() -> str | None:
    from sam2_fast.ops._common import extension_refusal

    reason = extension_refusal("cpu", x=torch.zeros(1))
    return reason or (None if hasattr(torch.ops.sam2_fast, "lookup_bf16_") else "extension without lookup_bf16_")


needs_lookup = pytest.mark.skipif(_lookup_available() is not None, reason=str(_lookup_available()))


@needs_lookup
@pytest.mark.parametrize("n", [0, 1, 31, 32, 33, 1000, 70_001])
def test_the_gelu_table_is_torchs_gelu_of_every_bfloat16(n):
    """Every bit pattern (NaNs, infinities, subnormals, both zeros) looks up torch's GELU of
    it, bit for bit, whatever the length (the gather's tail included); in place."""
    table = common._gelu_table()
    every = torch.arange(1 << 16, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    values = every.repeat(2)[:n].clone() if n else every[:0].clone()
    expected = F.gelu(values)
    got = torch.ops.sam2_fast.lookup_bf16_(values, table)
    assert got.data_ptr() == values.data_ptr()
    assert torch.equal(got.view(torch.int16), expected.view(torch.int16))
    whole = every.clone()
    torch.ops.sam2_fast.lookup_bf16_(whole, table)
    assert torch.equal(whole.view(torch.int16), F.gelu(every).view(torch.int16))


@needs_lookup
def test_the_lookup_names_what_it_expected():
    table = common._gelu_table()
    with pytest.raises(ValueError, match="values must be a contiguous bfloat16 tensor, got Float"):
        torch.ops.sam2_fast.lookup_bf16_(torch.zeros(4), table)
    with pytest.raises(ValueError, match="not contiguous"):
        torch.ops.sam2_fast.lookup_bf16_(torch.zeros(4, 4, dtype=torch.bfloat16).t(), table)
    with pytest.raises(ValueError, match="table must be a contiguous bfloat16 tensor of 65537 entries"):
        torch.ops.sam2_fast.lookup_bf16_(torch.zeros(4, dtype=torch.bfloat16), table[:100])


LUT = feed_forward_op.backend("onednn_lut")


@needs_lookup
@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch without oneDNN")
@pytest.mark.parametrize("bands", [False, True], ids=["whole", "bands"])
@pytest.mark.parametrize("shape", [(1, 40, 23, 16), (301, 16), (2, 4100, 16)])
def test_onednn_lut_is_torchs_bfloat16_path_bit_for_bit(shape, bands, monkeypatch):
    """``onednn_lut``: oneDNN's products (torch's own, bit for bit: see the ``linear`` op) and
    the table's GELU of the rounded product give exactly torch's autocast path
    ``second(gelu(first(x)))``, whole or in bands of rows (here 64); it refuses ReLU (a free
    post-op) and float32."""
    if bands:
        monkeypatch.setattr(common, "LUT_BAND_BYTES", 64 * 96 * 2)
    first, second = _layers(hidden=96)
    x = torch.randn(shape)
    with torch.inference_mode():
        assert "bfloat16" in LUT.supports(x, first, F.gelu, second)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            if not torch.ops.sam2_fast.lookup_bf16_vectorized():
                assert "AVX-512" in LUT.supports(x, first, F.gelu, second)
                return
            assert LUT.supports(x, first, F.gelu, second) is None
            assert LUT.supports(x, first, nn.GELU(), second) is None
            assert "ReLU" in LUT.supports(x, first, F.relu, second)
            with use_backend("onednn_lut", op="feed_forward"):
                got = feed_forward(x, first, nn.GELU(), second)
            with use_backend("reference", op="linear"):
                expected = F.linear(F.gelu(F.linear(x, first.weight, first.bias)), second.weight, second.bias)
    assert got.dtype == torch.bfloat16 and torch.equal(got, expected)
