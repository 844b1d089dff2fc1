"""Measured backend choice: which backend of an op is fastest is measured on this machine, for
this torch, dtype and shape class, and remembered in a small JSON file.

No choice is a constant tuned on one machine: on a CPU with AMX a bfloat16 matrix product is
7-8x a float32 one, on another CPU it is slower than float32, and on a GPU launch overhead
decides small shapes. So when an op has more than one backend that can run its inputs, the
dispatcher (:mod:`sam2_fast.ops._dispatch`) times each of them on those very inputs on first
use (one warm-up call each, then :data:`ROUNDS` interleaved timed calls; each candidate's
fastest call counts: load from other processes only adds time, so a burst of it over two of
three calls of one candidate cannot flip the verdict as it flips a median) and keeps the
fastest. Every candidate set holds the plain torch path the official package takes (the
``reference`` backend), so the measured choice cannot lose to it by more than noise.

The verdict is keyed by the **machine fingerprint** (CPU model, the ISA flags that decide
kernel speed such as ``amx_bf16`` / ``avx512_bf16``, torch's thread count and an
``ONEDNN_MAX_CPU_ISA`` cap; or GPU name and compute capability), the torch and sam2-fast
versions, and the op's **shape class** (device, dtypes and sizes rounded to powers of two). It
is kept in memory for the process and in ``tuning.json`` in the user cache folder
(``$SAM2_FAST_CACHE_DIR``, else ``platformdirs.user_cache_dir("sam2-fast")``, else
``$XDG_CACHE_HOME/sam2-fast`` or ``~/.cache/sam2-fast``), written atomically (a temporary
file, then a rename). A missing, unreadable, corrupt or stale file (other versions or
machine) is measured again, never an error.

Modes, innermost first:

* ``with sam2_fast.ops.tuning(False):`` / ``tuning(True)`` / ``tuning("remeasure")``, or the
  ``tune=`` keyword of :func:`sam2_fast.build_sam2` (the model's predictors enter it);
* the environment variable ``SAM2_FAST_TUNE``: ``0`` (or ``off``) uses the built-in defaults
  and measures nothing (what the tests and CI use: results then do not depend on timings),
  ``1`` (the default) measures on first use, ``remeasure`` measures every shape class again
  once per process (``sam2-fast tune`` does this).

With tuning off, or while nothing can be timed (under ``torch.compile`` tracing, a Python
dispatch mode such as ``FlopCounterMode``, fake or meta tensors), a verdict already in memory
is used, else the built-in default: the first backend whose ``supports`` and ``prefer``
accept the inputs. ``sam2-fast tune`` measures a model's ops ahead of time and
``sam2-fast info`` lists the verdicts.

One file of ~600 lines: the machine fingerprint, the cache file, the timing and the verdicts
are one mechanism, and each part is only used by the others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sam2_fast.errors import InvalidInputError
from sam2_fast.utils.files import atomic_write_text

__all__ = [
    "ENV_CACHE_DIR",
    "ENV_TUNE",
    "ROUNDS",
    "TuningCache",
    "Verdict",
    "cache",
    "default_cache_path",
    "machine_fingerprint",
    "machine_id",
    "measure",
    "tuning",
    "tuning_mode",
]

log = logging.getLogger(__name__)

ENV_TUNE = "SAM2_FAST_TUNE"
ENV_CACHE_DIR = "SAM2_FAST_CACHE_DIR"
CACHE_NAME = "tuning.json"
CACHE_FORMAT = 1
#: timed calls per candidate after its warm-up call
ROUNDS = 3
#: a candidate whose first two timed calls took this many times the fastest is not timed further
DROP_FACTOR = 4.0

# CPU flags that decide which kernels oneDNN / MKL / our C++ ops run (matrix units, 16-bit
# dot products, vector width)
_CPU_FLAGS = (
    "amx_bf16", "amx_fp16", "amx_int8", "amx_tile", "avx2", "avx512_bf16", "avx512_fp16",
    "avx512_vnni", "avx512f", "avx_vnni", "fma", "asimd", "bf16", "sve", "sve2", "i8mm",
)
_MODES = {"0": "off", "off": "off", "false": "off", "no": "off",
          "1": "on", "on": "on", "true": "on", "yes": "on", "": "on",
          "remeasure": "remeasure"}
_MODE: ContextVar[str | None] = ContextVar("sam2_fast_tuning_mode", default=None)
# the shape classes measured in this process while in "remeasure" mode
_REMEASURED: set[tuple[str, str, str]] = set()


# ---------------------------------------------------------------------------------------------
# the mode


def _parse_mode(value: object, source: str) -> str:
    if value is True:
        return "on"
    if value is False:
        return "off"
    if isinstance(value, str) and value.strip().lower() in _MODES:
        return _MODES[value.strip().lower()]
    raise InvalidInputError(
        f"{source}: expected True / False / 'remeasure' (or 1 / 0 in {ENV_TUNE}), got {value!r}"
    )


def tuning_mode() -> str:
    """``"on"``, ``"off"`` or ``"remeasure"``: the innermost :func:`tuning` block, else
    ``SAM2_FAST_TUNE`` (an unknown value there is reported once and read as ``"on"``)."""
    mode = _MODE.get()
    if mode is not None:
        return mode
    value = os.environ.get(ENV_TUNE, "1")
    try:
        return _parse_mode(value, ENV_TUNE)
    except InvalidInputError as exc:
        _warn_once(str(exc) + "; measuring as with 1")
        return "on"


@contextlib.contextmanager
def tuning(mode: bool | str = True) -> Iterator[None]:
    """Tuning on (``True``), off (``False``: built-in defaults, nothing measured) or
    ``"remeasure"`` (every shape class measured again, once) inside the block."""
    token = _MODE.set(_parse_mode(mode, "tuning"))
    try:
        yield
    finally:
        _MODE.reset(token)


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    log.warning(message)


# ---------------------------------------------------------------------------------------------
# the machine


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, tuple[str, ...]]:
    """(CPU model, its flags among :data:`_CPU_FLAGS`) from /proc/cpuinfo (Linux), else the
    platform's processor name and no flags."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model") and model in (platform.processor(), platform.machine()):
                    model = value.strip()
                elif key in ("flags", "Features"):
                    flags.update(value.split())
                elif not line.strip() and flags:
                    break  # the first processor is enough
    except OSError:
        pass
    return model, tuple(sorted(flags & set(_CPU_FLAGS)))


