"""The exported models (ONNX in onnxruntime, AOTInductor packages) against this project and the
official package, in one run, on this machine's CPU.

Same random weights (sam2.1-hiera-tiny, seed 1, the object-score bias raised by 3 so that
tracked objects stay present, as in ``bench_video.py``), one process::

    pytest bench/bench_export.py --benchmark-group-by=group --benchmark-columns=median,min,rounds -s

* **encoder**: ``image_encoder`` on the normalised 1024x1024 image against ``set_image`` of
  the predictors (which also resize and normalise; at 1024x1024 the resize is a copy).
* **click**: ``prompt_decoder`` for one click (3 low-res masks) against ``predict`` of the
  predictors, which also upsample the 3 masks to 1024x1024 and threshold them.
* **video frame**: one tracked frame of a 384x512 clip with 1 object and a full memory bank
  (frame 8 after a click on frame 0): image encoder, memory attention, decoder, memory encoder
  and the mask at the video's size. ``OnnxVideoTracker`` / ``AotiVideoTracker`` against our
  ``SAM2VideoPredictor`` and the official one.

Implementations: onnxruntime (CPU execution provider) on the fp32 and fp16 files, the AOTI
packages in fp32 and bf16 (autocast), this project's exact fp32 mode and fast mode
(``compute_dtype="auto"``: bfloat16 where this CPU multiplies it faster), the official package
in fp32 and under bf16 autocast. The file sizes are printed and kept in
``extra_info["sizes_mb"]``; the export and compile times in ``extra_info["export_s"]``.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image

from oracle_support import ModelPair, official_video_predictor
from sam2_fast import SAM2ImagePredictor, build_sam2_video_predictor
from sam2_fast.export import AotiVideoTracker, OnnxVideoTracker, export_aoti, export_onnx
from sam2_fast.export.aoti import open_package
from sam2_fast.precision import resolve_compute_dtype
from sam2_fast.sample import sample_image, sample_video_frame, sample_video_objects

ort = pytest.importorskip("onnxruntime", reason="pip install 'sam2-fast[export]'")

MODEL = "sam2.1-hiera-tiny"
IMAGE = sample_image(1024, 1024)
CLICK = dict(point_coords=np.array([[383.0, 351.0]]), point_labels=np.array([1]))
VIDEO_HW = (384, 512)
WARM_FRAMES = 8  # frame 8 reads a full memory bank: the prompt frame + 6 previous frames
EXPORTS = ["onnxruntime fp32", "onnxruntime fp16", "aoti fp32", "aoti bf16"]
PREDICTORS = ["sam2_fast fp32", "sam2_fast fast", "official fp32", "official bf16"]
IMPLS = EXPORTS + PREDICTORS
FEATURES = ("image_embed", "high_res_feats_0", "high_res_feats_1")


def _bf16(impl: str):
    """The autocast context of ``impl``: the official package's bf16 mode."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=impl == "official bf16")


class _Ort:
    def __init__(self, folder, part: str) -> None:
        self.session = ort.InferenceSession(str(folder / f"{part}.onnx"), providers=["CPUExecutionProvider"])

    def run(self, names, feeds):
        return self.session.run(names, feeds)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    pair = ModelPair(MODEL)
    sd = dict(pair.state_dict)
    key = "sam_mask_decoder.pred_obj_score_head.layers.2.bias"
    sd[key] = sd[key] + 3.0
    video = {}
    for name, dtype in (("sam2_fast fp32", None), ("sam2_fast fast", resolve_compute_dtype("auto", torch.device("cpu")))):
        predictor = build_sam2_video_predictor(MODEL, None, device="cpu", compute_dtype=dtype)
        predictor.load_state_dict(sd)
        predictor.show_progress = False
        video[name] = predictor.eval()
    video["official fp32"] = video["official bf16"] = official_video_predictor(MODEL, sd)

    folders, sizes, export_s = {}, {}, {}
    for impl in EXPORTS:
        runtime, dtype = impl.split()
        folder = folders[impl] = tmp_path_factory.mktemp(impl.replace(" ", "_"))
        start = time.perf_counter()
        if runtime == "onnxruntime":
            export_onnx(video["sam2_fast fp32"], folder, dtype=dtype, variant=MODEL)
        else:
            export_aoti(video["sam2_fast fp32"], folder, dtype=dtype, variant=MODEL)
        export_s[impl] = round(time.perf_counter() - start, 1)
        sizes[impl] = {p.name: round(p.stat().st_size / 2**20, 1) for p in sorted(folder.iterdir())
                       if p.suffix in (".onnx", ".pt2")}
    print("\nfile sizes (MiB):", sizes, "\nexport / compile seconds:", export_s)

    from sam2.sam2_image_predictor import SAM2ImagePredictor as OfficialPredictor

    image_predictors = {
        "sam2_fast fp32": SAM2ImagePredictor(video["sam2_fast fp32"]),
        "sam2_fast fast": SAM2ImagePredictor(video["sam2_fast fast"]),
        "official fp32": OfficialPredictor(video["official fp32"]),
        "official bf16": OfficialPredictor(video["official bf16"]),
    }
    runtimes = {}
    for impl, folder in folders.items():
        if impl.startswith("onnxruntime"):
            runtimes[impl] = (_Ort(folder, "image_encoder"), _Ort(folder, "prompt_decoder"))
        else:
            runtimes[impl] = (open_package(folder, "image_encoder"), open_package(folder, "prompt_decoder"))
    image = image_predictors["sam2_fast fp32"]._transforms.to_input(IMAGE).numpy()[None]
    # the predictors read a folder of JPEGs (the official init_state reads nothing else), the
    # trackers the same frames decoded
    frame_folder = tmp_path_factory.mktemp("frames")
    for i in range(WARM_FRAMES + 1):
        Image.fromarray(sample_video_frame(i, *VIDEO_HW)).save(frame_folder / f"{i:05d}.jpg", quality=95)
    frames = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(frame_folder.iterdir())])
    return dict(video=video, folders=folders, sizes=sizes, export_s=export_s, image_predictors=image_predictors,
                runtimes=runtimes, image=image, frames=frames, frame_folder=str(frame_folder))


