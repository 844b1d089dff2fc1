"""The EdgeTAM family (Zhou et al. 2025, "EdgeTAM: On-Device Track Anything Model"): SAM 2 with
a RepViT-M1 image encoder, a spatial perceiver that compresses each memory frame to 512
latents, and a two-layer memory attention over them
(:mod:`sam2_fast.modeling.edgetam`, config :class:`~sam2_fast.modeling.edgetam_config.EdgeTAMConfig`).

One variant::

    edgetam      facebook/EdgeTAM      edgetam.pt (official keys)

Its checkpoints come in two key layouts:

* ``"official"``: ``edgetam.pt`` of facebookresearch/EdgeTAM (``{"model": state_dict}``) and
  the safetensors files ``sam2_fast.checkpoint.convert_checkpoint`` writes from it.
* ``"transformers"``: the Hugging Face transformers ``EdgeTamVideoModel`` / ``EdgeTamModel``
  layout, written by transformers' ``convert_edgetam_video_to_hf.py``: SAM 2's renaming
  (:func:`sam2_fast.zoo.sam2.to_transformers_key`) plus the timm wrapper
  (``body.`` -> ``timm_model.``), the perceiver's names, its joint key/value projections split
  in two, and the memory attention's MLP (``linear1/2`` -> ``mlp.up_proj/down_proj``).

The model needs timm (``pip install 'sam2-fast[edgetam]'``); this module imports neither timm
nor torch until a model is built or a state dict converted.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

from sam2_fast.modeling.edgetam_config import EDGETAM, EdgeTAMConfig, PerceiverConfig, RepViTConfig
from sam2_fast.zoo.registry import Family, ModelInfo, register, register_family
from sam2_fast.zoo.sam2 import to_transformers_key as sam2_transformers_key

FAMILY = "edgetam"
TRANSFORMERS_IMAGE_TYPE = "edgetam"
TRANSFORMERS_VIDEO_TYPE = "edgetam_video"

# official prefixes / keys that identify EdgeTAM weights, and their transformers names
_TRUNK = "image_encoder.trunk.body."
_TRANSFORMERS_TRUNK = "vision_encoder.backbone.timm_model."
_LATENTS = "spatial_perceiver.latents"
_LATENTS_2D = "spatial_perceiver.latents_2d"
_MEMORY_LAYERS = re.compile(r"memory_attention\.layers\.(\d+)\.")

# renames transformers' convert script adds to SAM 2's, in its order
_EXTRA_RENAMES: Tuple[Tuple[str, str], ...] = (
    ("body.", "timm_model."),
    ("ff.0", "mlp.layer_norm"),
    ("ff.1", "mlp.up_proj"),
    ("ff.3", "mlp.down_proj"),
)
# the perceiver's layer renames (regex, replacement), applied in order after the renames above
_PERCEIVER_RULES: Tuple[Tuple[re.Pattern, str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"spatial_perceiver\.latents$", "spatial_perceiver.latents_1d"),
        (r"spatial_perceiver\.layers\.(\d+)\.attn\.layer_norm_x", r"spatial_perceiver.layers.\1.layer_norm_input"),
        (r"spatial_perceiver\.layers\.(\d+)\.attn\.layer_norm_latents", r"spatial_perceiver.layers.\1.layer_norm_latents"),
        (r"spatial_perceiver\.layers\.(\d+)\.self_attn\.layer_norm", r"spatial_perceiver.layers.\1.layer_norm_self"),
        (r"spatial_perceiver\.layers\.(\d+)\.attn\.", r"spatial_perceiver.layers.\1.cross_attention."),
        (r"spatial_perceiver\.layers\.(\d+)\.self_attn\.", r"spatial_perceiver.layers.\1.self_attention."),
        (r"(spatial_perceiver\.layers\.\d+\.\w+)\.to_q\.", r"\1.q_proj."),
        (r"(spatial_perceiver\.layers\.\d+\.\w+)\.to_out\.", r"\1.o_proj."),
    )
)
_JOINT_KV = ".to_kv."
_POINT_EMBEDDINGS = "sam_prompt_encoder.point_embeddings."
_PROMPT_PE = "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
TRANSFORMERS_POINT_EMBED = "prompt_encoder.point_embed.weight"
TRANSFORMERS_SHARED_PE = "shared_image_embedding.positional_embedding"


def to_transformers_keys(key: str) -> Tuple[str, ...]:
    """The transformers name(s) of an official EdgeTAM state-dict key: one, or two for a
    perceiver's joint ``to_kv`` projection (its key and value halves, ``k_proj`` / ``v_proj``).

    The four ``point_embeddings.<i>.weight`` map to ``point_embed.<i>.weight`` here;
    :func:`to_transformers_state_dict` stacks them as transformers stores them.
    """
    key = sam2_transformers_key(key)
    for old, new in _EXTRA_RENAMES:
        key = key.replace(old, new)
    for pattern, replacement in _PERCEIVER_RULES:
        key = pattern.sub(replacement, key)
    if key.startswith("memory_attention."):
        key = key.replace("linear1", "mlp.up_proj").replace("linear2", "mlp.down_proj")
    if _JOINT_KV in key:
        return key.replace(_JOINT_KV, ".k_proj."), key.replace(_JOINT_KV, ".v_proj.")
    return (key,)


def detect_layout(state_dict: Mapping[str, Any]) -> str:
    """``"official"``, ``"transformers"`` or ``"unknown"`` (not EdgeTAM weights)."""
    if any(k.startswith(_TRUNK) for k in state_dict):
        return "official"
    if any(k.startswith(_TRANSFORMERS_TRUNK) for k in state_dict):
        return "transformers"
    return "unknown"


def to_transformers_state_dict(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """An official EdgeTAM state dict in the layout of transformers' ``EdgeTamVideoModel``
    (``EdgeTamModel`` reads its image parts and skips the rest)."""
    import torch

    out: Dict[str, Any] = {}
    points = []
    for key, value in state_dict.items():
        if key.startswith(_POINT_EMBEDDINGS):
            points.append((int(key[len(_POINT_EMBEDDINGS) :].split(".")[0]), value))
            continue
        names = to_transformers_keys(key)
        halves = value.chunk(len(names), dim=0) if len(names) > 1 else (value,)
        out.update((n, h.contiguous()) for n, h in zip(names, halves))
    if points:
        out[TRANSFORMERS_POINT_EMBED] = torch.cat([v for _, v in sorted(points, key=lambda p: p[0])], dim=0)
    if _PROMPT_PE in state_dict:
        out[TRANSFORMERS_SHARED_PE] = state_dict[_PROMPT_PE].clone()  # a tied copy in transformers
    return out


@functools.lru_cache(maxsize=None)
def _official_keys(config: EdgeTAMConfig) -> Tuple[str, ...]:
    from sam2_fast.modeling.common import meta_device
    from sam2_fast.modeling.sam2_base import SAM2Base

    with meta_device():
        return tuple(SAM2Base.from_config(config).state_dict())


@functools.lru_cache(maxsize=None)
def _transformers_to_official(config: EdgeTAMConfig) -> Dict[str, Tuple[str, int, int]]:
    """transformers name -> (official key, half index, number of halves)."""
    table: Dict[str, Tuple[str, int, int]] = {}
    for key in _official_keys(config):
        names = to_transformers_keys(key)
        for i, name in enumerate(names):
            table[name] = (key, i, len(names))
    return table


def from_transformers_state_dict(state_dict: Mapping[str, Any], config: EdgeTAMConfig) -> Dict[str, Any]:
    """A transformers-layout EdgeTAM state dict with the official keys of ``config``.

    Keys that do not belong to that architecture keep their transformers names, so that a
    strict load reports them as unexpected; a joint key/value projection missing one half is
    reported missing.
    """
    import torch

    table = _transformers_to_official(config)
    out: Dict[str, Any] = {}
    halves: Dict[str, List[Any]] = {}
    for key, value in state_dict.items():
        if key == TRANSFORMERS_POINT_EMBED:
            for i in range(value.shape[0]):
                out[f"{_POINT_EMBEDDINGS}{i}.weight"] = value[i : i + 1].clone()
        elif key == TRANSFORMERS_SHARED_PE:
            if sam2_transformers_key(_PROMPT_PE) not in state_dict:  # transformers may keep one copy
                out[_PROMPT_PE] = value
        elif key in table and table[key][2] > 1:
            official, index, count = table[key]
            halves.setdefault(official, [None] * count)[index] = value
        else:
            out[table[key][0] if key in table else key] = value
    for official, parts in halves.items():
        if all(p is not None for p in parts):
            out[official] = torch.cat(parts, dim=0)
    return out


def convert_state_dict(state_dict: Mapping[str, Any], *, config: EdgeTAMConfig) -> Dict[str, Any]:
    """Official keys for an EdgeTAM state dict in either layout (see the module docs)."""
    if detect_layout(state_dict) == "transformers":
        return from_transformers_state_dict(state_dict, config)
    return dict(state_dict)


# --------------------------------------------------------------------------------------------
# the family: fingerprint, builder, transformers folders


def fingerprint(state_dict: Mapping[str, Any]) -> Optional[Tuple[str, int, int]]:
    """``("repvit", global latents, local latents)`` of EdgeTAM weights in either layout (-1
    where the weights hold no perceiver: transformers' image model); None when there is no
    RepViT trunk."""
    layout = detect_layout(state_dict)
    if layout == "unknown":
        return None
    names = (_LATENTS, _LATENTS_2D)
    if layout == "transformers":
        names = tuple(to_transformers_keys(n)[0] for n in names)

    def rows(name: str) -> int:
        value = state_dict.get(name)
        return int(value.shape[0]) if value is not None and hasattr(value, "shape") else -1

    return "repvit", rows(names[0]), rows(names[1])


def config_fingerprint(config: EdgeTAMConfig) -> Tuple[str, int, int]:
    """:func:`fingerprint` of the weights of ``config``."""
    return "repvit", config.perceiver.num_latents, config.perceiver.num_latents_2d


def describe_fingerprint(features: Tuple[str, int, int]) -> str:
    _, latents, latents_2d = features
    if latents < 0:
        return "EdgeTAM RepViT trunk, no spatial perceiver (image model weights)"
    return f"EdgeTAM RepViT trunk, spatial perceiver with {latents} global + {latents_2d} local latents"


def build(config: EdgeTAMConfig):
    """The EdgeTAM model of ``config`` (random weights); needs timm."""
    from sam2_fast.modeling.sam2_base import SAM2Base

    return SAM2Base.from_config(config)


def _grid(value: Any) -> int:
    """A transformers size (``h``, ``[h, w]`` or ``[[h, w], ...]``) -> its first side."""
    while isinstance(value, (list, tuple)):
        value = value[0]
    return int(value)


def config_from_transformers(config_json: Mapping[str, Any]) -> EdgeTAMConfig:
    """The :class:`EdgeTAMConfig` of a transformers ``EdgeTamModel`` / ``EdgeTamVideoModel``
    ``config.json``: EdgeTAM's preset with the fields transformers stores (an image-model
    config says nothing of the memory: the preset's memory stays)."""
    from sam2_fast.errors import InvalidInputError

    model_type = config_json.get("model_type")
    if model_type not in (TRANSFORMERS_IMAGE_TYPE, TRANSFORMERS_VIDEO_TYPE):
        raise InvalidInputError(
            f"config.json: model_type must be {TRANSFORMERS_IMAGE_TYPE!r} or {TRANSFORMERS_VIDEO_TYPE!r} "
            f"for the EdgeTAM family, got {model_type!r}"
        )
    vision = config_json.get("vision_config") or {}
    backbone = vision.get("backbone_config") or {}
    prompt = config_json.get("prompt_encoder_config") or {}
    decoder = config_json.get("mask_decoder_config") or {}
    channels = vision.get("backbone_channel_list")
    trunk = RepViTConfig(
        timm_name=str(backbone.get("architecture", EDGETAM.trunk.timm_name)).split(".")[0],
        stage_channels=tuple(reversed(channels)) if channels else EDGETAM.trunk.stage_channels,
    )
    changes: Dict[str, Any] = dict(
        trunk=trunk,
        image_size=_grid(prompt.get("image_size", config_json.get("image_size", EDGETAM.image_size))),
        backbone_stride=_grid(prompt.get("patch_size", EDGETAM.backbone_stride)),
        d_model=int(vision.get("fpn_hidden_size", EDGETAM.d_model)),
        fpn_top_down_levels=tuple(vision.get("fpn_top_down_levels", EDGETAM.fpn_top_down_levels)),
    )
    for ours, theirs in (
        ("dynamic_multimask_via_stability", "dynamic_multimask_via_stability"),
        ("dynamic_multimask_stability_delta", "dynamic_multimask_stability_delta"),
        ("dynamic_multimask_stability_thresh", "dynamic_multimask_stability_thresh"),
    ):
        if theirs in decoder:
            changes[ours] = decoder[theirs]
    if model_type == TRANSFORMERS_VIDEO_TYPE:
        for ours, theirs in _VIDEO_FIELDS:
            if theirs in config_json:
                changes[ours] = config_json[theirs]
        if "enable_temporal_pos_encoding_for_object_pointers" in config_json:
            changes["add_tpos_enc_to_obj_ptrs"] = bool(config_json["enable_temporal_pos_encoding_for_object_pointers"])
        changes["perceiver"] = PerceiverConfig(
            **{ours: int(config_json[theirs]) for ours, theirs in _PERCEIVER_FIELDS if theirs in config_json}
        )
    return EDGETAM.replace(name="transformers-edgetam", **changes)


# (our field, transformers' EdgeTamVideoConfig field)
_VIDEO_FIELDS = (
    ("num_maskmem", "num_maskmem"),
    ("sigmoid_scale_for_mem_enc", "sigmoid_scale_for_mem_enc"),
    ("sigmoid_bias_for_mem_enc", "sigmoid_bias_for_mem_enc"),
    ("no_obj_embed_spatial", "enable_occlusion_spatial_embedding"),
    ("multimask_output_in_sam", "multimask_output_in_sam"),
    ("multimask_min_pt_num", "multimask_min_pt_num"),
    ("multimask_max_pt_num", "multimask_max_pt_num"),
    ("multimask_output_for_tracking", "multimask_output_for_tracking"),
    ("max_obj_ptrs_in_encoder", "max_object_pointers_in_encoder"),
    ("max_cond_frames_in_attn", "max_cond_frame_num"),
    ("memory_attention_num_layers", "memory_attention_num_layers"),
    ("memory_attention_dim_feedforward", "memory_attention_mlp_hidden_size"),
    ("mem_dim", "memory_encoder_output_channels"),
)
_PERCEIVER_FIELDS = (
    ("num_latents", "perceiver_resampler_num_latents"),
    ("num_latents_2d", "perceiver_resampler_num_latents_2d"),
    ("dim", "perceiver_resampler_hidden_size"),
    ("heads", "perceiver_resampler_num_attention_heads"),
    ("dim_head", "perceiver_resampler_attention_head_dim"),
    ("depth", "perceiver_resampler_num_layers"),
)


def config_to_transformers(config: EdgeTAMConfig, video: bool) -> Dict[str, Any]:
    """The transformers ``config.json`` of ``config``: ``EdgeTamVideoModel`` (``video``) or
    ``EdgeTamModel``."""
    side = config.feature_side
    vision = {
        "model_type": "edgetam_vision_model",
        "backbone_config": {
            "model_type": "timm_wrapper",
            "architecture": config.trunk.timm_name,
            "do_pooling": False,
            "model_args": {"in_chans": 3, "features_only": True, "out_indices": [0, 1, 2, 3]},
            # a features-only trunk has no classifier; transformers' config still wants labels
            "num_classes": 2,
            "label_names": ["LABEL_0", "LABEL_1"],
        },
        "backbone_channel_list": list(config.trunk.channel_list),
        "backbone_feature_sizes": [[4 * side, 4 * side], [2 * side, 2 * side], [side, side]],
        "fpn_hidden_size": config.d_model,
        "fpn_top_down_levels": list(config.fpn_top_down_levels),
    }
    prompt = {"hidden_size": config.d_model, "image_size": config.image_size, "patch_size": config.backbone_stride}
    decoder = {
        "hidden_size": config.d_model,
        "dynamic_multimask_via_stability": config.dynamic_multimask_via_stability,
        "dynamic_multimask_stability_delta": config.dynamic_multimask_stability_delta,
        "dynamic_multimask_stability_thresh": config.dynamic_multimask_stability_thresh,
    }
    out: Dict[str, Any] = {
        "model_type": TRANSFORMERS_VIDEO_TYPE if video else TRANSFORMERS_IMAGE_TYPE,
        "architectures": ["EdgeTamVideoModel" if video else "EdgeTamModel"],
        "vision_config": vision,
        "prompt_encoder_config": prompt,
        "mask_decoder_config": decoder,
    }
    if video:
        out.update({theirs: getattr(config, ours) for ours, theirs in _VIDEO_FIELDS})
        out.update({theirs: getattr(config.perceiver, ours) for ours, theirs in _PERCEIVER_FIELDS})
        g = config.perceiver.grid_2d
        out.update(
            image_size=config.image_size,
            enable_temporal_pos_encoding_for_object_pointers=config.add_tpos_enc_to_obj_ptrs,
            memory_attention_hidden_size=config.d_model,
            memory_attention_rope_feat_sizes=[side, side],
            memory_attention_rope_k_sizes=[g, g],
            memory_attention_rope_dropout=config.memory_attention_dropout,
            memory_attention_dropout=config.memory_attention_dropout,
            rope_parameters={"rope_type": "axial", "rope_theta": config.rope_theta},
            perceiver_resampler_mlp_intermediate_size=config.perceiver.dim * config.perceiver.ff_mult,
            memory_encoder_hidden_size=config.d_model,
        )
    return out


def from_transformers(config_json: Dict[str, Any], state_dict: Mapping[str, Any]) -> Tuple[EdgeTAMConfig, Dict[str, Any]]:
    """(config, official-layout state dict) of a transformers EdgeTAM folder's contents."""
    config = config_from_transformers(config_json)
    return config, from_transformers_state_dict(state_dict, config)


def to_transformers(
    config: EdgeTAMConfig, state_dict: Mapping[str, Any], video: bool
) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(config.json, transformers state dict) of ``EdgeTamVideoModel`` (``video``) or
    ``EdgeTamModel`` for an EdgeTAM state dict in either layout. The weights are all of them in
    both cases: ``EdgeTamModel`` skips the memory's on load, and they make the folder a full
    checkpoint."""
    if detect_layout(state_dict) == "transformers":
        state_dict = from_transformers_state_dict(state_dict, config)
    return config_to_transformers(config, video), to_transformers_state_dict(state_dict)


EDGETAM_FAMILY = register_family(Family(
    name=FAMILY, config_type=EdgeTAMConfig, build=build, fingerprint=fingerprint,
    config_fingerprint=config_fingerprint, describe=describe_fingerprint,
    transformers_model_types=(TRANSFORMERS_IMAGE_TYPE, TRANSFORMERS_VIDEO_TYPE),
    from_transformers=from_transformers, to_transformers=to_transformers,
))

VARIANTS: Tuple[ModelInfo, ...] = (
    register(ModelInfo(
        name="edgetam",
        family=FAMILY,
        config=EDGETAM,
        hub_repo_id="facebook/EdgeTAM",
        filename="edgetam.pt",
        alt_filenames=("edgetam.safetensors", "model.safetensors"),
        aliases=("facebook/EdgeTAM", "configs/edgetam.yaml", "edgetam.yaml"),
        convert_state_dict=functools.partial(convert_state_dict, config=EDGETAM),
        description="EdgeTAM (2025): RepViT-M1 image encoder, spatial perceiver memory; Meta's official checkpoint",
    )),
)
