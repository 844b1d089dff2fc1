"""``sam2-fast convert``: a checkpoint between Meta's ``.pt``, our ``.safetensors`` (both with
the official keys) and the Hugging Face transformers folder (``config.json`` +
``model.safetensors``), either way."""

from __future__ import annotations

import argparse
from pathlib import Path

#: --to -> the file suffix of that format (the transformers format is a folder)
_SUFFIXES = {"official": ".pt", "safetensors": ".safetensors"}
_FORMATS = (*_SUFFIXES, "transformers")


def cmd_convert(args: argparse.Namespace) -> int:
    from sam2_fast.checkpoint import convert_checkpoint
    from sam2_fast.errors import InvalidInputError
    from sam2_fast.transformers_format import (
        convert_from_transformers,
        convert_to_transformers,
        is_transformers_folder,
    )

    src = Path(args.src).expanduser()
    to, dst_after = (args.to[0], args.to[1:]) if args.to else (None, [])
    if to is not None and to not in _FORMATS:
        raise InvalidInputError(f"--to: expected one of {', '.join(_FORMATS)}, got {to!r}")
    if len(dst_after) > 1 or (dst_after and args.dst):
        raise InvalidInputError(
            f"dst: give one output, before or after --to FORMAT; got {[args.dst, *dst_after] if args.dst else dst_after}"
        )
    if dst_after:
        args.dst = dst_after[0]
    if to is None:  # from the output's extension, as before --to existed
        to = "transformers" if args.dst and not Path(args.dst).suffix else None
    if args.video and to != "transformers":
        raise InvalidInputError("--video: only with --to transformers (it picks Sam2VideoModel's config)")
    if to == "transformers":
        if not args.dst:
            raise InvalidInputError("dst: --to transformers needs the output folder, e.g. sam2-fast "
                                    f"convert {args.src} --to transformers ./{src.stem}-hf")
        dst = convert_to_transformers(
            src, args.dst, video=args.video, trust_pickle=args.trust_pickle, model=args.model
        )
    else:
        folder = is_transformers_folder(src)
        suffix = _SUFFIXES[to] if to is not None else None
        dst_arg = args.dst
        if dst_arg is None and (folder or suffix):
            dst_arg = Path(f"{str(src).rstrip('/')}{suffix or '.safetensors'}") if folder else src.with_suffix(suffix)
        if suffix and Path(dst_arg).suffix != suffix:
            raise InvalidInputError(f"dst: --to {to} writes a {suffix} file, got {str(dst_arg)!r}; name it *{suffix}")
        if folder:
            dst = convert_from_transformers(src, dst_arg)
        else:
            dst = convert_checkpoint(src, dst_arg, trust_pickle=args.trust_pickle)
    print(f"wrote {dst}")
    return 0


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
                   help="the zoo variant of SRC (default: recognised from its weights)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a .pt that needs full unpickling (runs code from the file: only for "
                        "checkpoints from a source you trust)")
    p.set_defaults(func=cmd_convert)
