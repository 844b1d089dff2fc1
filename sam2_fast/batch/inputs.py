"""What a batch job runs on: INPUT arguments (files, folders, globs, manifests) resolved into
:class:`Item` s, each with its output key and, for ``segment`` / ``track``, its prompts.

Output keys: an input's path relative to its root, without the extension, with ``/``
separators; the root is the folder given, the fixed part of a glob, the folder of a file given
by name, or the folder of the manifest that lists the file. A path outside its root (an
absolute path in a manifest, ``../``) keys by its absolute path without the leading ``/``. A key
never holds ``..`` or starts with ``/``: outputs cannot land outside ``--out``.
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from sam2_fast.errors import InvalidInputError

TASKS = ("amg", "segment", "track")
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"})
MANIFEST_EXTENSIONS = frozenset({".txt", ".jsonl", ".csv", ".parquet"})
PROMPT_COLUMNS = ("points", "labels", "box", "frame_idx", "obj_id")


class BatchUsageError(InvalidInputError):
    """The job's arguments are unusable (an INPUT that does not exist, a manifest without a
    ``path`` column, two inputs with one output...): nothing has run. ``sam2-fast batch``
    exits with status 2."""


@dataclass(frozen=True)
class Prompt:
    """One prompt row: clicks ``[[x, y], ...]`` with ``labels``, and/or a ``box`` ``[x0, y0,
    x1, y1]``, in pixels; for ``track`` also the frame and the object id."""

    points: Optional[Tuple[Tuple[float, float], ...]] = None
    labels: Optional[Tuple[int, ...]] = None
    box: Optional[Tuple[float, float, float, float]] = None
    frame_idx: int = 0
    obj_id: int = 1

    def to_json(self) -> Dict[str, Any]:
        return {
            "points": [list(p) for p in self.points] if self.points is not None else None,
            "labels": list(self.labels) if self.labels is not None else None,
            "box": list(self.box) if self.box is not None else None,
            "frame_idx": self.frame_idx,
            "obj_id": self.obj_id,
        }

    @classmethod
    def from_json(cls, row: Dict[str, Any]) -> "Prompt":
        return cls(
            points=tuple(tuple(p) for p in row["points"]) if row.get("points") is not None else None,
            labels=tuple(row["labels"]) if row.get("labels") is not None else None,
            box=tuple(row["box"]) if row.get("box") is not None else None,
            frame_idx=int(row.get("frame_idx") or 0),
            obj_id=int(row.get("obj_id") if row.get("obj_id") is not None else 1),
        )


@dataclass(frozen=True)
class Item:
    """One input of the job: ``path`` (a file, or a folder of frames for ``track``), the
    output ``key`` and its prompt rows (empty: the job's default prompts apply)."""

    path: str
    key: str
    prompts: Tuple[Prompt, ...] = field(default=())

    def to_json(self) -> Dict[str, Any]:
        return {"path": self.path, "key": self.key, "prompts": [p.to_json() for p in self.prompts]}

    @classmethod
    def from_json(cls, row: Dict[str, Any]) -> "Item":
        return cls(row["path"], row["key"], tuple(Prompt.from_json(p) for p in row["prompts"]))


# ------------------------------------------------------------------------------ keys
def output_key(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` without its extension (see the module docstring)."""
    path = Path(os.path.abspath(path))
    try:
        rel = PurePosixPath(path.relative_to(os.path.abspath(root)).as_posix())
    except ValueError:
        rel = PurePosixPath(path.as_posix().lstrip("/"))
    if rel.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS:
        rel = rel.with_suffix("")
    parts = [p for p in rel.parts if p not in ("", ".")]
    if not parts or ".." in parts:
        raise BatchUsageError(f"INPUT {str(path)!r} gives no usable output name (relative to {str(root)!r})")
    return "/".join(parts)


# ------------------------------------------------------------------------------ discovery
def _hidden(path: Path) -> bool:
    return path.name.startswith(".")


def is_frame_folder(folder: Path) -> bool:
    """A folder of video frames: image files named by number (``00000.jpg``...), as
    :func:`sam2_fast.predictors.video_io.open_video` reads them."""
    names = [p for p in folder.iterdir() if p.is_file() and not _hidden(p)]
    frames = [p for p in names if p.suffix.lower() in IMAGE_EXTENSIONS]
    return bool(frames) and all(p.stem.isdigit() for p in frames)


def _walk(folder: Path, task: str, exclude: Optional[Path]) -> Iterable[Path]:
    """The task's inputs under ``folder``, recursively, in sorted order: image files for
    ``amg`` / ``segment``; video files and frame folders for ``track``."""
    if task == "track" and is_frame_folder(folder):
        yield folder
        return
    for entry in sorted(folder.iterdir()):
        if _hidden(entry) or (exclude is not None and entry.resolve() == exclude):
            continue
        if entry.is_dir():
            yield from _walk(entry, task, exclude)
        elif task == "track" and entry.suffix.lower() in VIDEO_EXTENSIONS:
            yield entry
        elif task != "track" and entry.suffix.lower() in IMAGE_EXTENSIONS:
            yield entry


def _glob_root(pattern: str) -> Path:
    """The folder part of ``pattern`` before its first wildcard."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _wanted(path: Path, task: str) -> bool:
    if path.is_dir():
        return True
    return path.suffix.lower() in (VIDEO_EXTENSIONS if task == "track" else IMAGE_EXTENSIONS)


def resolve_inputs(
    inputs: Sequence[str], task: str, exclude: Optional[Path] = None
) -> List[Item]:
    """The items of ``inputs`` (see :mod:`sam2_fast.batch.inputs`); ``exclude`` (the output
    folder) is never walked into. Raises :class:`BatchUsageError` for an INPUT that does not
    exist or yields nothing, a manifest it cannot read, and two inputs with one output."""
    if task not in TASKS:
        raise BatchUsageError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]  # one INPUT given bare, as in plan("amg", "photos/", ...)
    if not inputs:
        raise BatchUsageError("INPUT: give at least one file, folder, glob or manifest")
    exclude = exclude.resolve() if exclude is not None else None
    items: List[Item] = []
    for text in map(str, inputs):
        found = _resolve_one(text, task, exclude)
        if not found:
            raise BatchUsageError(f"INPUT {text!r} holds no {_what(task)}")
        items.extend(found)
    return _merge(items)


def _what(task: str) -> str:
    if task == "track":
        return "video (" + ", ".join(sorted(VIDEO_EXTENSIONS)) + ", or a folder of numbered frames)"
    return "image (" + ", ".join(sorted(IMAGE_EXTENSIONS)) + ")"


def _resolve_one(text: str, task: str, exclude: Optional[Path]) -> List[Item]:
    path = Path(text)
    if path.is_dir():
        return [Item(str(p.resolve()), output_key(p, path)) for p in _walk(path, task, exclude)]
    if path.is_file():
        if path.suffix.lower() in MANIFEST_EXTENSIONS:
            return read_manifest(path, task)
        return [Item(str(path.resolve()), output_key(path, path.parent))]
    if glob.has_magic(text):
        root = _glob_root(text)
        items = []
        for match in sorted(glob.glob(text, recursive=True)):
            m = Path(match)
            if _hidden(m) or not _wanted(m, task):
                continue
            if m.is_dir():
                items.extend(Item(str(p.resolve()), output_key(p, root)) for p in _walk(m, task, exclude))
            else:
                items.append(Item(str(m.resolve()), output_key(m, root)))
        return items
    raise BatchUsageError(f"INPUT {text!r} does not exist (expected a file, a folder, a glob or a manifest)")


def _merge(items: List[Item]) -> List[Item]:
    """One item per input path (a path listed twice keeps its first key, and its prompt rows
    are joined); two paths with one output key are refused."""
    by_path: Dict[str, Item] = {}
    by_key: Dict[str, str] = {}
    for item in items:
        if item.path in by_path:
            first = by_path[item.path]
            by_path[item.path] = Item(first.path, first.key, first.prompts + item.prompts)
            continue
        other = by_key.get(item.key)
        if other is not None:
            raise BatchUsageError(
                f"INPUT: {other!r} and {item.path!r} would both be written to {item.key}.*; "
                "rename one or run them as separate jobs"
            )
        by_key[item.key] = item.path
        by_path[item.path] = item
    return list(by_path.values())


# ------------------------------------------------------------------------------ manifests
def read_manifest(path: Path, task: str) -> List[Item]:
    """The items listed by a manifest: ``.txt`` (one path a line; blank lines and ``#``
    comments skipped) or ``.jsonl`` / ``.csv`` / ``.parquet`` rows with a ``path`` column and,
    for ``segment`` / ``track``, the prompt columns ``points`` (``[[x, y], ...]``), ``labels``,
    ``box`` (``[x0, y0, x1, y1]``), ``frame_idx``, ``obj_id`` (JSON text in a CSV). Relative
    paths are relative to the manifest's folder. Rows naming the same path are one input with
    several prompt rows."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".txt":
            rows = [
                {"path": line.strip()}
                for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.lstrip().startswith("#")
            ]
        elif suffix == ".jsonl":
            rows = []
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise BatchUsageError(f"manifest {str(path)!r} line {n}: not JSON ({exc})") from None
                    if not isinstance(row, dict):
                        raise BatchUsageError(f"manifest {str(path)!r} line {n}: expected a JSON object, got {row!r}")
                    rows.append(row)
        elif suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        else:
            rows = _read_parquet_rows(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchUsageError(f"manifest {str(path)!r} could not be read: {exc}") from None
    base = path.parent
    items = []
    for n, row in enumerate(rows, 1):
        where = f"manifest {str(path)!r} row {n}"
        value = row.get("path")
        if not isinstance(value, str) or not value.strip():
            raise BatchUsageError(f"{where}: needs a 'path' (a non-empty string), got {value!r}")
        file = Path(value.strip())
        file = file if file.is_absolute() else base / file
        prompt = _prompt_of(row, task, where) if task != "amg" else None
        items.append(Item(str(Path(os.path.abspath(file))), output_key(file, base), (prompt,) if prompt else ()))
    return _merge(items)


def _read_parquet_rows(path: Path) -> List[Dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow comes with the [batch] extra
        raise BatchUsageError(f"manifest {str(path)!r}: reading Parquet needs pyarrow: pip install pyarrow") from None
    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises its own error types for corrupt files
        raise BatchUsageError(f"manifest {str(path)!r} could not be read as Parquet: {exc}") from None


def _cell(row: Dict[str, Any], name: str, where: str) -> Any:
    """A prompt column's value: None when missing or empty; JSON text (from a CSV) decoded."""
    value = row.get(name)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise BatchUsageError(f"{where}: column {name!r} must be JSON, got {value!r}") from None
    if hasattr(value, "tolist"):
        value = value.tolist()
    return value


def _numbers(value: Any, name: str, where: str, shape: str) -> List[float]:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
    ):
        raise BatchUsageError(f"{where}: column {name!r} must be {shape}, got {value!r}")
    return [float(v) for v in value]


def _index(value: Any, name: str, where: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BatchUsageError(f"{where}: column {name!r} must be an integer >= 0, got {value!r}")
    return value


def _prompt_of(row: Dict[str, Any], task: str, where: str) -> Optional[Prompt]:
    """The prompt of a manifest row, None when it has no prompt columns."""
    points, labels, box = (_cell(row, c, where) for c in ("points", "labels", "box"))
    frame_idx, obj_id = (_cell(row, c, where) for c in ("frame_idx", "obj_id"))
    if points is None and box is None:
        if labels is not None:
            raise BatchUsageError(f"{where}: 'labels' without 'points'")
        if frame_idx is not None or obj_id is not None:
            raise BatchUsageError(f"{where}: 'frame_idx' / 'obj_id' without 'points' or 'box'")
        return None
    pts = lbl = None
    if points is not None:
        if not isinstance(points, (list, tuple)) or not points:
            raise BatchUsageError(f"{where}: column 'points' must be a non-empty list [[x, y], ...], got {points!r}")
        pts = tuple(tuple(_numbers(p, "points", where, "a list of [x, y] pairs")) for p in points)
        if any(len(p) != 2 for p in pts):
            raise BatchUsageError(f"{where}: column 'points' must be a list of [x, y] pairs, got {points!r}")
        if labels is None:
            lbl = (1,) * len(pts)
        else:
            raw = _numbers(labels, "labels", where, "a list of 0/1 labels")
            if len(raw) != len(pts) or any(v not in (0, 1) for v in raw):
                raise BatchUsageError(
                    f"{where}: column 'labels' must hold one 0/1 label per point ({len(pts)}), got {labels!r}"
                )
            lbl = tuple(int(v) for v in raw)
    elif labels is not None:
        raise BatchUsageError(f"{where}: 'labels' without 'points'")
    bx = None
    if box is not None:
        values = _numbers(box, "box", where, "[x0, y0, x1, y1]")
        if len(values) != 4 or values[2] < values[0] or values[3] < values[1]:
            raise BatchUsageError(f"{where}: column 'box' must be [x0, y0, x1, y1] with x0 <= x1 and y0 <= y1, got {box!r}")
        bx = tuple(values)
    if task == "segment" and (frame_idx is not None or obj_id is not None):
        raise BatchUsageError(f"{where}: 'frame_idx' / 'obj_id' are for batch track, not segment")
    return Prompt(pts, lbl, bx, _index(frame_idx, "frame_idx", where, 0), _index(obj_id, "obj_id", where, 1))
