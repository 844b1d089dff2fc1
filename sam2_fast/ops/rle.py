"""COCO run-length encoding (RLE) of batches of masks, and the RLE dicts of official SAM 2's
automatic mask generator.

A mask ``[H, W]`` is read in column-major (Fortran) order and stored as the lengths of its
alternating runs, starting with a (possibly empty) run of zeros: pycocotools' uncompressed
counts. A mask without pixels (``H * W == 0``) is the single run ``[0]``, as in pycocotools.
The runs of a batch are one flat tensor; mask ``n`` is ``counts[offsets[n] : offsets[n + 1]]``.
Masks are bool or uint8; every nonzero uint8 value is foreground (as in
:func:`~sam2_fast.ops.connected_components`), so ``masks`` and ``masks != 0`` encode the same.

Ops, backends in order of preference:

* ``rle_encode``: masks -> run lengths, on ``masks.device``. ``cuda``
  (``csrc/cuda/rle.cu``: one thread per pixel flags run starts, a per-mask cumsum ranks them, a
  scatter writes the runs), ``cpp`` (``csrc/rle.cpp``: eight columns per 64-bit load, masks in
  parallel), ``reference`` (torch, any device).
* ``rle_encode_compressed``: masks -> pycocotools' compressed strings (ASCII bytes), always on
  the CPU. ``cuda`` (the runs on the GPU, copied to the CPU and compressed there by the C++
  code: strings are short and end up as Python ``str``), ``cpp`` (runs and strings in one pass
  per mask), ``reference`` (the torch runs, compressed by the numpy reference).
* ``rle_decode``: run lengths -> bool masks, on ``counts.device``. ``cpp``, ``reference``.

The dict layer, the one public RLE API of the package: batches with :func:`masks_to_rle`
(``mask_to_rle_pytorch`` / ``coco_encode_rle`` of official ``sam2.utils.amg``) and
:func:`rle_to_masks`; one mask with :func:`mask_to_rle` / :func:`mask_to_uncompressed_rle` and
:func:`rle_to_mask` (numpy, no torch tensor needed); :func:`rle_area` and :func:`rle_to_bbox`
(pycocotools' ``area`` / ``toBbox``). The numpy reference of the format is the private
:mod:`sam2_fast.ops._rle_numpy`; its helpers parse and check RLE dicts here.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sam2_fast._ext import register_fake_on_load
from sam2_fast.errors import InvalidInputError, InvalidTypeError
from sam2_fast.ops._common import (
    check_binary_dtype,
    check_tensor,
    extension_refusal,
    masks_cpp_refusal,
    masks_cuda_refusal,
    measured_slower_on_gpu,
)
from sam2_fast.ops._dispatch import Op
from sam2_fast.ops._rle_numpy import RLE, compress_runs, mask_to_rle, mask_to_uncompressed_rle, rle_runs
from sam2_fast.ops._rle_numpy import area as rle_area
from sam2_fast.ops._rle_numpy import rle_to_bbox, rle_to_mask

__all__ = [
    "RLE",
    "mask_to_rle",
    "mask_to_uncompressed_rle",
    "masks_to_rle",
    "rle_area",
    "rle_decode",
    "rle_decode_reference",
    "rle_encode",
    "rle_encode_compressed",
    "rle_encode_compressed_reference",
    "rle_encode_reference",
    "rle_to_bbox",
    "rle_to_mask",
    "rle_to_masks",
]


def _example_masks(device: str) -> tuple[torch.Tensor]:
    return (torch.zeros(8, 256, 256, dtype=torch.bool, device=device),)


def _example_runs(device: str) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Eight empty 256x256 masks."""
    counts = torch.full((8,), 256 * 256, dtype=torch.int64, device=device)
    return counts, torch.arange(9, device=device), 256, 256


rle_encode_op = Op("rle_encode", example=_example_masks)
rle_encode_compressed_op = Op("rle_encode_compressed", example=_example_masks)
rle_decode_op = Op("rle_decode", example=_example_runs)


# ---------------------------------------------------------------------------------------------
# public functions


def _check_masks(op: str, masks: torch.Tensor) -> None:
    check_tensor(op, "masks", masks)
    if masks.dim() != 3:
        raise InvalidInputError(
            f"{op}: masks must be [N, H, W], got shape {list(masks.shape)}; "
            "for one mask pass mask[None]"
        )
    check_binary_dtype(op, "masks", masks)


