"""Finding a checkpoint: local path, Hugging Face cache, Hugging Face Hub download.

Usage::

    from sam2_fast.hub import resolve_checkpoint

    path, info = resolve_checkpoint("sam2.1-hiera-tiny")        # zoo name, Hub id or config name
    path, info = resolve_checkpoint("./sam2.1_hiera_tiny.pt")   # a local file: info is None
    path, info = resolve_checkpoint("facebook/sam2.1-hiera-large", local_files_only=True)

Order: an existing local path (a file, or a folder: see
:func:`sam2_fast.factory.read_weights`); the Hugging Face cache (the variant's
:attr:`~sam2_fast.zoo.ModelInfo.hub_filenames`, best first: an official-key safetensors copy,
Meta's ``.pt``, then transformers' ``model.safetensors``); a download with ``huggingface_hub``
(same preference: the first of the variant's files that the repository has), unless offline
(``HF_HUB_OFFLINE=1`` or ``local_files_only=True``). A Hub id that is not in the zoo
(``"org/name"``) is read as a transformers-format repository: its ``config.json`` and
``model.safetensors``, from the cache or downloaded, in one snapshot folder. When everything
fails, :class:`CheckpointNotFoundError` names every place that was tried and how to fix it.

``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` are read when the function
is called, so setting them after import works. Download progress bars come from
``huggingface_hub`` (tqdm); ``progress=False`` or ``HF_HUB_DISABLE_PROGRESS_BARS=1`` hides them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, List, Optional, Tuple

import huggingface_hub
from huggingface_hub import (
    constants,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    try_to_load_from_cache,
)
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.utils import (
    EntryNotFoundError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import tqdm as hf_tqdm

from sam2_fast.state_dict_io import CHECKPOINT_SUFFIXES, PathLike
from sam2_fast.zoo import (
    TRANSFORMERS_CONFIG_NAME,
    TRANSFORMERS_WEIGHTS_NAME,
    ModelInfo,
    UnknownModelError,
    get_model_info,
)
from sam2_fast.errors import CheckpointNotFoundError

logger = logging.getLogger(__name__)


def hub_endpoint() -> str:
    """The Hub URL: ``HF_ENDPOINT`` when set, else huggingface_hub's default."""
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_cache_dir(cache_dir: Optional[PathLike] = None) -> Path:
    """The Hugging Face cache: ``cache_dir``, else ``HF_HUB_CACHE``, else ``$HF_HOME/hub``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.path.expandvars(os.environ[variable])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) asks for no network access."""
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(variable)
        if value is not None:
            return value.strip().upper() in {"1", "ON", "YES", "TRUE"}
    return bool(constants.HF_HUB_OFFLINE)


