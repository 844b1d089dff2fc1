"""AOTInductor export of SAM 2: the four graphs of the ONNX export (:mod:`sam2_fast.export.onnx`)
as ``.pt2`` packages, compiled ahead of time by ``torch._inductor.aoti_compile_and_package``
for the device the model is on, and loaded without Python model code by
``torch._inductor.aoti_load_package`` or, in C++, by ``torch::inductor::AOTIModelPackageLoader``
(``examples/aoti_image_encoder``).

``image_encoder.pt2``, ``prompt_decoder.pt2``, ``memory_attention.pt2``, ``memory_encoder.pt2``
take and return the tensors of the ONNX files of the same name, positionally, in the order of
``export.json`` (the same contract: inputs, outputs, shapes, preprocessing); ``B`` and ``N``
(prompts, points), ``T`` and ``P`` (memories, object pointers) are dynamic, between 1 and
:data:`MAX_DYNAMIC`. Inputs must be dense row-major (``.contiguous()``): compiled code assumes
the strides it was traced with. Every package's metadata (``get_metadata()`` in C++) holds the part, the
image size, the mean and std of the preprocessing and the device, so that a program that
loads one package needs nothing else.

The graphs are traced with ``torch.export`` and the ``reference`` backend of every op, as
the ONNX export: no custom ops of ``sam2_fast._C`` end up in a package, which therefore runs
where only libtorch is. ``dtype="bf16"`` traces under ``torch.autocast(dtype=bfloat16)``, as
the official package's bf16 mode runs: matrix products and convolutions in bfloat16, the
rest (normalisations, softmax, positional encodings) in float32, with float32 inputs and
outputs -- the fast path of CPUs with AMX or avx512_bf16 and of GPUs.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from sam2_fast.errors import InvalidInputError
from sam2_fast.export.onnx import (
    DESCRIPTION_FILE,
    ImageEncoderGraph,
    PromptDecoderGraph,
    _check_model,
    decoder_example_prompts,
    describe,
)
from sam2_fast.export.onnx_tracker import OnnxVideoTracker
from sam2_fast.export.onnx_video import MemoryAttentionGraph, MemoryEncoderGraph, video_example_inputs
from sam2_fast.ops import use_backend
from sam2_fast.utils.transforms import IMAGENET_MEAN, IMAGENET_STD

logger = logging.getLogger(__name__)

PARTS = ("image_encoder", "prompt_decoder", "memory_attention", "memory_encoder")
SUFFIX = ".pt2"
#: supported ``dtype`` values: the precision inside the graphs (inputs and outputs are float32)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
#: the largest value of each dynamic size (B, N, T, P) that a package accepts
MAX_DYNAMIC = 4096


class _Float32Boundary(nn.Module):
    """``graph`` with its outputs cast back to float32 (under autocast some come out bf16)."""

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.inner = graph

    def forward(self, *inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        outputs = self.inner(*inputs)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        return tuple(y.float() for y in outputs)


def check_options(dtype: str) -> None:
    if dtype not in DTYPES:
        raise InvalidInputError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")


def _graphs(model: nn.Module, device: torch.device) -> Dict[str, Tuple[nn.Module, tuple, Dict[int, Dict[int, str]]]]:
    """Each part's module, example inputs and dynamic sizes ``{input index: {dim: name}}``."""
    s = int(model.image_size)
    image = torch.zeros(1, 3, s, s, device=device, dtype=next(model.parameters()).dtype)
    encoder = ImageEncoderGraph(model)
    feats = encoder(image)
    prompts = decoder_example_prompts(s, device)
    attention_args, encoder_args = video_example_inputs(model, device)
    return {
        "image_encoder": (encoder, (image,), {}),
        "prompt_decoder": (PromptDecoderGraph(model), (*feats, *prompts),
                           {3: {0: "B", 1: "N"}, 4: {0: "B", 1: "N"}, 5: {0: "B"}, 6: {0: "B"}}),
        "memory_attention": (MemoryAttentionGraph(model), attention_args,
                             {1: {0: "T"}, 2: {0: "T"}, 3: {0: "P"}, 4: {0: "P"}}),
        "memory_encoder": (MemoryEncoderGraph(model), encoder_args, {}),
    }


