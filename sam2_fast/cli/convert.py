"""``sam2-fast convert``: an official ``.pt`` checkpoint to ``.safetensors``."""

from __future__ import annotations

import argparse


def cmd_convert(args: argparse.Namespace) -> int:
    from sam2_fast.checkpoint import convert_checkpoint

    dst = convert_checkpoint(args.src, args.dst, trust_pickle=args.trust_pickle)
    print(f"wrote {dst}")
    return 0


def add_parser(sub) -> None:
    """The ``convert`` subcommand of the ``sam2-fast`` parser."""
    p = sub.add_parser("convert", help="convert an official .pt checkpoint to .safetensors")
    p.add_argument("src", help="input checkpoint (.pt or .safetensors)")
    p.add_argument("dst", nargs="?", help="output file (default: SRC with the other extension)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a .pt that needs full unpickling (runs code from the file: only for "
                        "checkpoints from a source you trust)")
    p.set_defaults(func=cmd_convert)
