"""The official ``sam2`` package (1.1.0) on the same weights as this project, for side-by-side
comparisons (``sam2-fast bench``, the parity tests, ``bench/``). Importing this module does
not import the official package; each function does, and raises :class:`OfficialUnavailable`
with the reason when it is not installed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sam2_fast.errors import InvalidInputError


class OfficialUnavailable(RuntimeError):
    """The official ``sam2`` package cannot be imported."""


def import_official() -> Any:
    """``sam2`` (the official package), or :class:`OfficialUnavailable` saying how to get it."""
    try:
        import sam2.build_sam  # noqa: F401
    except Exception as exc:  # hydra / iopath missing raise more than ImportError
        raise OfficialUnavailable(
            f"the official sam2 package is not importable ({type(exc).__name__}: {exc}); install "
            "it with `pip download --no-deps sam2==1.1.0` then `SAM2_BUILD_CUDA=0 pip install "
            "--no-build-isolation --no-deps sam2-1.1.0.tar.gz hydra-core iopath` (scripts/setup_env.sh --test does)"
        ) from exc
    import sam2

    return sam2


def official_config(name: str) -> str:
    """The official hydra config of a zoo variant: ``"sam2.1-hiera-tiny"`` ->
    ``"configs/sam2.1/sam2.1_hiera_t.yaml"``."""
    from sam2_fast.zoo import get_model_info

    info = get_model_info(name)
    for alias in info.aliases:
        if alias.startswith("configs/"):
            return alias
    raise InvalidInputError(f"{name!r} ({info.family}) has no official sam2 config")


def official_model(name: str, state_dict: Mapping[str, Any], device: str = "cpu"):
    """The official ``SAM2Base`` of ``name`` with ``state_dict`` loaded, in eval mode."""
    import_official()
    from sam2.build_sam import build_sam2

    model = build_sam2(official_config(name), None, device=device)
    model.load_state_dict(state_dict)
    return model.eval()


def official_video_predictor(
    name: str, state_dict: Mapping[str, Any], overrides: Sequence[str] = (), device: str = "cpu"
):
    """The official video predictor with ``state_dict``, runnable in fp32 (on CPU, or on a GPU
    without autocast).

    Official 1.1.0 stores memories in bfloat16 and concatenates them with float32 object
    pointers; when an object has no pointer yet (tracked on frames before its first prompt)
    the memory stays bfloat16 and ``v_proj`` fails with a dtype mismatch. On GPU this is
    hidden by autocast. The shim keeps the bf16 rounding (values identical to the official
    path) but hands the stored memories back as float32, which is what this project does.
    """
    import_official()
    from sam2.build_sam import build_sam2_video_predictor
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    class FloatMemoryVideoPredictor(SAM2VideoPredictor):
        def _run_single_frame_inference(self, *args, **kwargs):
            out, masks = super()._run_single_frame_inference(*args, **kwargs)
            if out["maskmem_features"] is not None:
                out["maskmem_features"] = out["maskmem_features"].float()
            return out, masks

        def _run_memory_encoder(self, *args, **kwargs):
            features, pos = super()._run_memory_encoder(*args, **kwargs)
            return features.float(), pos

    model = build_sam2_video_predictor(
        official_config(name), None, device=device, hydra_overrides_extra=list(overrides)
    )
    model.__class__ = FloatMemoryVideoPredictor
    model.load_state_dict(state_dict)
    return model.eval()
