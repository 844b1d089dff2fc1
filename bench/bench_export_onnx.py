"""The exported ONNX files in onnxruntime (CPU) against this project and the official package.

Same random weights (sam2.1-hiera-tiny, seed 1), same 1024x1024 image and click, one process:

    pytest bench/bench_export_onnx.py --benchmark-group-by=group --benchmark-columns=mean,stddev,rounds -s

* **encoder**: ``image_encoder.onnx`` on the normalised image against ``set_image`` (which
  also resizes and normalises; at 1024x1024 the resize is a copy) of our predictor in exact
  float32, in its fast mode (``compute_dtype="auto"``: bfloat16 where the CPU has AMX) and of
  the official predictor in float32.
* **click**: ``prompt_decoder.onnx`` for one click (3 low-res masks) against ``predict`` of the
  same predictors, which also upsample the 3 masks to 1024x1024 and threshold them.

The file sizes are printed and kept in ``extra_info["onnx_mb"]``.
"""

from __future__ import annotations

import numpy as np
import pytest

from oracle_support import ModelPair
from sam2_fast import SAM2ImagePredictor
from sam2_fast.build_sam import build_sam2_random
from sam2_fast.export import export_onnx
from sam2_fast.sample import sample_image

ort = pytest.importorskip("onnxruntime", reason="pip install 'sam2-fast[export]'")

MODEL = "sam2.1-hiera-tiny"
IMAGE = sample_image(1024, 1024)
CLICK = dict(point_coords=np.array([[383.0, 351.0]]), point_labels=np.array([1]))
IMPLS = ["onnxruntime", "sam2_fast_fp32", "sam2_fast_fast", "official"]


@pytest.fixture(scope="module")
def runners(tmp_path_factory):
    from sam2.sam2_image_predictor import SAM2ImagePredictor as OfficialPredictor

    pair = ModelPair(MODEL)
    out = tmp_path_factory.mktemp("onnx")
    paths = export_onnx(pair.ours, out, variant=MODEL)
    sizes = {name: path.stat().st_size / 2**20 for name, path in paths.items() if name != "export.json"}
    print("\nonnx file sizes (MiB):", {k: round(v, 1) for k, v in sizes.items()})
    opts = dict(providers=["CPUExecutionProvider"])
    encoder = ort.InferenceSession(str(paths["image_encoder"]), **opts)
    decoder = ort.InferenceSession(str(paths["prompt_decoder"]), **opts)
    predictors = {
        "sam2_fast_fp32": SAM2ImagePredictor(pair.ours),
        "sam2_fast_fast": SAM2ImagePredictor(build_sam2_random(MODEL, "cpu", compute_dtype="auto", seed=1)),
        "official": OfficialPredictor(pair.official),
    }
    image = predictors["sam2_fast_fp32"]._transforms.to_input(IMAGE).numpy()[None]
    feats = encoder.run(None, {"image": image})
    feeds = dict(zip(["image_embed", "high_res_feats_0", "high_res_feats_1"], feats))
    feeds.update(
        point_coords=CLICK["point_coords"][None].astype(np.float32),
        point_labels=CLICK["point_labels"][None].astype(np.float32),
        mask_input=np.zeros((1, 1, 256, 256), np.float32),
        has_mask_input=np.zeros(1, np.float32),
    )
    return dict(encoder=encoder, decoder=decoder, image=image, feeds=feeds, predictors=predictors, sizes=sizes)


@pytest.mark.parametrize("impl", IMPLS)
def test_encoder(benchmark, runners, impl):
    benchmark.group = "onnx: image encoder 1024x1024 (tiny, cpu)"
    benchmark.extra_info["onnx_mb"] = runners["sizes"]
    if impl == "onnxruntime":
        benchmark.pedantic(runners["encoder"].run, args=(None, {"image": runners["image"]}), rounds=3, warmup_rounds=1)
    else:
        benchmark.pedantic(runners["predictors"][impl].set_image, args=(IMAGE,), rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("impl", IMPLS)
def test_click(benchmark, runners, impl):
    benchmark.group = "onnx: 1 click, 3 masks (tiny, cpu)"
    if impl == "onnxruntime":
        benchmark.pedantic(runners["decoder"].run, args=(None, runners["feeds"]), rounds=10, warmup_rounds=2)
    else:
        predictor = runners["predictors"][impl]
        predictor.set_image(IMAGE)
        benchmark.pedantic(predictor.predict, kwargs=CLICK, rounds=10, warmup_rounds=2)
