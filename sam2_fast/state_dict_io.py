"""Checkpoint files, whatever the model: read a state dict safely (safetensors, or
``torch.load(weights_only=True)``; the format recognised from the content), write one
atomically and verified, and format long key lists readably. The SAM 2 family's side
(variants, strict loading, key layouts, conversion) is :mod:`sam2_fast.checkpoint`.
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

from sam2_fast.errors import CheckpointError, UnsafeCheckpointError

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin", ".ckpt")

#: lines of a key diff before "... and N more"
MAX_DIFF_LINES = 12


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
# key lists


def _indent(rows: Iterable[str]) -> List[str]:
    return [f"  {row}" for row in rows]


def _natural_key(key: str) -> List[Any]:
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", key) if p]


def group_keys(keys: Iterable[str], max_lines: int = MAX_DIFF_LINES) -> List[str]:
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
# writing


def write_state_dict(
    state_dict: Mapping[str, torch.Tensor], dst: Path, metadata: Optional[Dict[str, str]] = None
) -> int:
    """Write ``state_dict`` to ``dst`` (``.safetensors`` with ``metadata``, else ``torch.save``
    of ``{"model": state_dict}``) atomically: a temporary file, read back and compared, then
    renamed. Returns the number of tensors written."""
    tensors = _contiguous_unshared(state_dict)
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        if dst.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(tensors, str(tmp), metadata=metadata)
        else:
            torch.save({"model": tensors}, tmp)
        _verify_same(tensors, read_state_dict(tmp), tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return len(tensors)


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
