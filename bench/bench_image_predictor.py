"""SAM2ImagePredictor end to end, this project vs the official sam2 1.1.0 package.

Same random weights (sam2.1-hiera-tiny), same 720x1280 image, fp32 on CPU, one process:

    pytest bench/bench_image_predictor.py --benchmark-group-by=group

``set_image`` is the image encoder (Hiera + FPN); ``predict`` is prompt encoder + mask
decoder + upsampling to the image size for one click with 3 masks.
"""

from __future__ import annotations

import numpy as np
import pytest

from oracle_support import ModelPair
from sam2_fast import SAM2ImagePredictor
from sam2_fast.sample import sample_image

IMAGE = sample_image(720, 1280)
CLICK = dict(point_coords=np.array([[383.0, 351.0]]), point_labels=np.array([1]))


@pytest.fixture(scope="module")
def predictors():
    from sam2.sam2_image_predictor import SAM2ImagePredictor as OfficialPredictor

    pair = ModelPair("sam2.1-hiera-tiny")
    return {"sam2_fast": SAM2ImagePredictor(pair.ours), "official": OfficialPredictor(pair.official)}


@pytest.mark.parametrize("impl", ["sam2_fast", "official"])
def test_set_image(benchmark, predictors, impl):
    benchmark.group = "image: set_image 720x1280 (tiny, fp32, cpu)"
    p = predictors[impl]
    benchmark.pedantic(p.set_image, args=(IMAGE,), rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("impl", ["sam2_fast", "official"])
def test_predict(benchmark, predictors, impl):
    benchmark.group = "image: predict 1 click, 3 masks (tiny, fp32, cpu)"
    p = predictors[impl]
    p.set_image(IMAGE)
    benchmark.pedantic(p.predict, kwargs=CLICK, rounds=10, warmup_rounds=2)
