"""``sam2-fast`` command line: info, tune, segment, track, amg, convert, demo, bench.

Examples::

    sam2-fast info
    sam2-fast tune --dtype all
    sam2-fast segment photo.jpg --point 320,240 --point 100,80,0 --model sam2.1-hiera-tiny --out mask.png
    sam2-fast segment photo.jpg --box 50,60,400,380 --model ./sam2.1_hiera_tiny.pt --out mask.png
    sam2-fast track clip.mp4 --point 0,320,240 --box 12,50,60,400,380,2 --out clip_out
    sam2-fast amg photo.jpg --out masks.json
    sam2-fast convert sam2.1_hiera_tiny.pt sam2.1_hiera_tiny.safetensors
    sam2-fast demo --out demo_out
    sam2-fast bench --out bench_results
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

logger = logging.getLogger("sam2_fast.cli")

DEFAULT_MODEL = "sam2.1-hiera-tiny"

# exit status: 0 success; 2 usage (argparse errors, rejected inputs, unknown or unusable
# models and checkpoints); 1 a runtime failure (unreadable files, errors while running), with
# a one-line message unless --debug; 130 interrupted
EXIT_USAGE = 2
EXIT_RUNTIME = 1


# ---------------------------------------------------------------- argument types
def _numbers(text: str, option: str, counts: Sequence[int]) -> List[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in counts:
        raise argparse.ArgumentTypeError(f"{option} expects {' or '.join(map(str, counts))} comma-separated numbers, got {text!r}")
    return values


def point_arg(text: str) -> Tuple[float, float, int]:
    """``X,Y`` or ``X,Y,LABEL`` (label 1 = foreground, 0 = background)."""
    values = _numbers(text, "--point X,Y[,LABEL]", (2, 3))
    label = int(values[2]) if len(values) == 3 else 1
    if label not in (0, 1):
        raise argparse.ArgumentTypeError(f"--point label must be 1 (foreground) or 0 (background), got {text!r}")
    return values[0], values[1], label


def box_arg(text: str) -> Tuple[float, float, float, float]:
    """``X0,Y0,X1,Y1`` in pixels."""
    x0, y0, x1, y1 = _numbers(text, "--box X0,Y0,X1,Y1", (4,))
    return x0, y0, x1, y1


# ---------------------------------------------------------------- shared work
def load_image(path: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"error: IMAGE {path!r} does not exist or is not a file")
    try:
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise SystemExit(f"error: IMAGE {path!r} could not be read as an image: {exc}") from None


def segment(
    predictor,
    image: np.ndarray,
    points: Optional[np.ndarray],
    labels: Optional[np.ndarray],
    box: Optional[np.ndarray],
    multimask: bool,
) -> Tuple[np.ndarray, float, dict]:
    """Embed ``image``, predict, and return the best mask (bool ``[H, W]``), its predicted
    IoU and timings in seconds."""
    t0 = time.perf_counter()
    predictor.set_image(image)
    t1 = time.perf_counter()
    masks, scores, _ = predictor.predict(
        point_coords=points, point_labels=labels, box=box, multimask_output=multimask
    )
    t2 = time.perf_counter()
    best = int(np.argmax(scores))
    return masks[best] > 0.5, float(scores[best]), {"set_image": t1 - t0, "predict": t2 - t1}


def write_outputs(image, mask, points, labels, box, mask_path: Path, overlay_path: Optional[Path]) -> None:
    from sam2_fast.utils.visualize import overlay_masks, save_png

    save_png(mask, mask_path)
    if overlay_path is not None:
        save_png(overlay_masks(image, [mask], points=points, labels=labels, boxes=box), overlay_path)


# ---------------------------------------------------------------- commands
def cmd_info(args: argparse.Namespace) -> int:
    from sam2_fast.info import collect_info, format_info

    print(format_info(collect_info(query_devices=True)))
    return 0


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


def cmd_convert(args: argparse.Namespace) -> int:
    from sam2_fast.checkpoint import convert_checkpoint

    dst = convert_checkpoint(args.src, args.dst, trust_pickle=args.trust_pickle)
    print(f"wrote {dst}")
    return 0


def _random_weights_model(name: str, device, video: bool = False, overrides: Sequence[str] = ()):
    """The ``name`` variant (zoo name or Hub id) with random weights (seed 0); ``overrides``
    are official hydra-style config overrides."""
    from sam2_fast import build_sam2, build_sam2_video_predictor
    from sam2_fast.modeling.init import random_state_dict
    from sam2_fast.zoo import get_model_info

    build = build_sam2_video_predictor if video else build_sam2
    model = build(name, device=device, hydra_overrides_extra=list(overrides))
    model.load_state_dict(random_state_dict(get_model_info(name).config, seed=0))
    return model


def requested_random_weights_model(name: str, device, video: bool = False, overrides: Sequence[str] = ()):
    """:func:`_random_weights_model` for a command's ``--random-weights``: refuses a checkpoint
    file as ``--model`` and warns loudly that the masks are meaningless."""
    if Path(name).exists():
        raise SystemExit(
            "error: --random-weights builds the variant named by --model with random weights: "
            f"give a zoo name or Hub id (e.g. {DEFAULT_MODEL}), not the file {name!r}"
        )
    _warn_random_weights(
        f"WARNING: --random-weights: {name!r} runs with RANDOM WEIGHTS, no checkpoint is\n"
        "loaded: the masks are meaningless (this only tries out the pipeline)."
    )
    return _random_weights_model(name, device, video=video, overrides=overrides)


def _warn_random_weights(message: str) -> None:
    banner = "!" * 78
    print(f"{banner}\n{message}\n{banner}", file=sys.stderr)


def _demo_model(name: str, device):
    """Real weights when found (local cache or Hub), else random weights (with a warning)."""
    from sam2_fast.build_sam import build_sam2_hf
    from sam2_fast.hub import CheckpointNotFoundError

    try:
        return build_sam2_hf(name, device=device), True, ""
    except CheckpointNotFoundError as exc:
        reason = str(exc)
    return _random_weights_model(name, device), False, reason


def cmd_demo(args: argparse.Namespace) -> int:
    from sam2_fast import SAM2ImagePredictor
    from sam2_fast.sample import SAMPLE_OBJECTS, sample_image

    out_dir = Path(args.out)
    image = sample_image()
    model, real, reason = _demo_model(args.model, args.device)
    if not real:
        _warn_random_weights(
            f"WARNING: no checkpoint for {args.model!r} was found locally or on the Hub,\n"
            f"so the demo runs with RANDOM WEIGHTS: the masks below are meaningless.\n\n"
            f"{reason}\n\nThen run `sam2-fast demo` again."
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


def _benchmarks(text: str) -> List[str]:
    from sam2_fast.benchmark import BENCHMARKS

    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"--only expects comma-separated names from {','.join(BENCHMARKS)}, got {text!r}"
        )
    return names


def cmd_bench(args: argparse.Namespace) -> int:
    from sam2_fast.benchmark import run

    if args.quick:
        args.repeats, args.amg_points = 1, min(args.amg_points, 8)
    table = run(
        only=args.only, model=args.model, repeats=args.repeats, with_official=not args.no_official,
        amg_points=args.amg_points, out=Path(args.out) if args.out else None,
        log=lambda message: print(message, file=sys.stderr, flush=True), tune=not args.no_tune,
    )
    print(table)
    if args.out:
        print(f"\nwrote {Path(args.out) / 'bench.md'} and {Path(args.out) / 'bench.json'}")
    return 0


def _object_counts(text: str) -> List[int]:
    try:
        counts = [int(v) for v in text.split(",")]
    except ValueError:
        counts = []
    if not counts or any(n < 1 for n in counts):
        raise argparse.ArgumentTypeError(f"--objects expects comma-separated counts >= 1, got {text!r}")
    return counts


def cmd_tune(args: argparse.Namespace) -> int:
    from sam2_fast.ops import _tuning
    from sam2_fast.tune import DTYPES, format_rows, tune

    dtypes = [d for d in DTYPES if d != "auto"] if args.dtype == "all" else [args.dtype]
    if args.clear:
        _tuning.cache.clear(_tuning.machine_id(args.device or "cpu")[0])
    start = time.perf_counter()
    rows = tune(model=args.model, dtypes=dtypes, device=args.device, objects=args.objects,
                video=not args.no_video, progress=not args.no_progress,
                log=lambda message: print(message, file=sys.stderr, flush=True))
    machine, fp = _tuning.machine_id(args.device or "cpu")
    where = fp.get("gpu") or f"{fp.get('cpu')} ({' '.join(fp.get('flags', []))}, {fp.get('threads')} threads)"
    print(format_rows(rows, f"{len(rows)} choices measured on {where}, torch {fp['torch']} "
                            f"in {time.perf_counter() - start:.0f} s; cache {_tuning.cache.path}"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sam2-fast", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="version, build flags, backends of every op")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("tune", help="measure every op's fastest backend on this machine, ahead of time")
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME|PATH",
                   help=f"zoo name (its architecture, random weights) or checkpoint path (default {DEFAULT_MODEL})")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "all"],
                   help="precision mode(s) to tune: auto = the fast mode compute_dtype='auto' picks (default)")
    p.add_argument("--objects", type=_object_counts, default=[1], metavar="N[,N...]",
                   help="objects per tracked clip (default 1)")
    p.add_argument("--no-video", action="store_true", help="images only (no tracked clip)")
    p.add_argument("--clear", action="store_true", help="forget this machine's cached choices first")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_tune)

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

    from sam2_fast.cli_track import add_track_parser

    add_track_parser(sub)

    from sam2_fast.cli_amg import add_amg_parser

    add_amg_parser(sub)

    p = sub.add_parser("convert", help="convert an official .pt checkpoint to .safetensors")
    p.add_argument("src", help="input checkpoint (.pt or .safetensors)")
    p.add_argument("dst", nargs="?", help="output file (default: SRC with the other extension)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a .pt that needs full unpickling (runs code from the file: only for "
                        "checkpoints from a source you trust)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("demo", help="segment a generated sample image and write PNGs")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"zoo name (default {DEFAULT_MODEL})")
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: auto)")
    p.set_defaults(func=cmd_demo)

    from sam2_fast.benchmark import BENCHMARKS

    p = sub.add_parser("bench", help="this project vs the official sam2 package, side by side (CPU)")
    p.add_argument("--only", type=_benchmarks, default=list(BENCHMARKS),
                   help=f"comma-separated subset of {','.join(BENCHMARKS)} (default: all)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"zoo name (default {DEFAULT_MODEL}; random weights)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repetitions per benchmark (default 3)")
    p.add_argument("--amg-points", type=int, default=16, help="AMG points per side (default 16)")
    p.add_argument("--quick", action="store_true", help="1 repetition, AMG at 8 points per side")
    p.add_argument("--no-official", action="store_true", help="time this project only")
    p.add_argument("--no-tune", action="store_true",
                   help="do not measure missing backend choices first (they are then measured on first use)")
    p.add_argument("--out", default=None, help="folder for bench.md and bench.json")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from sam2_fast.errors import CheckpointError

    try:
        return args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("error: interrupted", file=sys.stderr)
        return 130
    except (CheckpointError, ValueError, TypeError) as exc:
        # the arguments or inputs were rejected: a bad value, an unknown model, a checkpoint
        # that is missing, unsafe or does not fit
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # a runtime failure: one line, the traceback only with --debug
        if args.debug:
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"error: {type(exc).__name__}: {message} (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_RUNTIME


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
