"""``sam2-fast amg``: segment everything in an image; COCO-RLE JSON + overlay PNG.

    sam2-fast amg photo.jpg --out masks.json
    sam2-fast amg photo.jpg --out masks.json --points-per-side 16 --crop-n-layers 1

``masks.json`` is a list of the generator's records (as official ``scripts/amg.py`` writes
them): ``segmentation`` as COCO RLE (``{"size": [H, W], "counts": str}``, readable by
``pycocotools.mask.decode``), ``area``, ``bbox`` (XYWH), ``predicted_iou``, ``point_coords``,
``stability_score`` and ``crop_box``, best first.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from sam2_fast.cli._args import DEFAULT_MODEL, non_negative_int, positive_int, unit_float
from sam2_fast.cli._shared import load_image, requested_random_weights_model


def _generator(args: argparse.Namespace):
    from sam2_fast.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from sam2_fast.batch.tasks import AMG_OPTIONS

    options = {name: getattr(args, name) for name in AMG_OPTIONS}
    options.update(output_mode="coco_rle", progress=not args.quiet)
    if not args.random_weights:
        return SAM2AutomaticMaskGenerator.from_pretrained(args.model, device=args.device, **options)
    return SAM2AutomaticMaskGenerator(requested_random_weights_model(args.model, args.device), **options)


def write_overlay(image: np.ndarray, records: list, path: Path) -> None:
    """The masks blended onto ``image``, largest first so that small masks stay visible."""
    from sam2_fast.ops.rle import rle_to_masks
    from sam2_fast.utils.visualize import overlay_masks, save_png

    ordered = sorted(records, key=lambda r: r["area"], reverse=True)
    masks = rle_to_masks([r["segmentation"] for r in ordered]).numpy() if ordered else []
    save_png(overlay_masks(image, masks), path)


def cmd_amg(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix.lower() != ".json":
        raise SystemExit(f"error: --out must name a .json file, got {args.out!r}")
    overlay = Path(args.overlay) if args.overlay else out.with_name(out.stem + "_overlay.png")
    image = load_image(args.image)
    generator = _generator(args)
    t0 = time.perf_counter()
    records = generator.generate(image)
    seconds = time.perf_counter() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records))
    if not args.no_overlay:
        write_overlay(image, records, overlay)
    print(
        f"{len(records)} masks in {seconds:.2f}s -> {out}"
        + ("" if args.no_overlay else f", overlay {overlay}")
    )
    return 0


def add_parser(sub) -> None:
    """The ``amg`` subcommand of the ``sam2-fast`` parser."""
    p = sub.add_parser("amg", help="automatic mask generation: segment everything in an image")
    p.add_argument("image", metavar="IMAGE", help="input image (any format PIL reads)")
    p.add_argument("--out", default="masks.json", help="output JSON of COCO-RLE records (default masks.json)")
    p.add_argument("--overlay", help="overlay PNG (default: <out>_overlay.png)")
    p.add_argument("--no-overlay", action="store_true", help="do not write the overlay PNG")
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME|PATH",
                   help=f"zoo name, Hub id or checkpoint path (default {DEFAULT_MODEL})")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--points-per-side", type=positive_int, default=32, metavar="N",
                   help="clicks per side of the grid (default 32)")
    p.add_argument("--points-per-batch", type=positive_int, default=64, metavar="N",
                   help="clicks decoded together (default 64)")
    p.add_argument("--pred-iou-thresh", type=unit_float, default=0.8, metavar="T",
                   help="keep masks with a predicted IoU above T (default 0.8)")
    p.add_argument("--stability-score-thresh", type=unit_float, default=0.95, metavar="T",
                   help="keep masks with a stability score of at least T (default 0.95)")
    p.add_argument("--crop-n-layers", type=non_negative_int, default=0, metavar="N",
                   help="also segment 4, 16, ... crops for N layers (default 0)")
    p.add_argument("--min-mask-region-area", type=non_negative_int, default=0, metavar="PX",
                   help="fill holes / remove islands of up to PX low-res pixels (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--random-weights", action="store_true",
                   help="build the --model variant with random weights instead of loading a checkpoint "
                        "(meaningless masks; for trying out the command)")
    p.set_defaults(func=cmd_amg)
