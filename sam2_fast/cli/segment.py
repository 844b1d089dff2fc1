"""``sam2-fast segment``: segment an image from clicks and/or a box; mask + overlay PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from sam2_fast.cli._args import DEFAULT_MODEL, box_arg, point_arg
from sam2_fast.cli._shared import load_image, segment, write_outputs


def cmd_segment(args: argparse.Namespace) -> int:
    from sam2_fast import SAM2ImagePredictor

    if not args.point and args.box is None:
        raise SystemExit("error: give at least one --point X,Y[,LABEL] or a --box X0,Y0,X1,Y1")
    image = load_image(args.image)
    points = np.array([p[:2] for p in args.point], np.float32) if args.point else None
    labels = np.array([p[2] for p in args.point], np.int32) if args.point else None
    box = np.array(args.box, np.float32) if args.box is not None else None
    predictor = SAM2ImagePredictor.from_pretrained(args.model, device=args.device)
    mask, score, times = segment(predictor, image, points, labels, box, args.multimask)
    out = Path(args.out)
    overlay = Path(args.overlay) if args.overlay else out.with_name(out.stem + "_overlay.png")
    write_outputs(image, mask, points, labels, box, out, overlay)
    print(
        f"mask: {out} ({int(mask.sum())} px, predicted IoU {score:.3f}); overlay: {overlay}; "
        f"set_image {times['set_image']:.2f}s, predict {times['predict']:.3f}s"
    )
    return 0


def add_parser(sub) -> None:
    """The ``segment`` subcommand of the ``sam2-fast`` parser."""
    p = sub.add_parser("segment", help="segment an image from clicks and/or a box")
    p.add_argument("image", help="input image (any format PIL reads)")
    p.add_argument("--point", action="append", type=point_arg, default=[], metavar="X,Y[,LABEL]",
                   help="a click in pixels; LABEL 1 = object (default), 0 = background; repeatable")
    p.add_argument("--box", type=box_arg, metavar="X0,Y0,X1,Y1", help="a box prompt in pixels")
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME|PATH",
                   help=f"zoo name, Hub id or checkpoint path (default {DEFAULT_MODEL})")
    p.add_argument("--out", default="mask.png", help="output mask PNG (default mask.png)")
    p.add_argument("--overlay", help="overlay PNG (default: <out>_overlay.png)")
    p.add_argument("--multimask", action="store_true", help="predict 3 masks and keep the best")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: auto)")
    p.set_defaults(func=cmd_segment)