def cpu_description() -> dict[str, Any]:
    """CPU model, the speed-deciding flags and core counts, for fingerprints and reports."""
    model, flags = _cpuinfo()
    return {"cpu": model, "flags": list(flags), "cpus": os.cpu_count()}


def machine_fingerprint(device: torch.device | str = "cpu") -> dict[str, Any]:
    """What a timing depends on, for ``device``: on a CPU its model, flags, torch's thread
    count and a oneDNN ISA cap from the environment; on a GPU its name and compute capability;
    and the versions of torch and sam2-fast."""
    from sam2_fast import __version__

    device = torch.device(device)
    fp: dict[str, Any] = {"torch": torch.__version__, "sam2_fast": __version__}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        fp.update(device="cuda", gpu=props.name, capability=f"{props.major}.{props.minor}",
                  cuda=torch.version.cuda)
        return fp
    if device.type != "cpu":
        fp.update(device=device.type)
        return fp
    cpu = cpu_description()
    fp.update(device="cpu", cpu=cpu["cpu"], flags=cpu["flags"], threads=torch.get_num_threads())
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    if isa:
        fp["onednn_max_cpu_isa"] = isa
    return fp


def _fingerprint_id(fp: Mapping[str, Any]) -> str:
    return hashlib.sha1(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


_machine_ids: dict[tuple, tuple[str, dict[str, Any]]] = {}


def machine_id(device: torch.device | str = "cpu") -> tuple[str, dict[str, Any]]:
    """``(id, fingerprint)`` of ``device`` on this machine (memoised per device, thread count
    and ISA cap)."""
    device = torch.device(device)
    memo = (device.type, device.index, torch.get_num_threads(),
            os.environ.get("ONEDNN_MAX_CPU_ISA"), os.environ.get("DNNL_MAX_CPU_ISA"))
    found = _machine_ids.get(memo)
    if found is None:
        fp = machine_fingerprint(device)
        found = _machine_ids[memo] = (_fingerprint_id(fp), fp)
    return found


# ---------------------------------------------------------------------------------------------
# the cache


@dataclass(frozen=True)
class Verdict:
    """A measured choice: the winner and each candidate's fastest timed call (seconds); ``notes``
    says why a candidate has no time (it failed, or its warm-up alone lost by far)."""

    winner: str
    seconds: dict[str, float]
    notes: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"winner": self.winner, "seconds": self.seconds, "notes": self.notes,
                "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}

    @classmethod
    def from_json(cls, data: Any) -> Verdict | None:
        try:
            seconds = {str(k): float(v) for k, v in data["seconds"].items()}
            notes = {str(k): str(v) for k, v in data.get("notes", {}).items()}
            winner = str(data["winner"])
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        return cls(winner, seconds, notes) if winner in seconds else None

    def describe_loser(self, name: str) -> str:
        if name in self.notes:
            return self.notes[name]
        return (f"measured slower: {_ms(self.seconds[name])} vs {_ms(self.seconds[self.winner])} "
                f"({self.winner})")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms"


def default_cache_path() -> Path:
    """``tuning.json`` in ``$SAM2_FAST_CACHE_DIR``, the platform's user cache folder
    (platformdirs) or ``$XDG_CACHE_HOME`` / ``~/.cache``, under ``sam2-fast``."""
    folder = os.environ.get(ENV_CACHE_DIR)
    if folder:
        return Path(folder) / CACHE_NAME
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("sam2-fast", appauthor=False)) / CACHE_NAME
    except ImportError:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return Path(base) / "sam2-fast" / CACHE_NAME


