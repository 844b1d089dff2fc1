"""Model builders with the official ``sam2.build_sam`` signatures — no hydra.

``config_file`` may be an official config name (``"configs/sam2.1/sam2.1_hiera_t.yaml"``,
``"sam2_hiera_s.yaml"``), a zoo name (``"sam2.1-hiera-tiny"``), a Hub id
(``"facebook/sam2.1-hiera-tiny"``) or a :class:`~sam2_fast.modeling.config.SAM2Config`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple, Union

import torch

from sam2_fast.errors import InvalidInputError, InvalidTypeError
from sam2_fast.modeling.config import SAM2Config
from sam2_fast.modeling.sam2_base import SAM2Base

logger = logging.getLogger(__name__)

ConfigLike = Union[str, SAM2Config]
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


def _resolve_config(config_file: ConfigLike) -> Tuple[SAM2Config, Any]:
    """(config, zoo ModelInfo or None) for a name, a SAM2Config or a ModelInfo."""
    if isinstance(config_file, SAM2Config):
        return config_file, None
    if isinstance(getattr(config_file, "config", None), SAM2Config):
        return config_file.config, config_file
    if not isinstance(config_file, str):
        raise InvalidTypeError(
            f"config_file: expected a config name such as 'configs/sam2.1/sam2.1_hiera_t.yaml' "
            f"or 'sam2.1-hiera-tiny', or a SAM2Config, got {type(config_file).__name__}"
        )
    from sam2_fast.zoo import get_model_info

    info = get_model_info(config_file)
    return info.config, info


def _build(
    config_file: ConfigLike,
    ckpt_path: Optional[Union[str, Path]],
    device: DeviceLike,
    mode: str,
    hydra_overrides_extra: Optional[Sequence[str]],
    apply_postprocessing: bool,
    video: bool,
    kwargs: dict,
    state_dict: Optional[dict] = None,
) -> SAM2Base:
    model_cls = SAM2Base
    if video:
        from sam2_fast.predictors.video_predictor import SAM2VideoPredictor as model_cls
    if mode not in ("eval", "train"):
        raise InvalidInputError(f"mode: expected 'eval' or 'train', got {mode!r}")
    compute_dtype = kwargs.pop("compute_dtype", None)
    tune = kwargs.pop("tune", None)
    if tune is not None:
        from sam2_fast.ops._tuning import _parse_mode

        _parse_mode(tune, "tune")  # a bad value fails here, naming the argument
    if kwargs:
        logger.warning("build_sam2: ignoring unknown arguments %s", sorted(kwargs))
    cfg, info = _resolve_config(config_file)
    if apply_postprocessing:
        cfg = cfg.with_postprocessing(video=video)
    if hydra_overrides_extra:
        cfg = cfg.with_overrides(hydra_overrides_extra)
    dev = resolve_device(device)
    if dev.type == "cpu":
        from sam2_fast.allocator import keep_large_blocks

        keep_large_blocks()

    if ckpt_path is None and state_dict is None:
        model = model_cls.from_config(cfg).to(dev)
    else:
        from sam2_fast.checkpoint import load_model_weights, read_state_dict

        if state_dict is None:
            state_dict = read_state_dict(ckpt_path)
        from sam2_fast.modeling.common import meta_device

        with meta_device():
            model = model_cls.from_config(cfg)
        load_model_weights(model, state_dict, info=info, assign=True, source=ckpt_path)
        model = model.to(device=dev, dtype=torch.float32)
    model.train(mode == "train")
    model.set_compute_dtype(compute_dtype)
    model.tune = tune
    return model


def build_sam2(
    config_file: ConfigLike,
    ckpt_path: Optional[Union[str, Path]] = None,
    device: DeviceLike = None,
    mode: str = "eval",
    hydra_overrides_extra: Optional[Sequence[str]] = None,
    apply_postprocessing: bool = True,
    **kwargs: Any,
) -> SAM2Base:
    """Build a SAM 2 model and load ``ckpt_path`` (random weights when ``None``).

    Same arguments as the official ``build_sam2``; ``device=None`` picks CUDA when available
    (the official default ``"cuda"`` is accepted too). ``hydra_overrides_extra`` takes
    official override strings such as ``"++model.num_maskmem=5"``.

    ``compute_dtype`` (keyword, this project only): None (exact float32, the default),
    ``"bfloat16"`` / ``"float16"`` (autocast), or ``"auto"`` (16 bit where the device runs it
    faster: GPUs, and CPUs with fast bfloat16 matrix units); see :mod:`sam2_fast.precision`.
    ``tune`` (keyword): the backend choice of this model's predictors -- None (follow
    ``SAM2_FAST_TUNE``, by default measured on first use), True, False (built-in defaults,
    nothing measured) or ``"remeasure"``; see :mod:`sam2_fast.ops._tuning`.
    """
    return _build(
        config_file, ckpt_path, device, mode, hydra_overrides_extra, apply_postprocessing,
        video=False, kwargs=kwargs,
    )


def build_sam2_video_predictor(
    config_file: ConfigLike,
    ckpt_path: Optional[Union[str, Path]] = None,
    device: DeviceLike = None,
    mode: str = "eval",
    hydra_overrides_extra: Optional[Sequence[str]] = None,
    apply_postprocessing: bool = True,
    vos_optimized: bool = False,
    **kwargs: Any,
):
    """Build a :class:`~sam2_fast.predictors.video_predictor.SAM2VideoPredictor` (official
    signature). With ``apply_postprocessing`` it also binarizes clicked masks for the memory
    and fills holes of up to 8 low-res pixels, as the official builder does.
    ``vos_optimized=True`` compiles the model's components with ``torch.compile`` as the
    official VOS predictor does (:meth:`SAM2Base.compile_components`); the first frames then
    take minutes to compile."""
    model = _build(
        config_file, ckpt_path, device, mode, hydra_overrides_extra, apply_postprocessing,
        video=True, kwargs=kwargs,
    )
    return _vos_optimized(model) if vos_optimized else model


def _vos_optimized(model: SAM2Base) -> SAM2Base:
    names = model.compile_components()
    logger.info(
        "vos_optimized=True: compiling %s with torch.compile; the first frames are slow", ", ".join(names)
    )
    return model


def build_sam2_hf(model_id: str, **kwargs: Any) -> SAM2Base:
    """Build a model from the Hugging Face Hub (or its local cache), e.g.
    ``"facebook/sam2.1-hiera-tiny"``; a zoo name or a local checkpoint path works too
    (the variant of a bare checkpoint file is recognised from its weights)."""
    return _build_from_hub(model_id, video=False, kwargs=kwargs)


def build_sam2_video_predictor_hf(model_id: str, **kwargs: Any):
    """:func:`build_sam2_video_predictor` for a Hub id, zoo name or checkpoint path."""
    vos_optimized = kwargs.pop("vos_optimized", False)
    model = _build_from_hub(model_id, video=True, kwargs=kwargs)
    return _vos_optimized(model) if vos_optimized else model


def _build_from_hub(model_id: str, video: bool, kwargs: dict):
    from sam2_fast.hub import resolve_checkpoint

    ckpt_path, info = resolve_checkpoint(model_id)
    state_dict = None
    if info is None:
        from sam2_fast.checkpoint import infer_variant, read_state_dict

        state_dict = read_state_dict(ckpt_path)
        info = infer_variant(state_dict)
        if info is None:
            raise InvalidInputError(
                f"model_id: could not tell which SAM 2 variant {str(ckpt_path)!r} is; pass the "
                "config explicitly, e.g. build_sam2('sam2.1-hiera-tiny', ckpt_path=...)"
            )
    return _build(
        info,
        ckpt_path,
        kwargs.pop("device", None),
        kwargs.pop("mode", "eval"),
        kwargs.pop("hydra_overrides_extra", None),
        kwargs.pop("apply_postprocessing", True),
        video=video,
        kwargs=kwargs,
        state_dict=state_dict,
    )
