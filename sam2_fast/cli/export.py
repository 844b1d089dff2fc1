"""``sam2-fast export onnx``: the image encoder, the prompt decoder, the memory attention and
the memory encoder as ONNX files that onnxruntime runs (needs the ``export`` extra: onnx, onnxruntime). See the README's
"Export (ONNX)" section for the contract."""

from __future__ import annotations

import argparse
import sys

from sam2_fast.cli._args import DEFAULT_MODEL, image_size_arg
from sam2_fast.cli._shared import requested_random_weights_model


def cmd_export_onnx(args: argparse.Namespace) -> int:
    try:
        import onnx  # noqa: F401  (the checker runs on every written file)
    except ImportError as exc:
        raise SystemExit(f"error: sam2-fast export onnx needs onnx ({exc}): pip install 'sam2-fast[export]'") from None
    from sam2_fast.export import export_onnx
    from sam2_fast.export.onnx import check_options

    check_options(args.opset, args.dtype)  # before minutes of loading and tracing
    overrides = [] if args.image_size is None else [f"++model.image_size={args.image_size}"]
    if args.random_weights:
        model = requested_random_weights_model(args.model, "cpu", overrides=overrides)
    else:
        from sam2_fast.factory import build_from_hub

        model = build_from_hub(args.model, {"device": "cpu", "hydra_overrides_extra": overrides})
    paths = export_onnx(model, args.out, opset=args.opset, dtype=args.dtype, variant=args.model)
    for path in paths.values():
        print(f"wrote {path}", file=sys.stdout)
    return 0


def add_parser(sub) -> None:
    """The ``export`` subcommand of the ``sam2-fast`` parser (``export onnx``)."""
    p = sub.add_parser("export", help="export the model for deployment (onnx)")
    formats = p.add_subparsers(dest="format", required=True)
    onnx = formats.add_parser(
        "onnx",
        help="image_encoder, prompt_decoder, memory_attention, memory_encoder .onnx + export.json "
             "(runs in onnxruntime)",
        description="Write image_encoder.onnx, prompt_decoder.onnx, memory_attention.onnx, "
                    "memory_encoder.onnx and export.json (inputs, outputs, shapes, preprocessing) "
                    "into --out.",
    )
    onnx.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME|PATH",
                      help=f"zoo name, Hub id or checkpoint file (default: {DEFAULT_MODEL})")
    onnx.add_argument("--out", required=True, metavar="DIR", help="the folder to write")
    onnx.add_argument("--opset", type=int, default=17, help="ONNX opset, >= 17 (default: 17)")
    # sam2_fast.export.onnx.DTYPES, written out: that module imports torch (a test keeps them equal)
    onnx.add_argument("--dtype", default="fp32", choices=("fp32", "fp16"),
                      help="fp32 (default), or fp16: float16 weights (files half the size) and arithmetic "
                           "inside float32 inputs and outputs")
    onnx.add_argument("--random-weights", action="store_true",
                      help="the --model variant with random weights (tries out the export, no download)")
    onnx.add_argument("--image-size", type=image_size_arg, default=None,
                      help="input size in pixels, a multiple of 32 (default: the variant's, 1024)")
    onnx.set_defaults(func=cmd_export_onnx)