class _ForeignCache(Exception):
    """A readable JSON file that is not a tuning cache of this format."""


class TuningCache:
    """The verdicts of every machine fingerprint in one JSON file::

        {"format": 1, "machines": {id: {"fingerprint": {...}, "verdicts": {key: verdict}}}}

    Read once per process (lazily); each new verdict is merged into what is on disk at that
    moment and written atomically, so processes sharing the file lose nothing but a race's
    duplicate measurement. Every failure to read or write is logged, never raised."""

    def __init__(self, path: Path | str | None = None) -> None:
        self._path = Path(path) if path is not None else None
        self._lock = threading.RLock()
        self._data: dict[str, Any] | None = None
        self._loaded_from: Path | None = None

    @property
    def path(self) -> Path:
        return self._path if self._path is not None else default_cache_path()

    def _read(self, path: Path) -> dict[str, Any]:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"format": CACHE_FORMAT, "machines": {}}
        except OSError as exc:
            log.warning("tuning cache %s is unreadable (%s); measuring again", path, exc)
            return {"format": CACHE_FORMAT, "machines": {}}
        try:
            data = json.loads(text)
            if data.get("format") != CACHE_FORMAT or not isinstance(data.get("machines"), dict):
                raise _ForeignCache(f"format {data.get('format')!r}, expected {CACHE_FORMAT}")
        except (ValueError, AttributeError, _ForeignCache) as exc:
            log.warning("tuning cache %s is not a cache of this version (%s); measuring again", path, exc)
            return {"format": CACHE_FORMAT, "machines": {}}
        return data

    def _loaded(self) -> dict[str, Any]:
        path = self.path
        if self._data is None or self._loaded_from != path:
            self._data, self._loaded_from = self._read(path), path
        return self._data

    def get(self, machine: str, key: str) -> Verdict | None:
        with self._lock:
            entry = self._loaded()["machines"].get(machine)
            if not isinstance(entry, dict) or not isinstance(entry.get("verdicts"), dict):
                return None
            return Verdict.from_json(entry["verdicts"].get(key))

    def verdicts(self, machine: str) -> dict[str, Verdict]:
        """Every readable verdict of ``machine``, by key."""
        with self._lock:
            entry = self._loaded()["machines"].get(machine)
            if not isinstance(entry, dict) or not isinstance(entry.get("verdicts"), dict):
                return {}
            found = {key: Verdict.from_json(v) for key, v in entry["verdicts"].items()}
            return {key: v for key, v in found.items() if v is not None}

    def machines(self) -> dict[str, dict[str, Any]]:
        """``{id: fingerprint}`` of every machine in the file."""
        with self._lock:
            return {mid: entry.get("fingerprint", {}) for mid, entry in self._loaded()["machines"].items()
                    if isinstance(entry, dict)}

    def put(self, machine: str, fingerprint: Mapping[str, Any], key: str, verdict: Verdict) -> None:
        with self._lock:
            path = self.path
            data = self._read(path)  # merge with what other processes wrote meanwhile
            entry = data["machines"].setdefault(machine, {})
            if not isinstance(entry, dict) or not isinstance(entry.get("verdicts"), dict):
                entry = data["machines"][machine] = {"verdicts": {}}
            entry["fingerprint"] = dict(fingerprint)
            entry["verdicts"][key] = verdict.to_json()
            self._data, self._loaded_from = data, path
            try:
                atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
            except OSError as exc:
                _warn_once(f"tuning cache {path} cannot be written ({exc}); verdicts are kept "
                           "for this process only")

    def clear(self, machine: str | None = None) -> None:
        """Forget every verdict (of ``machine`` only, when given), in memory and on disk."""
        with self._lock:
            path = self.path
            data = self._read(path)
            if machine is None:
                data["machines"] = {}
            else:
                data["machines"].pop(machine, None)
            self._data, self._loaded_from = data, path
            try:
                atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
            except OSError as exc:
                log.warning("tuning cache %s cannot be written (%s)", path, exc)


