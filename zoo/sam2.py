"""The built-in family: Meta's eight SAM 2 / SAM 2.1 checkpoints, and their key layouts.

Registered names (each also reachable by its Hub id and official config names)::

    sam2-hiera-{tiny,small,base-plus,large}      facebook/sam2-hiera-*      sam2_hiera_*.pt
    sam2.1-hiera-{tiny,small,base-plus,large}    facebook/sam2.1-hiera-*    sam2.1_hiera_*.pt

Checkpoints of this family come in two key layouts, told apart by :func:`detect_layout`:

* ``"official"``: Meta's ``{"model": state_dict}`` files and the safetensors files that
  ``sam2_fast.checkpoint.convert_checkpoint`` writes from them.
* ``"transformers"``: the Hugging Face transformers ``Sam2VideoModel`` / ``Sam2Model`` layout
  (``model.safetensors``), written by transformers' ``convert_sam2_video_to_hf.py``.
  :func:`to_transformers_key` reproduces that script's renaming;
  :func:`from_transformers_state_dict` inverts it for the keys of a given architecture.

Importing this module does not import torch; the converters import it when called.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Dict, Mapping, Optional, Tuple

from sam2_fast.modeling.config import PRESETS, SAM2Config
from sam2_fast.zoo.registry import Family, ModelInfo, register, register_family

FAMILY = "sam2"

# Substring renames of transformers' convert_sam2_video_to_hf.py (KEYS_TO_MODIFY_MAPPING),
# applied in this order, each to the result of the previous ones.
_TRANSFORMERS_RENAMES: Tuple[Tuple[str, str], ...] = (
    ("iou_prediction_head.layers.0", "iou_prediction_head.proj_in"),
    ("iou_prediction_head.layers.1", "iou_prediction_head.layers.0"),
    ("iou_prediction_head.layers.2", "iou_prediction_head.proj_out"),
    ("mask_decoder.output_upscaling.0", "mask_decoder.upscale_conv1"),
    ("mask_decoder.output_upscaling.1", "mask_decoder.upscale_layer_norm"),
    ("mask_decoder.output_upscaling.3", "mask_decoder.upscale_conv2"),
    ("mask_downscaling.0", "mask_embed.conv1"),
    ("mask_downscaling.1", "mask_embed.layer_norm1"),
    ("mask_downscaling.3", "mask_embed.conv2"),
    ("mask_downscaling.4", "mask_embed.layer_norm2"),
    ("mask_downscaling.6", "mask_embed.conv3"),
    ("dwconv", "depthwise_conv"),
    ("pwconv", "pointwise_conv"),
    ("fuser", "memory_fuser"),
    ("point_embeddings", "point_embed"),
    ("pe_layer.positional_encoding_gaussian_matrix", "shared_embedding.positional_embedding"),
    ("obj_ptr_tpos_proj", "temporal_positional_encoding_projection_layer"),
    ("no_obj_embed_spatial", "occlusion_spatial_embedding_parameter"),
    ("sam_prompt_encoder", "prompt_encoder"),
    ("sam_mask_decoder", "mask_decoder"),
    ("maskmem_tpos_enc", "memory_temporal_positional_encoding"),
    ("gamma", "scale"),
    ("image_encoder.neck", "vision_encoder.neck"),
    ("image_encoder", "vision_encoder.backbone"),
    ("neck.0", "neck.conv1"),
    ("neck.1", "neck.layer_norm1"),
    ("neck.2", "neck.conv2"),
    ("neck.3", "neck.layer_norm2"),
    ("pix_feat_proj", "feature_projection"),
    ("patch_embed.proj", "patch_embed.projection"),
    ("no_mem_embed", "no_memory_embedding"),
    ("no_mem_pos_enc", "no_memory_positional_encoding"),
    ("obj_ptr", "object_pointer"),
    (".norm", ".layer_norm"),
    ("trunk.", ""),
    ("out_proj", "o_proj"),
)
# MLP layer renames: ``layers.<i>`` becomes proj_in / layers.0 / proj_out (three layers) or
# proj_in / proj_out (two layers). Each rule: (pattern matched at the start of the renamed key,
# group holding the layer index, {index: (old, new)}), in the order of the same script.
_THREE_LAYERS = {
    0: ("layers.0", "proj_in"),
    1: ("layers.1", "layers.0"),
    2: ("layers.2", "proj_out"),
}
_TRANSFORMERS_MLP_RULES = (
    (
        re.compile(r"vision_encoder.backbone.blocks.(\d+).mlp.layers.(\d+).*"),
        2,
        {0: ("layers.0", "proj_in"), 1: ("layers.1", "proj_out")},
    ),
    (
        re.compile(r"mask_decoder.transformer.layers.(\d+).mlp.layers.(\d+).*"),
        2,
        {0: ("mlp.layers.0", "mlp.proj_in"), 1: ("mlp.layers.1", "mlp.proj_out")},
    ),
    (re.compile(r"mask_decoder.pred_obj_score_head.layers.(\d+).*"), 1, _THREE_LAYERS),
    (re.compile(r".*.output_hypernetworks_mlps.(\d+).layers.(\d+).*"), 2, _THREE_LAYERS),
)
_NECK_CONV = re.compile(r"vision_encoder.neck.convs.(\d+).conv")
_MEMORY_PROJECTION = re.compile(r"memory_encoder.o_proj.*")
_OBJECT_POINTER_MLP = re.compile(r"object_pointer_proj.layers.(\d+).*")
_MASK_DOWNSAMPLER = re.compile(r"memory_encoder.mask_downsampler.encoder.(\d+).*")

# transformers stacks the four point embeddings into one matrix and keeps a second copy of
# the prompt encoder's random-Fourier matrix at the top level.
TRANSFORMERS_POINT_EMBED = "prompt_encoder.point_embed.weight"
_POINT_EMBEDDINGS = "sam_prompt_encoder.point_embeddings."
TRANSFORMERS_SHARED_PE = "shared_image_embedding.positional_embedding"
_PROMPT_PE = "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"


def to_transformers_key(key: str) -> str:
    """The transformers name of an official state-dict key (one tensor to one tensor).

    The four ``point_embeddings.<i>.weight`` map to ``point_embed.<i>.weight`` here;
    :func:`to_transformers_state_dict` stacks them as transformers stores them.
    """
    for old, new in _TRANSFORMERS_RENAMES:
        if old in key:
            key = key.replace(old, new)
    for pattern, group, renames in _TRANSFORMERS_MLP_RULES:
        match = pattern.match(key)
        if match and int(match.group(group)) in renames:
            key = key.replace(*renames[int(match.group(group))])
    if _NECK_CONV.match(key):
        key = key.replace(".conv.", ".")
    if _MEMORY_PROJECTION.match(key):
        key = key.replace(".o_proj.", ".projection.")
    match = _OBJECT_POINTER_MLP.match(key)
    if match and int(match.group(1)) in _THREE_LAYERS:
        key = key.replace(*_THREE_LAYERS[int(match.group(1))])
    match = _MASK_DOWNSAMPLER.match(key)
    if match:
        index = int(match.group(1))
        if index == 12:
            key = key.replace(f"encoder.{index}", "final_conv")
        elif index % 3 == 0:
            key = key.replace(f"encoder.{index}", f"layers.{index // 3}.conv")
        elif index % 3 == 1:
            key = key.replace(f"encoder.{index}", f"layers.{index // 3}.layer_norm")
    return key


def detect_layout(state_dict: Mapping[str, Any]) -> str:
    """``"official"``, ``"transformers"`` or ``"unknown"`` from the key names."""
    if any(
        k.startswith(("image_encoder.", "sam_mask_decoder.", "sam_prompt_encoder."))
        for k in state_dict
    ):
        return "official"
    if any(
        k.startswith(("vision_encoder.", "mask_decoder.", "prompt_encoder.")) for k in state_dict
    ):
        return "transformers"
    return "unknown"


def to_transformers_state_dict(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """An official state dict in the transformers ``Sam2VideoModel`` layout."""
    import torch

    out = {
        to_transformers_key(k): v
        for k, v in state_dict.items()
        if not k.startswith(_POINT_EMBEDDINGS)
    }
    points = sorted(
        (int(k[len(_POINT_EMBEDDINGS) :].split(".")[0]), v)
        for k, v in state_dict.items()
        if k.startswith(_POINT_EMBEDDINGS)
    )
    if points:
        out[TRANSFORMERS_POINT_EMBED] = torch.cat([v for _, v in points], dim=0)
    if _PROMPT_PE in state_dict:
        out[TRANSFORMERS_SHARED_PE] = state_dict[_PROMPT_PE].clone()  # a tied copy in transformers
    return out


@functools.lru_cache(maxsize=None)
def _official_keys(config: SAM2Config) -> Tuple[str, ...]:
    from sam2_fast.modeling.common import meta_device
    from sam2_fast.modeling.sam2_base import SAM2Base

    with meta_device():
        return tuple(SAM2Base.from_config(config).state_dict())


@functools.lru_cache(maxsize=None)
def _transformers_to_official(config: SAM2Config) -> Dict[str, str]:
    return {to_transformers_key(k): k for k in _official_keys(config)}


def from_transformers_state_dict(
    state_dict: Mapping[str, Any], config: SAM2Config
) -> Dict[str, Any]:
    """A transformers-layout state dict with the official keys of ``config``'s architecture.

    Keys that do not belong to that architecture keep their transformers names, so that a
    strict load reports them as unexpected.
    """
    table = _transformers_to_official(config)
    out: Dict[str, Any] = {}
    for key, value in state_dict.items():
        if key == TRANSFORMERS_POINT_EMBED:
            for i in range(value.shape[0]):
                out[f"{_POINT_EMBEDDINGS}{i}.weight"] = value[i : i + 1].clone()
        elif key == TRANSFORMERS_SHARED_PE:
            # a copy of the prompt encoder's matrix; transformers may save only one of the two
            if to_transformers_key(_PROMPT_PE) not in state_dict:
                out[_PROMPT_PE] = value
        else:
            out[table.get(key, key)] = value
    return out


def convert_state_dict(state_dict: Mapping[str, Any], *, config: SAM2Config) -> Dict[str, Any]:
    """Official keys for a state dict in either layout of this family (see module docs)."""
    if detect_layout(state_dict) == "transformers":
        return from_transformers_state_dict(state_dict, config)
    return dict(state_dict)


# --------------------------------------------------------------------------------------------
# transformers folders: config.json <-> SAM2Config

#: ``model_type`` of transformers' image model (``Sam2Model``) and video model (``Sam2VideoModel``)
TRANSFORMERS_IMAGE_TYPE = "sam2"
TRANSFORMERS_VIDEO_TYPE = "sam2_video"
_OCCLUSION_KEY = "occlusion_spatial_embedding_parameter"


def _pairs(value: Any) -> Tuple[int, int]:
    """``[h, w]`` or ``h`` (a square) of a transformers config -> ``(h, w)``."""
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[-1])
    return int(value), int(value)


def config_from_transformers(config_json: Mapping[str, Any], state_dict: Mapping[str, Any]) -> SAM2Config:
    """The :class:`SAM2Config` of a transformers ``Sam2Model`` / ``Sam2VideoModel``
    ``config.json``. The preset with the same Hiera trunk and release (SAM 2.1: an occlusion
    embedding) is the start; the fields transformers stores replace its values. An image-model
    config says nothing about the memory, so its release is read from the weights."""
    from sam2_fast.errors import InvalidInputError

    model_type = config_json.get("model_type")
    if model_type not in (TRANSFORMERS_IMAGE_TYPE, TRANSFORMERS_VIDEO_TYPE):
        raise InvalidInputError(
            f"config.json: model_type must be {TRANSFORMERS_IMAGE_TYPE!r} or "
            f"{TRANSFORMERS_VIDEO_TYPE!r} for the SAM 2 family, got {model_type!r}"
        )
    vision = config_json.get("vision_config") or {}
    backbone = vision.get("backbone_config") or {}
    if model_type == TRANSFORMERS_VIDEO_TYPE:
        sam2_1 = bool(config_json.get("enable_occlusion_spatial_embedding", True))
    else:
        sam2_1 = _OCCLUSION_KEY in state_dict
    trunk = dict(
        embed_dim=int(backbone.get("hidden_size", 96)),
        num_heads=int(backbone.get("num_attention_heads", 1)),
        stages=tuple(backbone.get("blocks_per_stage", (1, 2, 7, 2))),
        global_att_blocks=tuple(backbone.get("global_attention_blocks", (5, 7, 9))),
        window_pos_embed_bkg_spatial_size=_pairs(
            backbone.get("window_positional_embedding_background_size", (7, 7))
        ),
        window_spec=tuple(backbone.get("window_size_per_stage", (8, 4, 14, 7))),
        q_pool=int(backbone.get("num_query_pool_stages", 3)),
        q_stride=_pairs(backbone.get("query_stride", (2, 2))),
    )
    same_trunk = [
        c for c in PRESETS.values()
        if c.no_obj_embed_spatial == sam2_1
        and all(getattr(c.trunk, k) == v for k, v in trunk.items())
    ]
    fallback = PRESETS["sam2.1-hiera-tiny" if sam2_1 else "sam2-hiera-tiny"]
    config = same_trunk[0] if same_trunk else fallback.replace(
        **{f"trunk.{k}": v for k, v in trunk.items()}, name="transformers-sam2"
    )
    image_size = config_json.get("image_size", _pairs(backbone.get("image_size", 1024))[0])
    changes: Dict[str, Any] = {
        "image_size": int(image_size[0] if isinstance(image_size, (list, tuple)) else image_size),
        "d_model": int(vision.get("fpn_hidden_size", config.d_model)),
        "fpn_top_down_levels": tuple(vision.get("fpn_top_down_levels", config.fpn_top_down_levels)),
    }
    patch = (config_json.get("prompt_encoder_config") or {}).get("patch_size")
    if patch is not None:
        changes["backbone_stride"] = _pairs(patch)[0]
    if model_type == TRANSFORMERS_VIDEO_TYPE:
        video_fields = {
            "num_maskmem": "num_maskmem",
            "sigmoid_scale_for_mem_enc": "sigmoid_scale_for_mem_enc",
            "sigmoid_bias_for_mem_enc": "sigmoid_bias_for_mem_enc",
            "multimask_output_in_sam": "multimask_output_in_sam",
            "multimask_min_pt_num": "multimask_min_pt_num",
            "multimask_max_pt_num": "multimask_max_pt_num",
            "multimask_output_for_tracking": "multimask_output_for_tracking",
            "max_obj_ptrs_in_encoder": "max_object_pointers_in_encoder",
            "max_cond_frames_in_attn": "max_cond_frame_num",
            "memory_attention_num_layers": "memory_attention_num_layers",
            "memory_attention_dim_feedforward": "memory_attention_feed_forward_hidden_size",
            "memory_attention_dropout": "memory_attention_dropout",
            "mem_dim": "memory_encoder_output_channels",
        }
        for ours, theirs in video_fields.items():
            if theirs in config_json:
                changes[ours] = type(getattr(config, ours))(config_json[theirs])
        theta = (config_json.get("rope_parameters") or {}).get(
            "rope_theta", config_json.get("memory_attention_rope_theta")  # transformers 4.x's name
        )
        if theta is not None:
            changes["rope_theta"] = float(theta)
        tpos = bool(config_json.get("enable_temporal_pos_encoding_for_object_pointers", sam2_1))
        changes.update(add_tpos_enc_to_obj_ptrs=tpos, proj_tpos_enc_in_obj_ptrs=tpos)
    return config.replace(**{k: v for k, v in changes.items() if getattr(config, k) != v})


def config_to_transformers(config: SAM2Config, video: bool) -> Dict[str, Any]:
    """The ``config.json`` of transformers' ``Sam2VideoModel`` (``video``) or ``Sam2Model``
    for ``config``'s architecture."""
    trunk = config.trunk
    size = config.image_size
    dims = list(reversed(trunk.channel_list))  # highest resolution first
    heads = [int(trunk.num_heads * trunk.head_mul**i) for i in range(len(trunk.stages))]
    strides = [4 * 2**i for i in range(len(trunk.stages) - 1)]  # of the neck's levels
    vision = {
        "model_type": "sam2_vision_model",
        "backbone_config": {
            "model_type": "sam2_hiera_det_model",
            "hidden_size": trunk.embed_dim,
            "num_attention_heads": trunk.num_heads,
            "blocks_per_stage": list(trunk.stages),
            "embed_dim_per_stage": dims,
            "num_attention_heads_per_stage": heads,
            "window_size_per_stage": list(trunk.window_spec),
            "global_attention_blocks": list(trunk.global_att_blocks),
            "window_positional_embedding_background_size": list(trunk.window_pos_embed_bkg_spatial_size),
            "num_query_pool_stages": trunk.q_pool,
            "query_stride": list(trunk.q_stride),
            "image_size": [size, size],
        },
        "backbone_channel_list": list(trunk.channel_list),
        "backbone_feature_sizes": [[size // s, size // s] for s in strides],
        "fpn_hidden_size": config.d_model,
        "fpn_top_down_levels": list(config.fpn_top_down_levels),
    }
    prompt = {"hidden_size": config.d_model, "image_size": size, "patch_size": config.backbone_stride}
    decoder = {
        "hidden_size": config.d_model,
        "dynamic_multimask_via_stability": True,
        "dynamic_multimask_stability_delta": config.dynamic_multimask_stability_delta,
        "dynamic_multimask_stability_thresh": config.dynamic_multimask_stability_thresh,
    }
    out: Dict[str, Any] = {
        "architectures": ["Sam2VideoModel" if video else "Sam2Model"],
        "model_type": TRANSFORMERS_VIDEO_TYPE if video else TRANSFORMERS_IMAGE_TYPE,
        "vision_config": vision,
        "prompt_encoder_config": prompt,
        "mask_decoder_config": decoder,
        "dtype": "float32",
    }
    if not video:
        return out
    feat = size // config.backbone_stride
    out.update(
        image_size=size,
        num_maskmem=config.num_maskmem,
        sigmoid_scale_for_mem_enc=config.sigmoid_scale_for_mem_enc,
        sigmoid_bias_for_mem_enc=config.sigmoid_bias_for_mem_enc,
        enable_occlusion_spatial_embedding=config.no_obj_embed_spatial,
        multimask_output_in_sam=config.multimask_output_in_sam,
        multimask_min_pt_num=config.multimask_min_pt_num,
        multimask_max_pt_num=config.multimask_max_pt_num,
        multimask_output_for_tracking=config.multimask_output_for_tracking,
        max_object_pointers_in_encoder=config.max_obj_ptrs_in_encoder,
        max_cond_frame_num=config.max_cond_frames_in_attn,
        enable_temporal_pos_encoding_for_object_pointers=config.add_tpos_enc_to_obj_ptrs,
        memory_attention_hidden_size=config.d_model,
        memory_attention_num_layers=config.memory_attention_num_layers,
        memory_attention_feed_forward_hidden_size=config.memory_attention_dim_feedforward,
        memory_attention_dropout=config.memory_attention_dropout,
        memory_attention_rope_feat_sizes=[feat, feat],
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        memory_encoder_hidden_size=config.d_model,
        memory_encoder_output_channels=config.mem_dim,
    )
    return out


def from_transformers(
    config_json: Dict[str, Any], state_dict: Mapping[str, Any]
) -> Tuple[SAM2Config, Dict[str, Any]]:
    """:attr:`Family.from_transformers` of SAM 2: (config, official-layout state dict).

    Raises:
        CheckpointError: weights of transformers' image model alone (``Sam2Model.save_pretrained``
            keeps no memory weights), which the SAM 2 model cannot be built from.
    """
    from sam2_fast.errors import CheckpointError

    config = config_from_transformers(config_json, state_dict)
    if config_json.get("model_type") == TRANSFORMERS_IMAGE_TYPE and not any(
        k.startswith("memory_attention.") for k in state_dict
    ):
        raise CheckpointError(
            "the folder holds the weights of transformers' image model only (Sam2Model.save_pretrained "
            "keeps no memory attention, memory encoder or object-pointer weights); sam2-fast builds "
            "the whole SAM 2 model, for images too. Save the video model instead "
            "(Sam2VideoModel.from_pretrained(...).save_pretrained(...)), or use the official "
            "checkpoint or a folder written by `sam2-fast convert --to transformers`, which hold all weights"
        )
    return config, from_transformers_state_dict(state_dict, config)


def to_transformers(
    config: SAM2Config, state_dict: Mapping[str, Any], video: bool
) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """:attr:`Family.to_transformers` of SAM 2. The weights are all of them in both cases:
    ``Sam2Model`` skips the memory's on load, and they make the folder a full checkpoint."""
    if detect_layout(state_dict) == "transformers":
        state_dict = from_transformers_state_dict(state_dict, config)
    return config_to_transformers(config, video), to_transformers_state_dict(state_dict)


# Keys that tell the variants apart (official names; transformers names derived from them).
_PATCH_EMBED = "image_encoder.trunk.patch_embed.proj.weight"
_BLOCKS = "image_encoder.trunk.blocks."
_NO_OBJ_EMBED = "no_obj_embed_spatial"


def fingerprint(state_dict: Mapping[str, Any]) -> Optional[Tuple[int, int, bool]]:
    """(trunk embed dim, trunk block count, has no_obj_embed_spatial) of SAM 2 weights in
    either key layout; None when there is no Hiera patch embedding."""
    names = (_PATCH_EMBED, _BLOCKS, _NO_OBJ_EMBED)
    if detect_layout(state_dict) == "transformers":
        names = tuple(to_transformers_key(n) for n in names)
    patch, block_prefix, no_obj = names
    weight = state_dict.get(patch)
    if weight is None or not hasattr(weight, "shape") or len(weight.shape) != 4:
        return None
    block = re.compile(re.escape(block_prefix) + r"(\d+)\.")
    blocks = {int(m.group(1)) for m in map(block.match, state_dict) if m}
    return int(weight.shape[0]), (max(blocks) + 1 if blocks else 0), no_obj in state_dict


def config_fingerprint(config: SAM2Config) -> Tuple[int, int, bool]:
    """:func:`fingerprint` of the weights of ``config``."""
    return config.trunk.embed_dim, sum(config.trunk.stages), config.no_obj_embed_spatial


def describe_fingerprint(features: Tuple[int, int, bool]) -> str:
    embed_dim, blocks, no_obj = features
    release = "SAM 2.1 (has no_obj_embed_spatial)" if no_obj else "SAM 2.0 (no no_obj_embed_spatial)"
    return f"trunk embed_dim {embed_dim}, {blocks} trunk blocks, {release}"


def build(config: SAM2Config):
    """The SAM 2 model of ``config`` (random weights)."""
    from sam2_fast.modeling.sam2_base import SAM2Base

    return SAM2Base.from_config(config)


SAM2_FAMILY = register_family(Family(
    name=FAMILY, config_type=SAM2Config, build=build, fingerprint=fingerprint,
    config_fingerprint=config_fingerprint, describe=describe_fingerprint,
    transformers_model_types=(TRANSFORMERS_IMAGE_TYPE, TRANSFORMERS_VIDEO_TYPE),
    from_transformers=from_transformers, to_transformers=to_transformers,
))

_SIZES = {"tiny": ("t", "T"), "small": ("s", "S"), "base-plus": ("b+", "B+"), "large": ("l", "L")}


def _variant(version: str, size: str) -> ModelInfo:
    short, label = _SIZES[size]
    name = f"{version}-hiera-{size}"
    stem = f"{version}_hiera_{size.replace('-', '_')}"  # sam2.1_hiera_base_plus
    config_file = f"{version}_hiera_{short}.yaml"  # sam2.1_hiera_b+.yaml
    config = PRESETS[name]
    release = "SAM 2.1 (Sep 2024)" if version == "sam2.1" else "SAM 2 (Jul 2024)"
    return ModelInfo(
        name=name,
        family=FAMILY,
        config=config,
        hub_repo_id=f"facebook/{name}",
        filename=f"{stem}.pt",
        # safetensors copies: ours (official keys), then transformers' model.safetensors
        alt_filenames=(f"{stem}.safetensors", "model.safetensors"),
        aliases=(f"facebook/{name}", f"configs/{version}/{config_file}", config_file, stem),
        convert_state_dict=functools.partial(convert_state_dict, config=config),
        description=f"{release}, Hiera-{label} image encoder; Meta's official checkpoint",
    )


VARIANTS: Tuple[ModelInfo, ...] = tuple(
    register(_variant(version, size)) for version in ("sam2", "sam2.1") for size in _SIZES
)
