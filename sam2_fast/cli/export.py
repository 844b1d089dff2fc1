"""``sam2-fast export onnx`` / ``export aoti``: the image encoder, the prompt decoder, the memory
attention and the memory encoder as ONNX files that onnxruntime runs (needs the ``export``
extra: onnx, onnxruntime) or as AOTInductor packages (needs torch >= 2.6 and a C++ compiler).
See the README's "Export (ONNX, AOTInductor)" section for the contract."""

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
    paths = export_onnx(_model(args, "cpu"), args.out, opset=args.opset, dtype=args.dtype, variant=args.model)
    return _report(paths)


def _model(args: argparse.Namespace, device: str):
    """The model of ``--model`` (``--random-weights``, ``--image-size``) on ``device``."""
    overrides = [] if args.image_size is None else [f"++model.image_size={args.image_size}"]
    if args.random_weights:
        return requested_random_weights_model(args.model, device, overrides=overrides)
    from sam2_fast.factory import build_from_hub

    return build_from_hub(args.model, {"device": device, "hydra_overrides_extra": overrides})


def _report(paths) -> int:
    for path in paths.values():
        print(f"wrote {path}", file=sys.stdout)
    return 0


def cmd_export_aoti(args: argparse.Namespace) -> int:
    import torch

    if not hasattr(torch._inductor, "aoti_compile_and_package"):
        raise SystemExit(f"error: sam2-fast export aoti needs torch >= 2.6 (this is {torch.__version__})")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda: no CUDA device is available to this torch")
    from sam2_fast.export.aoti import check_options, export_aoti

    check_options(args.dtype)  # before minutes of loading and compiling
    paths = export_aoti(_model(args, args.device), args.out, dtype=args.dtype, variant=args.model,
                        parts=args.parts)
    return _report(paths)


def _model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME|PATH",
                   help=f"zoo name, Hub id or checkpoint file (default: {DEFAULT_MODEL})")
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write")
    p.add_argument("--random-weights", action="store_true",
                   help="the --model variant with random weights (tries out the export, no download)")
    p.add_argument("--image-size", type=image_size_arg, default=None,
                   help="input size in pixels, a multiple of 32 (default: the variant's, 1024)")


def add_parser(sub) -> None:
    """The ``export`` subcommand of the ``sam2-fast`` parser (``export onnx``, ``export aoti``)."""
    p = sub.add_parser("export", help="export the model for deployment (onnx, aoti)")
    formats = p.add_subparsers(dest="format", required=True)
    onnx = formats.add_parser(
        "onnx",
        help="image_encoder, prompt_decoder, memory_attention, memory_encoder .onnx + export.json "
             "(runs in onnxruntime)",
        description="Write image_encoder.onnx, prompt_decoder.onnx, memory_attention.onnx, "
                    "memory_encoder.onnx and export.json (inputs, outputs, shapes, preprocessing) "
                    "into --out.",
    )
    _model_arguments(onnx)
    onnx.add_argument("--opset", type=int, default=17, help="ONNX opset, >= 17 (default: 17)")
    # sam2_fast.export.onnx.DTYPES, written out: that module imports torch (a test keeps them equal)
    onnx.add_argument("--dtype", default="fp32", choices=("fp32", "fp16"),
                      help="fp32 (default), or fp16: float16 weights (files half the size) and arithmetic "
                           "inside float32 inputs and outputs")
    onnx.set_defaults(func=cmd_export_onnx)
    aoti = formats.add_parser(
        "aoti",
        help="image_encoder, prompt_decoder, memory_attention, memory_encoder .pt2 AOTInductor "
             "packages + export.json (torch._inductor.aoti_load_package, or C++)",
        description="Compile image_encoder.pt2, prompt_decoder.pt2, memory_attention.pt2 and "
                    "memory_encoder.pt2 (AOTInductor packages for --device; the same inputs and "
                    "outputs as the ONNX files) and write them with export.json into --out. "
                    "Compiling takes about a minute per package.",
    )
    _model_arguments(aoti)
    # sam2_fast.export.aoti.DTYPES, written out: that module imports torch
    aoti.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"),
                      help="fp32 (default), or bf16: bfloat16 arithmetic inside (autocast), float32 "
                           "inputs and outputs -- fast on GPUs and CPUs with AMX or avx512_bf16")
    aoti.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                      help="where the packages run (default: cpu); cuda compiles Triton kernels")
    aoti.add_argument("--parts", nargs="+", metavar="PART",
                      default=["image_encoder", "prompt_decoder", "memory_attention", "memory_encoder"],
                      choices=("image_encoder", "prompt_decoder", "memory_attention", "memory_encoder"),
                      help="which packages to compile (default: all four)")
    aoti.set_defaults(func=cmd_export_aoti)