def _dynamic_shapes(args: tuple, dynamic: Dict[int, Dict[int, str]]) -> Optional[tuple]:
    if not dynamic:
        return None
    dims: Dict[str, Any] = {}
    shapes = []
    for index in range(len(args)):
        spec = dynamic.get(index)
        if spec is None:
            shapes.append(None)
            continue
        shapes.append({
            axis: dims.setdefault(name, torch.export.Dim(name, min=1, max=MAX_DYNAMIC))
            for axis, name in spec.items()
        })
    return tuple(shapes)


def _metadata(part: str, model: nn.Module, device: torch.device, dtype: str, variant: Optional[str]) -> Dict[str, str]:
    """Strings in the package (AOTIModelPackageLoader::get_metadata): what a C++ program needs."""
    return {
        "format": "sam2-fast aoti",
        "part": part,
        "variant": variant or "",
        "image_size": str(int(model.image_size)),
        "mean": ",".join(repr(float(v)) for v in IMAGENET_MEAN),
        "std": ",".join(repr(float(v)) for v in IMAGENET_STD),
        "device": str(device),
        "dtype": dtype,
    }


def export_aoti(
    model: nn.Module,
    out_dir: Union[str, Path],
    dtype: str = "fp32",
    variant: Optional[str] = None,
    parts: Sequence[str] = PARTS,
) -> Dict[str, Path]:
    """Compile ``image_encoder.pt2``, ``prompt_decoder.pt2``, ``memory_attention.pt2`` and
    ``memory_encoder.pt2`` of ``model`` (from :func:`sam2_fast.build_sam2` or a video
    predictor) for its device, and write them with ``export.json`` into ``out_dir``.

    Arguments:
      model: the model to export; the packages run on its device (CPU, or CUDA with Triton).
        It is not changed (a ``bf16`` export converts a copy).
      out_dir: the folder to write (created if needed; existing files are replaced).
      dtype: ``"fp32"`` or ``"bf16"``: the precision inside the graphs.
      variant: the model's name, recorded in ``export.json`` and the packages' metadata.
      parts: which packages to write (default: all four; compiling each takes a while).

    Returns the paths of the written files by name (``"image_encoder"`` ... and
    ``"export.json"``). Raises :class:`~sam2_fast.errors.InvalidInputError` for an option or a
    model the export does not support, naming the argument.
    """
    check_options(dtype)
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise InvalidInputError(f"parts: expected a non-empty subset of {', '.join(PARTS)}, got {list(parts)!r}")
    _check_model(model)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    target = DTYPES[dtype]
    graph_model = model
    was_training = graph_model.training
    graph_model.eval()
    paths: Dict[str, Path] = {}
    try:
        low = target != torch.float32
        with use_backend("reference"), torch.no_grad(), torch.autocast(device.type, dtype=target, enabled=low):
            graphs = _graphs(graph_model, device)
            for part in parts:
                module, args, dynamic = graphs[part]
                path = out / f"{part}{SUFFIX}"
                logger.info("compiling %s", path)
                if low:
                    module = _Float32Boundary(module)
                args = tuple(a.float() if a.is_floating_point() else a for a in args)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # inductor's notes on the CPU backend
                    shapes = _dynamic_shapes(args, dynamic)
                    if shapes is not None and isinstance(module, _Float32Boundary):
                        shapes = (shapes,)  # forward(*inputs): one spec, for the tuple
                    program = torch.export.export(module, args, dynamic_shapes=shapes, strict=False)
                    torch._inductor.aoti_compile_and_package(
                        program, package_path=str(path),
                        inductor_configs={
                            "aot_inductor.metadata": _metadata(part, model, device, dtype, variant),
                            # weights as constants: folded casts, prepacked oneDNN convolutions
                            # and matrix products on CPUs (the bf16 encoder 3.5x faster on AMX)
                            "freezing": True,
                        },
                    )
                paths[part] = path
    finally:
        graph_model.train(was_training)
    description = describe(model, opset=None, dtype=dtype, variant=variant)
    description["format"] = "sam2-fast aoti"
    description.pop("opset")
    description["device"] = str(device)
    description["torch"] = torch.__version__
    description["files"] = {
        f"{part}{SUFFIX}": spec for part in PARTS for name, spec in description["files"].items()
        if name == f"{part}.onnx" and part in paths
    }
    paths["export.json"] = out / DESCRIPTION_FILE
    paths["export.json"].write_text(json.dumps(description, indent=2) + "\n")
    return paths


