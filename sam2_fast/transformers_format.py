"""Hugging Face transformers-format checkpoints: a folder with ``config.json`` and
``model.safetensors`` (or the shards that ``model.safetensors.index.json`` lists), as
``Sam2Model`` / ``Sam2VideoModel.save_pretrained`` write them and as the ``facebook/sam2*``
Hub repositories carry them beside Meta's ``.pt``. Read and written without transformers.

Usage::

    from sam2_fast.transformers_format import read_transformers_folder, write_transformers_folder

    family, config, state_dict = read_transformers_folder("sam2.1-hiera-tiny-hf/")
    # config: the family's config (a SAM2Config); state_dict: the family's official keys
    write_transformers_folder("out/", family, config, state_dict, video=True)
    # transformers.Sam2VideoModel.from_pretrained("out/") loads it

The ``model_type`` of ``config.json`` picks the zoo family
(:func:`sam2_fast.zoo.get_family_for_transformers`), whose ``from_transformers`` /
``to_transformers`` map the config and the keys. Weights are safetensors only (a folder with
only ``pytorch_model.bin`` is refused: it would need unpickling), and a key that the family's
model does not have fails with the readable key diff of :mod:`sam2_fast.checkpoint`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from sam2_fast.checkpoint import (
    check_state_dict,
    infer_variant,
    read_official_state_dict,
    write_official_checkpoint,
)
from sam2_fast.errors import CheckpointError, InvalidInputError
from sam2_fast.modeling.common import meta_device
from sam2_fast.state_dict_io import PathLike, read_state_dict, write_state_dict
from sam2_fast.utils.files import atomic_write_text
from sam2_fast.zoo import (
    TRANSFORMERS_CONFIG_NAME,
    TRANSFORMERS_WEIGHTS_NAME,
    Family,
    get_family,
    get_family_for_transformers,
    get_model_info,
)

logger = logging.getLogger(__name__)

CONFIG_NAME = TRANSFORMERS_CONFIG_NAME
WEIGHTS_NAME = TRANSFORMERS_WEIGHTS_NAME
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
_PICKLED_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def is_transformers_folder(path: PathLike) -> bool:
    """Whether ``path`` is a folder with ``config.json`` and safetensors weights
    (``model.safetensors`` or ``model.safetensors.index.json``)."""
    folder = Path(path).expanduser()
    return (
        folder.is_dir()
        and (folder / CONFIG_NAME).is_file()
        and ((folder / WEIGHTS_NAME).is_file() or (folder / WEIGHTS_INDEX_NAME).is_file())
    )


def read_transformers_config(path: PathLike) -> Dict[str, Any]:
    """The ``config.json`` of a transformers folder, as a dict."""
    file = Path(path).expanduser() / CONFIG_NAME
    if not file.is_file():
        raise CheckpointError(f"{file.parent} has no {CONFIG_NAME}: it is not a transformers-format folder")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{file} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{file} must hold a JSON object, got {type(config).__name__}")
    return config


def read_transformers_weights(path: PathLike) -> Dict[str, torch.Tensor]:
    """The tensors of a transformers folder, keyed as stored: ``model.safetensors``, or every
    shard named by ``model.safetensors.index.json``."""
    folder = Path(path).expanduser()
    if (folder / WEIGHTS_NAME).is_file():
        return read_state_dict(folder / WEIGHTS_NAME)
    index_file = folder / WEIGHTS_INDEX_NAME
    if not index_file.is_file():
        pickled = [n for n in _PICKLED_NAMES if (folder / n).exists()]
        found = f" It has {', '.join(pickled)}, which sam2-fast does not read (pickle)." if pickled else ""
        raise CheckpointError(
            f"{folder} has no {WEIGHTS_NAME} and no {WEIGHTS_INDEX_NAME}.{found} Save the model "
            "with safetensors (transformers' save_pretrained does by default)."
        )
    try:
        weight_map = json.loads(index_file.read_text(encoding="utf-8"))["weight_map"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{index_file} is not a safetensors index (no weight_map): {exc}") from exc
    state_dict: Dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = (folder / shard).resolve()
        if shard_path.parent != folder.resolve():
            raise CheckpointError(f"{index_file}: shard {shard!r} is outside the folder")
        state_dict.update(read_state_dict(shard_path))
    listed_only = sorted(set(weight_map) - set(state_dict))
    if listed_only:
        raise CheckpointError(
            f"{index_file} lists {len(listed_only)} tensors that its shards do not hold, "
            f"e.g. {listed_only[:3]}: a shard is probably missing or truncated"
        )
    return state_dict


def read_transformers_folder(path: PathLike) -> Tuple[Family, Any, Dict[str, torch.Tensor]]:
    """``(family, config, state_dict)`` of a transformers folder: the zoo family that reads its
    ``model_type``, the family's config, and the weights with the family's official keys.

    Raises:
        CheckpointError: no ``config.json`` / weights, a ``model_type`` no family reads, or
            weights that do not fit the config's model (with the readable key diff).
    """
    folder = Path(path).expanduser()
    config_json = read_transformers_config(folder)
    model_type = config_json.get("model_type")
    try:
        family = get_family_for_transformers(str(model_type))
    except InvalidInputError as exc:
        raise CheckpointError(f"{folder / CONFIG_NAME}: {exc}") from None
    weights = read_transformers_weights(folder)
    try:
        config, state_dict = family.from_transformers(config_json, weights)
    except CheckpointError as exc:
        raise CheckpointError(f"{folder}: {exc}") from None
    with meta_device():
        model = family.build(config)
    check_state_dict(model, state_dict, original=weights, source=folder)
    logger.debug("read %s: model_type %s, family %s", folder, model_type, family.name)
    return family, config, state_dict


def write_transformers_folder(
    out_dir: PathLike,
    family: Family,
    config: Any,
    state_dict: Mapping[str, torch.Tensor],
    video: bool = False,
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` of transformers' image model (or of its
    video model with ``video``) for ``family``'s ``config`` and weights (official keys).

    Each file is written atomically (the weights verified by reading them back), the weights
    first: a folder with a ``config.json`` is complete. Returns the folder.
    """
    if family.to_transformers is None:
        raise InvalidInputError(
            f"family: the {family.name!r} family cannot be written in the transformers format "
            "(it has no to_transformers)"
        )
    folder = Path(out_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise InvalidInputError(f"out_dir: {folder} is a file; the transformers format is a folder")
    if (folder / WEIGHTS_INDEX_NAME).exists():
        raise InvalidInputError(
            f"out_dir: {folder} holds a sharded checkpoint ({WEIGHTS_INDEX_NAME}); pass an empty folder"
        )
    config_json, weights = family.to_transformers(config, state_dict, bool(video))
    write_state_dict(weights, folder / WEIGHTS_NAME, {"format": "pt"})
    atomic_write_text(folder / CONFIG_NAME, json.dumps(config_json, indent=2, sort_keys=True) + "\n")
    logger.info("wrote %s (%s, %d tensors)", folder, config_json.get("model_type"), len(weights))
    return folder


def convert_to_transformers(
    src: PathLike, out_dir: PathLike, *, video: bool = False, trust_pickle: bool = False,
    model: Optional[str] = None,
) -> Path:
    """``src`` (a ``.pt`` / ``.safetensors`` file or a transformers folder) as a transformers
    folder in ``out_dir``. The variant is recognised from the weights unless ``model`` (a zoo
    name) names it."""
    source = Path(src).expanduser()
    if is_transformers_folder(source):
        family, config, state_dict = read_transformers_folder(source)
    else:
        state_dict, info = read_official_state_dict(source, trust_pickle=trust_pickle)
        if model is not None:
            info = get_model_info(model)
        if info is None:
            raise CheckpointError(
                f"{source} does not look like any registered variant, so its config is unknown; "
                "name it, e.g. --model sam2.1-hiera-tiny"
            )
        family, config = get_family(info), info.config
        with meta_device():
            check_state_dict(family.build(config), state_dict, source=source)
    return write_transformers_folder(out_dir, family, config, state_dict, video=video)


def convert_from_transformers(folder: PathLike, dst: PathLike) -> Path:
    """The weights of a transformers folder as an official-key ``.pt`` / ``.safetensors``
    file (the folder's config is not kept: the file's variant is recognised from its weights)."""
    _, _, state_dict = read_transformers_folder(folder)
    return write_official_checkpoint(state_dict, dst, infer_variant(state_dict))
