"""``sam2-fast demo``: segment a generated sample image and write PNGs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from sam2_fast.cli._args import DEFAULT_MODEL
from sam2_fast.cli._shared import segment, write_outputs


def _demo_model(name: str, device):
    """Real weights when found (local cache or Hub), else random weights (with a warning)."""
    from sam2_fast.build_sam import build_sam2_hf, build_sam2_random
    from sam2_fast.hub import CheckpointNotFoundError

    try:
        return build_sam2_hf(name, device=device), True, ""
    except CheckpointNotFoundError as exc:
        reason = str(exc)
    return build_sam2_random(name, device), False, reason


def cmd_demo(args: argparse.Namespace) -> int:
    from sam2_fast import SAM2ImagePredictor
    from sam2_fast.sample import SAMPLE_OBJECTS, sample_image

    out_dir = Path(args.out)
    image = sample_image()
    model, real, reason = _demo_model(args.model, args.device)
    if not real:
        banner = "!" * 78
        print(
            f"{banner}\nWARNING: no checkpoint for {args.model!r} was found locally or on the Hub,\n"
            f"so the demo runs with RANDOM WEIGHTS: the masks below are meaningless.\n\n"
            f"{reason}\n\nThen run `sam2-fast demo` again.\n{banner}",
            file=sys.stderr,
        )
    predictor = SAM2ImagePredictor(model)
    name, (x, y) = next(iter(SAMPLE_OBJECTS.items()))
    points, labels = np.array([[x, y]], np.float32), np.array([1], np.int32)
    mask, score, times = segment(predictor, image, points, labels, None, multimask=True)
    from sam2_fast.utils.visualize import save_png

    save_png(image, out_dir / "sample.png")
    write_outputs(image, mask, points, labels, None, out_dir / "mask.png", out_dir / "overlay.png")
    print(
        f"model {args.model} ({'pretrained' if real else 'RANDOM weights'}) on {predictor.device}; "
        f"clicked the {name} at ({x}, {y}): mask {int(mask.sum())} px, predicted IoU {score:.3f}\n"
        f"set_image {times['set_image']:.2f}s, predict {times['predict']:.3f}s\n"
        f"wrote {out_dir / 'sample.png'}, {out_dir / 'mask.png'}, {out_dir / 'overlay.png'}"
    )
    return 0


def add_parser(sub) -> None:
    """The ``demo`` subcommand of the ``sam2-fast`` parser."""
    p = sub.add_parser("demo", help="segment a generated sample image and write PNGs")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"zoo name (default {DEFAULT_MODEL})")
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: auto)")
    p.set_defaults(func=cmd_demo)
