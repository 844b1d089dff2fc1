"""``sam2-fast batch``: amg / segment / track over folders, globs and manifests.

    sam2-fast batch amg photos/ --out masks/ --points-per-side 16
    sam2-fast batch segment 'shots/**/*.jpg' --box 50,60,400,380 --out boxes/
    sam2-fast batch segment detections.jsonl --out masks/ --format parquet
    sam2-fast batch track clips/ --point 0,320,240 --out tracks/ --reverse
    sam2-fast batch amg photos/ --out masks/ --engine ray --num-workers 4 --ray-address auto

One output per input, ``DIR/<path relative to its root, without extension>.json``, written
atomically, and ``DIR/_summary.jsonl`` (one line per input: status ``ok`` / ``failed`` /
``skipped``, error, seconds, masks). A rerun skips what is done (``--overwrite`` redoes it).
Exit status: 0 all done, 1 some inputs failed, 2 bad arguments, 130 interrupted (rerun to
finish). Details: ``sam2_fast.batch``.
"""

from __future__ import annotations

import argparse
import sys

from sam2_fast.batch.inputs import BatchUsageError
from sam2_fast.cli._args import (
    DEFAULT_MODEL,
    box_arg,
    image_size_arg,
    non_negative_int,
    point_arg,
    positive_float,
    positive_int,
    track_box_arg,
    track_point_arg,
    unit_float,
)

_TASK_OPTIONS = {
    # option: the tasks it is for, and how it is spelled on the command line
    "points_per_side": ("amg",), "points_per_batch": ("amg",), "pred_iou_thresh": ("amg",),
    "stability_score_thresh": ("amg",), "crop_n_layers": ("amg",), "min_mask_region_area": ("amg",),
    "multimask": ("segment",), "reverse": ("track",), "max_frames": ("track",),
}


def _prompts(args: argparse.Namespace):
    """The default prompt rows from ``--point`` / ``--box``: segment's ``X,Y[,LABEL]`` and
    ``X0,Y0,X1,Y1`` (one row), track's ``FRAME,X,Y[,LABEL][,OBJ]`` and
    ``FRAME,X0,Y0,X1,Y1[,OBJ]`` (one row per frame and object)."""
    from sam2_fast.batch import Prompt

    if not args.point and not args.box:
        return ()
    if args.task == "amg":
        raise BatchUsageError("--point / --box are for batch segment and track; amg segments everything")
    try:
        if args.task == "segment":
            points = [point_arg(t) for t in args.point]
            if len(args.box) > 1:
                raise argparse.ArgumentTypeError("batch segment takes one --box X0,Y0,X1,Y1")
            box = box_arg(args.box[0]) if args.box else None
            return (Prompt(
                points=tuple((x, y) for x, y, _ in points) or None,
                labels=tuple(label for _, _, label in points) or None,
                box=box,
            ),)
        rows = {}
        for frame, x, y, label, obj in map(track_point_arg, args.point):
            row = rows.setdefault((frame, obj), {"points": [], "labels": [], "box": None})
            row["points"].append((x, y))
            row["labels"].append(label)
        for frame, box, obj in map(track_box_arg, args.box):
            row = rows.setdefault((frame, obj), {"points": [], "labels": [], "box": None})
            if row["box"] is not None:
                raise argparse.ArgumentTypeError(f"two --box for object {obj} on frame {frame}")
            row["box"] = box
    except argparse.ArgumentTypeError as exc:
        raise BatchUsageError(str(exc)) from None
    return tuple(
        Prompt(tuple(r["points"]) or None, tuple(r["labels"]) or None, r["box"], frame, obj)
        for (frame, obj), r in sorted(rows.items())
    )


def cmd_batch(args: argparse.Namespace) -> int:
    from sam2_fast import batch

    options = dict(
        model=args.model, device=args.device, precision=args.precision, image_size=args.image_size,
        random_weights=args.random_weights, prompts=_prompts(args),
    )
    for name, tasks in _TASK_OPTIONS.items():
        value = getattr(args, name)
        if value is None or value is False:
            continue
        if args.task not in tasks:
            flag = "--" + name.replace("_", "-")
            raise BatchUsageError(f"{flag} is for batch {' / '.join(tasks)}, not batch {args.task}")
        options[name] = value
    if args.engine != "ray":
        for flag in ("num_cpus", "num_gpus", "ray_address"):
            if getattr(args, flag) is not None:
                raise BatchUsageError(f"--{flag.replace('_', '-')} is for --engine ray")
        if args.num_workers != 1:
            raise BatchUsageError("--num-workers is for --engine ray (the local engine runs one model)")
    result = batch.run(
        args.task, args.inputs, args.out, engine=args.engine, format=args.format, overwrite=args.overwrite,
        progress=not args.quiet, num_workers=args.num_workers, num_cpus=args.num_cpus, num_gpus=args.num_gpus,
        ray_address=args.ray_address, shard_size=args.shard_size, **options,
    )
    done = result.ok + result.failed
    rate = f" ({done / result.seconds:.2f} items/s)" if done and result.seconds > 0 else ""
    print(
        f"batch {args.task}: {result.ok} ok, {result.failed} failed, {result.skipped} skipped "
        f"of {result.total} in {result.seconds:.1f}s{rate} -> {args.out}"
    )
    if result.failures:
        print(f"failed (all in {result.summary_path}):", file=sys.stderr)
        for line in result.failures[:10]:
            print(f"  {line['path']}: {line['error']}", file=sys.stderr)
        if len(result.failures) > 10:
            print(f"  ... and {len(result.failures) - 10} more", file=sys.stderr)
    if result.interrupted:
        print(
            f"interrupted: {result.ok + result.skipped} of {result.total} inputs done; run the same "
            "command again to finish the rest", file=sys.stderr,
        )
    return result.exit_code


