"""Reading, checking, converting and loading SAM 2 checkpoints.

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
import os
import pickle
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union

import torch
from torch import nn

from sam2_fast.zoo import ModelInfo, iter_model_infos
from sam2_fast.zoo.sam2 import detect_layout, to_transformers_key
from sam2_fast.errors import CheckpointError, InvalidInputError, InvalidTypeError, UnsafeCheckpointError

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin", ".ckpt")

# Keys that identify the variant (official names; transformers names derived from them).
_PATCH_EMBED = "image_encoder.trunk.patch_embed.proj.weight"
_BLOCKS = "image_encoder.trunk.blocks."
_NO_OBJ_EMBED = "no_obj_embed_spatial"

_MAX_DIFF_LINES = 12




# --------------------------------------------------------------------------------------------
# reading


def read_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, on the CPU, keyed as stored.

    Reads ``.safetensors`` files and ``torch.save`` files (``.pt``/``.pth``, zip or legacy
    format) with ``weights_only=True``; the format is recognised from the content, not the
    extension. Accepts the official ``{"model": state_dict}`` wrapper and a bare state dict.

    Raises:
        CheckpointError: the path is missing, a directory, empty, truncated, not a
            checkpoint, or holds no state dict.
        UnsafeCheckpointError: a pickle that needs full unpickling (refused for safety).
    """
    file = Path(path).expanduser()
    if not file.exists():
        raise CheckpointError(
            f"checkpoint file not found: {file.resolve()}. Check the path, or pass a model name "
            "such as 'sam2.1-hiera-tiny' to use the Hugging Face Hub cache / download "
            "(sam2_fast.zoo.list_models() lists them)."
        )
    if file.is_dir():
        found = sorted(p.name for p in file.iterdir() if p.suffix in CHECKPOINT_SUFFIXES)
        inside = (
            f" It contains: {', '.join(found)}." if found else " It contains no checkpoint files."
        )
        raise CheckpointError(f"{file} is a directory; pass the checkpoint file itself.{inside}")
    size = file.stat().st_size
    if size == 0:
        raise CheckpointError(
            f"{file} is empty (0 bytes): the download or copy was probably interrupted. "
            "Delete it and download it again."
        )
    with open(file, "rb") as fh:
        head = fh.read(64)
    kind = _sniff(head, size, file)
    if kind == "safetensors":
        state_dict = _read_safetensors(file)
    else:
        state_dict = _extract_state_dict(_torch_load(file), file)
    logger.debug("read %d tensors from %s (%s)", len(state_dict), file, kind)
    return state_dict


def _sniff(head: bytes, size: int, file: Path) -> str:
    """``"torch"`` or ``"safetensors"``, or a CheckpointError saying what the file is."""
    if head.startswith(b"PK\x03\x04") or (len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5):
        return "torch"
    if len(head) > 8 and head[8:9] == b"{":
        header_len = int.from_bytes(head[:8], "little")
        if 8 + header_len > size:
            raise CheckpointError(
                f"{file} is truncated: its safetensors header says {header_len} bytes but the "
                f"file has {size}. The download or copy was probably interrupted; delete it and "
                "download it again."
            )
        return "safetensors"
    raise CheckpointError(
        f"{file} is not a checkpoint: it looks like {_describe(head)}. Expected a "
        ".safetensors file or a PyTorch .pt/.pth file saved with torch.save (e.g. Meta's "
        "sam2.1_hiera_tiny.pt)."
    )


def _describe(head: bytes) -> str:
    lowered = head.lstrip().lower()
    if head.startswith(b"version https://git-lfs"):
        return (
            "a Git LFS pointer, not the weights (the repository was cloned without git-lfs; "
            "run `git lfs pull`, or download the file itself from the Hub)"
        )
    if lowered.startswith((b"<!doctype html", b"<html")):
        return "an HTML page (a failed download, e.g. an error or login page)"
    signatures = {
        b"\x89PNG": "a PNG image",
        b"\xff\xd8\xff": "a JPEG image",
        b"GIF8": "a GIF image",
        b"%PDF": "a PDF document",
        b"\x1f\x8b": "a gzip archive (decompress it first)",
    }
    for magic, what in signatures.items():
        if head.startswith(magic):
            return what
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"unrecognised binary data (first bytes {head[:8].hex(' ')})"
    if all(c.isprintable() or c in "\r\n\t" for c in text):
        first_line = text.strip().splitlines()[0] if text.strip() else ""
        return f"a text file (starting {first_line[:40]!r})"
    return f"unrecognised binary data (first bytes {head[:8].hex(' ')})"


def _read_safetensors(file: Path) -> Dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state_dict = load_file(str(file), device="cpu")
    except SafetensorError as exc:
        raise CheckpointError(
            f"{file} is a damaged safetensors file ({exc}); it is probably truncated. "
            "Delete it and download or convert it again."
        ) from exc
    if not state_dict:
        raise CheckpointError(f"{file} is a safetensors file without any tensors")
    return state_dict


