"""ONNX export of SAM 2: the image encoder and the prompt decoder here, the memory attention
and the memory encoder of video tracking in :mod:`sam2_fast.export.onnx_video`.

``image_encoder.onnx``
  ``image [1, 3, S, S]`` float32, normalised (resize to ``S x S``, ``/ 255``, ImageNet mean /
  std) -> ``image_embed [1, 256, S/16, S/16]`` (``no_mem_embed`` already added, as
  :class:`~sam2_fast.SAM2ImagePredictor` does), ``high_res_feats_0 [1, 32, S/4, S/4]``,
  ``high_res_feats_1 [1, 64, S/8, S/8]``.

``prompt_decoder.onnx``
  the three encoder outputs, ``point_coords [B, N, 2]`` (x, y pixels of the ``S x S`` input
  frame; a box is two corner points with labels 2 and 3, first), ``point_labels [B, N]``
  (1 foreground, 0 background, 2 / 3 box corners, -1 padding), ``mask_input [B, 1, S/4, S/4]``
  (low-res logits of an earlier prediction), ``has_mask_input [B]`` (1 uses ``mask_input``,
  0 ignores it) -> ``masks [B, 3, S/4, S/4]`` (low-res logits clamped to +/-32, as the
  predictor returns them) and ``iou_predictions [B, 3]``; for video tracking also every mask
  token's ``mask_logits [B, 4, S/4, S/4]`` (not clamped; token 0 is the single-mask output)
  and ``mask_scores [B, 4]``, its object pointer ``obj_ptrs [B, 4, 256]`` (moved to the
  no-object pointer where the object is absent) and ``object_score_logits [B, 1]``. ``B`` and
  ``N`` are dynamic. The decoder appends the padding point that the official predictor adds
  to every prompt.

``dtype="fp16"`` (:mod:`sam2_fast.export.onnx_fp16`) rewrites the four float32 graphs: the
same float32 inputs and outputs (the same contract and ``export.json`` tensor specs:
:class:`~sam2_fast.export.OnnxVideoTracker` and user code need no change), float16 weights
(files half the size) and float16 arithmetic inside, with the casts at the graph's boundary;
the sine encodings and what feeds them, the decomposed ``LayerNorm2d`` statistics and what
follows them up to the next matrix product stay float32 (``export.json`` lists them per file).
Rewriting the checked float32 graph rather than tracing a half-precision model keeps the
traced contract, leaves the caller's model untouched, and lets each node keep float32 where
float16 loses too much.

``S`` is the model's ``image_size`` (1024 for every released variant). The graphs are traced
with the ``reference`` backend of every op (:func:`sam2_fast.ops.use_backend`): plain torch,
no C++ / Triton custom ops, RoPE and everything else in real arithmetic. Tracing uses the
TorchScript exporter (``torch.onnx.export(..., dynamo=False)``): it needs no ``onnxscript``
and keeps ``B`` and ``N`` dynamic through ``dynamic_axes``.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from sam2_fast.errors import ExportError, InvalidInputError, InvalidTypeError
from sam2_fast.export.onnx_video import MemoryAttentionGraph, MemoryEncoderGraph, video_example_inputs
from sam2_fast.modeling.sam_heads import NO_OBJ_SCORE
from sam2_fast.utils.transforms import IMAGENET_MEAN, IMAGENET_STD

logger = logging.getLogger(__name__)

ENCODER_FILE = "image_encoder.onnx"
DECODER_FILE = "prompt_decoder.onnx"
MEMORY_ATTENTION_FILE = "memory_attention.onnx"
MEMORY_ENCODER_FILE = "memory_encoder.onnx"
DESCRIPTION_FILE = "export.json"

#: supported ``dtype`` values: fp16 stores float16 weights and computes in float16 inside
#: float32 inputs and outputs (the module docstring)
DTYPES = ("fp32", "fp16")
#: supported opsets: 17 has LayerNormalization; older ones are untested
MIN_OPSET = 17
#: low-res logits are clamped as SAM2ImagePredictor clamps the logits it returns
LOGIT_CLAMP = 32.0
NUM_MULTIMASK_OUTPUTS = 3

#: what export.json says of a float16 export (each file adds its float32 op counts)
FP16_PRECISION = {
    "inputs_outputs": "float32 (as the fp32 export; the graphs cast at the boundary)",
    "weights": "float16",
    "compute": "float16, except in float32: the sine encodings of point_coords and obj_ptr_tpos and the "
               "nodes that feed them, the LayerNorm2d statistics (ReduceMean, Pow, Sqrt) and the "
               "elementwise ops after them up to the next Conv / MatMul, the prompt tokens' "
               "elementwise ops, the FPN's top-down upsampling, constants and shape arithmetic; "
               "LayerNormalization keeps float32 statistics (stash_type 1)",
    "float32_ops": "per file: the ops computing in float32, by type (constants and shapes left out)",
}

_COMPLEX_TYPES = (14, 15)  # onnx.TensorProto.COMPLEX64 / COMPLEX128


class ImageEncoderGraph(nn.Module):
    """``image [1, 3, S, S]`` -> ``(image_embed, high_res_feats_0, high_res_feats_1)``, as
    :meth:`SAM2ImagePredictor.set_image` computes them."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model = self.model
        backbone_out = model.forward_image(image)
        _, vision_feats, _, feat_sizes = model._prepare_backbone_features(backbone_out)
        if model.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + model.no_mem_embed
        # contiguous: a compiled (AOTInductor) graph assumes its inputs' strides, and the
        # decoder's are dense row-major, as every runtime passes them (a no-op in ONNX)
        feats = [
            feat.permute(1, 2, 0).reshape(1, -1, *size).contiguous() for feat, size in zip(vision_feats, feat_sizes)
        ]
        return feats[-1], feats[0], feats[1]


