"""``sam2-fast convert``: a checkpoint between Meta's ``.pt``, our ``.safetensors`` (both with
the official keys) and the Hugging Face transformers folder (``config.json`` +
``model.safetensors``), either way."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Tuple, Union

#: --to -> the file suffix of that format (the transformers format is a folder)
_SUFFIXES = {"official": ".pt", "safetensors": ".safetensors"}
_FORMATS = (*_SUFFIXES, "transformers")


def cmd_convert(args: argparse.Namespace) -> int:
    from sam2_fast.checkpoint import convert_checkpoint
    from sam2_fast.transformers_format import (
        convert_from_transformers,
        convert_to_transformers,
        is_transformers_folder,
    )

    src = Path(args.src).expanduser()
    to, dst = _format_and_output(args)
    if to == "transformers":
        written = convert_to_transformers(
            src, dst, video=args.video, trust_pickle=args.trust_pickle, model=args.model
        )
    elif is_transformers_folder(src):
        default = Path(f"{str(src).rstrip('/')}{_SUFFIXES.get(to, '.safetensors')}")
        written = convert_from_transformers(src, _checked_suffix(dst or default, to))
    else:
        default = src.with_suffix(_SUFFIXES[to]) if to else None
        written = convert_checkpoint(src, _checked_suffix(dst or default, to), trust_pickle=args.trust_pickle)
    print(f"wrote {written}")
    return 0


def _format_and_output(args: argparse.Namespace) -> Tuple[Optional[str], Optional[str]]:
    """``(--to FORMAT or None, DST or None)``; DST may come before or after ``--to FORMAT``."""
    from sam2_fast.errors import InvalidInputError

    to, after = (args.to[0], args.to[1:]) if args.to else (None, [])
    if to is not None and to not in _FORMATS:
        raise InvalidInputError(f"--to: expected one of {', '.join(_FORMATS)}, got {to!r}")
    outputs = ([args.dst] if args.dst else []) + after
    if len(outputs) > 1:
        raise InvalidInputError(f"dst: give one output, before or after --to FORMAT; got {outputs}")
    dst = outputs[0] if outputs else None
    if (args.video or args.model) and to != "transformers":
        raise InvalidInputError("--video and --model: only with --to transformers")
    if to == "transformers" and dst is None:
        raise InvalidInputError(
            f"dst: --to transformers needs the output folder, e.g. sam2-fast convert {args.src} "
            f"--to transformers ./{Path(args.src).stem}-hf"
        )
    return to, dst


def _checked_suffix(dst: Optional[Union[str, Path]], to: Optional[str]) -> Optional[Union[str, Path]]:
    """``dst``, unless its extension is not the one ``--to`` writes."""
    from sam2_fast.errors import InvalidInputError

    if to is not None and dst is not None and Path(dst).suffix != _SUFFIXES[to]:
        raise InvalidInputError(
            f"dst: --to {to} writes a {_SUFFIXES[to]} file, got {str(dst)!r}; name it *{_SUFFIXES[to]}"
        )
    return dst


def add_parser(sub) -> None:
    """The ``convert`` subcommand of the ``sam2-fast`` parser."""
    p = sub.add_parser(
        "convert",
        help="convert a checkpoint: official .pt, .safetensors, transformers folder (both ways)",
    )
    p.add_argument("src", help="input: a .pt or .safetensors checkpoint, or a transformers folder "
                               "(config.json + model.safetensors)")
    p.add_argument("dst", nargs="?",
                   help="output file (.pt or .safetensors), or folder with --to transformers "
                        "(default: SRC with the other extension)")
    # nargs="+": `convert SRC --to transformers DST` (DST after the option) parses too
    p.add_argument("--to", nargs="+", metavar=("FORMAT", "DST"), default=None,
                   help="FORMAT [DST]: official (.pt, {'model': state_dict}), safetensors (official "
                        "keys) or transformers (a folder that transformers.Sam2Model.from_pretrained "
                        "loads); default: from DST's extension")
    p.add_argument("--video", action="store_true",
                   help="with --to transformers: write Sam2VideoModel's config (default: Sam2Model's); "
                        "both folders hold all the weights")
    p.add_argument("--model", default=None,
                   help="with --to transformers: the zoo variant of SRC (default: recognised from its weights)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a .pt that needs full unpickling (runs code from the file: only for "
                        "checkpoints from a source you trust)")
    p.set_defaults(func=cmd_convert)