def resolve_checkpoint(
    name_or_path: PathLike,
    *,
    revision: Optional[str] = None,
    cache_dir: Optional[PathLike] = None,
    local_files_only: Optional[bool] = None,
    progress: bool = True,
) -> Tuple[Path, Optional[ModelInfo]]:
    """The local file holding the weights of ``name_or_path``, and its zoo variant.

    Args:
        name_or_path: a checkpoint file, or a zoo name / Hub id / official config name
            (``"sam2.1-hiera-tiny"``, ``"facebook/sam2.1-hiera-tiny"``,
            ``"configs/sam2.1/sam2.1_hiera_t.yaml"``).
        revision: Hub branch, tag or commit (default ``"main"``).
        cache_dir: Hugging Face cache folder (default: ``HF_HUB_CACHE`` / ``$HF_HOME/hub``).
        local_files_only: never use the network; default: ``HF_HUB_OFFLINE``.
        progress: show download progress bars.

    Returns:
        ``(path, info)``; ``info`` is None for a local file (see
        :func:`sam2_fast.checkpoint.infer_variant`).

    Raises:
        CheckpointNotFoundError: with every place tried and how to fix it.
    """
    raw = os.fspath(name_or_path)
    local = Path(raw).expanduser()
    is_config_name = local.suffix.lower() in (".yaml", ".yml")  # e.g. "sam2_hiera_s.yaml"
    if local.exists() and not is_config_name:
        logger.debug("using local checkpoint %s", local)
        return local, None
    tried = [f"local path {local.resolve()}: does not exist"]
    cache = hub_cache_dir(cache_dir)
    offline = hub_offline() if local_files_only is None else bool(local_files_only)
    try:
        info = get_model_info(raw)
    except UnknownModelError as exc:
        if _looks_like_path(raw) or raw.count("/") != 1:
            reason = "not a model name either" if _looks_like_path(raw) else str(exc)
            tried.append(f"model name: {reason}")
            raise CheckpointNotFoundError(_not_found_message(raw, tried, None, offline=False)) from exc
        close = f" (the closest zoo name: {exc.suggestions[0]!r})" if exc.suggestions else ""
        tried.append(
            f"model name: {raw!r} is not in the zoo; read as a transformers-format Hub repository{close}"
        )
        folder = _transformers_repo(raw, revision, cache, offline, progress, tried)
        if folder is None:
            raise CheckpointNotFoundError(_not_found_message(raw, tried, None, offline=offline)) from exc
        return folder, None
    if info.hub_repo_id is None:
        tried.append(f"model {info.name!r}: it has no Hugging Face Hub repository")
        raise CheckpointNotFoundError(_not_found_message(raw, tried, info, offline=False))

    cached = _from_cache(info, revision, cache)
    if cached is not None:
        logger.info("using cached %s", cached)
        return cached, info
    files = ", ".join(info.hub_filenames)
    repo_cache = cache / repo_folder_name(repo_id=info.hub_repo_id, repo_type="model")
    tried.append(
        f"Hugging Face cache {repo_cache}: none of {files} (revision {revision or 'main'})"
    )
    if offline:
        why = "local_files_only=True" if local_files_only else "HF_HUB_OFFLINE is set"
        tried.append(f"Hugging Face Hub: not contacted ({why})")
        raise CheckpointNotFoundError(_not_found_message(raw, tried, info, offline=True))
    path = _download(info, revision, cache, progress, tried)
    if path is None:
        raise CheckpointNotFoundError(_not_found_message(raw, tried, info, offline=False))
    return path, info


def _looks_like_path(raw: str) -> bool:
    """A file path rather than a model name (Hub ids have exactly one '/')."""
    return (
        Path(raw).suffix.lower() in CHECKPOINT_SUFFIXES
        or raw.startswith((".", "/", "~"))
        or raw.count("/") > 1
        or (os.sep != "/" and os.sep in raw)
    )


def _from_cache(info: ModelInfo, revision: Optional[str], cache: Path) -> Optional[Path]:
    for filename in info.hub_filenames:
        found = try_to_load_from_cache(
            info.hub_repo_id, filename, cache_dir=str(cache), revision=revision
        )
        if isinstance(found, str):
            return Path(found)
    return None


def _download(
    info: ModelInfo, revision: Optional[str], cache: Path, progress: bool, tried: List[str]
) -> Optional[Path]:
    """Download the first of ``info.hub_filenames`` that the repository has; None, with the
    reasons appended to ``tried``, when none could be downloaded.

    A HEAD request without retries finds the file first, so that an unreachable Hub fails
    at once instead of going through huggingface_hub's retries with back-off.
    """
    endpoint = hub_endpoint()
    for filename in info.hub_filenames:
        url = hf_hub_url(info.hub_repo_id, filename, revision=revision, endpoint=endpoint)
        try:
            get_hf_file_metadata(url, timeout=constants.HF_HUB_ETAG_TIMEOUT)
        except EntryNotFoundError:
            tried.append(f"Hugging Face Hub {url}: the repository has no such file")
            continue
        except Exception as exc:  # network, HTTP and repository errors all end the search
            tried.append(f"Hugging Face Hub {url}: {_explain(exc)}")
            return None
        try:
            path = hf_hub_download(
                info.hub_repo_id,
                filename,
                revision=revision,
                cache_dir=str(cache),
                endpoint=endpoint,
                tqdm_class=None if progress else _SilentTqdm,
            )
        except Exception as exc:  # the file exists but could not be downloaded
            tried.append(f"Hugging Face Hub {url}: download failed: {_explain(exc)}")
            return None
        logger.info("downloaded %s from %s", filename, url)
        return Path(path)
    return None


