"""``MultiScaleBlock`` on a CPU without autograd: a windowed block with a large qkv runs
whole (norms, projections, attention, MLP, residuals) on bands of whole window rows. Windows
never cross a band, so the result is the block's on the whole input up to float32 summation
order (the GEMMs see fewer rows); each image of a batch gets exactly its own result."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

import sam2_fast.modeling.hiera as hiera

# the op's module (its package exports the function under the same name)
window_ops = importlib.import_module("sam2_fast.ops.window_attention")
from sam2_fast.modeling.hiera import MultiScaleBlock


@pytest.fixture
def small_bands(monkeypatch):
    """Every windowed block bands, one window row of tokens a band."""
    monkeypatch.setattr(hiera, "BLOCK_BANDS_FROM_BYTES", 0)
    monkeypatch.setattr(window_ops, "BAND_BYTES", 1)


def _block(dim=16, dim_out=16, heads=2, q_stride=None, window=4, seed=0) -> MultiScaleBlock:
    torch.manual_seed(seed)
    block = MultiScaleBlock(dim, dim_out, heads, q_stride=q_stride, window_size=window).eval()
    with torch.no_grad():  # non-trivial norms and biases
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return block


def _whole_and_bands(block, x):
    calls = []
    hook = block.attn.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    try:
        with torch.inference_mode():
            got = block(x)
            expected = block._forward(x)
    finally:
        hook.remove()
    return got, expected, calls[:-1]


CASES = {
    "windowed": dict(shape=(1, 16, 12, 16)),
    "padded rows and columns": dict(shape=(1, 15, 13, 16)),
    "stage change (pooled, wider)": dict(shape=(1, 16, 12, 16), dim_out=32, heads=4, q_stride=(2, 2)),
    "stage change, odd size": dict(shape=(1, 15, 13, 16), dim_out=32, heads=4, q_stride=(2, 2)),
    "two images": dict(shape=(2, 13, 9, 16), window=3),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bands_give_the_whole_block_result(small_bands, name):
    case = dict(CASES[name])
    shape = case.pop("shape")
    window = case.setdefault("window", 4)
    block = _block(**case)
    x = torch.randn(shape)
    got, expected, calls = _whole_and_bands(block, x)
    per_image = -(-shape[1] // window)
    assert len(calls) == shape[0] * per_image, calls  # one band per window row and image
    assert all(c[0] == 1 and c[1] <= window for c in calls), calls
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_an_image_in_a_batch_gets_its_own_result_bit_for_bit(small_bands):
    block = _block(dim_out=32, heads=4, q_stride=(2, 2))
    images = torch.randn(3, 15, 13, 16)
    with torch.inference_mode():
        batch = block(images)
        for i in range(3):
            assert torch.equal(batch[i], block(images[i : i + 1])[0]), i


def test_band_rows_are_whole_window_rows_of_about_band_bytes(monkeypatch):
    monkeypatch.setattr(hiera, "BLOCK_BANDS_FROM_BYTES", 0)
    block = _block(window=4)  # qkv row: 12 tokens x 48 floats = 2304 bytes
    x = torch.randn(1, 40, 12, 16)
    monkeypatch.setattr(window_ops, "BAND_BYTES", 3 * 4 * 2304 + 100)
    with torch.inference_mode():
        assert block.band_rows(x) == 12  # three window rows
        monkeypatch.setattr(window_ops, "BAND_BYTES", 40 * 2304)
        assert block.band_rows(x) == 0  # one band would hold it all
        monkeypatch.setattr(window_ops, "BAND_BYTES", 8 << 20)
        monkeypatch.setattr(hiera, "BLOCK_BANDS_FROM_BYTES", 40 * 2304 + 1)
        assert block.band_rows(x) == 0  # qkv under the threshold


def test_global_blocks_autograd_and_small_inputs_run_whole(small_bands):
    x = torch.randn(1, 16, 12, 16)
    with torch.inference_mode():
        assert _block(window=0).band_rows(x) == 0
        assert _block(window=4).band_rows(x) == 4
        assert _block(window=3, dim_out=32, heads=4, q_stride=(2, 2)).band_rows(x) == 0  # 3 % 2
    block = _block(window=4)
    assert block.band_rows(x) == 0  # autograd on
    x.requires_grad_(True)
    block(x).sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


def test_bands_under_bfloat16_autocast(small_bands):
    block = _block(dim_out=32, heads=4, q_stride=(2, 2))
    x = torch.randn(1, 16, 12, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, expected, calls = _whole_and_bands(block, x)
    assert len(calls) == 4 and got.dtype == expected.dtype
    torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=2e-2)


def test_the_rule_at_1024_bands_the_blocks_with_a_large_qkv():
    """Hiera-T at 1024: the two 256x256 blocks and the two 128x128 ones (qkv 36-144 MiB) and
    the last stage change (qkv 36 MiB) band; the 64x64 stage (18 MiB), the global blocks and
    the 32x32 block do not."""
    from sam2_fast.modeling.config import PRESETS

    trunk = hiera.Hiera(PRESETS["sam2.1-hiera-tiny"].trunk).eval()
    sizes = [256, 256, 128, 128] + [64] * 7 + [32]
    with torch.inference_mode():
        banded = [blk.band_rows(torch.empty(1, n, n, blk.dim)) > 0 for blk, n in zip(trunk.blocks, sizes)]
    assert banded == [True] * 4 + [False] * 6 + [True, False], banded


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "video_frame"])
def test_patch_embedding_gives_dense_tokens_whatever_the_input_strides(layout):
    """The tokens of the patch embedding are contiguous ``[B, H, W, C]`` on a CPU and the
    convolution's values, for a contiguous image, a channels-last one and a video frame
    (``[H, W, 3]`` permuted and unsqueezed: batch stride 3, which torch counts as
    channels-last but oneDNN answered with channels-first tokens)."""
    from sam2_fast.modeling.hiera import PatchEmbed

    torch.manual_seed(0)
    embed = PatchEmbed(16).eval()
    hwc = torch.randn(64, 48, 3)
    image = {
        "contiguous": hwc.permute(2, 0, 1).unsqueeze(0).contiguous(),
        "channels_last": hwc.permute(2, 0, 1).unsqueeze(0).contiguous(memory_format=torch.channels_last),
        "video_frame": hwc.permute(2, 0, 1).unsqueeze(0),
    }[layout]
    with torch.inference_mode():
        tokens = embed(image)
        expected = F.conv2d(hwc.permute(2, 0, 1).unsqueeze(0).contiguous(), embed.proj.weight, embed.proj.bias,
                            stride=4, padding=3).permute(0, 2, 3, 1)
    assert tokens.shape == (1, 16, 12, 16) and tokens.is_contiguous()
    torch.testing.assert_close(tokens, expected, rtol=1e-5, atol=1e-5)
