"""Fused mask post-processing: upsample low-res mask logits to the image size, threshold them
and count pixels per mask, without the full-size float32 logits.

Official SAM 2 calls ``F.interpolate(logits.float(), size=(H, W), mode="bilinear",
align_corners=False)`` on ``[B, C, 256, 256]`` logits, then thresholds the float32
``[B, C, H, W]`` result (image predictor) or counts its pixels above ``threshold +- offset``
(``calculate_stability_score`` in the automatic mask generator). For 64 masks of a 720x1280
image that intermediate is 236 MB written and read again; :func:`upsample_masks` writes one byte
per pixel instead.

Backends of ``mask_postprocess``, in order of preference:

* ``triton``: ``sam2_fast.kernels.mask_postprocess``, one tile of output pixels per program,
  per-mask counts added atomically (cuda; cpu under ``TRITON_INTERPRET=1``);
* ``cpp``: cpu, ``torch.ops.sam2_fast.upsample_threshold`` (csrc/upsample.cpp): each output
  row blended from two x-interpolated source rows and compared while in registers, masks in
  parallel on torch's threads (bitwise the reference, see below; 6x ``chunked`` on 2 cores);
* ``chunked``: cpu; the reference a few masks at a time through one reused float32 buffer
  (bitwise the reference, about half its time per core);
* ``reference``: ``F.interpolate`` + threshold + sums, any device;
* ``compiled``: ``torch.compile`` of the reference (only when forced).

Numerics: the ``triton`` kernel computes every pixel's value as aten's CPU
``upsample_bilinear2d`` does (same source taps and weights, and the same fused multiply-adds its
compiler emits), so on a GPU its masks should be the reference's on the CPU; ``chunked`` runs
aten's kernel itself. ``cpp`` computes the same taps, weights and roundings in C++ (explicit
fused multiply-adds, no other contraction); which rounding aten uses depends on the CPU (its
AVX2 / AVX512 kernels fuse, a build without FMA would not), so the backend checks once per
process which of its two roundings reproduces aten bitwise on the decoder's 256x256 logits and
declines when neither does. Those logits then give aten's bits at every output size tried (40
random sizes); some small inputs (e.g. 8x8 -> 32x32) take another loop in aten that rounds
differently, and there ``cpp`` differs within the rounding band. Under the Triton interpreter a fused multiply-add is two roundings, so a
pixel whose value is within float32 rounding of a threshold may differ; aten's CUDA kernel
rounds differently too. The tests compare masks exactly outside that band.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from sam2_fast._ext import register_fake_on_load
from sam2_fast.errors import InvalidInputError, InvalidTypeError
from sam2_fast.ops._common import extension_refusal, via_custom_op
from sam2_fast.ops._dispatch import Op
from sam2_fast.ops._triton import interpreter_untimed, triton_refusal

__all__ = ["UpsampledMasks", "mask_postprocess_reference", "upsample_masks"]

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# float32 elements of the chunked backend's reused buffer: 16 MiB, four 720p masks. Smaller
# is as fast on one thread but starts more (small) parallel regions, which cost more than they
# save when other processes keep the cores busy.
CHUNK_ELEMENTS = 1 << 22


class UpsampledMasks(NamedTuple):
    """Result of :func:`upsample_masks`."""

    masks: torch.Tensor
    """``[B, C, H, W]`` bool: upsampled logits ``> threshold``."""
    areas: torch.Tensor
    """``[B, C]`` int32: foreground pixels per mask."""
    stability: Optional[torch.Tensor]
    """``[B, C]`` float32 stability scores, or None without ``stability_offset``."""


def _example(device: str) -> tuple[torch.Tensor, list[int], float, float]:
    """One automatic-mask-generator batch: 64 masks upsampled to a 720p image."""
    return torch.zeros(64, 1, 256, 256, device=device), [720, 1280], 0.0, 1.0


mask_postprocess_op = Op("mask_postprocess", example=_example)


# ---------------------------------------------------------------------------------------------
# public function


def _check_real(name: str, value: object, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidTypeError(f"upsample_masks: {name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value):
        raise InvalidInputError(f"upsample_masks: {name} must not be NaN")
    if minimum is not None and value < minimum:
        raise InvalidInputError(f"upsample_masks: {name} must be >= {minimum}, got {value}")
    return value


def _check_size(size: object) -> list[int]:
    expected = "size must be (H, W), two positive ints (the original image size in pixels)"
    if not isinstance(size, Sequence) or isinstance(size, str) or len(size) != 2:
        raise InvalidTypeError(f"upsample_masks: {expected}, got {size!r}")
    if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in size):
        raise InvalidTypeError(f"upsample_masks: {expected}, got {size!r}")
    if not all(s > 0 for s in size):
        raise InvalidInputError(f"upsample_masks: {expected}, got {tuple(size)}")
    return [int(s) for s in size]


def _check_logits(logits: object) -> None:
    name = "upsample_masks: logits"
    if not isinstance(logits, torch.Tensor):
        raise InvalidTypeError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dim() != 4:
        raise InvalidInputError(
            f"{name} must be [B, C, h, w] (C masks per prompt), got shape {list(logits.shape)}"
        )
    if logits.dtype not in DTYPES:
        raise InvalidTypeError(
            f"{name} must be float32, bfloat16 or float16, got {logits.dtype}; "
            "cast it first, e.g. logits.float()"
        )
    if logits.shape[-2] == 0 or logits.shape[-1] == 0:
        raise InvalidInputError(f"{name} must have a non-empty [h, w], got shape {list(logits.shape)}")


def upsample_masks(
    logits: torch.Tensor,
    size: Sequence[int],
    threshold: float = 0.0,
    stability_offset: float | None = None,
) -> UpsampledMasks:
    """Binary masks at the image size from low-res mask logits, with per-mask areas and
    optionally stability scores; never materialises the full-size float logits.

    Equal to thresholding ``F.interpolate(logits.float(), size, mode="bilinear",
    align_corners=False)``, as official ``SAM2Transforms.postprocess_masks`` followed by
    ``masks > mask_threshold`` (see the module docstring for the rounding band). The stability
    score is official ``calculate_stability_score`` on those logits:
    ``count(> threshold + offset) / count(> threshold - offset)``, float32, NaN when both counts
    are 0 (an empty mask at the lower threshold).

    Args:
        logits: ``[B, C, h, w]`` mask logits, float32 / bfloat16 / float16 (interpolated in
            float32), any strides, on any device.
        size: ``(H, W)`` output size in pixels, usually the original image size.
        threshold: logits above it are foreground.
        stability_offset: ``>= 0``; also compute stability scores with this offset (the
            automatic mask generator's ``stability_score_offset``, 1.0 by default there).

    Returns:
        :class:`UpsampledMasks`: ``masks [B, C, H, W]`` bool, ``areas [B, C]`` int32 and
        ``stability [B, C]`` float32 (None without ``stability_offset``), on ``logits.device``.
    """
    _check_logits(logits)
    size = _check_size(size)
    threshold = _check_real("threshold", threshold)
    if stability_offset is not None:
        stability_offset = _check_real("stability_offset", stability_offset, minimum=0.0)
    if via_custom_op(mask_postprocess_op):
        masks, counts = torch.ops.sam2_fast.mask_postprocess(logits, size, threshold, stability_offset)
    else:
        masks, counts = mask_postprocess_op(logits, size, threshold, stability_offset)
    # int32 / int32 -> float32, as official calculate_stability_score
    stability = None if stability_offset is None else counts[..., 1] / counts[..., 2]
    return UpsampledMasks(masks, counts[..., 0], stability)


@torch.library.custom_op("sam2_fast::mask_postprocess", mutates_args=())
def _mask_postprocess(
    logits: torch.Tensor, size: list[int], threshold: float, stability_offset: Optional[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs checked by :func:`upsample_masks`. Returns ``masks [B, C, H, W]`` bool and
    ``counts [B, C, K]`` int32: pixels ``> threshold`` and, when ``stability_offset`` is given
    (K = 3), ``> threshold + offset`` and ``> threshold - offset``."""
    return mask_postprocess_op(logits, size, threshold, stability_offset)


@_mask_postprocess.register_fake
def _(
    logits: torch.Tensor, size: list[int], threshold: float, stability_offset: Optional[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    b, c = logits.shape[:2]
    masks = logits.new_empty((b, c, *size), dtype=torch.bool)
    counts = logits.new_empty((b, c, 1 if stability_offset is None else 3), dtype=torch.int32)
    return masks, counts


def _thresholds(threshold: float, stability_offset: float | None) -> tuple[float, ...]:
    """``(threshold,)`` or ``(threshold, threshold + offset, threshold - offset)``: summed in
    float64 and compared in float32 with the logits, as official does."""
    if stability_offset is None:
        return (threshold,)
    return threshold, threshold + stability_offset, threshold - stability_offset


def _scale(in_size: int, out_size: int) -> float:
    """aten's source-index scale ``in / out`` for a given output size: one float32 division."""
    return (torch.tensor(in_size, dtype=torch.float32) / out_size).item()


# ---------------------------------------------------------------------------------------------
# triton backend


def _supports_triton(
    logits: torch.Tensor, size: list[int], threshold: float, stability_offset: float | None
) -> str | None:
    reason = triton_refusal(logits)
    if reason is not None:
        return reason
    if logits.dtype not in DTYPES:
        return f"logits are {logits.dtype}; the kernel takes {[str(d) for d in DTYPES]}"
    int32_max = torch.iinfo(torch.int32).max
    if logits.shape[-2] * logits.shape[-1] > int32_max or size[0] * size[1] > int32_max:
        return "a mask has more than 2**31 - 1 pixels (the kernel indexes a mask with int32)"
    return None


def _mask_postprocess_triton(
    logits: torch.Tensor, size: list[int], threshold: float, stability_offset: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    from sam2_fast.kernels.mask_postprocess import mask_postprocess

    (h, w), (out_h, out_w) = logits.shape[-2:], size
    return mask_postprocess(
        logits,
        out_h,
        out_w,
        _scale(h, out_h),
        _scale(w, out_w),
        _thresholds(threshold, stability_offset),
    )


mask_postprocess_op.add_backend("triton", _mask_postprocess_triton, _supports_triton, timed=interpreter_untimed)


# ---------------------------------------------------------------------------------------------
# cpp backend (cpu)

_ROUNDING_UNKNOWN = object()
_aten_rounding: object = _ROUNDING_UNKNOWN  # True: fused multiply-adds, False: plain, None: other


def _probe_aten_rounding() -> bool | None:
    """Which rounding of ``upsample_threshold`` (``fused``) reproduces aten's CPU
    ``upsample_bilinear2d`` here: thresholds placed exactly on reference values flip a pixel
    when its value is one unit in the last place off. The two roundings differ on about a
    third of the pixels of this probe (the decoder's 256x256 logits)."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 256, 256, generator=gen) * 4
    size = (90, 160)
    ref = F.interpolate(logits[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    picks = torch.randint(0, ref.numel(), (60,), generator=gen)
    levels = ref.flatten()[picks].reshape(20, 3).tolist()
    for fused in (True, False):
        if all(
            torch.equal(
                torch.ops.sam2_fast.upsample_threshold(logits, *size, t, fused)[1],
                torch.stack([(ref > v).sum((1, 2), dtype=torch.int32) for v in t], dim=1),
            )
            for t in levels
        ):
            return fused
    return None


def _cpp_rounding() -> bool | None:
    global _aten_rounding
    if _aten_rounding is _ROUNDING_UNKNOWN:
        _aten_rounding = _probe_aten_rounding()
    return _aten_rounding  # type: ignore[return-value]


def _fake_upsample_threshold(
    logits: torch.Tensor, out_h: int, out_w: int, thresholds: list[float], fused: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    masks = logits.new_empty((logits.shape[0], out_h, out_w), dtype=torch.bool)
    return masks, logits.new_empty((logits.shape[0], len(thresholds)), dtype=torch.int32)


register_fake_on_load("sam2_fast::upsample_threshold", _fake_upsample_threshold)


def _supports_cpp(
    logits: torch.Tensor, size: list[int], threshold: float, stability_offset: float | None
) -> str | None:
    reason = extension_refusal("cpu", logits=logits)
    if reason is not None:
        return reason
    if size[0] * size[1] > torch.iinfo(torch.int32).max:
        return "a mask has more than 2**31 - 1 pixels (the op counts them in int32)"
    if not hasattr(torch.ops.sam2_fast, "upsample_threshold"):
        return "the loaded extension predates upsample_threshold; rebuild it (pip install -e .)"
    if _cpp_rounding() is None:
        return (
            "aten's upsample_bilinear2d rounds here neither with fused multiply-adds nor "
            "without, so this backend's masks would not be the reference's bit for bit"
        )
    return None


@mask_postprocess_op.register("cpp", _supports_cpp)
def _mask_postprocess_cpp(
    logits: torch.Tensor, size: list[int], threshold: float, stability_offset: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    b, c, h, w = logits.shape
    source = logits.float().reshape(b * c, h, w)
    thresholds = list(_thresholds(threshold, stability_offset))
    masks, counts = torch.ops.sam2_fast.upsample_threshold(
        source, size[0], size[1], thresholds, bool(_cpp_rounding())
    )
    return masks.reshape(b, c, *size), counts.reshape(b, c, len(thresholds))


# ---------------------------------------------------------------------------------------------
# chunked backend (cpu)


def _supports_chunked(
    logits: torch.Tensor, size: list[int], threshold: float, stability_offset: float | None
) -> str | None:
    if logits.device.type != "cpu":
        return f"logits are on {logits.device.type}, this backend runs on cpu"
    return None


@mask_postprocess_op.register("chunked", _supports_chunked)
def _mask_postprocess_chunked(
    logits: torch.Tensor, size: list[int], threshold: float, stability_offset: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference a few masks at a time: aten's kernel writes each group's float32 logits
    into one reused buffer of ``CHUNK_ELEMENTS``, which is thresholded and counted while it is
    in cache. Bitwise the reference (same kernel, same inputs); about twice as fast per core
    because the full-size logits are neither allocated (page faults) nor streamed through
    memory once per threshold."""
    b, c, h, w = logits.shape
    out_h, out_w = size
    n, pixels = b * c, out_h * out_w
    group = max(1, CHUNK_ELEMENTS // pixels)
    if n <= group:  # one group is the reference itself (measured 2x faster run as such: 3 masks
        # of a 720p image in 4.6 vs 9.8 ms on 2 cores)
        return mask_postprocess_reference(logits, size, threshold, stability_offset)
    thresholds = _thresholds(threshold, stability_offset)
    source = logits.float().contiguous().reshape(n, 1, h, w)
    masks = torch.empty((n, pixels), dtype=torch.bool)
    counts = torch.empty((n, len(thresholds)), dtype=torch.int32)
    scores = torch.empty((min(group, n), 1, out_h, out_w))
    above = torch.empty((min(group, n), pixels), dtype=torch.bool)
    for start in range(0, n, group):
        stop = min(n, start + group)
        chunk = scores[: stop - start]
        torch.ops.aten.upsample_bilinear2d.out(
            source[start:stop], size, False, None, None, out=chunk
        )
        chunk = chunk.view(stop - start, pixels)
        torch.gt(chunk, thresholds[0], out=masks[start:stop])
        counts[start:stop, 0] = masks[start:stop].sum(1, dtype=torch.int32)
        for k, t in enumerate(thresholds[1:], start=1):
            torch.gt(chunk, t, out=above[: stop - start])
            counts[start:stop, k] = above[: stop - start].sum(1, dtype=torch.int32)
    return masks.reshape(b, c, out_h, out_w), counts.reshape(b, c, len(thresholds))


# ---------------------------------------------------------------------------------------------
# reference backend


@mask_postprocess_op.register("reference")
def mask_postprocess_reference(
    logits: torch.Tensor, size: list[int], threshold: float, stability_offset: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain torch, the ground truth: the full-size float32 logits, thresholded and counted
    (the official sequence). Returns ``masks [B, C, H, W]`` bool and ``counts [B, C, K]``
    int32, see ``torch.ops.sam2_fast.mask_postprocess``."""
    scores = F.interpolate(
        logits.float().contiguous(), size=tuple(size), mode="bilinear", align_corners=False
    )
    masks = scores > threshold
    counts = [masks.sum((-2, -1), dtype=torch.int32)]
    for t in _thresholds(threshold, stability_offset)[1:]:
        counts.append((scores > t).sum((-2, -1), dtype=torch.int32))
    return masks, torch.stack(counts, dim=-1)


mask_postprocess_op.add_compiled_backend(mask_postprocess_reference)
