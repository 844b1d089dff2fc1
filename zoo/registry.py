"""The model registry: named variants, their aliases, and third-party families.

A variant is a :class:`ModelInfo`: its architecture config, where its weights live on the
Hugging Face Hub, and a function that converts a foreign state-dict layout to the official
keys. Built-in variants are registered by :mod:`sam2_fast.zoo.sam2`; third-party packages add
their own with an entry point in the ``sam2_fast.zoo`` group::

    # pyproject.toml of a plugin package
    [project.entry-points."sam2_fast.zoo"]
    medsam2 = "medsam2_zoo:register_models"   # a callable, or just a module

The entry point is loaded on the first lookup (never at import time). A module registers its
variants when it is imported; a callable is called with no arguments and may either call
:func:`register` itself or return the :class:`ModelInfo` objects to register. A plugin that
fails to load is reported with a warning naming it; the other models stay available.

This module does not import torch.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import logging
import threading
import types
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from sam2_fast.errors import ZOO_ENTRY_POINT_GROUP, InvalidInputError, InvalidTypeError, UnknownModelError
from sam2_fast.modeling.config import SAM2Config

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = ZOO_ENTRY_POINT_GROUP

StateDictConverter = Callable[[Mapping[str, Any]], Dict[str, Any]]


def identity_state_dict(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """The converter of checkpoints that already use the official keys."""
    return dict(state_dict)


@dataclass(frozen=True)
class ModelInfo:
    """One model variant: architecture, Hub location and key-layout converter.

    Attributes:
        name: zoo name, e.g. ``"sam2.1-hiera-tiny"``.
        family: family that registered it, e.g. ``"sam2"``.
        config: the architecture.
        hub_repo_id: Hugging Face Hub repository, e.g. ``"facebook/sam2.1-hiera-tiny"``.
        filename: the official checkpoint file in that repository.
        aliases: other names that resolve to this variant (Hub id, official config names).
        convert_state_dict: maps a state dict in any layout this family knows to the
            official keys (identity for official checkpoints).
        description: one line for listings.
        alt_filenames: other files in the repository that hold the same weights, e.g.
            safetensors copies; tried before ``filename``.
    """

    name: str
    family: str
    config: SAM2Config
    hub_repo_id: Optional[str] = None
    filename: Optional[str] = None
    aliases: Tuple[str, ...] = ()
    convert_state_dict: StateDictConverter = identity_state_dict
    description: str = ""
    alt_filenames: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.strip():
            raise InvalidInputError(
                "ModelInfo.name must be a non-empty name without spaces around it, "
                f"got {self.name!r}"
            )
        if not self.family:
            raise InvalidInputError(f"ModelInfo {self.name!r}: family must be a non-empty string")
        if not isinstance(self.config, SAM2Config):
            raise InvalidTypeError(
                f"ModelInfo {self.name!r}: config must be a SAM2Config, "
                f"got {type(self.config).__name__}"
            )
        if (self.hub_repo_id is None) != (self.filename is None):
            raise InvalidInputError(
                f"ModelInfo {self.name!r}: give both hub_repo_id and filename, or neither "
                f"(got hub_repo_id={self.hub_repo_id!r}, filename={self.filename!r})"
            )
        if isinstance(self.aliases, str) or isinstance(self.alt_filenames, str):
            raise InvalidTypeError(
                f"ModelInfo {self.name!r}: aliases and alt_filenames must be tuples of strings"
            )
        object.__setattr__(self, "aliases", tuple(self.aliases))
        object.__setattr__(self, "alt_filenames", tuple(self.alt_filenames))

    @property
    def hub_filenames(self) -> Tuple[str, ...]:
        """Files to look for in the Hub repository, best first: safetensors, then the rest."""
        files = [*self.alt_filenames, *([self.filename] if self.filename else [])]
        return tuple(sorted(dict.fromkeys(files), key=lambda f: not f.endswith(".safetensors")))


def _normalize(name: str) -> str:
    """Lookup key: case-insensitive, surrounding spaces and a ``.yaml``/``.yml`` suffix ignored."""
    key = name.strip().lower()
    for suffix in (".yaml", ".yml"):
        if key.endswith(suffix):
            key = key[: -len(suffix)]
    return key


class _Registry:
    def __init__(self) -> None:
        self.models: Dict[str, ModelInfo] = {}
        self.lookup: Dict[str, str] = {}  # normalised name or alias -> model name
        self.lock = threading.RLock()
        self.plugins_loaded = False

    def register(self, info: ModelInfo, overwrite: bool) -> ModelInfo:
        with self.lock:
            keys = [_normalize(n) for n in (info.name, *info.aliases)]
            replaced = self.models.get(info.name)
            for key, original in zip(keys, (info.name, *info.aliases)):
                owner = self.lookup.get(key)
                if owner is not None and owner != info.name and not overwrite:
                    raise InvalidInputError(
                        f"cannot register {info.name!r}: {original!r} already names model "
                        f"{owner!r} "
                        f"(family {self.models[owner].family!r}); pass overwrite=True to replace it"
                    )
            if replaced is not None and not overwrite:
                raise InvalidInputError(
                    f"model {info.name!r} is already registered (family {replaced.family!r}); "
                    "pass overwrite=True to replace it"
                )
            if replaced is not None:
                self.lookup = {k: v for k, v in self.lookup.items() if v != info.name}
            self.models[info.name] = info
            for key in keys:
                self.lookup[key] = info.name
            logger.debug("registered model %s (family %s)", info.name, info.family)
            return info

    def load_plugins(self) -> None:
        with self.lock:
            if self.plugins_loaded:
                return
            self.plugins_loaded = True  # set first: a plugin may look models up while loading
            for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                _load_plugin(entry_point)


def _load_plugin(entry_point: importlib.metadata.EntryPoint) -> None:
    dist = getattr(entry_point, "dist", None)
    where = f" from {dist.name} {dist.version}" if dist is not None else ""
    label = f"{entry_point.name} = {entry_point.value}{where}"
    try:
        target = entry_point.load()
        if not isinstance(target, types.ModuleType):
            if not callable(target):
                raise InvalidTypeError(
                    f"the entry point is a {type(target).__name__}, not a module or callable"
                )
            returned = target()
            infos: Iterable[Any] = (
                [returned] if isinstance(returned, ModelInfo) else (returned or ())
            )
            for info in infos:
                if not isinstance(info, ModelInfo):
                    raise InvalidTypeError(
                        f"it returned a {type(info).__name__}, expected ModelInfo objects"
                    )
                register(info)
    except Exception as exc:  # a broken plugin must not take the built-in models down
        warnings.warn(
            f"sam2_fast.zoo: plugin {label!r} failed to load and its models are not available: "
            f"{type(exc).__name__}: {exc}",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    logger.debug("loaded sam2_fast.zoo plugin %s", label)


_REGISTRY = _Registry()


def register(info: ModelInfo, *, overwrite: bool = False) -> ModelInfo:
    """Add a variant to the zoo; its name and aliases must not name another model.

    Returns ``info`` so that it can be used as ``MODEL = register(ModelInfo(...))``.
    """
    if not isinstance(info, ModelInfo):
        raise InvalidTypeError(f"register() expects a ModelInfo, got {type(info).__name__}")
    return _REGISTRY.register(info, overwrite)


def list_models(family: Optional[str] = None) -> List[str]:
    """Names of the registered variants (in registration order), optionally of one family."""
    _REGISTRY.load_plugins()
    return [
        name for name, info in _REGISTRY.models.items() if family is None or info.family == family
    ]


def get_model_info(name_or_alias: str) -> ModelInfo:
    """The variant named ``name_or_alias``: a zoo name, a Hub id or an official config name.

    Accepts every config name official ``build_sam2`` accepts
    (``"configs/sam2.1/sam2.1_hiera_t.yaml"``, ``"configs/sam2/sam2_hiera_s.yaml"``, the SAM 2.0
    top-level ``"sam2_hiera_s.yaml"``) and their bare file names (``"sam2.1_hiera_b+.yaml"``);
    matching ignores case and a missing ``.yaml``.

    Raises:
        UnknownModelError: with close matches and the list of known models.
    """
    if not isinstance(name_or_alias, str):
        raise InvalidTypeError(f"model name must be a str, got {type(name_or_alias).__name__}")
    _REGISTRY.load_plugins()
    key = _normalize(name_or_alias)
    found = _REGISTRY.lookup.get(key)
    if found is not None:
        return _REGISTRY.models[found]
    names = list(_REGISTRY.models)
    spelled = {_normalize(n): n for n in names}
    for info in _REGISTRY.models.values():
        spelled.update((_normalize(a), a) for a in info.aliases)
    suggestions: Dict[str, str] = {}  # model -> its closest spelling, best match first
    for close in difflib.get_close_matches(key, list(spelled), n=12, cutoff=0.6):
        suggestions.setdefault(_REGISTRY.lookup[close], spelled[close])
    raise UnknownModelError(name_or_alias, list(suggestions.values())[:3], names)


def iter_model_infos() -> List[ModelInfo]:
    """Every registered :class:`ModelInfo`, in registration order."""
    _REGISTRY.load_plugins()
    return list(_REGISTRY.models.values())


__all__ = [
    "ENTRY_POINT_GROUP",
    "ModelInfo",
    "StateDictConverter",
    "UnknownModelError",
    "get_model_info",
    "identity_state_dict",
    "iter_model_infos",
    "list_models",
    "register",
]
