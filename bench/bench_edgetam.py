"""EdgeTAM vs sam2.1-hiera-tiny (this project), and EdgeTAM here vs transformers' EdgeTAM, on
the same random weights and inputs, in one process::

    .venv/bin/python bench/bench_edgetam.py [--repeats 3] [--frames 8] [--no-transformers]

Rows: ``set_image`` (image encoder + neck, one 1024 x 1024 image), ``predict`` (one click, three
masks, on the set image), ``video per frame`` (one tracked frame: image encoder, memory
attention, heads, memory encoder; the mean over frames 1 .. frames-1 after clicks on frame 0)
with 1 and 8 objects. fp32 on the CPU, exact mode. Each figure is the median of ``repeats``
interleaved runs (these machines are shared: read the ratios). Random weights: the timings do
not depend on the values. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, List

import numpy as np
import torch

from sam2_fast.build_sam import build_sam2_random
from sam2_fast.modeling.init import random_state_dict
from sam2_fast.predictors.image_predictor import SAM2ImagePredictor
from sam2_fast.sample import sample_image, sample_video_frame, sample_video_objects

SIZE = 1024
H, W = 512, 512  # generated frames (resized to 1024 by the predictors)


def _clicks(n: int) -> List[tuple]:
    """``n`` click positions spread over the generated frame (x, y)."""
    objects = list(sample_video_objects(0, H, W).values())
    grid = [(int(W * (0.15 + 0.7 * (i % 4) / 3)), int(H * (0.25 + 0.5 * (i // 4)))) for i in range(8)]
    return (objects + grid)[:n]


def ours_image(name: str):
    predictor = SAM2ImagePredictor(build_sam2_random(name, device="cpu"))
    image = sample_image(SIZE // 2, SIZE // 2)

    def set_image():
        predictor.set_image(image)

    def predict():
        predictor.predict(point_coords=[[200, 250]], point_labels=[1], multimask_output=True)

    set_image()
    return set_image, predict, predictor


def ours_video(name: str, frames: np.ndarray, objects: int) -> Callable[[], float]:
    predictor = build_sam2_random(name, device="cpu", video=True)
    predictor.show_progress = False

    def run() -> float:
        state = predictor.init_state(frames)
        for obj_id, xy in enumerate(_clicks(objects), start=1):
            predictor.add_new_points_or_box(state, 0, obj_id, points=[xy], labels=[1])
        stamps = []
        for _ in predictor.propagate_in_video(state):
            stamps.append(time.perf_counter())
        return (stamps[-1] - stamps[0]) / (len(stamps) - 1)

    return run


def transformers_pair(frames: np.ndarray, objects_list: List[int], tmp: str):
    """transformers' EdgeTamModel / EdgeTamVideoModel with the weights of ours."""
    import json
    from pathlib import Path

    import transformers
    from safetensors.torch import save_file
    from transformers.models.edgetam_video.modeling_edgetam_video import EdgeTamVideoInferenceSession

    from sam2_fast.zoo import get_family, get_model_info

    config = get_model_info("edgetam").config.with_postprocessing(video=True)
    weights = random_state_dict(config)
    models = {}
    for video, cls in ((False, transformers.EdgeTamModel), (True, transformers.EdgeTamVideoModel)):
        folder = Path(tmp) / ("video" if video else "image")
        folder.mkdir(parents=True, exist_ok=True)
        config_json, hf = get_family("edgetam").to_transformers(config, weights, video)
        (folder / "config.json").write_text(json.dumps(config_json))
        save_file({k: v.contiguous() for k, v in hf.items()}, str(folder / "model.safetensors"))
        models[video] = cls.from_pretrained(str(folder)).eval()

    image_predictor = SAM2ImagePredictor(build_sam2_random("edgetam", device="cpu"))
    image = sample_image(SIZE // 2, SIZE // 2)
    pixels = image_predictor._transforms.to_input(image, "cpu").unsqueeze(0)
    embeddings = {}

    @torch.no_grad()
    def set_image():
        embeddings["e"] = models[False].get_image_embeddings(pixels)

    @torch.no_grad()
    def predict():
        models[False](
            image_embeddings=embeddings["e"], multimask_output=True,
            input_points=torch.tensor([[[[200.0, 250.0]]]]) * 2, input_labels=torch.tensor([[[1]]]),
        )

    set_image()
    video_state = build_sam2_random("edgetam", device="cpu", video=True).init_state(frames)
    pixel_frames = torch.stack([video_state.images[i] for i in range(len(frames))])

    def video(objects: int) -> Callable[[], float]:
        @torch.no_grad()
        def run() -> float:
            session = EdgeTamVideoInferenceSession(video=pixel_frames, video_height=H, video_width=W, dtype=torch.float32)
            for obj_id, (x, y) in enumerate(_clicks(objects), start=1):
                obj_idx = session.obj_id_to_idx(obj_id)
                session.add_point_inputs(obj_idx, 0, {
                    "point_coords": torch.tensor([[[[x * SIZE / W, y * SIZE / H]]]], dtype=torch.float32),
                    "point_labels": torch.tensor([[[1]]], dtype=torch.int32),
                })
            session.obj_with_new_inputs = list(range(1, objects + 1))
            models[True](inference_session=session, frame_idx=0)
            stamps = []
            for _ in models[True].propagate_in_video_iterator(session):
                stamps.append(time.perf_counter())
            return (stamps[-1] - stamps[0]) / (len(stamps) - 1)

        return run

    return set_image, predict, {n: video(n) for n in objects_list}


def timed(fn: Callable) -> float:
    t0 = time.perf_counter()
    out = fn()
    return out if isinstance(out, float) else time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--no-transformers", action="store_true")
    args = parser.parse_args()
    frames = np.stack([sample_video_frame(i, H, W) for i in range(args.frames)])
    objects = (1, 8)

    rows: Dict[str, Dict[str, Callable]] = {}
    for name in ("sam2.1-hiera-tiny", "edgetam"):
        set_image, predict, _ = ours_image(name)
        rows.setdefault("set_image", {})[name] = set_image
        rows.setdefault("predict", {})[name] = predict
        for n in objects:
            rows.setdefault(f"video per frame, {n} object{'s' if n > 1 else ''}", {})[name] = ours_video(name, frames, n)
    if not args.no_transformers:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:  # the models are built by the time it goes
            set_image, predict, videos = transformers_pair(frames, list(objects), tmp)
        rows["set_image"]["transformers EdgeTAM"] = set_image
        rows["predict"]["transformers EdgeTAM"] = predict
        for n in objects:
            rows[f"video per frame, {n} object{'s' if n > 1 else ''}"]["transformers EdgeTAM"] = videos[n]

    results: Dict[str, Dict[str, List[float]]] = {row: {k: [] for k in fns} for row, fns in rows.items()}
    for _ in range(args.repeats):
        for row, fns in rows.items():
            for key, fn in fns.items():
                results[row][key].append(timed(fn))

    columns = ["sam2.1-hiera-tiny", "edgetam"] + ([] if args.no_transformers else ["transformers EdgeTAM"])
    print(f"| step ({SIZE}x{SIZE}, fp32, median of {args.repeats}) | " + " | ".join(columns)
          + " | EdgeTAM vs tiny | EdgeTAM ours vs transformers |")
    print("|---" * (len(columns) + 3) + "|")
    for row, by_key in results.items():
        med = {k: statistics.median(v) for k, v in by_key.items()}
        unit = 1000.0
        cells = [f"{med[c] * unit:.0f} ms" for c in columns]
        vs_tiny = med["sam2.1-hiera-tiny"] / med["edgetam"]
        vs_hf = f"{med['transformers EdgeTAM'] / med['edgetam']:.2f}x" if "transformers EdgeTAM" in med else "-"
        print(f"| {row} | " + " | ".join(cells) + f" | {vs_tiny:.2f}x | {vs_hf} |")


if __name__ == "__main__":
    main()
