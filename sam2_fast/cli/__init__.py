"""``sam2-fast`` command line: info, tune, segment, track, amg, batch, serve, convert, export, demo, bench.

Examples::

    sam2-fast info
    sam2-fast tune --dtype all
    sam2-fast segment photo.jpg --point 320,240 --point 100,80,0 --model sam2.1-hiera-tiny --out mask.png
    sam2-fast segment photo.jpg --box 50,60,400,380 --model ./sam2.1_hiera_tiny.pt --out mask.png
    sam2-fast track clip.mp4 --point 0,320,240 --box 12,50,60,400,380,2 --out clip_out
    sam2-fast amg photo.jpg --out masks.json
    sam2-fast batch amg photos/ --out masks/
    sam2-fast serve --model sam2.1-hiera-tiny --port 8000
    sam2-fast convert sam2.1_hiera_tiny.pt sam2.1_hiera_tiny.safetensors
    sam2-fast export onnx --model sam2.1-hiera-tiny --out onnx/
    sam2-fast demo --out demo_out
    sam2-fast bench --out bench_results

One module per command (``add_parser`` and ``cmd_<name>``); what several commands share is in
``_args`` (argument types) and ``_shared`` (loaders and shared work). Imports run one way:
this package imports the commands, the commands import ``_args`` / ``_shared``, never this
package or each other. Heavy imports (torch, the model) wait inside the command functions.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from sam2_fast.cli import amg, batch, bench, convert, demo, export, info, segment, serve, track, tune

# exit status: 0 success; 2 usage (argparse errors, rejected inputs, unknown or unusable
# models and checkpoints); 1 a runtime failure (unreadable files, errors while running), with
# a one-line message unless --debug; 130 interrupted
EXIT_USAGE = 2
EXIT_RUNTIME = 1

#: the subcommands, in the order ``sam2-fast --help`` lists them
COMMANDS = (info, tune, segment, track, amg, batch, serve, convert, export, demo, bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sam2-fast", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
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
