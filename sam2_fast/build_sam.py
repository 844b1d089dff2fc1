"""Model builders with the official ``sam2.build_sam`` signatures — no hydra.

``config_file`` may be an official config name (``"configs/sam2.1/sam2.1_hiera_t.yaml"``,
``"sam2_hiera_s.yaml"``), a zoo name (``"sam2.1-hiera-tiny"``), a Hub id
(``"facebook/sam2.1-hiera-tiny"``) or a :class:`~sam2_fast.modeling.config.SAM2Config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

from sam2_fast.factory import ConfigLike, DeviceLike, build, build_from_hub, compile_for_vos, resolve_device
from sam2_fast.modeling.sam2_base import SAM2Base
from sam2_fast.predictors.video_predictor import SAM2VideoPredictor

__all__ = [
    "build_sam2", "build_sam2_hf", "build_sam2_video_predictor", "build_sam2_video_predictor_hf",
    "build_sam2_random", "random_weights_warning", "resolve_device",
]


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
    return build(config_file, ckpt_path, device, mode, hydra_overrides_extra, apply_postprocessing, kwargs)


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
    model = build(
        config_file, ckpt_path, device, mode, hydra_overrides_extra, apply_postprocessing, kwargs,
        model_cls=SAM2VideoPredictor, video=True,
    )
    return compile_for_vos(model) if vos_optimized else model


def build_sam2_hf(model_id: str, **kwargs: Any) -> SAM2Base:
    """Build a model from the Hugging Face Hub (or its local cache), e.g.
    ``"facebook/sam2.1-hiera-tiny"``; a zoo name or a local checkpoint path works too
    (the variant of a bare checkpoint file is recognised from its weights)."""
    return build_from_hub(model_id, kwargs)


def build_sam2_video_predictor_hf(model_id: str, **kwargs: Any):
    """:func:`build_sam2_video_predictor` for a Hub id, zoo name or checkpoint path."""
    vos = kwargs.pop("vos_optimized", False)
    model = build_from_hub(model_id, kwargs, model_cls=SAM2VideoPredictor, video=True)
    return compile_for_vos(model) if vos else model


def build_sam2_random(
    name: str,
    device: DeviceLike = None,
    video: bool = False,
    hydra_overrides_extra: Sequence[str] = (),
    seed: int = 0,
    **kwargs: Any,
):
    """The ``name`` variant (zoo name or Hub id) with random weights drawn from ``seed``: the
    same weights in every process (``sam2-fast ... --random-weights``, tests, batch workers).
    ``video=True`` builds a video predictor. ``kwargs`` as :func:`build_sam2` (``compute_dtype``...)."""
    from sam2_fast.modeling.init import random_state_dict
    from sam2_fast.zoo import get_model_info

    builder = build_sam2_video_predictor if video else build_sam2
    model = builder(name, device=device, hydra_overrides_extra=list(hydra_overrides_extra), **kwargs)
    model.load_state_dict(random_state_dict(get_model_info(name).config, seed=seed))
    return model


def random_weights_warning(name: str) -> str:
    """The banner that says loudly that ``name`` runs with random weights."""
    banner = "!" * 78
    return (
        f"{banner}\nWARNING: --random-weights: {name!r} runs with RANDOM WEIGHTS, no checkpoint is\n"
        f"loaded: the masks are meaningless (this only tries out the pipeline).\n{banner}"
    )
