"""``sam2-fast bench``: this project vs the official sam2 package, side by side. The runner is
:mod:`sam2_fast._bench.runner`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List

from sam2_fast.cli._args import DEFAULT_MODEL


def _benchmarks(text: str) -> List[str]:
    from sam2_fast._bench import BENCHMARKS

    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"--only expects comma-separated names from {','.join(BENCHMARKS)}, got {text!r}"
        )
    return names


def cmd_bench(args: argparse.Namespace) -> int:
    from sam2_fast._bench.runner import run

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


def add_parser(sub) -> None:
    """The ``bench`` subcommand of the ``sam2-fast`` parser."""
    from sam2_fast._bench import BENCHMARKS

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