#: the process's cache (``sam2_fast.ops._tuning.cache``); tests point it at a temporary file
cache = TuningCache()


# ---------------------------------------------------------------------------------------------
# timing


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_once(fn: Callable[[], Any], device: torch.device | None) -> float:
    _sync(device)
    start = clock()
    fn()
    _sync(device)
    return clock() - start


#: the clock of every measurement (tests replace it with a fake one)
clock: Callable[[], float] = time.perf_counter


def measure(
    fns: Mapping[str, Callable[[], Any]],
    device: torch.device | None = None,
    rounds: int = ROUNDS,
) -> tuple[dict[str, float], dict[str, str]]:
    """The fastest timed call of each function (seconds): a warm-up call each (a second one when the first
    measured the ops inside it), then ``rounds`` interleaved rounds. A function that raises is
    left out (its note says why); one whose first two timed calls both took over
    :data:`DROP_FACTOR` times the fastest one keeps those times and is not timed further. Returns
    ``(seconds, notes)``."""
    warm: dict[str, float] = {}
    notes: dict[str, str] = {}
    for name, fn in fns.items():
        try:
            nested = _measurements[0]
            warm[name] = _time_once(fn, device)
            if _measurements[0] != nested:  # the call measured the ops inside it: once more
                warm[name] = _time_once(fn, device)
        except Exception as exc:  # a candidate that cannot run these inputs after all
            notes[name] = f"failed while measured: {type(exc).__name__}: {exc}"
    if not warm:
        return {}, notes
    # one timed round for every candidate (a warm-up may carry one-time costs), then the rest
    # of the rounds for those within DROP_FACTOR of the fastest. A candidate over it gets a
    # second call first: one call the OS preempted (another process, a page-fault storm) must
    # not drop the fastest candidate from a verdict that is kept on disk
    samples: dict[str, list[float]] = {name: [_time_once(fns[name], device)] for name in warm}

    def too_slow() -> list[str]:
        best = min(min(times) for times in samples.values())
        return [name for name, times in samples.items() if min(times) > DROP_FACTOR * max(best, 1e-9)]

    for name in too_slow():
        samples[name].append(_time_once(fns[name], device))
    dropped = too_slow()
    best = min(min(times) for times in samples.values())
    timed = [name for name in samples if name not in dropped]
    for done in range(1, rounds):  # interleaved rounds (a second-chance call counts as one)
        for name in timed:
            if len(samples[name]) <= done:
                samples[name].append(_time_once(fns[name], device))
    seconds = {name: min(times) for name, times in samples.items()}
    for name in dropped:
        calls = " and ".join(_ms(t) for t in samples[name])
        notes[name] = f"timed calls took {calls}, over {DROP_FACTOR:g}x the fastest ({_ms(best)})"
    return seconds, notes


# ---------------------------------------------------------------------------------------------
# shape classes


def size_class(n: int) -> int:
    """``n`` rounded up to a power of two (sizes up to 4 stay exact)."""
    if n <= 4:
        return n
    return 1 << (n - 1).bit_length()


def describe_value(value: Any) -> str | None:
    """One value of an op's inputs in a shape class: a tensor as ``dtype[sizes]`` (sizes
    rounded up to powers of two), a plain value as itself, anything else left out (None)."""
    if isinstance(value, torch.Tensor):
        dtype = str(value.dtype).removeprefix("torch.")
        return f"{dtype}[{'x'.join(str(size_class(s)) for s in value.shape)}]"
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    return None


def autocast_suffix(device: torch.device) -> str:
    """``", autocast bfloat16"`` while autocast is on for ``device`` (it changes the kernels
    the same inputs run), else ``""``."""
    try:
        if not torch.is_autocast_enabled(device.type):
            return ""
        dtype = torch.get_autocast_dtype(device.type) if hasattr(torch, "get_autocast_dtype") else "16-bit"
    except RuntimeError:  # a device type autocast does not know
        return ""
    return f", autocast {str(dtype).removeprefix('torch.')}"


