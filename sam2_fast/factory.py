"""The model factory: a SAM 2 model (or a subclass such as the video predictor) from a config,
a zoo name, a Hub id or a checkpoint (a file, or a folder: Meta's ``.pt``, our
``.safetensors`` or a transformers-format folder, see :func:`read_weights`), on a device, in a
compute precision. A leaf of the package: it imports the model, the zoo and checkpoint I/O,
never a predictor, so predictors (``from_pretrained``) and the official-signature builders
(:mod:`sam2_fast.build_sam`) both build on it.
"""

from __future__ import annotations

import logging
from pathlib import Path
import re
from typing import Any, Dict, Optional, Sequence, Tuple, Type, Union

import torch

from sam2_fast.allocator import keep_large_blocks
from sam2_fast.checkpoint import infer_variant, load_model_weights, read_state_dict
from sam2_fast.errors import CheckpointError, InvalidInputError, InvalidTypeError
from sam2_fast.modeling.common import meta_device
from sam2_fast.modeling.config import SAM2Config
from sam2_fast.modeling.sam2_base import SAM2Base
from sam2_fast.ops._tuning import _parse_mode
from sam2_fast.state_dict_io import CHECKPOINT_SUFFIXES
from sam2_fast.transformers_format import is_transformers_folder, read_transformers_folder
from sam2_fast.zoo import ModelInfo, get_family, get_model_info

logger = logging.getLogger(__name__)

ConfigLike = Union[str, SAM2Config]
# transformers' weights in a transformers folder (one file, or shards)
_TRANSFORMERS_WEIGHTS = re.compile(r"model(-\d+-of-\d+)?\.safetensors")
DeviceLike = Union[str, torch.device, None]


def resolve_device(device: DeviceLike) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available, else CPU; explicit devices are checked."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidInputError(f"device: expected e.g. 'cpu', 'cuda', 'cuda:1' or None, got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device: {device!r} was requested but CUDA is not available "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
            "pass device='cpu' or device=None to pick automatically"
        )
    return dev


def _resolve_config(config_file: ConfigLike) -> Tuple[Any, Any, Any]:
    """(config, zoo ModelInfo or None, its Family) for a name, a ModelInfo or the config of
    any registered family (a SAM2Config for SAM 2)."""
    if isinstance(config_file, ModelInfo):
        return config_file.config, config_file, get_family(config_file)
    if isinstance(config_file, str):
        info = get_model_info(config_file)
        return info.config, info, get_family(info)
    try:
        return config_file, None, get_family(config_file)
    except InvalidTypeError:
        raise InvalidTypeError(
            f"config_file: expected a config name such as 'configs/sam2.1/sam2.1_hiera_t.yaml' "
            f"or 'sam2.1-hiera-tiny', or a SAM2Config, got {type(config_file).__name__}"
        ) from None


def build(
    config_file: ConfigLike,
    ckpt_path: Optional[Union[str, Path]],
    device: DeviceLike,
    mode: str,
    hydra_overrides_extra: Optional[Sequence[str]],
    apply_postprocessing: bool,
    kwargs: dict,
    state_dict: Optional[dict] = None,
    model_cls: Optional[Type[SAM2Base]] = None,
    video: bool = False,
) -> SAM2Base:
    """The model of ``config_file`` -- built by its zoo family, or ``model_cls.from_config``
    (a subclass such as the video predictor) -- with the weights of ``ckpt_path`` /
    ``state_dict`` (random weights when both are None). ``kwargs``: ``compute_dtype``,
    ``tune`` (others are logged and ignored, as the official builders do with unknown
    arguments). ``video``: ``apply_postprocessing`` also sets the video post-processing
    options, as the official video builder does."""
    if mode not in ("eval", "train"):
        raise InvalidInputError(f"mode: expected 'eval' or 'train', got {mode!r}")
    compute_dtype = kwargs.pop("compute_dtype", None)
    tune = kwargs.pop("tune", None)
    if tune is not None:
        _parse_mode(tune, "tune")  # a bad value fails here, naming the argument
    if kwargs:
        logger.warning("build_sam2: ignoring unknown arguments %s", sorted(kwargs))
    cfg, info, family = _resolve_config(config_file)
    construct = family.build if model_cls is None else model_cls.from_config
    if apply_postprocessing and hasattr(cfg, "with_postprocessing"):  # a family may have none
        cfg = cfg.with_postprocessing(video=video)
    if hydra_overrides_extra:
        if not hasattr(cfg, "with_overrides"):
            raise InvalidInputError(
                f"hydra_overrides_extra: the {family.name!r} family's config "
                f"({type(cfg).__name__}) takes no override strings"
            )
        cfg = cfg.with_overrides(hydra_overrides_extra)
    dev = resolve_device(device)
    if dev.type == "cpu":
        keep_large_blocks()

    if ckpt_path is None and state_dict is None:
        model = construct(cfg).to(dev)
    else:
        if state_dict is None:
            state_dict, _ = read_weights(ckpt_path)  # the caller's config wins over a folder's
        with meta_device():
            model = construct(cfg)
        load_model_weights(model, state_dict, info=info, assign=True, source=ckpt_path)
        model = model.to(device=dev, dtype=torch.float32)
    model.train(mode == "train")
    model.set_compute_dtype(compute_dtype)
    model.tune = tune
    return model