def rle_encode(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Uncompressed COCO RLE of a batch of masks, as official ``mask_to_rle_pytorch``.

    Args:
        masks: ``[N, H, W]`` bool or uint8 (nonzero = foreground), any device.

    Returns:
        ``(counts, offsets)`` int64 on ``masks.device``: ``counts`` ``[total]`` the run lengths of
        all masks end to end, ``offsets`` ``[N + 1]``; mask ``n`` is
        ``counts[offsets[n] : offsets[n + 1]]`` (column-major, zeros first, summing to
        ``H * W``).
    """
    _check_masks("rle_encode", masks)
    return rle_encode_op(masks)


def rle_encode_compressed(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """pycocotools' compressed COCO RLE strings of a batch of masks.

    Args:
        masks: ``[N, H, W]`` bool or uint8 (nonzero = foreground), any device.

    Returns:
        ``(chars, offsets)`` on the CPU: ``chars`` ``[total]`` uint8, the ASCII strings of all
        masks end to end, ``offsets`` ``[N + 1]`` int64; mask ``n``'s string is
        ``bytes(chars[offsets[n] : offsets[n + 1]])``, equal to
        ``pycocotools.mask.encode(np.asfortranarray(mask))["counts"]``.
    """
    _check_masks("rle_encode_compressed", masks)
    return rle_encode_compressed_op(masks)


def _check_size(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidTypeError(f"rle_decode: {name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise InvalidInputError(f"rle_decode: {name} must be >= 0, got {value}")
    return int(value)


def rle_decode(
    counts: torch.Tensor, offsets: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Masks of uncompressed COCO run lengths, the inverse of :func:`rle_encode`.

    Args:
        counts: ``[total]`` int64 run lengths of all masks end to end (column-major, zeros
            first); each mask's runs must be >= 0 and sum to ``height * width``.
        offsets: ``[N + 1]`` int64, mask ``n`` is ``counts[offsets[n] : offsets[n + 1]]``.
        height, width: size of every mask, in pixels.

    Returns:
        ``[N, height, width]`` bool on ``counts.device``.

    Raises:
        ValueError: naming the mask whose runs are negative or do not cover ``height * width``
            pixels (with both numbers), or offsets that do not run from 0 to ``counts.numel()``.
    """
    for name, value in (("counts", counts), ("offsets", offsets)):
        check_tensor("rle_decode", name, value)
        if value.dtype != torch.int64:
            raise InvalidTypeError(f"rle_decode: {name} must be int64, got {value.dtype}")
    if counts.dim() != 1:
        raise InvalidInputError(f"rle_decode: counts must be 1-D [total], got {list(counts.shape)}")
    if offsets.dim() != 1 or offsets.numel() == 0:
        raise InvalidInputError(f"rle_decode: offsets must be 1-D [N + 1], got {list(offsets.shape)}")
    if counts.device != offsets.device:
        raise InvalidInputError(
            f"rle_decode: counts and offsets must be on one device, got {counts.device} and "
            f"{offsets.device}"
        )
    height, width = _check_size("height", height), _check_size("width", width)
    return rle_decode_op(counts, offsets, height, width)


def masks_to_rle(masks: torch.Tensor, compressed: bool = False) -> list[RLE]:
    """COCO RLE dicts of a batch of masks, exactly as official SAM 2 writes them.

    Args:
        masks: ``[N, H, W]`` bool or uint8 (nonzero = foreground), any device.
        compressed: False: ``{"size": [H, W], "counts": [int, ...]}`` as official
            ``sam2.utils.amg.mask_to_rle_pytorch``; True: ``{"size": [H, W], "counts": str}``,
            pycocotools' string as official ``coco_encode_rle`` returns it (JSON-ready).

    Returns:
        One dict per mask, in order.
    """
    _check_masks("masks_to_rle", masks)
    size = [int(masks.shape[1]), int(masks.shape[2])]
    if compressed:
        chars, offsets = rle_encode_compressed(masks)
        text = chars.numpy().tobytes().decode("ascii")
        bounds = offsets.tolist()
        return [{"size": list(size), "counts": text[a:b]} for a, b in zip(bounds, bounds[1:])]
    counts, offsets = rle_encode(masks)
    values, bounds = counts.tolist(), offsets.tolist()
    return [{"size": list(size), "counts": values[a:b]} for a, b in zip(bounds, bounds[1:])]


def rle_to_masks(rles: Sequence[Mapping]) -> torch.Tensor:
    """Masks of COCO RLE dicts, compressed (``counts`` a ``str`` / ``bytes``) or not (a list of
    run lengths), e.g. the output of :func:`masks_to_rle` or of pycocotools.

    Args:
        rles: a sequence of ``{"size": [H, W], "counts": ...}``, all of the same size.

    Returns:
        ``[N, H, W]`` bool on the CPU (``[0, 0, 0]`` for an empty sequence).

    Raises:
        ValueError: naming the first malformed RLE (``rles[i]: ...``): missing keys, an invalid
            string, negative runs, runs that do not cover ``H * W`` pixels, or a size that
            differs from ``rles[0]``'s.
    """
    if isinstance(rles, Mapping) or not isinstance(rles, Sequence):
        raise InvalidTypeError(
            f"rle_to_masks: rles must be a sequence of RLE dicts, got {type(rles).__name__}; "
            "for one RLE pass [rle]"
        )
    runs, size = [], None
    for i, rle in enumerate(rles):
        try:
            runs.append(rle_runs(rle))
        except ValueError as exc:
            raise InvalidInputError(f"rle_to_masks: rles[{i}]: {exc}") from None
        rle_size = [int(rle["size"][0]), int(rle["size"][1])]
        if size is None:
            size = rle_size
        elif rle_size != size:
            raise InvalidInputError(
                f"rle_to_masks: rles[{i}] has size {rle_size} but rles[0] has {size}; the masks "
                "of one call must have one size"
            )
    if size is None:
        return torch.zeros(0, 0, 0, dtype=torch.bool)
    lengths = np.array([0] + [r.size for r in runs], dtype=np.int64)
    counts = torch.from_numpy(np.concatenate(runs).astype(np.int64, copy=False))
    return rle_decode(counts, torch.from_numpy(np.cumsum(lengths)), size[0], size[1])


# ---------------------------------------------------------------------------------------------
# cuda / cpp backends: ops of sam2_fast._C, registered per device (csrc/ops.cpp)


def _fake_rle_encode(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    total = torch.library.get_ctx().new_dynamic_size()
    offsets = masks.new_empty(masks.shape[0] + 1, dtype=torch.int64)
    return masks.new_empty(total, dtype=torch.int64), offsets


def _fake_rle_encode_compressed(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    total = torch.library.get_ctx().new_dynamic_size()
    chars = torch.empty(total, dtype=torch.uint8, device="cpu")
    return chars, torch.empty(masks.shape[0] + 1, dtype=torch.int64, device="cpu")


def _fake_rle_decode(
    counts: torch.Tensor, offsets: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    return counts.new_empty((offsets.shape[0] - 1, height, width), dtype=torch.bool)


register_fake_on_load("sam2_fast::rle_encode", _fake_rle_encode)
register_fake_on_load("sam2_fast::rle_encode_compressed", _fake_rle_encode_compressed)
register_fake_on_load("sam2_fast::rle_decode", _fake_rle_decode)


def _encode_extension(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ops.sam2_fast.rle_encode(masks)


def _encode_compressed_extension(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ops.sam2_fast.rle_encode_compressed(masks)


def _decode_extension(
    counts: torch.Tensor, offsets: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    try:
        return torch.ops.sam2_fast.rle_decode(counts, offsets, height, width)
    except ValueError as exc:  # the op's value checks (_check_runs), raised as ValueError by C++
        raise InvalidInputError(str(exc)) from None


def _supports_runs_cpp(
    counts: torch.Tensor, offsets: torch.Tensor, height: int, width: int
) -> str | None:
    return extension_refusal("cpu", counts=counts, offsets=offsets)


rle_encode_op.add_backend("cuda", _encode_extension, masks_cuda_refusal, measured_slower_on_gpu)
rle_encode_op.add_backend("cpp", _encode_extension, masks_cpp_refusal)
rle_encode_compressed_op.add_backend("cuda", _encode_compressed_extension, masks_cuda_refusal)
rle_encode_compressed_op.add_backend("cpp", _encode_compressed_extension, masks_cpp_refusal)
rle_decode_op.add_backend("cpp", _decode_extension, _supports_runs_cpp)


# ---------------------------------------------------------------------------------------------
# reference backends


@rle_encode_op.register("reference")
def rle_encode_reference(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain-torch :func:`rle_encode` on any device (same inputs and outputs).

    A run starts at every pixel that differs from the one before it in column-major order (the
    one before the first pixel counts as 0). Start ``j`` of mask ``n`` ends run
    ``offsets[n] + j``; the last run of each mask ends at ``H * W``.
    """
    n, h, w = masks.shape
    device = masks.device
    if n * h * w == 0:  # no masks, or every mask is the single empty run
        return torch.zeros(n, dtype=torch.int64, device=device), torch.arange(n + 1, device=device)
    pixels = (masks != 0).transpose(1, 2).reshape(n, h * w)
    before = torch.cat([torch.zeros_like(pixels[:, :1]), pixels[:, :-1]], dim=1)
    starts = pixels != before
    mask_index, position = starts.nonzero(as_tuple=True)
    runs_per_mask = torch.bincount(mask_index, minlength=n) + 1
    offsets = F.pad(runs_per_mask.cumsum(0), (1, 0))
    ends = torch.full((int(offsets[-1]),), h * w, dtype=torch.int64, device=device)
    # start j of mask m is start (offsets[m] - m + j) of the batch; it ends run offsets[m] + j
    ends[torch.arange(position.numel(), device=device) + mask_index] = position
    run_starts = F.pad(ends[:-1], (1, 0))
    run_starts[offsets[:-1]] = 0
    return ends - run_starts, offsets


@rle_encode_compressed_op.register("reference")
def rle_encode_compressed_reference(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`rle_encode_compressed` from :func:`rle_encode_reference`'s runs and the numpy
    compression of the numpy reference; any device, result on the CPU."""
    counts, offsets = (t.cpu().numpy() for t in rle_encode_reference(masks))
    strings = [
        compress_runs(counts[a:b]).encode("ascii") for a, b in zip(offsets[:-1], offsets[1:])
    ]
    lengths = np.array([0] + [len(s) for s in strings], dtype=np.int64)
    chars = np.frombuffer(b"".join(strings), dtype=np.uint8).copy()
    return torch.from_numpy(chars), torch.from_numpy(np.cumsum(lengths))


def _check_runs(counts: torch.Tensor, offsets: torch.Tensor, height: int, width: int) -> None:
    """The value checks of the compiled op, with its messages."""
    total, first, last = counts.numel(), int(offsets[0]), int(offsets[-1])
    if first != 0 or last != total:
        raise InvalidInputError(
            f"rle_decode: offsets must run from 0 to counts.numel() = {total}, got offsets[0] = "
            f"{first} and offsets[-1] = {last}"
        )
    decreasing = (offsets.diff() < 0).nonzero()
    if decreasing.numel():
        i = int(decreasing[0])
        raise InvalidInputError(
            f"rle_decode: offsets must not decrease, got offsets[{i}] = {int(offsets[i])} > "
            f"offsets[{i + 1}] = {int(offsets[i + 1])}"
        )
    masks = torch.arange(offsets.numel() - 1, device=counts.device)
    mask_index = torch.repeat_interleave(masks, offsets.diff())
    negative = (counts < 0).nonzero()
    if negative.numel():
        i = int(negative[0])
        mask = int(mask_index[i])
        raise InvalidInputError(
            f"rle_decode: run {i - int(offsets[mask])} of mask {mask} has negative length "
            f"{int(counts[i])}"
        )
    covered = torch.zeros(offsets.numel() - 1, dtype=torch.int64, device=counts.device)
    covered.index_add_(0, mask_index, counts)
    wrong = (covered != height * width).nonzero()
    if wrong.numel():
        mask = int(wrong[0])
        raise InvalidInputError(
            f"rle_decode: the runs of mask {mask} cover {int(covered[mask])} pixels, expected "
            f"height * width = {height} * {width} = {height * width}"
        )


@rle_decode_op.register("reference")
def rle_decode_reference(
    counts: torch.Tensor, offsets: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Plain-torch :func:`rle_decode` on any device (same inputs, outputs and errors): run ``j``
    of a mask is ``j % 2`` repeated ``counts[j]`` times, in column-major order."""
    _check_runs(counts, offsets, height, width)
    n = offsets.numel() - 1
    runs_per_mask = offsets.diff()
    first_run = torch.repeat_interleave(offsets[:-1], runs_per_mask)
    values = (torch.arange(counts.numel(), device=counts.device) - first_run) % 2 == 1
    pixels = torch.repeat_interleave(values, counts, output_size=n * height * width)
    return pixels.reshape(n, width, height).transpose(1, 2).contiguous()