def default_shape_class(*args: Any, **kwargs: Any) -> str:
    parts = [d for d in map(describe_value, (*args, *kwargs.values())) if d is not None]
    return ", ".join(parts)


def input_device(args: tuple, kwargs: Mapping[str, Any]) -> torch.device | None:
    """The device of the first tensor among the inputs (:func:`input_tensors`), or None."""
    for t in input_tensors(args, kwargs):
        return t.device
    return None


def input_tensors(args: tuple, kwargs: Mapping[str, Any]) -> Iterator[torch.Tensor]:
    """The tensors among an op's inputs, and among the fields of an input dataclass (ops of
    whole model steps take their inputs as one record)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            yield value
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                item = getattr(value, f.name)
                if isinstance(item, torch.Tensor):
                    yield item


def has_fake_tensors(args: tuple, kwargs: Mapping[str, Any]) -> bool:
    """Whether an input is a meta or fake tensor (shape tracing, ``sam2-fast info`` on CUDA
    without touching the GPU): nothing to time and no machine to ask."""
    from torch._subclasses.fake_tensor import FakeTensor

    return any(t.is_meta or isinstance(t, FakeTensor) for t in input_tensors(args, kwargs))


def can_time(args: tuple, kwargs: Mapping[str, Any]) -> str | None:
    """Why these inputs cannot be timed right now, or None: tracing, a Python dispatch mode
    (``FlopCounterMode``) and meta / fake tensors compute nothing real."""
    if torch.compiler.is_compiling():
        return "torch.compile is tracing"
    if getattr(torch._C, "_len_torch_dispatch_stack", lambda: 0)() > 0:
        return "a Python dispatch mode is active"
    if has_fake_tensors(args, kwargs):
        return "the inputs are meta or fake tensors"
    return None


# ---------------------------------------------------------------------------------------------
# choosing

_lock = threading.RLock()
# measurements started in this process (a candidate whose call starts one is warmed up again)
_measurements = [0]
# (machine id, op, shape class) -> verdict, for this process
_memo: dict[tuple[str, str, str], Verdict] = {}


def remembered(device: torch.device, op: str, shape_class: str) -> Verdict | None:
    """The verdict for ``op`` on ``shape_class`` known to this process or in the cache."""
    mid, _ = machine_id(device)
    key = (mid, op, shape_class)
    verdict = _memo.get(key)
    if verdict is None:
        verdict = cache.get(mid, f"{op} | {shape_class}")
        if verdict is not None:
            _memo[key] = verdict
    return verdict


def choose(
    op: str,
    shape_class: str,
    device: torch.device,
    candidates: Mapping[str, Callable[[], Any]],
    mode: str,
) -> Verdict | None:
    """The verdict for ``op`` on ``shape_class``: remembered, or measured now by calling each
    candidate (``mode`` "on": when nothing is remembered; "remeasure": once per process).
    None when no candidate could be measured."""
    mid, fingerprint = machine_id(device)
    key = (mid, op, shape_class)
    with _lock:
        if mode == "remeasure" and key not in _REMEASURED:
            _memo.pop(key, None)
        else:
            verdict = remembered(device, op, shape_class)
            if verdict is not None:
                found = restrict(verdict, candidates)
                if found is not None:
                    return found
        _measurements[0] += 1
        seconds, notes = measure(candidates, device)
        if not seconds:
            return None
        winner = min(seconds, key=seconds.get)
        verdict = Verdict(winner, seconds, notes)
        _memo[key] = verdict
        if mode == "remeasure":
            _REMEASURED.add(key)
        log.info("tuned %s [%s]: %s (%s)", op, shape_class, winner,
                 ", ".join(f"{n} {_ms(t)}" for n, t in seconds.items()))
        cache.put(mid, fingerprint, f"{op} | {shape_class}", verdict)
        return verdict


def restrict(verdict: Verdict, candidates: Mapping[str, Any]) -> Verdict | None:
    """``verdict`` restricted to ``candidates`` (the inputs of one shape class may rule out a
    backend that others allow), or None when a candidate was never measured (a stale verdict)."""
    if any(name not in verdict.seconds and name not in verdict.notes for name in candidates):
        return None
    timed = [name for name in candidates if name in verdict.seconds]
    if not timed:
        return None
    best = min(timed, key=verdict.seconds.get)
    return verdict if best == verdict.winner else Verdict(best, verdict.seconds, verdict.notes)


def forget() -> None:
    """Drop this process's verdicts (the cache file is left alone; see :meth:`TuningCache.clear`)."""
    with _lock:
        _memo.clear()
        _REMEASURED.clear()