class AotiSession:
    """One ``.pt2`` package behind onnxruntime's ``run(None, feeds)``: numpy in, numpy out, the
    inputs taken by name in the order of ``export.json``."""

    def __init__(self, path: Union[str, Path], inputs: List[str], outputs: List[str], device: str) -> None:
        self.runner = torch._inductor.aoti_load_package(str(path))
        self.inputs = inputs
        self.outputs = outputs
        self.device = torch.device(device)

    def run(self, output_names: Optional[Sequence[str]], feeds: Dict[str, Any]) -> List[Any]:
        """The outputs named ``output_names`` (None: all), in that order."""
        unknown = [name for name in output_names or () if name not in self.outputs]
        if unknown:
            raise InvalidInputError(
                f"output_names: unknown {', '.join(unknown)} (the package returns {', '.join(self.outputs)})"
            )
        missing = [name for name in self.inputs if name not in feeds]
        if missing:
            raise InvalidInputError(f"feeds: missing {', '.join(missing)} (the package takes {', '.join(self.inputs)})")
        # compiled kernels assume dense row-major inputs (numpy slices and transposes are not)
        args = [torch.as_tensor(feeds[name]).to(self.device).contiguous() for name in self.inputs]
        with torch.no_grad():
            outputs = self.runner(*args)
        if isinstance(outputs, torch.Tensor):  # a graph of one output returns it as it is
            outputs = [outputs]
        by_name = dict(zip(self.outputs, outputs))
        return [by_name[name].cpu().numpy() for name in (output_names or self.outputs)]


class AotiVideoTracker(OnnxVideoTracker):
    """:class:`~sam2_fast.export.OnnxVideoTracker` on the ``.pt2`` packages of
    :func:`export_aoti` (the same tracking loop and its stated simplifications): needs torch,
    not the model code. ``AotiVideoTracker("aoti/")``."""

    SUFFIX = SUFFIX

    def _session(self, folder: Path, part: str) -> AotiSession:
        return open_package(folder, part, self.description)


def open_package(folder: Union[str, Path], part: str, description: Optional[Dict[str, Any]] = None) -> AotiSession:
    """The package of ``part`` (``"image_encoder"``...) in the export ``folder`` as an
    :class:`AotiSession`; ``description``: its ``export.json``, read when not given."""
    folder = Path(folder).expanduser()
    if part not in PARTS:
        raise InvalidInputError(f"part: expected one of {', '.join(PARTS)}, got {part!r}")
    if description is None:
        description = json.loads((folder / DESCRIPTION_FILE).read_text())
    spec = description["files"].get(f"{part}{SUFFIX}")
    if spec is None:
        raise InvalidInputError(f"part: {folder} holds no {part}{SUFFIX} (export it with --parts {part})")
    return AotiSession(folder / f"{part}{SUFFIX}", [t["name"] for t in spec["inputs"]],
                       [t["name"] for t in spec["outputs"]], description.get("device", "cpu"))
