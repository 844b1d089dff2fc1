"""``sam2-fast info``: version, build flags, backends of every op."""

from __future__ import annotations

import argparse


def cmd_info(args: argparse.Namespace) -> int:
    from sam2_fast.info import collect_info, format_info

    print(format_info(collect_info(query_devices=True)))
    return 0


def add_parser(sub) -> None:
    """The ``info`` subcommand of the ``sam2-fast`` parser."""
    p = sub.add_parser("info", help="version, build flags, backends of every op")
    p.set_defaults(func=cmd_info)