def _decoder_feeds(feats):
    feeds = dict(zip(FEATURES, feats))
    feeds.update(
        point_coords=CLICK["point_coords"][None].astype(np.float32),
        point_labels=CLICK["point_labels"][None].astype(np.float32),
        mask_input=np.zeros((1, 1, 256, 256), np.float32),
        has_mask_input=np.zeros(1, np.float32),
    )
    return feeds


@pytest.mark.parametrize("impl", IMPLS)
def test_encoder(benchmark, setup, impl):
    benchmark.group = "export: image encoder 1024x1024 (tiny, cpu)"
    benchmark.extra_info.update(sizes_mb=setup["sizes"], export_s=setup["export_s"])
    if impl in EXPORTS:
        encoder, _ = setup["runtimes"][impl]
        benchmark.pedantic(encoder.run, args=(None, {"image": setup["image"]}), rounds=3, warmup_rounds=1)
    else:
        predictor = setup["image_predictors"][impl]

        def run():
            with _bf16(impl):
                predictor.set_image(IMAGE)

        benchmark.pedantic(run, rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("impl", IMPLS)
def test_click(benchmark, setup, impl):
    benchmark.group = "export: 1 click, 3 masks (tiny, cpu)"
    if impl in EXPORTS:
        encoder, decoder = setup["runtimes"][impl]
        feeds = _decoder_feeds(encoder.run(None, {"image": setup["image"]}))
        benchmark.pedantic(decoder.run, args=(["masks", "iou_predictions"], feeds), rounds=10, warmup_rounds=2)
    else:
        predictor = setup["image_predictors"][impl]

        def run():
            with _bf16(impl):
                predictor.predict(**CLICK)

        with _bf16(impl):
            predictor.set_image(IMAGE)
        benchmark.pedantic(run, rounds=10, warmup_rounds=2)


@pytest.mark.parametrize("impl", IMPLS)
def test_video_frame(benchmark, setup, impl):
    benchmark.group = "export: video, one tracked frame, 1 object, full memory (tiny, 1024, cpu)"
    frames = setup["frames"]
    click = list(sample_video_objects(0, *VIDEO_HW).values())[0]
    if impl in EXPORTS:
        tracker_type = OnnxVideoTracker if impl.startswith("onnxruntime") else AotiVideoTracker
        tracker = tracker_type(setup["folders"][impl])
        tracker.init(frames)
        tracker.add_points(0, 1, points=[click], labels=[1])
        for _ in tracker.propagate(max_frame_num_to_track=WARM_FRAMES - 1):
            pass

        def one_frame():
            for _ in tracker.propagate(start_frame_idx=WARM_FRAMES, max_frame_num_to_track=0):
                pass

        def drop_cached_features():
            tracker._features.clear()  # the image encoder is part of a frame's cost
    else:
        predictor = setup["video"][impl]
        with torch.inference_mode(), _bf16(impl):
            state = predictor.init_state(setup["frame_folder"])
            predictor.add_new_points_or_box(state, 0, 1, points=[click], labels=[1])
            for _ in predictor.propagate_in_video(state, max_frame_num_to_track=WARM_FRAMES - 1):
                pass

        def one_frame():
            with torch.inference_mode(), _bf16(impl):
                for _ in predictor.propagate_in_video(state, start_frame_idx=WARM_FRAMES, max_frame_num_to_track=0):
                    pass

        def drop_cached_features():
            state["cached_features"].clear()

    benchmark.pedantic(one_frame, setup=drop_cached_features, rounds=3, warmup_rounds=0)

