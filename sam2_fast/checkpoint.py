"""SAM 2 checkpoints: which variant a state dict is, strict loading with a readable key diff,
and conversion between formats and key layouts. Generic file I/O (safe reading, atomic
verified writing, key-list formatting) is :mod:`sam2_fast.state_dict_io`; its names are
imported here too.

Usage::

    import torch
    from sam2_fast.checkpoint import read_state_dict, load_model_weights, infer_variant
    from sam2_fast.modeling.sam2_base import SAM2Base

    state_dict = read_state_dict("sam2.1_hiera_tiny.pt")      # or a .safetensors file
    info = infer_variant(state_dict)                          # ModelInfo 'sam2.1-hiera-tiny'
    with torch.device("meta"):
        model = SAM2Base.from_config(info.config)
    load_model_weights(model, state_dict, info=info, assign=True)

    convert_checkpoint("sam2.1_hiera_tiny.pt")                # -> sam2.1_hiera_tiny.safetensors

Files are read with safetensors or with ``torch.load(..., weights_only=True)`` only: a pickle
that needs full unpickling is refused (:class:`UnsafeCheckpointError`); it can be converted
once, explicitly, with ``convert_checkpoint(src, dst, trust_pickle=True)``. Loading is strict:
any missing or unexpected key or shape mismatch raises :class:`CheckpointError` with a readable
diff and the variant the checkpoint looks like.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from sam2_fast.errors import CheckpointError, InvalidInputError, InvalidTypeError, UnsafeCheckpointError
from sam2_fast.state_dict_io import (  # noqa: F401  (read_state_dict, group_keys...: public here too)
    CHECKPOINT_SUFFIXES,
    MAX_DIFF_LINES,
    PathLike,
    _extract_state_dict,
    _indent,
    group_keys,
    read_state_dict,
    write_state_dict,
)
from sam2_fast.zoo import Family, ModelInfo, get_family, iter_model_infos, list_families
from sam2_fast.zoo.sam2 import detect_layout

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# variants


def infer_variant(state_dict: Mapping[str, Any]) -> Optional[ModelInfo]:
    """The registered variant whose architecture matches the weights, or None.

    Each variant's family compares the fingerprint of the weights with its config's (SAM 2:
    the trunk width, the number of trunk blocks and whether ``no_obj_embed_spatial`` exists
    (SAM 2.1), in the official and the transformers layouts). Built-in variants win over
    plugin variants of the same architecture.
    """
    prints: Dict[str, Any] = {}  # family name -> fingerprint of the weights
    for info in iter_model_infos():
        family = get_family(info)
        if family.name not in prints:
            prints[family.name] = family.fingerprint(state_dict)
        if prints[family.name] is not None and prints[family.name] == family.config_fingerprint(info.config):
            return info
    return None


def _fingerprint(state_dict: Mapping[str, Any]) -> Optional[Tuple[Family, Any]]:
    """The first registered family that recognises the weights, with their fingerprint."""
    for name in list_families():
        family = get_family(name)
        found = family.fingerprint(state_dict)
        if found is not None:
            return family, found
    return None


# --------------------------------------------------------------------------------------------
# loading


def load_model_weights(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    info: Optional[ModelInfo] = None,
    assign: bool = False,
    source: Optional[PathLike] = None,
) -> nn.Module:
    """Load ``state_dict`` into ``model`` strictly, converting a foreign key layout first.

    Args:
        model: the module to fill, e.g. a ``SAM2Base`` built on the ``meta`` device.
        state_dict: official, safetensors (ours) or transformers-layout weights.
        info: the variant whose converter to use; default: :func:`infer_variant`.
        assign: passed to ``load_state_dict`` (``True`` for meta-device models: the tensors
            of ``state_dict`` become the parameters, with their dtype).
        source: where the weights came from, for error messages.

    Returns:
        ``model``.

    Raises:
        CheckpointError: missing / unexpected keys or shape mismatches, with a grouped diff
            and the variant the checkpoint looks like.
    """
    if not isinstance(state_dict, Mapping):
        raise InvalidTypeError(
            f"state_dict must be a mapping of names to tensors, got {type(state_dict).__name__}"
        )
    not_tensors = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise InvalidTypeError(f"state_dict values must be tensors; not tensors: {not_tensors[:8]}")
    converter = info or infer_variant(state_dict)
    converted = (
        converter.convert_state_dict(state_dict) if converter is not None else dict(state_dict)
    )
    check_state_dict(model, converted, original=state_dict, source=source)
    model.load_state_dict(converted, strict=True, assign=assign)
    return model


def check_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, Any],
    *,
    original: Optional[Mapping[str, Any]] = None,
    source: Optional[PathLike] = None,
) -> None:
    """Raise :class:`CheckpointError` with the readable diff unless ``state_dict`` (official
    keys) has exactly ``model``'s keys and shapes. ``original``: the weights as stored, before
    any key conversion, for the hint on which variant they look like."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        (k, tuple(state_dict[k].shape), tuple(expected[k].shape))
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        raise CheckpointError(_mismatch_message(
            model, state_dict if original is None else original, missing, unexpected, mismatched, source
        ))


