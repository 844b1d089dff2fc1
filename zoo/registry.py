"""The model registry: model families, their named variants and aliases, third-party plugins.

A family (:class:`Family`) owns its config type, the builder of its model and the fingerprint
that tells its variants apart from their weights. A variant is a :class:`ModelInfo`: its
architecture config, where its weights live on the Hugging Face Hub, and a function that
converts a foreign state-dict layout to the official keys. The built-in family and variants
are registered by :mod:`sam2_fast.zoo.sam2`; third-party packages add their own with an entry
point in the ``sam2_fast.zoo`` group::

    # pyproject.toml of a plugin package
    [project.entry-points."sam2_fast.zoo"]
    medsam2 = "medsam2_zoo:register_models"   # a callable, or just a module

The entry point is loaded on the first lookup (never at import time). A module registers its
variants when it is imported; a callable is called with no arguments and may either call
:func:`register_family` / :func:`register` itself or return the :class:`Family` and
:class:`ModelInfo` objects to register (families first). A plugin that
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
from typing import Any, Callable, Dict, Hashable, Iterable, List, Mapping, Optional, Tuple

from sam2_fast.errors import ZOO_ENTRY_POINT_GROUP, InvalidInputError, InvalidTypeError, UnknownModelError

logger = logging.getLogger(__name__)

#: the variant the command line and batch jobs use when none is named
DEFAULT_MODEL = "sam2.1-hiera-tiny"

ENTRY_POINT_GROUP = ZOO_ENTRY_POINT_GROUP

#: the files of a transformers-format folder / Hub repository (``save_pretrained``'s names)
TRANSFORMERS_CONFIG_NAME = "config.json"
TRANSFORMERS_WEIGHTS_NAME = "model.safetensors"

StateDictConverter = Callable[[Mapping[str, Any]], Dict[str, Any]]
#: (config.json dict, transformers state dict) -> (the family's config, official-layout state dict)
FromTransformers = Callable[[Dict[str, Any], Mapping[str, Any]], Tuple[Any, Dict[str, Any]]]
#: (config, official-layout state dict, video) -> (config.json dict, transformers state dict)
ToTransformers = Callable[[Any, Mapping[str, Any], bool], Tuple[Dict[str, Any], Dict[str, Any]]]


def identity_state_dict(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """The converter of checkpoints that already use the official keys."""
    return dict(state_dict)


@dataclass(frozen=True)
class Family:
    """A model family: what its variants are made of and how to recognise its weights.

    Attributes:
        name: e.g. ``"sam2"``; a :class:`ModelInfo` names its family by this.
        config_type: the class of its variants' configs (a frozen dataclass, e.g.
            :class:`~sam2_fast.modeling.config.SAM2Config`).
        build: config -> the model (``nn.Module``, random weights), with the predictors'
            interface (:mod:`sam2_fast.modeling.interface`).
        fingerprint: state dict -> what tells its variants apart (any hashable), or None when
            the weights are not of this family; in every key layout the family reads.
        config_fingerprint: config -> the same value for the config's weights.
        describe: a fingerprint -> words for messages ("trunk embed_dim 96, 12 blocks, ...").
        transformers_model_types: the ``model_type`` values of a Hugging Face transformers
            ``config.json`` whose folders this family reads (e.g. ``("sam2", "sam2_video")``);
            empty when it reads none.
        from_transformers: ``(config.json dict, transformers state dict) -> (config, state
            dict with the family's official keys)``; required with ``transformers_model_types``.
        to_transformers: ``(config, official-layout state dict, video) -> (config.json dict,
            transformers state dict)`` of transformers' image model, or of its video model when
            ``video`` is true; None when the family cannot be written in that format.
    """

    name: str
    config_type: type
    build: Callable[[Any], Any]
    fingerprint: Callable[[Mapping[str, Any]], Optional[Hashable]]
    config_fingerprint: Callable[[Any], Hashable]
    describe: Callable[[Hashable], str] = repr
    transformers_model_types: Tuple[str, ...] = ()
    from_transformers: Optional[FromTransformers] = None
    to_transformers: Optional[ToTransformers] = None

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.strip():
            raise InvalidInputError(f"Family.name must be a non-empty name, got {self.name!r}")
        if not isinstance(self.config_type, type):
            raise InvalidTypeError(
                f"Family {self.name!r}: config_type must be a class, got {type(self.config_type).__name__}"
            )
        for field in ("build", "fingerprint", "config_fingerprint", "describe"):
            if not callable(getattr(self, field)):
                raise InvalidTypeError(f"Family {self.name!r}: {field} must be callable")
        for field in ("from_transformers", "to_transformers"):
            if getattr(self, field) is not None and not callable(getattr(self, field)):
                raise InvalidTypeError(f"Family {self.name!r}: {field} must be callable or None")
        if isinstance(self.transformers_model_types, str):
            raise InvalidTypeError(
                f"Family {self.name!r}: transformers_model_types must be a tuple of strings, "
                f"got the string {self.transformers_model_types!r}"
            )
        object.__setattr__(self, "transformers_model_types", tuple(self.transformers_model_types))
        if self.transformers_model_types and self.from_transformers is None:
            raise InvalidInputError(
                f"Family {self.name!r}: transformers_model_types "
                f"{list(self.transformers_model_types)} needs from_transformers"
            )


@dataclass(frozen=True)
class ModelInfo:
    """One model variant: architecture, Hub location and key-layout converter.

    Attributes:
        name: zoo name, e.g. ``"sam2.1-hiera-tiny"``.
        family: family that registered it, e.g. ``"sam2"``: a registered :class:`Family`, or
            the name of a plugin's group of variants whose config is another family's (a
            fine-tuned SAM 2 registers a ``SAM2Config`` under its own name).
        config: the architecture, an instance of its family's ``config_type``.
        hub_repo_id: Hugging Face Hub repository, e.g. ``"facebook/sam2.1-hiera-tiny"``.
        filename: the official checkpoint file in that repository.
        aliases: other names that resolve to this variant (Hub id, official config names).
        convert_state_dict: maps a state dict in any layout this family knows to the
            official keys (identity for official checkpoints).
        description: one line for listings.
        alt_filenames: other files in the repository that hold the same weights, e.g.
            safetensors copies (tried before ``filename``) or transformers'
            ``model.safetensors`` (tried after it); see :attr:`hub_filenames`.
    """

    name: str
    family: str
    config: Any
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
        if self.config is None:
            raise InvalidTypeError(f"ModelInfo {self.name!r}: config is required")
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
        """Files to look for in the Hub repository, best first: official-key safetensors
        copies, then the official file and the rest, then transformers' weights
        (:data:`TRANSFORMERS_WEIGHTS_NAME`, keys converted on load)."""
        files = [*self.alt_filenames, *([self.filename] if self.filename else [])]

        def rank(name: str) -> int:
            if name == TRANSFORMERS_WEIGHTS_NAME:
                return 2
            return 0 if name.endswith(".safetensors") else 1

        return tuple(sorted(dict.fromkeys(files), key=rank))


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
        self.families: Dict[str, Family] = {}
        self.lookup: Dict[str, str] = {}  # normalised name or alias -> model name
        self.lock = threading.RLock()
        self.plugins_loaded = False

    def check_config(self, info: ModelInfo) -> None:
        """A variant's config is its family's type (a variant of an unregistered family name:
        the type of some registered family, e.g. a fine-tuned SAM 2's SAM2Config)."""
        family = self.families.get(info.family)
        types_ = (family.config_type,) if family is not None else tuple(
            f.config_type for f in self.families.values()
        )
        if not isinstance(info.config, types_):
            expected = " or ".join(t.__name__ for t in types_) or "the config of a registered family"
            raise InvalidTypeError(
                f"ModelInfo {info.name!r}: config must be a {expected} (family {info.family!r}), "
                f"got {type(info.config).__name__}"
            )

    def register(self, info: ModelInfo, overwrite: bool) -> ModelInfo:
        with self.lock:
            self.check_config(info)
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
                if isinstance(info, Family):
                    register_family(info)
                elif isinstance(info, ModelInfo):
                    register(info)
                else:
                    raise InvalidTypeError(
                        f"it returned a {type(info).__name__}, expected Family and ModelInfo objects"
                    )
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


def register_family(family: Family, *, overwrite: bool = False) -> Family:
    """Add a model family (before its variants: :class:`ModelInfo` checks its config type)."""
    if not isinstance(family, Family):
        raise InvalidTypeError(f"register_family() expects a Family, got {type(family).__name__}")
    with _REGISTRY.lock:
        if family.name in _REGISTRY.families and not overwrite:
            raise InvalidInputError(
                f"family {family.name!r} is already registered; pass overwrite=True to replace it"
            )
        _REGISTRY.families[family.name] = family
    return family


def get_family(info_or_config: Any) -> Family:
    """The family named so (a ``str``), or the family that builds a :class:`ModelInfo` or a
    config: its own family when that is registered, else the family whose ``config_type`` is
    the config's type, else one whose ``config_type`` the config is an instance of."""
    if isinstance(info_or_config, str):
        _REGISTRY.load_plugins()
        if info_or_config not in _REGISTRY.families:
            raise InvalidInputError(
                f"unknown model family {info_or_config!r}; families: {', '.join(_REGISTRY.families)}"
            )
        return _REGISTRY.families[info_or_config]
    config = info_or_config.config if isinstance(info_or_config, ModelInfo) else info_or_config
    if isinstance(info_or_config, ModelInfo) and info_or_config.family in _REGISTRY.families:
        return _REGISTRY.families[info_or_config.family]
    # the family of the config's own type first: a family's config may subclass another's
    # (EdgeTAMConfig extends SAM2Config)
    for family in sorted(_REGISTRY.families.values(), key=lambda f: type(config) is not f.config_type):
        if isinstance(config, family.config_type):
            return family
    known = ", ".join(f"{f.name} ({f.config_type.__name__})" for f in _REGISTRY.families.values())
    raise InvalidTypeError(
        f"no registered model family has configs of type {type(config).__name__}; families: {known}"
    )


def get_family_for_transformers(model_type: str) -> Family:
    """The family that reads transformers folders whose ``config.json`` has this
    ``model_type`` (e.g. ``"sam2_video"``)."""
    if not isinstance(model_type, str):
        raise InvalidTypeError(f"model_type must be a str, got {type(model_type).__name__}")
    _REGISTRY.load_plugins()
    for family in _REGISTRY.families.values():
        if model_type in family.transformers_model_types:
            return family
    known = sorted(t for f in _REGISTRY.families.values() for t in f.transformers_model_types)
    raise InvalidInputError(
        f"model_type {model_type!r}: no registered model family reads transformers checkpoints "
        f"of this type; known types: {', '.join(known) or 'none'}"
    )


def list_families() -> List[str]:
    """Names of the registered families (built-in first, then plugins')."""
    _REGISTRY.load_plugins()
    return list(_REGISTRY.families)


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
    "DEFAULT_MODEL",
    "ENTRY_POINT_GROUP",
    "Family",
    "FromTransformers",
    "ModelInfo",
    "StateDictConverter",
    "TRANSFORMERS_CONFIG_NAME",
    "TRANSFORMERS_WEIGHTS_NAME",
    "UnknownModelError",
    "get_family",
    "get_family_for_transformers",
    "get_model_info",
    "identity_state_dict",
    "iter_model_infos",
    "list_families",
    "list_models",
    "register",
    "register_family",
    "ToTransformers",
]