def _torch_load(file: Path) -> Any:
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" not in str(exc).lower():
            raise CheckpointError(f"{file} is a damaged PyTorch checkpoint: {exc}") from exc
        refused = _unsafe_globals(file, str(exc))
        # `from None`: torch's own message suggests weights_only=False, which sam2-fast never offers
        raise UnsafeCheckpointError(_unsafe_message(file, refused)) from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        message = str(exc)
        if "central directory" in message or isinstance(exc, EOFError):
            raise CheckpointError(
                f"{file} is truncated or corrupt ({message.splitlines()[0]}). The download or "
                "copy was probably interrupted; delete it and download it again."
            ) from exc
        raise CheckpointError(
            f"{file} could not be read as a PyTorch checkpoint: {message}"
        ) from exc


def _unsafe_globals(file: Path, message: str) -> List[str]:
    lister = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if lister is not None:
        try:
            return list(lister(str(file)))
        except Exception as exc:  # the listing is only used to word the message
            logger.debug("could not list the globals of %s: %s", file, exc)
    return re.findall(r"GLOBAL ([\w.]+)", message)


def _unsafe_message(file: Path, refused: Sequence[str]) -> str:
    what = (
        f"Python objects of type {', '.join(refused)}"
        if refused
        else "Python objects other than tensors"
    )
    target = file.with_suffix(".safetensors")
    return (
        f"refused to load {file}: it is a pickle that holds {what}, not only tensors, and "
        "torch.load(weights_only=True), the only way sam2-fast reads .pt files, refused it. "
        "Unpickling such objects can run arbitrary code, so sam2-fast does not do it while "
        "loading. If you trust where this file comes from, convert it once to a tensors-only "
        f"file and use that instead:\n    sam2-fast convert --trust-pickle {file} {target}\n"
        "(in Python: sam2_fast.checkpoint.convert_checkpoint(src, dst, trust_pickle=True))."
    )


