"""``sam2-fast tune``: measure every op's fastest backend on this machine, ahead of time."""

from __future__ import annotations

import argparse
import sys
import time
from typing import List

from sam2_fast.cli._args import DEFAULT_MODEL


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


def add_parser(sub) -> None:
    """The ``tune`` subcommand of the ``sam2-fast`` parser."""
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
