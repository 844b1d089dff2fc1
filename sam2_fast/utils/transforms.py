"""Image and prompt transforms of SAM 2, without torchvision.

Numerically the same as the official ``SAM2Transforms`` (``ToTensor`` -> antialiased
bilinear ``Resize`` -> ``Normalize``), but mask post-processing (hole / sprinkle removal)
runs on every device instead of being skipped when a CUDA extension is missing.
"""

from __future__ import annotations

from typing import Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from sam2_fast.errors import InvalidInputError
from sam2_fast.utils.validation import as_rgb_uint8

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SAM2Transforms:
    """Resize + normalise images to the model's square input; map prompts into that frame."""

    def __init__(
        self,
        resolution: int,
        mask_threshold: float,
        max_hole_area: float = 0.0,
        max_sprinkle_area: float = 0.0,
    ) -> None:
        self.resolution = resolution
        self.mask_threshold = mask_threshold
        self.max_hole_area = max_hole_area
        self.max_sprinkle_area = max_sprinkle_area
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def to_input(self, image_hwc: np.ndarray, device: Union[str, torch.device] = "cpu") -> torch.Tensor:
        """``[H, W, 3]`` uint8 -> normalised ``[3, S, S]`` float32 on ``device``."""
        arr = np.ascontiguousarray(image_hwc)
        if not arr.flags.writeable:  # e.g. np.asarray(PIL image); torch wants writable memory
            arr = arr.copy()
        x = torch.from_numpy(arr).to(device)
        x = x.permute(2, 0, 1).float().div_(255.0)
        x = F.interpolate(
            x[None],
            size=(self.resolution, self.resolution),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )[0]
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        return (x - mean) / std

    def __call__(self, image) -> torch.Tensor:
        return self.to_input(as_rgb_uint8(image, "image"))

    def forward_batch(self, img_list: Sequence) -> torch.Tensor:
        return torch.stack([self(img) for img in img_list], dim=0)

    def transform_coords(
        self, coords: torch.Tensor, normalize: bool = False, orig_hw: Tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Map ``[..., 2]`` (x, y) coordinates to the model's input frame.

        With ``normalize=True`` the coordinates are pixels of an ``orig_hw`` image; otherwise
        they are already normalised to ``[0, 1]``.
        """
        if normalize:
            if orig_hw is None:
                raise InvalidInputError("orig_hw is required when normalize=True")
            h, w = orig_hw
            coords = coords.clone()
            coords[..., 0] = coords[..., 0] / w
            coords[..., 1] = coords[..., 1] / h
        return coords * self.resolution

    def transform_boxes(
        self, boxes: torch.Tensor, normalize: bool = False, orig_hw: Tuple[int, int] | None = None
    ) -> torch.Tensor:
        """``[B, 4]`` boxes -> ``[B, 2, 2]`` corners in the model's input frame."""
        return self.transform_coords(boxes.reshape(-1, 2, 2), normalize, orig_hw)

    def _fill_holes_and_sprinkles(self, masks: torch.Tensor) -> torch.Tensor:
        """Low-res logits with holes / sprinkles up to the configured areas removed (float32);
        ``masks`` itself when both areas are <= 0."""
        if self.max_hole_area > 0 or self.max_sprinkle_area > 0:
            from sam2_fast.ops.connected_components import fill_holes_and_sprinkles

            masks = fill_holes_and_sprinkles(
                masks, self.mask_threshold, self.max_hole_area, self.max_sprinkle_area
            )
        return masks

    def postprocess_masks(self, masks: torch.Tensor, orig_hw: Tuple[int, int]) -> torch.Tensor:
        """Low-res logits ``[B, C, h, w]`` -> logits at ``orig_hw`` (float32), after filling
        holes / removing sprinkles up to the configured areas (in low-res pixels)."""
        masks = self._fill_holes_and_sprinkles(masks).float()
        return F.interpolate(masks, tuple(orig_hw), mode="bilinear", align_corners=False)

    def postprocess_binary_masks(
        self, masks: torch.Tensor, orig_hw: Tuple[int, int], mask_threshold: float
    ) -> torch.Tensor:
        """``postprocess_masks(masks, orig_hw) > mask_threshold`` (``[B, C, H, W]`` bool)
        without the full-size float logits (:func:`sam2_fast.ops.upsample_masks`, which
        interpolates bfloat16 / float16 logits in float32 too)."""
        from sam2_fast.ops.mask_postprocess import upsample_masks

        masks = self._fill_holes_and_sprinkles(masks)
        return upsample_masks(masks, tuple(orig_hw), mask_threshold).masks
