"""Where a batch job's results go: one JSON file per input or Parquet shards, every file
written atomically, and ``_summary.jsonl`` with one line per input.

A JSON output is complete when it exists and its document is closed (atomic writes never
leave half of one; a file cut short by hand or by a full disk is redone). A Parquet shard
names the inputs it completes in its footer metadata (``sam2_fast.inputs``), so an input that
produced no mask is known done too.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Set

from sam2_fast.batch.inputs import Item
from sam2_fast.utils.files import atomic_write, atomic_write_text

SUMMARY = "_summary.jsonl"
FORMATS = ("json", "parquet")
SHARD_PREFIX = "part-"
INPUTS_KEY = b"sam2_fast.inputs"


def json_output_path(out: Path, item: Item) -> Path:
    return out / f"{item.key}.json"


def json_complete(path: Path) -> bool:
    """``path`` exists and ends its JSON document (``]`` or ``}``)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size == 0:
                return False
            f.seek(max(0, size - 64))
            tail = f.read().rstrip()
    except OSError:
        return False
    return tail.endswith((b"]", b"}"))


class JsonSink:
    """``DIR/<key>.json`` per input."""

    def __init__(self, out: Path, task: str) -> None:
        self.out, self.task = out, task

    def done(self, items: Iterable[Item]) -> Set[str]:
        return {item.key for item in items if json_complete(json_output_path(self.out, item))}

    def write(self, item: Item, payload: str, on_written) -> None:
        """Write ``payload`` (the JSON text) and report it written."""
        path = json_output_path(self.out, item)
        atomic_write_text(path, payload)
        on_written(item, str(path))

    def flush(self) -> None:
        pass


def _schemas():
    import pyarrow as pa

    rle = pa.struct([("size", pa.list_(pa.int64())), ("counts", pa.string())])
    xy = pa.list_(pa.float64())
    common = [("path", pa.string()), ("key", pa.string())]
    return {
        "amg": pa.schema(common + [
            ("segmentation", rle), ("area", pa.int64()), ("bbox", xy), ("predicted_iou", pa.float64()),
            ("point_coords", pa.list_(xy)), ("stability_score", pa.float64()), ("crop_box", xy),
        ]),
        "segment": pa.schema(common + [
            ("prompt_index", pa.int64()), ("mask_index", pa.int64()), ("points", pa.list_(xy)),
            ("labels", pa.list_(pa.int64())), ("box", xy), ("segmentation", rle), ("area", pa.int64()),
            ("bbox", xy), ("score", pa.float64()),
        ]),
        "track": pa.schema(common + [
            ("frame_index", pa.int64()), ("obj_id", pa.int64()), ("segmentation", rle),
            ("area", pa.int64()), ("bbox", xy),
        ]),
    }


class ParquetSink:
    """Parquet shards ``DIR/part-NNNNN.parquet`` of ``shard_size`` inputs each: the same
    records as the JSON outputs, one row per mask, with the input's ``path`` and ``key``."""

    def __init__(self, out: Path, task: str, shard_size: int = 256) -> None:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            from sam2_fast.batch.inputs import BatchUsageError

            raise BatchUsageError("format='parquet' needs pyarrow: pip install 'sam2-fast[batch]'") from None
        self.out, self.task, self.shard_size = out, task, shard_size
        self.schema = _schemas()[task]
        self._rows: List[Dict[str, Any]] = []
        self._pending: List[tuple] = []  # (item, on_written) of the inputs in _rows
        self._next = self._first_free_index()

    def _shards(self) -> List[Path]:
        return sorted(self.out.glob(f"{SHARD_PREFIX}*.parquet"))

    def _first_free_index(self) -> int:
        numbers = [int(p.stem[len(SHARD_PREFIX):]) for p in self._shards() if p.stem[len(SHARD_PREFIX):].isdigit()]
        return max(numbers, default=-1) + 1

    def done(self, items: Iterable[Item]) -> Set[str]:
        import pyarrow.parquet as pq

        keys: Set[str] = set()
        for shard in self._shards():
            try:
                meta = pq.read_metadata(shard).metadata or {}
                keys.update(json.loads(meta.get(INPUTS_KEY, b"[]")))
            except Exception:  # an unreadable shard completes nothing: its inputs are redone
                continue
        return {item.key for item in items} & keys

    def write(self, item: Item, payload: str, on_written) -> None:
        """Buffer the input's records (``payload``: their JSON text); a full shard is written."""
        for record in json.loads(payload):
            self._rows.append({"path": item.path, "key": item.key, **record})
        self._pending.append((item, on_written))
        if len(self._pending) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write the buffered inputs as one shard (atomically) and report them written."""
        if not self._pending:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        keys = [item.key for item, _ in self._pending]
        table = pa.Table.from_pylist(self._rows, schema=self.schema)
        table = table.replace_schema_metadata({INPUTS_KEY: json.dumps(keys).encode(), b"sam2_fast.task": self.task.encode()})
        path = self.out / f"{SHARD_PREFIX}{self._next:05d}.parquet"
        atomic_write(path, lambda tmp: pq.write_table(table, tmp))
        self._next += 1
        pending, self._pending, self._rows = self._pending, [], []
        for item, on_written in pending:
            on_written(item, str(path))


def make_sink(fmt: str, out: Path, task: str, shard_size: int):
    if fmt == "json":
        return JsonSink(out, task)
    return ParquetSink(out, task, shard_size)


class Summary:
    """``DIR/_summary.jsonl``, one line per input of this run (written as each input ends,
    flushed line by line): ``path``, ``key``, ``status`` (``ok`` / ``failed`` / ``skipped``),
    ``error``, ``seconds``, ``masks``, ``output``."""

    def __init__(self, out: Path) -> None:
        self.path = out / SUMMARY
        self._file = open(self.path, "w", encoding="utf-8")
        self._lock = threading.Lock()
        self.counts = {"ok": 0, "failed": 0, "skipped": 0}
        self.failures: List[Dict[str, Any]] = []

    def add(
        self, item: Item, status: str, *, error: Optional[str] = None, seconds: Optional[float] = None,
        masks: Optional[int] = None, output: Optional[str] = None,
    ) -> None:
        line = {
            "path": item.path, "key": item.key, "status": status, "error": error,
            "seconds": None if seconds is None else round(seconds, 4), "masks": masks, "output": output,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        with self._lock:
            self._file.write(json.dumps(line) + "\n")
            self._file.flush()
            self.counts[status] += 1
            if status == "failed":
                self.failures.append(line)

    def close(self) -> None:
        self._file.close()
