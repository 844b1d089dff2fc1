"""Connected components of binary masks, and SAM 2's hole / sprinkle removal built on them.

Backends of ``connected_components``, in order of preference:

* ``cuda``: ``csrc/cuda/connected_components.cu``, block-based union-find;
* ``cpp``: ``csrc/connected_components.cpp``, two-pass union-find, images in parallel;
* ``reference``: plain torch on any device, min-pool hooking with pointer jumping.

All three take ``connectivity`` 4 or 8 and return the same labels: components numbered 1..K
per image in raster order of their first pixel. The official ``sam2`` package only has a CUDA
kernel and silently skips hole / sprinkle removal without it; here every device has an
implementation.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F

from sam2_fast._ext import register_fake_on_load
from sam2_fast.errors import InvalidInputError, InvalidTypeError
from sam2_fast.ops._common import check_binary_dtype, check_tensor, extension_refusal
from sam2_fast.ops._dispatch import Op

__all__ = [
    "connected_components",
    "connected_components_reference",
    "fill_holes_and_sprinkles",
]


def _example(device: str) -> tuple[torch.Tensor]:
    return (torch.zeros(4, 1, 256, 256, dtype=torch.bool, device=device),)


connected_components_op = Op("connected_components", example=_example)


def _check_args(mask: torch.Tensor, connectivity: int) -> None:
    check_tensor("connected_components", "mask", mask)
    if mask.dim() != 4 or mask.size(1) != 1:
        raise InvalidInputError(
            f"connected_components: mask must be [N, 1, H, W], got {list(mask.shape)}; "
            "flatten other dims into N, e.g. mask.flatten(0, 1).unsqueeze(1)"
        )
    check_binary_dtype("connected_components", "mask", mask)
    if isinstance(connectivity, bool) or not isinstance(connectivity, numbers.Integral):
        raise InvalidTypeError(
            f"connected_components: connectivity must be the int 4 or 8, got "
            f"{type(connectivity).__name__} {connectivity!r}"
        )
    if connectivity not in (4, 8):
        raise InvalidInputError(
            f"connected_components: connectivity must be 4 (edge neighbours) or 8 (edge and "
            f"corner neighbours), got {connectivity}"
        )


def connected_components(
    mask: torch.Tensor, connectivity: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Label the connected components of binary masks.

    Same contract as official ``sam2.utils.misc.get_connected_components`` (which is
    8-connected), with deterministic labels.

    Args:
        mask: ``[N, 1, H, W]`` bool or uint8; nonzero pixels are foreground.
        connectivity: 8 (default): pixels that share an edge or a corner are connected; 4: only
            pixels that share an edge.

    Returns:
        ``(labels, areas)``, both ``[N, 1, H, W]`` int32 on ``mask.device``: ``labels`` numbers
        the components of each image 1..K in raster order of their first pixel (0 on
        background); ``areas`` is the pixel count of each pixel's component (0 on background).
    """
    _check_args(mask, connectivity)
    return connected_components_op(mask, int(connectivity))


# ---------------------------------------------------------------------------------------------
# cuda / cpp backends: one op of sam2_fast._C, registered per device (csrc/ops.cpp)