def _mismatch_message(
    model: nn.Module,
    state_dict: Mapping[str, Any],
    missing: List[str],
    unexpected: List[str],
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]],
    source: Optional[PathLike],
) -> str:
    model_name = getattr(getattr(model, "config", None), "name", None)
    what = f"the checkpoint {str(source)!r}" if source is not None else "the checkpoint"
    target = f"the model ({model_name})" if model_name else f"the model ({type(model).__name__})"
    lines = [
        f"{what} does not fit {target}: {len(missing)} missing keys, "
        f"{len(unexpected)} unexpected keys, {len(mismatched)} shape mismatches."
    ]
    if missing:
        lines += [
            "missing keys (in the model, not in the checkpoint):",
            *_indent(group_keys(missing)),
        ]
    if unexpected:
        lines += [
            "unexpected keys (in the checkpoint, not in the model):",
            *_indent(group_keys(unexpected)),
        ]
    if mismatched:
        rows = [
            f"{k}: checkpoint {list(got)} vs model {list(want)}"
            for k, got, want in mismatched[:MAX_DIFF_LINES]
        ]
        if len(mismatched) > MAX_DIFF_LINES:
            rows.append(f"... and {len(mismatched) - MAX_DIFF_LINES} more")
        lines += ["shape mismatches:", *_indent(rows)]
    lines.append("hint: " + _variant_hint(state_dict, model_name))
    return "\n".join(lines)


def _variant_hint(state_dict: Mapping[str, Any], model_name: Optional[str]) -> str:
    found = _fingerprint(state_dict)
    if found is None:
        prefixes = sorted({k.split(".")[0] for k in state_dict})[:6]
        return (
            "no SAM 2 image-encoder weights were found in the checkpoint (its keys start with "
            f"{', '.join(prefixes) or 'nothing'}); is it a SAM 2 checkpoint?"
        )
    looks = infer_variant(state_dict)
    family, features = found
    described = family.describe(features)
    if looks is None:
        return f"the checkpoint ({described}) does not look like any registered variant."
    if looks.name == model_name:
        return (
            f"the checkpoint looks like {looks.name!r} ({described}), the model's own variant, "
            "so the file is probably incomplete or was modified."
        )
    return (
        f"the checkpoint looks like {looks.name!r} ({described}); build that variant instead, e.g. "
        f"build_sam2({looks.name!r}, ckpt_path=...)."
    )


# --------------------------------------------------------------------------------------------
# conversion


def convert_checkpoint(
    src: PathLike, dst: Optional[PathLike] = None, *, trust_pickle: bool = False
) -> Path:
    """Convert a checkpoint between ``.pt`` (``{"model": sd}``) and ``.safetensors``.

    The output always has the official keys (a transformers-layout input is converted) and is
    verified by reading it back. Safetensors output holds contiguous tensors and the metadata
    ``format`` (``"pt"``), ``layout`` and ``variant``.

    Args:
        src: the input checkpoint.
        dst: the output file; its extension picks the format. Default: ``src`` with
            ``.safetensors`` (or ``.pt`` when ``src`` is a safetensors file).
        trust_pickle: read a ``.pt`` that needs full unpickling. Unpickling can run arbitrary
            code: only for files whose source you trust. Without it such files are refused.

    Returns:
        the path written.
    """
    src_path = Path(src).expanduser()
    if dst is None:
        dst_path = src_path.with_suffix(
            ".pt" if src_path.suffix == ".safetensors" else ".safetensors"
        )
    else:
        dst_path = Path(dst).expanduser()
    if dst_path.suffix not in CHECKPOINT_SUFFIXES:
        raise InvalidInputError(
            f"dst: cannot tell the output format from {dst_path.name!r}; use a name ending in "
            ".safetensors or .pt"
        )
    if dst_path.exists() and src_path.exists() and dst_path.resolve() == src_path.resolve():
        raise InvalidInputError(f"dst is the same file as src ({src_path}); pass another output path")
    state_dict, info = read_official_state_dict(src_path, trust_pickle=trust_pickle)
    return write_official_checkpoint(state_dict, dst_path, info)


def read_official_state_dict(
    src: PathLike, *, trust_pickle: bool = False
) -> Tuple[Dict[str, torch.Tensor], Optional[ModelInfo]]:
    """The weights of a checkpoint file with the official keys (a transformers-layout file is
    converted), and the variant they look like (None when none does).

    Args:
        src: a ``.pt`` / ``.safetensors`` file.
        trust_pickle: read a ``.pt`` that needs full unpickling (see :func:`convert_checkpoint`).
    """
    src_path = Path(src).expanduser()
    try:
        state_dict = read_state_dict(src_path)
    except UnsafeCheckpointError:
        if not trust_pickle:
            raise
        logger.warning("fully unpickling %s because trust_pickle=True", src_path)
        state_dict = _extract_state_dict(
            torch.load(src_path, map_location="cpu", weights_only=False), src_path
        )
    info = infer_variant(state_dict)
    if detect_layout(state_dict) == "transformers":
        if info is None:
            raise CheckpointError(
                f"{src_path} has transformers-layout keys but does not look like any registered "
                "variant, so its keys cannot be converted to the official layout"
            )
        state_dict = info.convert_state_dict(state_dict)
    return state_dict, info


def write_official_checkpoint(
    state_dict: Mapping[str, torch.Tensor], dst: PathLike, info: Optional[ModelInfo]
) -> Path:
    """Write official-layout weights to ``dst`` (``.pt`` or ``.safetensors``, atomic and
    verified; safetensors metadata ``format``, ``layout`` and ``variant``)."""
    dst_path = Path(dst).expanduser()
    metadata = {
        "format": "pt",
        "layout": detect_layout(state_dict),
        "variant": info.name if info else "unknown",
    }
    count = write_state_dict(state_dict, dst_path, metadata)
    logger.info("wrote %s (%d tensors, variant %s)", dst_path, count, metadata["variant"])
    return dst_path