def _transformers_repo(
    repo_id: str, revision: Optional[str], cache: Path, offline: bool, progress: bool, tried: List[str]
) -> Optional[Path]:
    """The snapshot folder holding ``config.json`` and ``model.safetensors`` of a Hub
    repository outside the zoo (from the cache, else downloaded); None, with the reasons
    appended to ``tried``, when they cannot be had."""
    names = (TRANSFORMERS_CONFIG_NAME, TRANSFORMERS_WEIGHTS_NAME)
    found = [
        try_to_load_from_cache(repo_id, name, cache_dir=str(cache), revision=revision)
        for name in names
    ]
    if all(isinstance(f, str) for f in found):
        logger.info("using cached transformers-format %s", repo_id)
        return Path(found[0]).parent
    repo_cache = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    tried.append(f"Hugging Face cache {repo_cache}: not both of {', '.join(names)} (revision {revision or 'main'})")
    if offline:
        tried.append("Hugging Face Hub: not contacted (offline)")
        return None
    endpoint = hub_endpoint()
    paths = []
    for name in names:
        url = hf_hub_url(repo_id, name, revision=revision, endpoint=endpoint)
        try:
            get_hf_file_metadata(url, timeout=constants.HF_HUB_ETAG_TIMEOUT)
            paths.append(Path(hf_hub_download(
                repo_id, name, revision=revision, cache_dir=str(cache), endpoint=endpoint,
                tqdm_class=None if progress else _SilentTqdm,
            )))
        except EntryNotFoundError:
            tried.append(f"Hugging Face Hub {url}: the repository has no such file")
            return None
        except Exception as exc:  # network, HTTP and repository errors all end the search
            tried.append(f"Hugging Face Hub {url}: {_explain(exc)}")
            return None
    logger.info("downloaded transformers-format %s", repo_id)
    return paths[0].parent


def _explain(exc: BaseException) -> str:
    """One line for a huggingface_hub error (theirs run over many lines)."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, RepositoryNotFoundError):
        return (
            f"repository not found (HTTP {status}); check the repository id, or log in with "
            f"`{_hf_cli('login')}` if it is private or gated"
        )
    if isinstance(exc, RevisionNotFoundError):
        return f"revision not found (HTTP {status}); check the branch, tag or commit"
    if isinstance(exc, LocalEntryNotFoundError) and exc.__cause__ is not None:
        exc = exc.__cause__  # the network error behind "cannot find the requested files"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {' '.join(lines[:2]) or 'no details'}"


class _SilentTqdm(hf_tqdm):
    """huggingface_hub's progress bar, always disabled (``progress=False``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def _hf_cli(command: str) -> str:
    """A command of the installed Hugging Face CLI: ``hf`` since huggingface_hub 1.0, before
    that ``huggingface-cli``."""
    if int(huggingface_hub.__version__.split(".")[0]) >= 1:
        return f"hf auth {command}" if command == "login" else f"hf {command}"
    return f"huggingface-cli {command}"


def _not_found_message(
    name: str, tried: List[str], info: Optional[ModelInfo], offline: bool
) -> str:
    lines = [f"no checkpoint found for {name!r}. Tried, in order:"]
    lines += [f"  {i}. {place}" for i, place in enumerate(tried, 1)]
    lines.append("To fix it:")
    lines.append("  - pass the path of a local .pt or .safetensors checkpoint file")
    if info is not None and info.hub_repo_id is not None:
        lines.append(
            f"  - or download it beforehand, on a machine with network access, with "
            f"`{_hf_cli('download')} {info.hub_repo_id} {info.filename}` "
            "(it goes to the cache above)"
        )
        if offline:
            lines.append(
                "  - or allow downloads: unset HF_HUB_OFFLINE (or set it to 0) and pass "
                "local_files_only=False"
            )
        else:
            lines.append(
                "  - or check the network connection and the Hub address "
                f"({hub_endpoint()}, set by HF_ENDPOINT)"
            )
    else:
        lines.append(
            "  - or use a model name from sam2_fast.zoo.list_models(), e.g. 'sam2.1-hiera-tiny'"
        )
    return "\n".join(lines)