class PromptDecoderGraph(nn.Module):
    """The prompt encoder and mask decoder for ``B`` prompts of one image (the module docstring
    has the inputs and outputs), as :meth:`SAM2ImagePredictor._predict` with
    ``multimask_output=True``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        image_embed: torch.Tensor,
        high_res_feats_0: torch.Tensor,
        high_res_feats_1: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> Tuple[torch.Tensor, ...]:
        prompt_encoder = self.model.sam_prompt_encoder
        decoder = self.model.sam_mask_decoder
        sparse = prompt_encoder._embed_points(point_coords, point_labels, pad=True)
        # has_mask_input is 0 or 1 per prompt: exactly one of the two terms survives
        has_mask = has_mask_input.reshape(-1, 1, 1, 1)
        no_mask = prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = has_mask * prompt_encoder.mask_downscaling(mask_input) + (1 - has_mask) * no_mask
        all_masks, all_iou, mask_tokens, object_score_logits = decoder.predict_masks(
            image_embeddings=image_embed,
            image_pe=prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            repeat_image=True,
            high_res_features=[high_res_feats_0, high_res_feats_1],
        )
        # multimask output: the masks of tokens 1..3, as MaskDecoder._select_outputs
        masks, iou_pred = all_masks[:, 1:], all_iou[:, 1:]
        # for video tracking: every token's pointer, moved to no_obj_ptr where the object is
        # absent, as SAMHeads._forward_sam_heads does for the one it picks
        obj_ptrs = self.model.obj_ptr_proj(mask_tokens)
        if self.model.pred_obj_scores and getattr(self.model, "no_obj_ptr", None) is not None:
            if self.model.soft_no_obj_ptr:
                appearing = object_score_logits.sigmoid()
            else:
                appearing = (object_score_logits > 0).float()
            obj_ptrs = self.model._mix_no_obj_ptr(obj_ptrs, appearing.unsqueeze(-1))
        return (torch.clamp(masks, -LOGIT_CLAMP, LOGIT_CLAMP), iou_pred, all_masks, all_iou, obj_ptrs,
                object_score_logits)


def _check_model(model: Any) -> None:
    from sam2_fast.modeling.hiera import Hiera
    from sam2_fast.modeling.sam2_base import SAM2Base

    if not isinstance(model, SAM2Base):
        raise InvalidTypeError(
            f"model: expected a SAM 2 model (from sam2_fast.build_sam2), got {type(model).__name__}"
        )
    trunk = getattr(model.image_encoder, "trunk", None)
    if not isinstance(trunk, Hiera):
        raise InvalidInputError(
            f"model: ONNX export supports the SAM 2 family (Hiera image encoder); this model's trunk "
            f"is {type(trunk).__name__}"
        )
    if not model.use_high_res_features_in_sam:
        raise InvalidInputError(
            "model: ONNX export needs a model whose decoder uses the high-res features "
            "(use_high_res_features_in_sam=True, as every released SAM 2 variant)"
        )
    if model.num_maskmem < 1 or model.spatial_perceiver is not None:
        raise InvalidInputError(
            "model: the video graphs need a memory bank (num_maskmem >= 1) without a spatial "
            f"perceiver; this model has num_maskmem={model.num_maskmem}"
        )
    if model.sam_mask_decoder.num_multimask_outputs != NUM_MULTIMASK_OUTPUTS:
        raise InvalidInputError(
            f"model: the exported decoder returns {NUM_MULTIMASK_OUTPUTS} masks; this model has "
            f"{model.sam_mask_decoder.num_multimask_outputs} multimask outputs"
        )


def decoder_example_prompts(image_size: int, device: torch.device, b: int = 2, n: int = 3) -> Tuple[torch.Tensor, ...]:
    """Tracing inputs of the prompt decoder besides the image features: ``b`` prompts of ``n``
    points (``point_coords``, ``point_labels``, ``mask_input``, ``has_mask_input``)."""
    s = image_size
    return (
        torch.full((b, n, 2), s / 2, device=device),
        torch.ones(b, n, device=device),
        torch.zeros(b, 1, s // 4, s // 4, device=device),
        torch.zeros(b, device=device),
    )


def check_options(opset: int, dtype: str) -> None:
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise InvalidInputError(f"opset: expected an int >= {MIN_OPSET}, got {opset!r}")
    if dtype not in DTYPES:
        raise InvalidInputError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")


def _tensor_spec(name: str, shape: List[Union[int, str]], doc: str, dtype: str = "float32") -> Dict[str, Any]:
    return {"name": name, "shape": shape, "dtype": dtype, "doc": doc}


def _video_settings(model: nn.Module) -> Dict[str, Any]:
    """What :class:`~sam2_fast.export.OnnxVideoTracker` needs besides the graphs: the official
    video predictor's selection rules. A model built as an image model gets the values that
    ``build_sam2_video_predictor`` sets (binarised prompt masks, dynamic multimask output)."""
    decoder = model.sam_mask_decoder
    video = hasattr(model, "fill_hole_area")  # a SAM2VideoPredictor
    return {
        "num_maskmem": int(model.num_maskmem),
        "max_obj_ptrs_in_encoder": int(model.max_obj_ptrs_in_encoder),
        "use_obj_ptrs_in_encoder": bool(model.use_obj_ptrs_in_encoder),
        "use_signed_tpos_enc_to_obj_ptrs": bool(model.use_signed_tpos_enc_to_obj_ptrs),
        "only_obj_ptrs_in_the_past_for_eval": bool(model.only_obj_ptrs_in_the_past_for_eval),
        "max_cond_frames_in_attn": int(model.max_cond_frames_in_attn),
        "memory_temporal_stride_for_eval": int(model.memory_temporal_stride_for_eval),
        "multimask_output_in_sam": bool(model.multimask_output_in_sam),
        "multimask_output_for_tracking": bool(model.multimask_output_for_tracking),
        "multimask_min_pt_num": int(model.multimask_min_pt_num),
        "multimask_max_pt_num": int(model.multimask_max_pt_num),
        "use_multimask_token_for_obj_ptr": bool(model.use_multimask_token_for_obj_ptr),
        "pred_obj_scores": bool(model.pred_obj_scores),
        "binarize_mask_from_pts_for_mem_enc": bool(model.binarize_mask_from_pts_for_mem_enc) if video else True,
        "dynamic_multimask_via_stability": bool(decoder.dynamic_multimask_via_stability) if video else True,
        "dynamic_multimask_stability_delta": float(decoder.dynamic_multimask_stability_delta),
        "dynamic_multimask_stability_thresh": float(decoder.dynamic_multimask_stability_thresh),
        "no_obj_score": NO_OBJ_SCORE,
    }


def describe(model: nn.Module, opset: int, dtype: str, variant: Optional[str]) -> Dict[str, Any]:
    """The ``export.json`` of ``model``: files, inputs, outputs, preprocessing."""
    s = int(model.image_size)
    c = int(model.sam_mask_decoder.transformer_dim)
    e, h0, h1, m = s // 16, s // 4, s // 8, s // 4
    mem_dim = int(model.mem_dim)
    k = NUM_MULTIMASK_OUTPUTS + 1
    embed = _tensor_spec("image_embed", [1, c, e, e], "lowest-res image features, no_mem_embed added")
    hr0 = _tensor_spec("high_res_feats_0", [1, c // 8, h0, h0], "stride-4 features (after conv_s0)")
    hr1 = _tensor_spec("high_res_feats_1", [1, c // 4, h1, h1], "stride-8 features (after conv_s1)")
    return {
        "format": "sam2-fast onnx",
        "format_version": 1,
        "model": {
            "family": "sam2",
            "variant": variant,
            "image_size": s,
            "num_multimask_outputs": NUM_MULTIMASK_OUTPUTS,
        },
        "opset": opset,
        "dtype": dtype,
        **({"precision": FP16_PRECISION} if dtype == "fp16" else {}),
        "preprocessing": {
            "input": "RGB uint8 [H, W, 3]",
            "resize": [s, s],
            "resize_mode": "bilinear, antialias, align_corners=False; the aspect ratio is not kept",
            "scale": 1.0 / 255.0,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "layout": "NCHW",
            "formula": "image = ((resize(rgb) / 255 - mean) / std).transpose(2, 0, 1)[None]",
        },
        "prompts": {
            "coordinates": f"(x, y) pixels of the {s} x {s} input frame: x * {s} / W, y * {s} / H",
            "labels": {"1": "foreground click", "0": "background click", "2": "box top-left corner",
                       "3": "box bottom-right corner", "-1": "padding (ignored point)"},
            "order": "box corners first, then clicks; the decoder appends the official padding point",
            "padding": "rows of a batch with fewer points are padded with label -1",
        },
        "postprocessing": {
            "masks": f"low-res logits clamped to +/-{LOGIT_CLAMP:g}; upsample bilinearly "
                     "(align_corners=False) to the original H x W and threshold at 0",
            "mask_input": "feed an earlier 'masks' channel back as mask_input with has_mask_input = 1",
        },
        "files": {
            ENCODER_FILE: {
                "inputs": [_tensor_spec("image", [1, 3, s, s], "normalised image (preprocessing)")],
                "outputs": [embed, hr0, hr1],
            },
            DECODER_FILE: {
                "inputs": [
                    embed, hr0, hr1,
                    _tensor_spec("point_coords", ["B", "N", 2], "points in the input frame"),
                    _tensor_spec("point_labels", ["B", "N"], "labels, see prompts"),
                    _tensor_spec("mask_input", ["B", 1, m, m], "low-res logits of an earlier prediction"),
                    _tensor_spec("has_mask_input", ["B"], "1: use mask_input, 0: ignore it"),
                ],
                "outputs": [
                    _tensor_spec("masks", ["B", NUM_MULTIMASK_OUTPUTS, m, m], "low-res mask logits"),
                    _tensor_spec("iou_predictions", ["B", NUM_MULTIMASK_OUTPUTS], "predicted IoU per mask"),
                    _tensor_spec("mask_logits", ["B", k, m, m],
                                 "low-res logits of all mask tokens, not clamped (0: single-mask output)"),
                    _tensor_spec("mask_scores", ["B", k], "predicted IoU of all mask tokens"),
                    _tensor_spec("obj_ptrs", ["B", k, c],
                                 "object pointer of each mask token (no-object pointer mixed in)"),
                    _tensor_spec("object_score_logits", ["B", 1], "> 0: the object is present"),
                ],
            },
            MEMORY_ATTENTION_FILE: {
                "inputs": [
                    embed,
                    _tensor_spec("memory", ["T", mem_dim, e, e], "maskmem_features of T earlier frames"),
                    _tensor_spec("memory_tpos", ["T"], "temporal slot t_pos of each memory: 0 "
                                 "conditioning frame, num_maskmem - k for the frame k frames away", "int64"),
                    _tensor_spec("obj_ptrs", ["P", c], "object pointers of earlier frames"),
                    _tensor_spec("obj_ptr_tpos", ["P"], "pointer's temporal distance / (min(num_frames, "
                                 "max_obj_ptrs_in_encoder) - 1)"),
                ],
                "outputs": [_tensor_spec("pix_feat_with_mem", [1, c, e, e],
                                         "memory-conditioned features: prompt_decoder's image_embed")],
            },
            MEMORY_ENCODER_FILE: {
                "inputs": [
                    embed,
                    _tensor_spec("mask_logits", [1, 1, m, m], "the frame's low-res mask logits"),
                    _tensor_spec("object_score_logits", [1, 1], "the frame's object score"),
                    _tensor_spec("is_mask_from_pts", [1], "1: a prompted frame (mask binarised), 0: tracked"),
                ],
                "outputs": [_tensor_spec("maskmem_features", [1, mem_dim, e, e], "the frame's memory")],
            },
        },
        "video": _video_settings(model),
    }


def _pin_shapes(path: Path, spec: Dict[str, Any]) -> None:
    """Declare the graph's inputs and outputs with the shapes of ``spec`` (sizes the tracer
    left symbolic become numbers; ``B`` and ``N`` stay named)."""
    import onnx

    model = onnx.load(str(path))
    values = list(model.graph.input) + list(model.graph.output)
    for value, tensor in zip(values, spec["inputs"] + spec["outputs"]):
        if value.name != tensor["name"]:
            raise ExportError(f"{path.name}: expected {tensor['name']!r}, the graph has {value.name!r}")
        shape = value.type.tensor_type.shape
        del shape.dim[:]
        for size in tensor["shape"]:
            dim = shape.dim.add()
            if isinstance(size, str):
                dim.dim_param = size
            else:
                dim.dim_value = size
    onnx.save(model, str(path))


def _check_graph(path: Path) -> None:
    """onnx.checker, and the contract: no complex tensors, only standard ONNX ops."""
    import onnx

    onnx.checker.check_model(str(path))
    graph = onnx.load(str(path), load_external_data=False).graph
    custom = sorted({f"{n.domain}::{n.op_type}" for n in graph.node if n.domain not in ("", "ai.onnx")})
    if custom:
        raise ExportError(f"{path.name}: custom ops in the graph: {', '.join(custom)}")
    typed = list(graph.input) + list(graph.output) + list(graph.value_info)
    complex_values = [v.name for v in typed if v.type.tensor_type.elem_type in _COMPLEX_TYPES]
    complex_values += [t.name for t in graph.initializer if t.data_type in _COMPLEX_TYPES]
    if complex_values:
        raise ExportError(f"{path.name}: complex tensors in the graph: {', '.join(complex_values[:5])}")


def _convert_to_fp16(path: Path) -> Dict[str, int]:
    """Rewrite ``path`` as float16 inside (:mod:`sam2_fast.export.onnx_fp16`); returns the
    counts of the ops that stay float32."""
    import onnx

    from sam2_fast.export.onnx_fp16 import convert_to_float16

    model = onnx.load(str(path))
    summary = convert_to_float16(model)
    onnx.save(model, str(path))
    logger.info("%s: float16 weights %.1f MiB, float32 weights %.1f KiB", path.name,
                summary["float16_weight_bytes"] / 2**20, summary["float32_weight_bytes"] / 2**10)
    return summary["float32_ops"]


def _export(module: nn.Module, args: Tuple[torch.Tensor, ...], path: Path, input_names: List[str],
            output_names: List[str], dynamic_axes: Dict[str, Dict[int, str]], opset: int) -> None:
    with warnings.catch_warnings():
        # the traced Python branches test sizes that the contract fixes (one image of S x S,
        # 7 x 7 ... windows); B and N stay dynamic, which the parity tests check
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # the TorchScript exporter is deprecated in favour of dynamo=True (needs onnxscript)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        # strided slices (RoPE's channel pairs) are left to the runtime
        warnings.filterwarnings("ignore", message=".*Only steps=1 can be constant folded.*")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def export_onnx(
    model: nn.Module,
    out_dir: Union[str, Path],
    opset: int = 17,
    dtype: str = "fp32",
    variant: Optional[str] = None,
) -> Dict[str, Path]:
    """Write ``image_encoder.onnx``, ``prompt_decoder.onnx``, ``memory_attention.onnx``,
    ``memory_encoder.onnx`` and ``export.json`` of ``model`` (a SAM 2 model from
    :func:`sam2_fast.build_sam2` or a video predictor) into ``out_dir``.

    Arguments:
      model: the model to export (any device; traced where it is, in float32; not modified).
      out_dir: the folder to write (created if needed; existing files are replaced).
      opset: the ONNX opset (>= 17).
      dtype: ``"fp32"``, or ``"fp16"``: float16 weights and arithmetic inside float32 inputs
        and outputs (the module docstring).
      variant: the model's name, recorded in ``export.json``.

    Returns the paths of the written files by name (``"image_encoder"``, ``"prompt_decoder"``,
    ``"memory_attention"``, ``"memory_encoder"``, ``"export.json"``). Raises :class:`~sam2_fast.errors.InvalidInputError` for an option or
    model the export does not support, naming the argument.
    """
    from sam2_fast.ops import use_backend

    check_options(opset, dtype)
    _check_model(model)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    s = int(model.image_size)
    paths = {
        "image_encoder": out / ENCODER_FILE,
        "prompt_decoder": out / DECODER_FILE,
        "memory_attention": out / MEMORY_ATTENTION_FILE,
        "memory_encoder": out / MEMORY_ENCODER_FILE,
    }
    try:
        with use_backend("reference"), torch.no_grad(), torch.autocast(device.type, enabled=False):
            image = torch.zeros(1, 3, s, s, device=device)
            encoder = ImageEncoderGraph(model)
            feats = encoder(image)
            logger.info("exporting %s", paths["image_encoder"])
            _export(encoder, (image,), paths["image_encoder"], ["image"],
                    ["image_embed", "high_res_feats_0", "high_res_feats_1"], {}, opset)
            prompts = decoder_example_prompts(s, device)
            logger.info("exporting %s", paths["prompt_decoder"])
            _export(
                PromptDecoderGraph(model), (*feats, *prompts), paths["prompt_decoder"],
                ["image_embed", "high_res_feats_0", "high_res_feats_1", "point_coords",
                 "point_labels", "mask_input", "has_mask_input"],
                ["masks", "iou_predictions", "mask_logits", "mask_scores", "obj_ptrs", "object_score_logits"],
                {"point_coords": {0: "B", 1: "N"}, "point_labels": {0: "B", 1: "N"},
                 "mask_input": {0: "B"}, "has_mask_input": {0: "B"},
                 "masks": {0: "B"}, "iou_predictions": {0: "B"}, "mask_logits": {0: "B"},
                 "mask_scores": {0: "B"}, "obj_ptrs": {0: "B"}, "object_score_logits": {0: "B"}},
                opset,
            )
            attention_args, encoder_args = video_example_inputs(model, device)
            logger.info("exporting %s", paths["memory_attention"])
            _export(
                MemoryAttentionGraph(model), attention_args, paths["memory_attention"],
                ["image_embed", "memory", "memory_tpos", "obj_ptrs", "obj_ptr_tpos"], ["pix_feat_with_mem"],
                {"memory": {0: "T"}, "memory_tpos": {0: "T"}, "obj_ptrs": {0: "P"}, "obj_ptr_tpos": {0: "P"}},
                opset,
            )
            logger.info("exporting %s", paths["memory_encoder"])
            _export(
                MemoryEncoderGraph(model), encoder_args, paths["memory_encoder"],
                ["image_embed", "mask_logits", "object_score_logits", "is_mask_from_pts"], ["maskmem_features"],
                {}, opset,
            )
    finally:
        model.train(was_training)
    description = describe(model, opset, dtype, variant)
    for path in paths.values():
        _pin_shapes(path, description["files"][path.name])
        if dtype == "fp16":
            description["files"][path.name]["float32_ops"] = _convert_to_fp16(path)
        _check_graph(path)
    paths["export.json"] = out / DESCRIPTION_FILE
    paths["export.json"].write_text(json.dumps(description, indent=2) + "\n")
    return paths
