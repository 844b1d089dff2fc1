"""Kept for code written against sam2-fast 0.1, which documented COCO RLE here: the RLE API is
:mod:`sam2_fast.ops.rle` (the same functions; ``area`` is ``rle_area`` there)."""

from sam2_fast.ops.rle import RLE, mask_to_rle, mask_to_uncompressed_rle, rle_to_bbox, rle_to_mask
from sam2_fast.ops.rle import rle_area as area

__all__ = ["RLE", "area", "mask_to_rle", "mask_to_uncompressed_rle", "rle_to_bbox", "rle_to_mask"]