def _extension_op(mask: torch.Tensor, connectivity: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ops.sam2_fast.connected_components(mask, connectivity)


def _fake(mask: torch.Tensor, connectivity: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    labels = mask.new_empty(mask.shape, dtype=torch.int32)
    return labels, torch.empty_like(labels)


register_fake_on_load("sam2_fast::connected_components", _fake)


def _supports_cuda(mask: torch.Tensor, connectivity: int = 8) -> str | None:
    return extension_refusal("cuda", mask=mask)


def _supports_cpp(mask: torch.Tensor, connectivity: int = 8) -> str | None:
    return extension_refusal("cpu", mask=mask)


connected_components_op.add_backend("cuda", _extension_op, _supports_cuda)
connected_components_op.add_backend("cpp", _extension_op, _supports_cpp)


# ---------------------------------------------------------------------------------------------
# reference backend


def _neighbourhood_min(roots: torch.Tensor, connectivity: int) -> torch.Tensor:
    """Smallest value of ``roots`` ``[N, 1, H, W]`` over each pixel and its neighbours: the
    3x3 square (8-connectivity) or the cross of the 3x1 and 1x3 windows (4-connectivity)."""
    if connectivity == 8:
        return -F.max_pool2d(-roots, kernel_size=3, stride=1, padding=1)
    column = -F.max_pool2d(-roots, kernel_size=(3, 1), stride=1, padding=(1, 0))
    row = -F.max_pool2d(-roots, kernel_size=(1, 3), stride=1, padding=(0, 1))
    return torch.minimum(column, row)


@connected_components_op.register("reference")
def connected_components_reference(
    mask: torch.Tensor, connectivity: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain-torch :func:`connected_components` on any device (same inputs and outputs).

    A forest over pixel indices where a parent always precedes its child in raster order, so
    a root is the first pixel of its tree. Each round, every foreground pixel finds the smallest
    root in its neighbourhood (a min-pool of its neighbours' roots over the 3x3 square, or the
    cross for 4-connectivity) and hooks its own root under it (``scatter_reduce`` amin), then
    pointer jumping flattens the trees. When a round changes nothing, each component is one
    tree rooted at its first pixel, which gives the raster-order numbering. Pooling runs in
    float64, exact for any image that fits in memory.
    """
    n, _, h, w = mask.shape
    if mask.numel() == 0:
        empty = torch.zeros(mask.shape, dtype=torch.int32, device=mask.device)
        return empty, empty.clone()
    fg = (mask != 0).reshape(n, h * w)
    index = torch.arange(h * w, device=mask.device).expand(n, h * w)
    background = torch.tensor(float("inf"), dtype=torch.float64, device=mask.device)
    parent = index.clone()  # background pixels stay their own root and are never hooked
    while True:
        roots = torch.where(fg, parent.to(torch.float64), background).reshape(n, 1, h, w)
        smallest = _neighbourhood_min(roots, connectivity)
        smallest = torch.where(fg, smallest.reshape(n, h * w).long(), index)
        hooked = parent.scatter_reduce(1, parent, smallest, reduce="amin")
        while True:
            jumped = hooked.gather(1, hooked)
            if torch.equal(jumped, hooked):
                break
            hooked = jumped
        if torch.equal(hooked, parent):
            break
        parent = hooked

    is_root = fg & (parent == index)
    rank = torch.cumsum(is_root, dim=1, dtype=torch.int32)
    counts = torch.zeros(n, h * w, dtype=torch.int32, device=mask.device)
    counts.scatter_add_(1, parent, fg.to(torch.int32))
    labels = torch.where(fg, rank.gather(1, parent), 0)
    areas = torch.where(fg, counts.gather(1, parent), 0)
    return labels.reshape(mask.shape), areas.reshape(mask.shape)


# ---------------------------------------------------------------------------------------------
# hole / sprinkle removal


def _small_components(mask: torch.Tensor, max_area: float) -> torch.Tensor:
    """Pixels of ``mask`` ``[N, 1, H, W]`` whose component has at most ``max_area`` pixels."""
    labels, areas = connected_components(mask)
    return (labels > 0) & (areas <= max_area)


def fill_holes_and_sprinkles(
    mask_logits: torch.Tensor,
    mask_threshold: float,
    max_hole_area: float,
    max_sprinkle_area: float,
    hole_fill_value: float | None = None,
) -> torch.Tensor:
    """Remove small holes and sprinkles from mask logits, as official SAM 2 does before
    upsampling (``SAM2Transforms.postprocess_masks``; the video predictor's
    ``fill_holes_in_mask_scores`` is ``mask_threshold=0, max_sprinkle_area=0,
    hole_fill_value=0.1``).

    Holes are 8-connected background components (logits ``<= mask_threshold``) of at most
    ``max_hole_area`` pixels: their logits become ``mask_threshold + 10``. Sprinkles are
    foreground components (``> mask_threshold``, found on the input logits) of at most
    ``max_sprinkle_area`` pixels: their logits become ``mask_threshold - 10``. An area ``<= 0``
    turns that step off.

    Args:
        mask_logits: ``[B, C, H, W]`` floating-point mask scores (each ``[H, W]`` is one mask).
        mask_threshold: score above which a pixel is foreground.
        max_hole_area: largest hole to fill, in pixels.
        max_sprinkle_area: largest sprinkle to remove, in pixels.
        hole_fill_value: the logit holes get (default ``mask_threshold + 10``).

    Returns:
        ``[B, C, H, W]`` float32 logits. When both areas are ``<= 0`` this is
        ``mask_logits.float()``, which is ``mask_logits`` itself if it is float32 already.
    """
    name = "fill_holes_and_sprinkles: mask_logits"
    if not isinstance(mask_logits, torch.Tensor):
        raise InvalidTypeError(f"{name} must be a torch.Tensor, got {type(mask_logits)}")
    if mask_logits.dim() != 4:
        raise InvalidInputError(f"{name} must be [B, C, H, W], got {list(mask_logits.shape)}")
    if not mask_logits.is_floating_point():
        raise InvalidTypeError(f"{name} must be floating point, got {mask_logits.dtype}")
    masks = mask_logits.float()
    mask_flat = masks.flatten(0, 1).unsqueeze(1)  # every mask as a 1-channel image
    if max_hole_area > 0:
        is_hole = _small_components(mask_flat <= mask_threshold, max_hole_area)
        fill = mask_threshold + 10.0 if hole_fill_value is None else hole_fill_value
        masks = torch.where(is_hole.reshape_as(masks), fill, masks)
    if max_sprinkle_area > 0:
        is_sprinkle = _small_components(mask_flat > mask_threshold, max_sprinkle_area)
        masks = torch.where(is_sprinkle.reshape_as(masks), mask_threshold - 10.0, masks)
    return masks
