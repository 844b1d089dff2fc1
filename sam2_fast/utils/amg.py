"""Geometry of the automatic mask generator: point grids, crop boxes and the moves between a
crop's frame and the image's. Same numbers as official ``sam2.utils.amg`` 1.1.0."""

from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import numpy as np
import torch

__all__ = [
    "box_xyxy_to_xywh",
    "build_all_layer_point_grids",
    "build_point_grid",
    "generate_crop_boxes",
    "is_box_near_crop_edge",
]


def build_point_grid(n_per_side: int) -> np.ndarray:
    """``[n * n, 2]`` float64 (x, y) points, evenly spaced cell centres of ``[0, 1]²``,
    x varying fastest."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> List[np.ndarray]:
    """One grid per crop layer; layer ``i`` has ``int(n_per_side / scale_per_layer**i)``
    points per side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def generate_crop_boxes(
    im_size: Tuple[int, int], n_layers: int, overlap_ratio: float
) -> Tuple[List[List[int]], List[int]]:
    """Crop boxes ``[x0, y0, x1, y1]`` (pixels) and their layer: the whole image, then for
    layer ``i >= 1`` a ``2**i x 2**i`` grid of overlapping crops."""
    im_h, im_w = im_size
    short_side = min(im_h, im_w)
    crop_boxes, layer_idxs = [[0, 0, im_w, im_h]], [0]

    def crop_len(orig_len: int, n_crops: int, overlap: int) -> int:
        return int(math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops))

    for i_layer in range(n_layers):
        n_crops_per_side = 2 ** (i_layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n_crops_per_side))
        crop_w = crop_len(im_w, n_crops_per_side, overlap)
        crop_h = crop_len(im_h, n_crops_per_side, overlap)
        x0s = [int((crop_w - overlap) * i) for i in range(n_crops_per_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(n_crops_per_side)]
        for x0 in x0s:  # x-major, as official (itertools.product(x0s, y0s))
            for y0 in y0s:
                crop_boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
                layer_idxs.append(i_layer + 1)
    return crop_boxes, layer_idxs


def is_box_near_crop_edge(
    boxes: torch.Tensor, crop_box: Sequence[int], orig_box: Sequence[int], atol: float = 20.0
) -> torch.Tensor:
    """``[N]`` bool: boxes (XYXY, crop frame) within ``atol`` pixels of an edge of the crop that
    is not also an edge of the image."""
    crop = torch.as_tensor(crop_box, dtype=torch.float, device=boxes.device)
    orig = torch.as_tensor(orig_box, dtype=torch.float, device=boxes.device)
    x0, y0 = crop_box[0], crop_box[1]
    boxes = (boxes + torch.tensor([[x0, y0, x0, y0]], device=boxes.device)).float()
    near_crop = torch.isclose(boxes, crop[None], atol=atol, rtol=0)
    near_image = torch.isclose(boxes, orig[None], atol=atol, rtol=0)
    return (near_crop & ~near_image).any(dim=1)


def box_xyxy_to_xywh(box: np.ndarray) -> np.ndarray:
    """``[..., 4]`` XYXY -> XYWH (a copy)."""
    out = np.array(box, copy=True)
    out[..., 2] = out[..., 2] - out[..., 0]
    out[..., 3] = out[..., 3] - out[..., 1]
    return out
