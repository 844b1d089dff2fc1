"""The shared-image mask decoder (image share computed once, a low-rank remainder per prompt)
equals the plain decoder with the image repeated per prompt, in float32, to 1e-4 relative."""

from __future__ import annotations

import pytest
import torch

from sam2_fast.modeling import shared_image_decoder
from sam2_fast.modeling.config import PRESETS
from sam2_fast.modeling.init import random_state_dict
from sam2_fast.modeling.sam2_base import SAM2Base
from sam2_fast.ops import use_backend

REL_TOL = 1e-4


@pytest.fixture(scope="module", params=["sam2.1-hiera-tiny", "sam2-hiera-tiny"])
def model(request):
    sd = random_state_dict(PRESETS[request.param], seed=3)
    gen = torch.Generator().manual_seed(4)
    for key, value in sd.items():
        # LayerNorm weights start at 1 and biases at 0: make every affine map non-trivial
        if key.startswith("sam_mask_decoder.") and value.is_floating_point():
            value.add_(0.1 * torch.randn(value.shape, generator=gen))
    with torch.device("meta"):
        m = SAM2Base.from_config(PRESETS[request.param])
    m.load_state_dict(sd, strict=True, assign=True)
    return m.eval()


def _inputs(model, n, kind, seed):
    gen = torch.Generator().manual_seed(seed)
    pe = model.sam_prompt_encoder
    c = model.sam_mask_decoder.transformer_dim
    image = torch.randn(1, c, 64, 64, generator=gen)
    high_res = [torch.randn(1, c // 8, 256, 256, generator=gen), torch.randn(1, c // 4, 128, 128, generator=gen)]
    if kind == "click":
        points = (torch.rand(n, 1, 2, generator=gen) * 1024, torch.ones(n, 1, dtype=torch.int))
        boxes = None
    elif kind == "clicks":  # a positive and a negative click per prompt
        points = (torch.rand(n, 2, 2, generator=gen) * 1024, torch.tensor([[1, 0]] * n, dtype=torch.int))
        boxes = None
    else:
        corner = torch.rand(n, 2, generator=gen) * 900
        points, boxes = None, torch.cat([corner, corner + 100], dim=1)
    with torch.no_grad():
        sparse, dense = pe(points=points, boxes=boxes, masks=None)
    return image, pe.get_dense_pe(), sparse, dense, high_res


def _assert_close(ours, ref, what):
    err = (ours - ref).abs().max().item()
    scale = ref.abs().max().item()
    assert err <= REL_TOL * scale, f"{what}: max error {err:.3g} > {REL_TOL} x {scale:.3g}"


@pytest.mark.parametrize("multimask_output", [True, False])
@pytest.mark.parametrize("kind,n", [("click", 1), ("click", 6), ("clicks", 3), ("box", 5)])
def test_shared_image_decoder_equals_repeated_image(model, kind, n, multimask_output):
    image, pe, sparse, dense, high_res = _inputs(model, n, kind, seed=n)
    decoder = model.sam_mask_decoder
    with torch.no_grad():
        ref = decoder(image, pe, sparse, dense, multimask_output, True, high_res)
        shared = decoder.prepare_shared_image(image, pe, dense[:1], high_res)
        ours = decoder.forward_shared_image(shared, sparse, multimask_output)
    for a, b, what in zip(ours, ref, ("masks", "iou_pred", "sam_tokens_out", "object_score_logits")):
        assert a.shape == b.shape, what
        _assert_close(a, b, what)


def test_prompts_are_independent_of_batching(model, monkeypatch):
    """Decoding 7 prompts in passes of 4 + 3 equals decoding them all in one pass."""
    image, pe, sparse, dense, high_res = _inputs(model, 7, "click", seed=11)
    decoder = model.sam_mask_decoder
    with torch.no_grad():
        shared = decoder.prepare_shared_image(image, pe, dense[:1], high_res)
        monkeypatch.setattr(shared_image_decoder, "PROMPTS_PER_PASS", 4)
        split = decoder.forward_shared_image(shared, sparse, True)
        monkeypatch.setattr(shared_image_decoder, "PROMPTS_PER_PASS", 64)
        whole = decoder.forward_shared_image(shared, sparse, True)
    for a, b in zip(split, whole):
        _assert_close(a, b, "split vs whole")


@pytest.mark.parametrize("multimask_output", [True, False])
def test_masks_below_an_iou_threshold_are_skipped(model, multimask_output):
    image, pe, sparse, dense, high_res = _inputs(model, 9, "click", seed=5)
    decoder = model.sam_mask_decoder
    with torch.no_grad():
        shared = decoder.prepare_shared_image(image, pe, dense[:1], high_res)
        full = decoder.forward_shared_image(shared, sparse, multimask_output)
        threshold = full[1].max(dim=1).values.median().item()
        skipped = decoder.forward_shared_image(shared, sparse, multimask_output, skip_masks_at_or_below=threshold)
    dynamic = not multimask_output and decoder.dynamic_multimask_via_stability
    kept = torch.ones(9, dtype=torch.bool) if dynamic else (full[1] > threshold).any(dim=1)
    assert 0 < kept.sum() < 9 or dynamic
    assert torch.isnan(skipped[0][~kept]).all()
    _assert_close(skipped[0][kept], full[0][kept], "kept masks")
    for a, b in zip(skipped[1:], full[1:]):
        _assert_close(a, b, "iou / tokens / object scores")


def test_prepare_shared_image_rejects_a_batch_of_images(model):
    image, pe, _, dense, high_res = _inputs(model, 1, "click", seed=0)
    decoder = model.sam_mask_decoder
    with pytest.raises(ValueError, match=r"image_embeddings: expected one image \[1, C, h, w\]"):
        decoder.prepare_shared_image(image.expand(2, -1, -1, -1), pe, dense, high_res)
    with pytest.raises(ValueError, match="high_res_features"):
        decoder.prepare_shared_image(image, pe, dense, None)


@pytest.mark.parametrize("kind,n", [("click", 5), ("box", 2)])
@pytest.mark.parametrize("cpp", list(shared_image_decoder.UPSCALE_TILES))
def test_cpp_upscaler_equals_the_python_loop(model, monkeypatch, kind, n, cpp, extension):
    """torch.ops.sam2_fast.upscale_masks (C++, (prompt, tile) tasks on torch's threads) at each
    tile size the tuner compares and the per-prompt torch tiles give the same masks to float32
    rounding, also with tiles that do not divide the 64x64 image tokens (256 and 1024 do)."""
    image, pe, sparse, dense, high_res = _inputs(model, n, kind, seed=21)
    decoder = model.sam_mask_decoder
    calls = []
    real = torch.ops.sam2_fast.upscale_masks

    def counted(*args):
        calls.append(args[-1])
        return real(*args)

    monkeypatch.setattr(shared_image_decoder.torch.ops.sam2_fast, "upscale_masks", counted, raising=False)
    with torch.no_grad():
        shared = decoder.prepare_shared_image(image, pe, dense[:1], high_res)
        with use_backend(cpp, op="upscale_masks"):
            cpp_out = decoder.forward_shared_image(shared, sparse, True)[0]
        assert calls == [shared_image_decoder.UPSCALE_TILES[cpp]], "the C++ upscaler did not run"
        monkeypatch.setattr(shared_image_decoder, "UPSCALE_TILE", 700)
        with use_backend("reference", op="upscale_masks"):
            loop = decoder.forward_shared_image(shared, sparse, True)[0]
    torch.testing.assert_close(cpp_out, loop, rtol=1e-5, atol=1e-5 * loop.abs().max().item())


def test_cpp_upscaler_checks_its_inputs(extension):
    f = torch.zeros(4, 8)
    args = dict(
        base=f, left=torch.zeros(1, 0, 4), right=torch.zeros(1, 0, 8), shared=torch.zeros(0, 4, 8),
        scales=torch.zeros(1, 0, 4), ln_weight=torch.ones(2), ln_bias=torch.zeros(2), eps=1e-6,
        w2=torch.zeros(2, 12), bias2=torch.zeros(16, 12), hyper=torch.zeros(1, 4, 3), height=2,
        tile=3,
    )
    out = torch.ops.sam2_fast.upscale_masks(*args.values())
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()
    torch.library.opcheck(torch.ops.sam2_fast.upscale_masks.default, tuple(args.values()))
    with pytest.raises(ValueError, match="upscale_masks: height must be > 0 and divide the 4"):
        torch.ops.sam2_fast.upscale_masks(*(args | dict(height=3)).values())
    with pytest.raises(ValueError, match=r"upscale_masks: inconsistent shapes: base \[4, 8\]"):
        torch.ops.sam2_fast.upscale_masks(*(args | dict(bias2=torch.zeros(15, 12))).values())
    with pytest.raises(TypeError, match="upscale_masks: w2 must be float32, got Double"):
        torch.ops.sam2_fast.upscale_masks(*(args | dict(w2=torch.zeros(2, 12, dtype=torch.float64))).values())
    with pytest.raises(ValueError, match="upscale_masks: tile must be > 0, got 0"):
        torch.ops.sam2_fast.upscale_masks(*(args | dict(tile=0)).values())


def test_cpp_upscaler_under_inference_mode(model, monkeypatch, extension):
    """The predictors run under torch.inference_mode: the op's worker threads take the
    caller's mode (writing an inference tensor from a thread outside it is an error)."""
    image, pe, sparse, dense, high_res = _inputs(model, 3, "click", seed=22)
    decoder = model.sam_mask_decoder
    with torch.inference_mode():
        shared = decoder.prepare_shared_image(image, pe, dense[:1], high_res)
        masks = decoder.forward_shared_image(shared, sparse, True)[0]
    with torch.no_grad():
        shared = decoder.prepare_shared_image(image, pe, dense[:1], high_res)
        expected = decoder.forward_shared_image(shared, sparse, True)[0]
    assert torch.equal(masks, expected)


def test_cpp_upscaler_flop_formula_counts_the_loops_work(model, monkeypatch, extension):
    """sam2-fast bench counts FLOPs with FlopCounterMode, which sees the C++ op as one call:
    its registered formula gives what the Python loop's GEMMs count (within 1 %)."""
    from sam2_fast._bench.runner import count_gflop

    image, pe, sparse, dense, high_res = _inputs(model, 3, "box", seed=23)
    decoder = model.sam_mask_decoder
    with torch.no_grad():
        shared = decoder.prepare_shared_image(image, pe, dense[:1], high_res)
        decoder.forward_shared_image(shared, sparse, True)  # the image's share, counted once
        with use_backend("cpp", op="upscale_masks"):
            cpp_gflop = count_gflop(lambda: decoder.forward_shared_image(shared, sparse, True))
        with use_backend("reference", op="upscale_masks"):
            loop = count_gflop(lambda: decoder.forward_shared_image(shared, sparse, True))
    assert loop > 0.5 and abs(cpp_gflop - loop) <= 0.01 * loop, (cpp_gflop, loop)