def add_parser(sub) -> None:
    """The ``batch`` subcommand of the ``sam2-fast`` parser."""
    p = sub.add_parser(
        "batch", help="amg / segment / track over folders, globs and manifests (local or on Ray)",
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("task", choices=("amg", "segment", "track"), help="what to run on every input")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="files, folders (recursive), globs ('**' recurses; quote them) and manifests "
                        "(.txt one path a line; .jsonl / .csv / .parquet with a path column and, for "
                        "segment / track, points, labels, box, frame_idx, obj_id)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME|PATH",
                   help=f"zoo name, Hub id or checkpoint path (default {DEFAULT_MODEL})")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: auto)")
    g.add_argument("--precision", choices=("float32", "bfloat16", "float16", "auto"), default=None,
                   help="compute precision (default float32, exact; auto: 16 bit where this machine is faster in it)")
    g.add_argument("--image-size", type=image_size_arg, metavar="PIXELS",
                   help="model input size, a multiple of 32 (default: the variant's, 1024)")
    g.add_argument("--random-weights", action="store_true",
                   help="build the --model variant with random weights (meaningless masks; for trying out the pipeline)")
    g = p.add_argument_group("amg")
    g.add_argument("--points-per-side", type=positive_int, metavar="N", help="clicks per side of the grid (default 32)")
    g.add_argument("--points-per-batch", type=positive_int, metavar="N", help="clicks decoded together (default 64)")
    g.add_argument("--pred-iou-thresh", type=unit_float, metavar="T", help="keep masks with a predicted IoU above T (default 0.8)")
    g.add_argument("--stability-score-thresh", type=unit_float, metavar="T",
                   help="keep masks with a stability score of at least T (default 0.95)")
    g.add_argument("--crop-n-layers", type=non_negative_int, metavar="N", help="also segment crops for N layers (default 0)")
    g.add_argument("--min-mask-region-area", type=non_negative_int, metavar="PX",
                   help="fill holes / remove islands of up to PX low-res pixels (default 0)")
    g = p.add_argument_group("segment / track prompts (for inputs whose manifest gives none)")
    g.add_argument("--point", action="append", default=[], metavar="[FRAME,]X,Y[,LABEL][,OBJ]",
                   help="a click in pixels: segment X,Y[,LABEL]; track FRAME,X,Y[,LABEL][,OBJ]; repeatable")
    g.add_argument("--box", action="append", default=[], metavar="[FRAME,]X0,Y0,X1,Y1[,OBJ]",
                   help="a box in pixels: segment X0,Y0,X1,Y1; track FRAME,X0,Y0,X1,Y1[,OBJ]")
    g.add_argument("--multimask", action="store_true", default=None, help="segment: 3 masks per prompt row")
    g.add_argument("--reverse", action="store_true", default=None, help="track: also track backward")
    g.add_argument("--max-frames", type=positive_int, metavar="N", help="track: at most N frames each way")
    g = p.add_argument_group("output")
    g.add_argument("--format", choices=("json", "parquet"), default="json",
                   help="one JSON per input (default) or Parquet shards of the same records")
    g.add_argument("--shard-size", type=positive_int, default=256, metavar="N", help="inputs per Parquet shard (default 256)")
    g.add_argument("--overwrite", action="store_true", help="redo inputs whose output exists")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("engine")
    g.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process (default); ray: Ray Data (pip install 'sam2-fast[ray]')")
    g.add_argument("--num-workers", type=positive_int, default=1, metavar="N", help="ray: actors, each with its own model (default 1)")
    g.add_argument("--num-cpus", type=positive_float, metavar="N",
                   help="ray: CPUs per actor (default: this machine's CPUs / workers; 1 on an existing cluster)")
    g.add_argument("--num-gpus", type=positive_float, metavar="N", help="ray: GPUs per actor (default 1 with --device cuda, else 0)")
    g.add_argument("--ray-address", metavar="ADDR",
                   help="ray: join this cluster ('auto' = the one `ray start` started here); default: start a local one")
    p.set_defaults(func=cmd_batch)
