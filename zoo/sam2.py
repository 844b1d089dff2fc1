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
