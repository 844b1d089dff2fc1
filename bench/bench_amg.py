"""SAM2AutomaticMaskGenerator end to end, this project vs the official sam2 1.1.0 package.

Same random weights (sam2.1-hiera-tiny), same 720x1280 image, points_per_side 32 (1 024
clicks, 3 072 candidate masks), fp32 on CPU, one process:

    pytest bench/bench_amg.py --benchmark-group-by=group

The official generator takes minutes here, so each side runs once after a warm-up on a small
grid. ``decoder`` isolates the mask decoder on 64 clicks (the official batch): the official
decoder on the image repeated per click vs :meth:`MaskDecoder.forward_shared_image`.
"""

from __future__ import annotations

import pytest
import torch

from oracle_support import ModelPair
from sam2_fast.automatic_mask_generator import SAM2AutomaticMaskGenerator
from sam2_fast.sample import sample_image

IMAGE = sample_image(720, 1280)


@pytest.fixture(scope="module")
def pair():
    return ModelPair("sam2.1-hiera-tiny")


def _generator(pair, impl, **kwargs):
    if impl == "official":
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator as OfficialAMG

        return OfficialAMG(pair.official, **kwargs)
    return SAM2AutomaticMaskGenerator(pair.ours, **kwargs)


# With random weights the predicted IoUs stay below the default pred_iou_thresh (0.8), so the
# default settings keep no mask and skip the per-mask work; "all masks" keeps every candidate
# up to the box NMS, the heaviest post-processing.
SETTINGS = {"defaults": {}, "all masks": dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)}


@pytest.mark.parametrize("impl", ["sam2_fast", "official"])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_amg_points_per_side_32(benchmark, pair, impl, setting):
    benchmark.group = f"amg: 720x1280, points_per_side 32, {setting} (tiny, fp32, cpu)"
    kwargs = SETTINGS[setting]
    _generator(pair, impl, points_per_side=4, **kwargs).generate(IMAGE)  # warm-up
    generator = _generator(pair, impl, points_per_side=32, **kwargs)
    records = benchmark.pedantic(generator.generate, args=(IMAGE,), rounds=1, iterations=1)
    benchmark.extra_info["masks"] = len(records)


@pytest.mark.parametrize("impl", ["sam2_fast", "official"])
def test_mask_decoder_64_clicks(benchmark, pair, impl):
    benchmark.group = "amg: mask decoder, 64 clicks, 3 masks each (tiny, fp32, cpu)"
    model = pair.ours if impl == "sam2_fast" else pair.official
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(1, 256, 64, 64, generator=gen)
    high_res = [torch.randn(1, 32, 256, 256, generator=gen), torch.randn(1, 64, 128, 128, generator=gen)]
    points = (torch.rand(64, 1, 2, generator=gen) * 1024, torch.ones(64, 1, dtype=torch.int))
    with torch.no_grad():
        sparse, dense = model.sam_prompt_encoder(points=points, boxes=None, masks=None)
        pe = model.sam_prompt_encoder.get_dense_pe()
    decoder = model.sam_mask_decoder

    if impl == "official":
        def run():
            with torch.no_grad():
                return decoder(image, pe, sparse, dense, True, True, high_res)
    else:
        def run():
            with torch.no_grad():
                shared = decoder.prepare_shared_image(image, pe, dense[:1], high_res)
                return decoder.forward_shared_image(shared, sparse, True)

    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