def _extract_state_dict(obj: Any, file: Path) -> Dict[str, torch.Tensor]:
    """The state dict inside a loaded object: ``obj["model"]`` (official) or ``obj`` itself."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{file} holds a {type(obj).__name__}, not a state dict (a dict of tensors, or "
            "{'model': state_dict} as in Meta's checkpoints)"
        )
    candidate, where = (
        (obj["model"], "['model']") if isinstance(obj.get("model"), Mapping) else (obj, "")
    )
    non_tensors = [k for k, v in candidate.items() if not isinstance(v, torch.Tensor)]
    if candidate and not non_tensors and all(isinstance(k, str) for k in candidate):
        return dict(candidate)
    keys = ", ".join(repr(k) for k in list(candidate)[:8]) + (", ..." if len(candidate) > 8 else "")
    nested = [
        k
        for k, v in candidate.items()
        if isinstance(v, Mapping) and any(isinstance(t, torch.Tensor) for t in v.values())
    ]
    if nested:
        hint = (
            f" The tensors seem to be under {nested[0]!r}: save that dict as "
            f"torch.save({{'model': ckpt{where}[{nested[0]!r}]}}, path)."
        )
    elif non_tensors and len(non_tensors) < len(candidate):
        hint = f" Entries that are not tensors: {', '.join(repr(k) for k in non_tensors[:8])}."
    else:
        hint = ""
    raise CheckpointError(
        f"{file}{where} is not a state dict of tensors (keys: {keys or 'none'}).{hint}"
    )


# --------------------------------------------------------------------------------------------
# variants


def _variant_features(state_dict: Mapping[str, Any]) -> Optional[Tuple[int, int, bool]]:
    """(trunk embed dim, trunk block count, has no_obj_embed_spatial), in either key layout."""
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


def _describe_features(features: Tuple[int, int, bool]) -> str:
    embed_dim, blocks, no_obj = features
    release = (
        "SAM 2.1 (has no_obj_embed_spatial)" if no_obj else "SAM 2.0 (no no_obj_embed_spatial)"
    )
    return f"trunk embed_dim {embed_dim}, {blocks} trunk blocks, {release}"


def infer_variant(state_dict: Mapping[str, Any]) -> Optional[ModelInfo]:
    """The registered variant whose architecture matches the weights, or None.

    Looks at the trunk width (patch embedding), the number of trunk blocks and whether
    ``no_obj_embed_spatial`` exists (SAM 2.1); works for the official and the transformers
    layouts. Built-in variants win over plugin variants of the same architecture.
    """
    features = _variant_features(state_dict)
    if features is None:
        return None
    for info in iter_model_infos():
        cfg = info.config
        if (cfg.trunk.embed_dim, sum(cfg.trunk.stages), cfg.no_obj_embed_spatial) == features:
            return info
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
    expected = model.state_dict()
    missing = [k for k in expected if k not in converted]
    unexpected = [k for k in converted if k not in expected]
    mismatched = [
        (k, tuple(converted[k].shape), tuple(expected[k].shape))
        for k in expected
        if k in converted and tuple(converted[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            _mismatch_message(model, state_dict, missing, unexpected, mismatched, source)
        )
    model.load_state_dict(converted, strict=True, assign=assign)
    return model


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
            for k, got, want in mismatched[:_MAX_DIFF_LINES]
        ]
        if len(mismatched) > _MAX_DIFF_LINES:
            rows.append(f"... and {len(mismatched) - _MAX_DIFF_LINES} more")
        lines += ["shape mismatches:", *_indent(rows)]
    lines.append("hint: " + _variant_hint(state_dict, model_name))
    return "\n".join(lines)


def _variant_hint(state_dict: Mapping[str, Any], model_name: Optional[str]) -> str:
    features = _variant_features(state_dict)
    if features is None:
        prefixes = sorted({k.split(".")[0] for k in state_dict})[:6]
        return (
            "no SAM 2 image-encoder weights were found in the checkpoint (its keys start with "
            f"{', '.join(prefixes) or 'nothing'}); is it a SAM 2 checkpoint?"
        )
    looks = infer_variant(state_dict)
    described = _describe_features(features)
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


def _indent(rows: Iterable[str]) -> List[str]:
    return [f"  {row}" for row in rows]


def _natural_key(key: str) -> List[Any]:
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", key) if p]


def group_keys(keys: Iterable[str], max_lines: int = _MAX_DIFF_LINES) -> List[str]:
    """Readable lines for many state-dict keys: keys that differ only by their first numeric
    index are grouped, e.g. ``"image_encoder.trunk.blocks.12-15.* (64 keys)"``."""
    groups: Dict[str, List[Tuple[int, str]]] = defaultdict(list)
    for key in keys:
        parts = key.split(".")
        index = next((i for i, p in enumerate(parts) if p.isdigit()), None)
        prefix = ".".join(parts[:index]) if index is not None else key
        groups[prefix].append((int(parts[index]) if index is not None else -1, key))
    rows: List[Tuple[List[Any], str]] = []
    for prefix, members in groups.items():
        if len(members) <= 3:
            rows += [(_natural_key(k), k) for _, k in members]
        else:
            indices = sorted({i for i, _ in members})
            rows.append(
                (
                    _natural_key(f"{prefix}.{indices[0]}"),
                    f"{prefix}.{_ranges(indices)}.* ({len(members)} keys)",
                )
            )
    lines = [text for _, text in sorted(rows, key=lambda r: r[0])]
    if len(lines) > max_lines:
        lines = lines[:max_lines] + [f"... and {len(lines) - max_lines} more groups"]
    return lines


def _ranges(indices: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2,5,7-8"``."""
    spans: List[List[int]] = []
    for i in indices:
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ",".join(f"{a}-{b}" if a != b else f"{a}" for a, b in spans)


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
    try:
        state_dict = read_state_dict(src_path)
    except UnsafeCheckpointError:
        if not trust_pickle:
            raise
        logger.warning("fully unpickling %s because trust_pickle=True", src_path)
        state_dict = _extract_state_dict(
            torch.load(src_path, map_location="cpu", weights_only=False), src_path
        )

    layout = detect_layout(state_dict)
    info = infer_variant(state_dict)
    if layout == "transformers":
        if info is None:
            raise CheckpointError(
                f"{src_path} has transformers-layout keys but does not look like any registered "
                "variant, so its keys cannot be converted to the official layout"
            )
        state_dict = info.convert_state_dict(state_dict)
        layout = detect_layout(state_dict)

    tensors = _contiguous_unshared(state_dict)
    tmp = dst_path.with_name(f".{dst_path.name}.tmp{os.getpid()}")
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if dst_path.suffix == ".safetensors":
            from safetensors.torch import save_file

            metadata = {
                "format": "pt",
                "layout": layout,
                "variant": info.name if info else "unknown",
            }
            save_file(tensors, str(tmp), metadata=metadata)
        else:
            torch.save({"model": tensors}, tmp)
        _verify_same(tensors, read_state_dict(tmp), tmp)
        os.replace(tmp, dst_path)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info(
        "wrote %s (%d tensors, variant %s)",
        dst_path,
        len(tensors),
        info.name if info else "unknown",
    )
    return dst_path


def _contiguous_unshared(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Contiguous tensors, no two sharing memory (safetensors refuses shared storage)."""
    out: Dict[str, torch.Tensor] = {}
    seen: Set[int] = set()
    for key, value in state_dict.items():
        tensor = value.detach().contiguous()
        ptr = tensor.untyped_storage().data_ptr() if tensor.numel() else None
        if ptr is not None and ptr in seen:
            tensor = tensor.clone()
        elif ptr is not None:
            seen.add(ptr)
        out[key] = tensor
    return out


def _verify_same(
    written: Mapping[str, torch.Tensor], read: Mapping[str, torch.Tensor], file: Path
) -> None:
    if set(written) != set(read):
        raise CheckpointError(
            f"verification of {file} failed: the keys read back differ from those written"
        )
    for key, tensor in written.items():
        other = read[key]
        if (
            other.dtype != tensor.dtype
            or other.shape != tensor.shape
            or not torch.equal(other, tensor)
        ):
            raise CheckpointError(
                f"verification of {file} failed: tensor {key!r} differs after reading it back"
            )