def read_weights(path: Union[str, Path]) -> Tuple[Dict[str, torch.Tensor], Any]:
    """``(state_dict, config)`` of a checkpoint file or folder; ``config`` is None unless the
    weights come with one (a transformers folder).

    A folder is read in this order: the one official ``.pt`` or official-key ``.safetensors``
    file in it (Meta's checkpoint, or ours), else its transformers files (``config.json`` +
    ``model.safetensors``, keys mapped by the zoo family of its ``model_type``). A folder with
    several checkpoint files is refused with their names.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return read_state_dict(folder), None
    transformers = is_transformers_folder(folder)
    files = sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES and not p.name.startswith(".")
        and not (transformers and _TRANSFORMERS_WEIGHTS.fullmatch(p.name))
    )
    if len(files) > 1:
        raise CheckpointError(
            f"{folder} holds several checkpoints ({', '.join(p.name for p in files)}); pass the "
            "path of the one to load"
        )
    if files:
        return read_state_dict(files[0]), None
    if transformers:
        _, config, state_dict = read_transformers_folder(folder)
        return state_dict, config
    return read_state_dict(folder), None  # says what the folder holds


def compile_for_vos(model: SAM2Base) -> SAM2Base:
    """``vos_optimized=True`` of the video builders: the model's components compiled with
    ``torch.compile`` as the official VOS predictor does."""
    names = model.compile_components()
    logger.info(
        "vos_optimized=True: compiling %s with torch.compile; the first frames are slow", ", ".join(names)
    )
    return model


def build_from_hub(
    model_id: str, kwargs: dict, model_cls: Optional[Type[SAM2Base]] = None, video: bool = False
) -> SAM2Base:
    """:func:`build` for a Hub id, zoo name or checkpoint path; ``kwargs`` holds
    :func:`build`'s options by name (``device``, ``mode``, ``apply_postprocessing``...)."""
    from sam2_fast.hub import resolve_checkpoint  # lazy: imports huggingface_hub

    ckpt_path, info = resolve_checkpoint(model_id)
    state_dict = None
    config: Any = info
    if info is None:
        state_dict, config = read_weights(ckpt_path)
        if config is None:
            config = infer_variant(state_dict)
        if config is None:
            raise InvalidInputError(
                f"model_id: could not tell which SAM 2 variant {str(ckpt_path)!r} is; pass the "
                "config explicitly, e.g. build_sam2('sam2.1-hiera-tiny', ckpt_path=...)"
            )
    return build(
        config,
        ckpt_path,
        kwargs.pop("device", None),
        kwargs.pop("mode", "eval"),
        kwargs.pop("hydra_overrides_extra", None),
        kwargs.pop("apply_postprocessing", True),
        kwargs=kwargs,
        state_dict=state_dict,
        model_cls=model_cls,
        video=video,
    )
