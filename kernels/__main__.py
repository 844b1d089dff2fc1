"""``python -m sam2_fast.kernels aot [--filter TEXT] [--cc 80,90]``: compile every shipped Triton
kernel configuration for real GPUs (no GPU needed) and fail on compile errors or spills."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sam2_fast.kernels")
    sub = parser.add_subparsers(dest="command", required=True)
    aot = sub.add_parser("aot", help="compile every kernel configuration for sm_80 and sm_90")
    aot.add_argument("--filter", default=None, help="only configurations whose name contains this")
    aot.add_argument("--cc", default="80,90", help="compute capabilities, comma-separated")
    args = parser.parse_args(argv)

    import importlib.util

    if importlib.util.find_spec("triton") is None:
        print("triton is not installed: nothing to compile (pip install triton)", file=sys.stderr)
        return 1
    from sam2_fast.kernels._aot import compile_all, format_results

    try:
        targets = tuple(int(c) for c in args.cc.split(","))
    except ValueError:
        parser.error(f"--cc: expected comma-separated integers like 80,90, got {args.cc!r}")
    results = compile_all(targets, args.filter)
    if not results:
        print("no kernel configuration matched", file=sys.stderr)
        return 1
    print(format_results(results))
    return 0 if all(r.ok and not r.spilled for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
