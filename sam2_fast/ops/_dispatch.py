"""A small op dispatcher: each op has an ordered list of backends, the first that can run wins.

A backend is a name, a callable and a ``supports(*args, **kwargs)`` check that returns None when
it can run those inputs, or a string that says why it refuses ("extension not built: ...",
"mask is on cuda but the CUDA ops were not compiled", ...). :meth:`Op.explain` shows every
verdict, which is what ``sam2-fast info`` prints.

Standard backend names: ``reference`` (readable torch, the ground truth), ``compiled``
(``torch.compile`` of the reference), ``triton``, ``cpp`` and ``cuda``.

Forcing a backend, innermost first:

* ``with sam2_fast.ops.use_backend("reference"):`` for every op, or
  ``use_backend("cpp", op="connected_components")`` for one op;
* the environment variable ``SAM2_FAST_BACKEND``: ``reference`` for every op, or
  ``connected_components=cpp,other_op=reference`` per op (both forms can be mixed; a per-op
  entry wins over a global one).

A backend forced for every op applies to the ops that have a backend of that name; the others
choose as usual. A forced backend that refuses the inputs raises :class:`BackendError` naming
the op, the backend and its reason: forcing never falls back silently.

A backend may also have a ``prefer`` check: it can run the inputs, but automatic selection
passes it over when ``prefer`` returns a reason (a kernel measured slower than the next backend
on those inputs, for example); forcing it still runs it. :meth:`Op.explain` reports such a
verdict as ``"passed over: <reason>"``.

Measured choice (:mod:`sam2_fast.ops._tuning`): when more than one backend can run the inputs,
the fastest of them on this machine is measured once per shape class (``Op(shape_class=...)``,
default: dtypes and sizes rounded to powers of two) and kept; ``prefer`` then only sets the
built-in default used with ``SAM2_FAST_TUNE=0``. A backend with a ``timed`` check that returns
a reason is never a measured candidate (``compiled``: compiling takes seconds to minutes;
``triton`` in the CPU interpreter); it runs when forced, or as the built-in default.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from sam2_fast.errors import BackendError, InvalidInputError
from sam2_fast.ops import _tuning

STANDARD_BACKENDS = ("reference", "compiled", "triton", "cpp", "cuda")
ENV_VAR = "SAM2_FAST_BACKEND"

Supports = Callable[..., "str | None"]

_REGISTRY: dict[str, Op] = {}
# use_backend() entries, innermost last: (op name or None for every op, backend name)
_FORCED: ContextVar[tuple[tuple[str | None, str], ...]] = ContextVar(
    "sam2_fast_forced_backends", default=()
)

def _always(*args: Any, **kwargs: Any) -> str | None:
    return None


@dataclass(frozen=True)
class Backend:
    """One implementation of an op: ``fn`` runs when ``supports`` returns None. Among the
    backends that support the inputs, the measured fastest runs (those whose ``timed``
    returns None are measured); without a measurement, the first whose ``prefer`` returns
    None (see the module docstring)."""

    name: str
    fn: Callable[..., Any]
    supports: Supports = _always
    prefer: Supports = _always
    timed: Supports = _always

    def auto_refusal(self, *args: Any, **kwargs: Any) -> str | None:
        """Why automatic selection does not pick this backend for these inputs, or None."""
        reason = self.supports(*args, **kwargs)
        if reason is not None:
            return reason
        reason = self.prefer(*args, **kwargs)
        return None if reason is None else f"passed over: {reason}"


class Op:
    """A named operation with backends in order of preference; calling it runs the first one
    whose ``supports`` accepts the inputs (or the forced one, see the module docstring).

    ``example(device)`` returns typical positional inputs on ``device``; ``sam2-fast info``
    uses it to show each backend's verdict. ``kind``: ``"tensor"`` (an op on tensors, in
    :mod:`sam2_fast.ops`) or ``"model"`` (a model step with several ways to run it -- a Hiera
    block whole or in bands, the RoPE value algebra --, its inputs modules and tensors).
    Every op has a ``reference`` backend: the plain torch sequence of the official package.
    """

    def __init__(
        self,
        name: str,
        *,
        example: Callable[[str], tuple[Any, ...]] | None = None,
        shape_class: Callable[..., str] | None = None,
        kind: str = "tensor",
    ) -> None:
        if name in _REGISTRY:
            raise InvalidInputError(f"op {name!r} is already registered")
        if kind not in ("tensor", "model"):
            raise InvalidInputError(f"op {name!r}: kind must be 'tensor' or 'model', got {kind!r}")
        self.name = name
        self.kind = kind
        self.example = example
        self.shape_class = shape_class or _tuning.default_shape_class
        self._backends: dict[str, Backend] = {}
        _REGISTRY[name] = self

    def __repr__(self) -> str:
        return f"Op({self.name!r}, backends={self.backend_names})"

    @property
    def backend_names(self) -> list[str]:
        return list(self._backends)

    def backend(self, name: str) -> Backend:
        try:
            return self._backends[name]
        except KeyError:
            raise KeyError(
                f"op {self.name!r} has no backend {name!r}; it has {self.backend_names}"
            ) from None

    def add_backend(
        self,
        name: str,
        fn: Callable[..., Any],
        supports: Supports = _always,
        prefer: Supports = _always,
        timed: Supports = _always,
    ) -> None:
        """Append a backend; earlier backends are the default when nothing is measured
        (``prefer``, ``timed``: module docstring)."""
        if name in self._backends:
            raise InvalidInputError(f"op {self.name!r} already has a backend {name!r}")
        self._backends[name] = Backend(name, fn, supports, prefer, timed)

    def register(
        self, name: str, supports: Supports = _always, prefer: Supports = _always,
        timed: Supports = _always,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator form of :meth:`add_backend`; returns the function unchanged."""

        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.add_backend(name, fn, supports, prefer, timed)
            return fn

        return decorator

    def add_compiled_backend(self, reference: Callable[..., Any]) -> None:
        """Add the ``compiled`` backend: ``torch.compile`` of ``reference``, compiled on first use.

        It comes after the backends already added, so it runs only when nothing before it can, or
        when forced (compiling takes seconds to minutes; see the module docstring).
        """
        self.add_backend("compiled", _CompiledFn(reference), _compiled_refusal, timed=_compile_time)

    def explain(self, *args: Any, **kwargs: Any) -> dict[str, str | None]:
        """Each backend's verdict on these inputs, in order: None = automatic selection may
        run it (the measured winner, when there is a measurement), else the reason
        (``"passed over: ..."`` when it can run but is not chosen: it measured slower, or it
        is not the built-in default)."""
        verdict = self._measured(self._candidates(args, kwargs), args, kwargs, measure=False)
        verdicts: dict[str, str | None] = {}
        for b in self._backends.values():
            reason = b.supports(*args, **kwargs)
            if reason is None and verdict is not None:
                if b.name == verdict.winner:
                    reason = None
                elif b.name in verdict.seconds or b.name in verdict.notes:
                    reason = f"passed over: {verdict.describe_loser(b.name)}"
                else:
                    reason = f"passed over: not measured ({b.timed(*args, **kwargs)})"
            elif reason is None:
                reason = b.auto_refusal(*args, **kwargs)
            verdicts[b.name] = reason
        return verdicts

    def measured(self, *args: Any, **kwargs: Any) -> _tuning.Verdict | None:
        """The measured verdict this process knows for these inputs' shape class, or None."""
        return self._measured(self._candidates(args, kwargs), args, kwargs, measure=False)

    def _candidates(self, args: tuple, kwargs: dict) -> dict[str, Backend]:
        """The backends that support the inputs and may be measured, in order."""
        return {
            b.name: b for b in self._backends.values()
            if b.supports(*args, **kwargs) is None and b.timed(*args, **kwargs) is None
        }

    def _measured(
        self, candidates: dict[str, Backend], args: tuple, kwargs: dict, measure: bool
    ) -> _tuning.Verdict | None:
        if len(candidates) < 2 or torch.compiler.is_compiling():
            return None
        mode = _tuning.tuning_mode()
        device = _tuning.input_device(args, kwargs)
        if mode == "off" or device is None or _tuning.has_fake_tensors(args, kwargs):
            return None
        shape = self.shape_class(*args, **kwargs)
        shape += _tuning.autocast_suffix(device)  # the same inputs, other kernels
        if measure and _tuning.can_time(args, kwargs) is None:
            fns = {name: functools.partial(b.fn, *args, **kwargs) for name, b in candidates.items()}
            return _tuning.choose(self.name, shape, device, fns, mode)
        verdict = _tuning.remembered(device, self.name, shape)
        return None if verdict is None else _tuning.restrict(verdict, candidates)

    def select(self, *args: Any, **kwargs: Any) -> Backend:
        """The backend that a call with these inputs runs (measuring the candidates first
        when their shape class has no verdict yet); raises :class:`BackendError`."""
        return self._select(args, kwargs, measure=True)

    def planned(self, *args: Any, **kwargs: Any) -> Backend:
        """:meth:`select` without measuring anything: the remembered verdict, else the
        built-in default (what ``sam2-fast info`` shows)."""
        return self._select(args, kwargs, measure=False)

    def _select(self, args: tuple, kwargs: dict, measure: bool) -> Backend:
        forced = _forced_backend(self)
        if forced is not None:
            name, source = forced
            backend = self.backend(name)
            reason = backend.supports(*args, **kwargs)
            if reason is not None:
                raise BackendError(
                    f"op {self.name!r}: backend {name!r} (forced by {source}) cannot run these "
                    f"inputs: {reason}"
                )
            return backend
        candidates = self._candidates(args, kwargs)
        verdict = self._measured(candidates, args, kwargs, measure=measure)
        if verdict is not None:
            return candidates[verdict.winner]
        verdicts = []
        for backend in self._backends.values():
            reason = backend.auto_refusal(*args, **kwargs)
            if reason is None:
                return backend
            verdicts.append(f"{backend.name}: {reason}")
        raise BackendError(
            f"op {self.name!r}: no backend can run these inputs ({'; '.join(verdicts)})"
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.select(*args, **kwargs).fn(*args, **kwargs)


class _CompiledFn:
    """``torch.compile(fn)``, built on the first call."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self._compiled: Callable[..., Any] | None = None
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._compiled is None:
            import torch

            self._compiled = torch.compile(self.fn, dynamic=False)
        return self._compiled(*args, **kwargs)


def _compile_time(*args: Any, **kwargs: Any) -> str | None:
    return "compiling takes seconds to minutes: runs when forced"


def _compiled_refusal(*args: Any, **kwargs: Any) -> str | None:
    import torch

    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    try:
        import torch._dynamo  # noqa: F401
    except Exception as exc:
        return f"torch.compile is unavailable ({type(exc).__name__}: {exc})"
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile is not supported on this Python"
    return None


def list_ops() -> list[Op]:
    """All registered ops, sorted by name (importing :mod:`sam2_fast.ops` registers them)."""
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def get_op(name: str) -> Op:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}; registered ops: {sorted(_REGISTRY)}") from None


def _check_backend_name(name: str, op: str | None, source: str) -> None:
    if op is not None:
        if op not in _REGISTRY:
            raise BackendError(f"{source}: unknown op {op!r}; registered ops: {sorted(_REGISTRY)}")
        if name not in _REGISTRY[op].backend_names:
            raise BackendError(
                f"{source}: op {op!r} has no backend {name!r}; it has {_REGISTRY[op].backend_names}"
            )
    elif name not in STANDARD_BACKENDS and not any(
        name in o.backend_names for o in _REGISTRY.values()
    ):
        raise BackendError(
            f"{source}: unknown backend {name!r}; standard names: {STANDARD_BACKENDS}"
        )


@functools.lru_cache(maxsize=8)
def _parse_env(value: str) -> tuple[tuple[str | None, str], ...]:
    """``"cpp"`` / ``"op=cpp,op2=reference"`` -> ((op or None, backend), ...), validated."""
    entries: list[tuple[str | None, str]] = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        op, sep, name = (part.strip() for part in item.partition("="))
        entry = (op, name) if sep else (None, op)
        _check_backend_name(entry[1], entry[0], f"{ENV_VAR}={value!r}")
        entries.append(entry)
    return tuple(entries)


def _applies(entry: tuple[str | None, str], op: Op) -> bool:
    target, name = entry
    return target == op.name or (target is None and name in op.backend_names)


def _forced_backend(op: Op) -> tuple[str, str] | None:
    """(backend name, what forced it) for ``op``, or None when nothing forces one."""
    for entry in reversed(_FORCED.get()):
        if _applies(entry, op):
            target = "" if entry[0] is None else f", op={entry[0]!r}"
            return entry[1], f"use_backend({entry[1]!r}{target})"
    env = os.environ.get(ENV_VAR, "")
    if env:
        applicable = [entry for entry in _parse_env(env) if _applies(entry, op)]
        # a per-op entry wins over a global one
        applicable.sort(key=lambda entry: entry[0] is None)
        if applicable:
            return applicable[0][1], f"{ENV_VAR}={env!r}"
    return None


@contextmanager
def use_backend(name: str, op: str | None = None) -> Iterator[None]:
    """Force backend ``name`` for ``op`` (or for every op that has it) inside the block.

    Raises :class:`BackendError` at once for an unknown op or backend name.
    """
    _check_backend_name(name, op, "use_backend")
    token = _FORCED.set((*_FORCED.get(), (op, name)))
    try:
        yield
    finally:
        _FORCED.reset(token)
