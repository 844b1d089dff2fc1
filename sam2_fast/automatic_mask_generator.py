"""Drop-in ``SAM2AutomaticMaskGenerator``: segment everything in an image from a grid of clicks.

Same constructor arguments, output records and numbers as official
``sam2.automatic_mask_generator.SAM2AutomaticMaskGenerator`` 1.1.0. What differs:

* speed: the image tokens are the same for every click, so the mask decoder computes their
  share once per image and only a low-rank remainder per click
  (:meth:`~sam2_fast.modeling.mask_decoder.MaskDecoder.forward_shared_image`); masks are
  filtered by predicted IoU before they are upsampled, upsampled, thresholded and scored in one
  pass (:func:`sam2_fast.ops.upsample_masks`), and boxes, NMS and RLE run in C++
  (:mod:`sam2_fast.ops.masks`), with no Python loop over full-size masks; only the masks that
  survive a crop's box NMS are run-length encoded (official encodes every candidate first);
* ``min_mask_region_area`` (hole and sprinkle removal on the low-res masks) works on every
  device; the official package silently skips it without its CUDA extension;
* ``coco_rle`` output needs no pycocotools, and bad arguments raise clear errors.
"""

from __future__ import annotations

import logging
import numbers
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from sam2_fast.errors import InvalidInputError, InvalidTypeError
from sam2_fast.precision import in_compute_dtype
from sam2_fast.predictors.image_predictor import SAM2ImagePredictor
from sam2_fast.utils import validation as V
from sam2_fast.utils.amg import (
    box_xyxy_to_xywh,
    build_all_layer_point_grids,
    generate_crop_boxes,
    is_box_near_crop_edge,
)

logger = logging.getLogger(__name__)

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
_GENERATOR_KWARGS = (
    "points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh",
    "stability_score_offset", "mask_threshold", "box_nms_thresh", "crop_n_layers",
    "crop_nms_thresh", "crop_overlap_ratio", "crop_n_points_downscale_factor", "point_grids",
    "min_mask_region_area", "output_mode", "use_m2m", "multimask_output", "progress",
)


def _real(name: str, value: Any, lo: Optional[float] = None, hi: Optional[float] = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value:
        raise InvalidTypeError(f"{name}: expected a real number, got {type(value).__name__} {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise InvalidInputError(f"{name}: expected a number {bounds}, got {value}")
    return float(value)


def _int(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidTypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    if value < lo:
        raise InvalidInputError(f"{name}: expected an int >= {lo}, got {value}")
    return int(value)


def _check_grids(point_grids: Any, n_layers: int) -> List[np.ndarray]:
    if not isinstance(point_grids, (list, tuple)) or len(point_grids) == 0:
        raise InvalidTypeError(
            "point_grids: expected a list of [N, 2] arrays (one per crop layer), got "
            f"{type(point_grids).__name__}"
        )
    if len(point_grids) < n_layers + 1:
        raise InvalidInputError(
            f"point_grids: crop_n_layers={n_layers} needs {n_layers + 1} grids (one per layer), "
            f"got {len(point_grids)}"
        )
    grids = []
    for i, grid in enumerate(point_grids):
        arr = np.asarray(grid, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
            raise InvalidInputError(f"point_grids[{i}]: expected a non-empty [N, 2] array, got shape {arr.shape}")
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise InvalidInputError(f"point_grids[{i}]: points are normalised (x, y) in [0, 1]; got values outside")
        grids.append(arr)
    return grids


# Low-res logits kept per crop until its NMS decides which masks are encoded (256 KiB each in
# float32: 3 072 candidates of points_per_side 32 take 768 MiB when none is filtered out); past
# this many bytes the masks so far are encoded at once, as official encodes all of them.
PENDING_LOGITS_BYTES = 1 << 30


class _Masks:
    """Masks of one crop (or the image) as tensors on the CPU plus, per mask, its RLE or, while
    the RLE is deferred, its low-res logits (``pending``)."""

    def __init__(
        self,
        rles: List[Optional[Dict[str, Any]]],
        pending: Optional[List[Optional[torch.Tensor]]] = None,
        **fields: torch.Tensor,
    ) -> None:
        self.rles = rles
        self.pending = pending if pending is not None else [None] * len(rles)
        self.fields = fields

    def __len__(self) -> int:
        return len(self.rles)

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.fields[key]

    @property
    def pending_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.pending if t is not None)

    def filter(self, keep: torch.Tensor) -> "_Masks":
        """Masks selected (and ordered) by ``keep``: bool ``[N]`` or indices."""
        keep = keep.cpu()
        index = (keep.nonzero().flatten() if keep.dtype == torch.bool else keep).tolist()
        return _Masks(
            [self.rles[i] for i in index],
            [self.pending[i] for i in index],
            **{k: v[index] for k, v in self.fields.items()},
        )

    @staticmethod
    def cat(parts: Sequence["_Masks"]) -> "_Masks":
        rles = [r for p in parts for r in p.rles]
        pending = [t for p in parts for t in p.pending]
        fields = {k: torch.cat([p.fields[k] for p in parts]) for k in parts[0].fields}
        return _Masks(rles, pending, **fields)


class SAM2AutomaticMaskGenerator:
    """Generate masks for everything in an image (see the module docstring)."""

    def __init__(
        self,
        model: torch.nn.Module,
        points_per_side: Optional[int] = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.8,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        mask_threshold: float = 0.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Optional[List[np.ndarray]] = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        use_m2m: bool = False,
        multimask_output: bool = True,
        progress: bool = False,
        **kwargs: Any,
    ) -> None:
        """
        Arguments (as official):
          model: the SAM 2 model (from :func:`sam2_fast.build_sam2`).
          points_per_side: clicks per side of the grid (``points_per_side**2`` clicks); None
            to give ``point_grids`` instead.
          points_per_batch: clicks decoded together (more is faster, up to memory).
          pred_iou_thresh: keep masks whose predicted IoU is above it (``<= 0``: keep all).
          stability_score_thresh: keep masks whose stability score is at least it.
          stability_score_offset: logit offset of the stability score.
          mask_threshold: logits above it are foreground.
          box_nms_thresh: box IoU above which duplicates within a crop are dropped.
          crop_n_layers: also run on ``(2**i)**2`` crops for each layer ``i`` in 1..n.
          crop_nms_thresh: box IoU above which duplicates between crops are dropped.
          crop_overlap_ratio: overlap of neighbouring crops (fraction of the short side).
          crop_n_points_downscale_factor: layer ``i`` uses ``points_per_side / factor**i``.
          point_grids: explicit normalised ``[N, 2]`` grids, one per crop layer.
          min_mask_region_area: fill holes and remove sprinkles of up to this many low-res
            pixels in each mask.
          output_mode: ``"binary_mask"``, ``"uncompressed_rle"`` or ``"coco_rle"``.
          use_m2m: refine each mask once with itself as the mask prompt.
          multimask_output: three masks per click instead of one.
          progress: show a progress bar over the clicks (not in the official package).
        """
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "sam_mask_decoder"):
            raise InvalidTypeError(f"model: expected a SAM 2 model (from build_sam2), got {type(model).__name__}")
        if kwargs:
            logger.debug("SAM2AutomaticMaskGenerator: ignoring arguments %s", sorted(kwargs))
        self.crop_n_layers = _int("crop_n_layers", crop_n_layers, 0)
        self.crop_n_points_downscale_factor = _int("crop_n_points_downscale_factor", crop_n_points_downscale_factor, 1)
        if (points_per_side is None) == (point_grids is None):
            raise InvalidInputError(
                "points_per_side / point_grids: give exactly one of them, got "
                + ("neither" if points_per_side is None else "both")
            )
        if points_per_side is not None:
            points_per_side = _int("points_per_side", points_per_side, 1)
            for i in range(self.crop_n_layers + 1):
                if int(points_per_side / self.crop_n_points_downscale_factor**i) == 0:
                    raise InvalidInputError(
                        f"points_per_side={points_per_side} with crop_n_points_downscale_factor="
                        f"{crop_n_points_downscale_factor} leaves no points in crop layer {i}"
                    )
            self.point_grids = build_all_layer_point_grids(
                points_per_side, self.crop_n_layers, self.crop_n_points_downscale_factor
            )
        else:
            self.point_grids = _check_grids(point_grids, self.crop_n_layers)
        if output_mode not in OUTPUT_MODES:
            raise InvalidInputError(f"output_mode: expected one of {OUTPUT_MODES}, got {output_mode!r}")
        self.points_per_batch = _int("points_per_batch", points_per_batch, 1)
        self.pred_iou_thresh = _real("pred_iou_thresh", pred_iou_thresh)
        self.stability_score_thresh = _real("stability_score_thresh", stability_score_thresh)
        self.stability_score_offset = _real("stability_score_offset", stability_score_offset, 0.0)
        self.mask_threshold = _real("mask_threshold", mask_threshold)
        self.box_nms_thresh = _real("box_nms_thresh", box_nms_thresh, 0.0, 1.0)
        self.crop_nms_thresh = _real("crop_nms_thresh", crop_nms_thresh, 0.0, 1.0)
        self.crop_overlap_ratio = _real("crop_overlap_ratio", crop_overlap_ratio, 0.0, 1.0)
        self.min_mask_region_area = _real("min_mask_region_area", min_mask_region_area, 0.0)
        self.output_mode = output_mode
        self.use_m2m = bool(use_m2m)
        self.multimask_output = bool(multimask_output)
        self.progress = bool(progress)
        self._shared_image = None
        self.predictor = SAM2ImagePredictor(
            model,
            mask_threshold=self.mask_threshold,
            max_hole_area=self.min_mask_region_area,
            max_sprinkle_area=self.min_mask_region_area,
        )

    @classmethod
    def from_pretrained(cls, model_id: str, **kwargs: Any) -> "SAM2AutomaticMaskGenerator":
        """Load a model by Hub id, zoo name or checkpoint path. Generator options go to the
        generator, the rest (``device``, ``mode``...) to :func:`sam2_fast.build_sam2_hf`."""
        from sam2_fast.factory import build_from_hub

        generator_kwargs = {k: kwargs.pop(k) for k in _GENERATOR_KWARGS if k in kwargs}
        return cls(build_from_hub(model_id, kwargs), **generator_kwargs)

    # ------------------------------------------------------------------ public
    @torch.no_grad()
    @in_compute_dtype
    def generate(self, image: np.ndarray) -> List[Dict[str, Any]]:
        """Masks for everything in ``image`` (``[H, W, 3]`` uint8 RGB or a PIL image).

        Returns one record per mask, as official: ``segmentation`` (``[H, W]`` bool array, or
        an RLE dict for the RLE output modes), ``area`` (int pixels), ``bbox`` (XYWH floats),
        ``predicted_iou``, ``point_coords`` (``[[x, y]]``), ``stability_score`` and
        ``crop_box`` (XYWH). Records are ordered by the non-maximum suppression (best first).
        """
        image = V.as_rgb_uint8(image, "image")
        data = self._generate_masks(image)
        if self.output_mode == "binary_mask":
            from sam2_fast.ops.rle import rle_to_masks

            segmentations = list(rle_to_masks(data.rles).numpy()) if len(data) else []
        else:  # RLEs, compressed by _process_batch for "coco_rle"
            segmentations = data.rles
        boxes = box_xyxy_to_xywh(data["boxes"].float().numpy())
        crop_boxes = box_xyxy_to_xywh(data["crop_boxes"].float().numpy())
        points = data["points"].float().numpy()
        iou_preds = data["iou_preds"].float().tolist()
        stability = data["stability_score"].float().tolist()
        areas = data["areas"].tolist()
        records = []
        for i in range(len(data)):
            records.append(
                {
                    "segmentation": segmentations[i],
                    "area": areas[i],
                    "bbox": boxes[i].tolist(),
                    "predicted_iou": iou_preds[i],
                    "point_coords": [points[i].tolist()],
                    "stability_score": stability[i],
                    "crop_box": crop_boxes[i].tolist(),
                }
            )
        return records

    # ------------------------------------------------------------------ crops
    def _generate_masks(self, image: np.ndarray) -> _Masks:
        from sam2_fast.ops.boxes import box_nms

        orig_size = image.shape[:2]
        crop_boxes, layer_idxs = generate_crop_boxes(orig_size, self.crop_n_layers, self.crop_overlap_ratio)
        total = sum(len(self.point_grids[layer]) for layer in layer_idxs)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc="automatic masks", unit="click")
        try:
            parts = [
                self._process_crop(image, crop_box, layer, orig_size, bar)
                for crop_box, layer in zip(crop_boxes, layer_idxs)
            ]
        finally:
            if bar is not None:
                bar.close()
        data = _Masks.cat(parts)
        if len(crop_boxes) > 1 and len(data):
            # duplicates between crops: prefer masks from smaller crops
            cb = data["crop_boxes"].float()
            scores = 1 / ((cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1]))
            data = data.filter(box_nms(data["boxes"].float(), scores, self.crop_nms_thresh))
        return data

    def _process_crop(
        self,
        image: np.ndarray,
        crop_box: List[int],
        layer_idx: int,
        orig_size: Tuple[int, int],
        bar: Any,
    ) -> _Masks:
        from sam2_fast.ops.boxes import box_nms

        x0, y0, x1, y1 = crop_box
        cropped = image[y0:y1, x0:x1, :]
        crop_hw = cropped.shape[:2]
        self.predictor.set_image(cropped)
        model = self.predictor.model
        features = self.predictor._features
        _, no_mask_dense = model.sam_prompt_encoder(points=None, boxes=None, masks=None)
        self._shared_image = model.sam_mask_decoder.prepare_shared_image(
            features["image_embed"],
            model.sam_prompt_encoder.get_dense_pe(),
            no_mask_dense,
            features["high_res_feats"],
        )
        try:
            points_for_image = self.point_grids[layer_idx] * np.array(crop_hw)[None, ::-1]
            parts, pending_bytes = [], 0
            for start in range(0, len(points_for_image), self.points_per_batch):
                points = points_for_image[start : start + self.points_per_batch]
                parts.append(self._process_batch(points, crop_hw, crop_box, orig_size))
                pending_bytes += parts[-1].pending_bytes
                if pending_bytes > PENDING_LOGITS_BYTES:  # memory bound: encode what we have
                    for part in parts:
                        self._encode_pending(part, crop_hw, crop_box, orig_size)
                    pending_bytes = 0
                if bar is not None:
                    bar.update(len(points))
        finally:
            self.predictor.reset_predictor()
            self._shared_image = None
        data = _Masks.cat(parts)
        # duplicates within the crop; only the masks that survive are encoded
        data = data.filter(box_nms(data["boxes"].float(), data["iou_preds"], self.box_nms_thresh))
        self._encode_pending(data, crop_hw, crop_box, orig_size)
        # back to the image's frame
        offset = torch.tensor([[x0, y0, x0, y0]])
        data.fields["boxes"] = data["boxes"] + offset
        data.fields["points"] = data["points"] + offset[:, :2]
        return data

    # ------------------------------------------------------------------ clicks
    def _decode(
        self, coords: torch.Tensor, mask_input: Optional[torch.Tensor], multimask_output: bool
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Low-res logits ``[N, M, 256, 256]`` (unclamped) and IoU predictions ``[N, M]`` for
        one click per row of ``coords [N, 2]`` (model input frame)."""
        model = self.predictor.model
        labels = torch.ones(coords.shape[0], 1, dtype=torch.int, device=coords.device)
        sparse, dense = model.sam_prompt_encoder(points=(coords[:, None], labels), boxes=None, masks=mask_input)
        decoder = model.sam_mask_decoder
        if mask_input is None:  # every click sees the same image tokens
            # masks of clicks whose every IoU prediction fails pred_iou_thresh are never used
            skip = self.pred_iou_thresh if self.pred_iou_thresh > 0.0 and not self.use_m2m else None
            low_res, iou, _, _ = decoder.forward_shared_image(
                self._shared_image, sparse, multimask_output, skip_masks_at_or_below=skip
            )
        else:
            features = self.predictor._features
            low_res, iou, _, _ = decoder(
                image_embeddings=features["image_embed"],
                image_pe=model.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask_output,
                repeat_image=True,
                high_res_features=features["high_res_feats"],
            )
        return low_res, iou

    def _process_batch(
        self,
        points: np.ndarray,
        crop_hw: Tuple[int, int],
        crop_box: List[int],
        orig_size: Tuple[int, int],
    ) -> _Masks:
        from sam2_fast.ops.mask_postprocess import upsample_masks
        from sam2_fast.ops.boxes import masks_to_boxes

        device = self.predictor.device
        transforms = self.predictor._transforms
        points_t = torch.as_tensor(points, dtype=torch.float32, device=device)
        in_points = transforms.transform_coords(points_t, normalize=True, orig_hw=crop_hw)
        low_res, iou_preds = self._decode(in_points, None, self.multimask_output)
        m = low_res.shape[1]
        low_res = low_res.flatten(0, 1)
        iou_preds = iou_preds.flatten(0, 1)
        points_t = points_t.repeat_interleave(m, dim=0)
        if self.use_m2m:
            # one refinement step with each mask (clamped, as official) as its own prompt
            in_points = in_points.repeat_interleave(m, dim=0)
            refined, refined_iou = [], []
            for s in range(0, low_res.shape[0], self.points_per_batch):
                mask_in = low_res[s : s + self.points_per_batch].clamp(-32.0, 32.0)[:, None]
                out, iou = self._decode(in_points[s : s + self.points_per_batch], mask_in, False)
                refined.append(out[:, 0])
                refined_iou.append(iou[:, 0])
            low_res, iou_preds = torch.cat(refined), torch.cat(refined_iou)
        keep = torch.arange(low_res.shape[0], device=low_res.device)
        if self.pred_iou_thresh > 0.0:
            keep = keep[iou_preds[keep] > self.pred_iou_thresh]
        # holes / sprinkles on the low-res logits, then upsample + threshold + stability at once
        logits = transforms._fill_holes_and_sprinkles(low_res[keep][:, None])
        up = upsample_masks(logits, crop_hw, self.mask_threshold, self.stability_score_offset)
        stability, areas, masks = up.stability[:, 0], up.areas[:, 0], up.masks[:, 0]
        rows = torch.arange(logits.shape[0], device=logits.device)  # into logits
        if self.stability_score_thresh > 0.0:
            stable = stability >= self.stability_score_thresh
            keep, rows, stability, areas, masks = (
                keep[stable], rows[stable], stability[stable], areas[stable], masks[stable]
            )
        boxes = masks_to_boxes(masks)
        near_edge = is_box_near_crop_edge(boxes, crop_box, [0, 0, orig_size[1], orig_size[0]])
        if near_edge.any():
            inside = ~near_edge
            keep, rows, stability, areas, boxes = (
                keep[inside], rows[inside], stability[inside], areas[inside], boxes[inside]
            )
        # The RLEs wait for the crop's NMS, which most masks do not survive: a mask is a
        # deterministic function of its low-res logits, upsampled again then (_encode_pending).
        kept_logits = logits[rows, 0]
        return _Masks(
            [None] * kept_logits.shape[0],
            list(kept_logits.unbind(0)),
            iou_preds=iou_preds[keep].float().cpu(),
            stability_score=stability.float().cpu(),
            areas=areas.cpu(),
            boxes=boxes.cpu(),
            points=points_t[keep].cpu(),
            crop_boxes=torch.tensor([crop_box], dtype=torch.int64).expand(kept_logits.shape[0], 4),
        )

    def _encode_pending(
        self, data: _Masks, crop_hw: Tuple[int, int], crop_box: List[int], orig_size: Tuple[int, int]
    ) -> None:
        """Replace the deferred masks of ``data`` (low-res logits) by their RLEs, in place:
        upsampled and thresholded exactly as in :meth:`_process_batch`, put back into the
        image and encoded."""
        from sam2_fast.ops.mask_postprocess import upsample_masks
        from sam2_fast.ops.rle import masks_to_rle

        rows = [i for i, t in enumerate(data.pending) if t is not None]
        if not rows:
            return
        for start in range(0, len(rows), self.points_per_batch):
            chunk = rows[start : start + self.points_per_batch]
            logits = torch.stack([data.pending[i] for i in chunk])[:, None]
            masks = upsample_masks(logits, crop_hw, self.mask_threshold).masks[:, 0]
            x0, y0, x1, y1 = crop_box
            if (x0, y0, x1, y1) != (0, 0, orig_size[1], orig_size[0]):  # back into the image
                masks = F.pad(masks, (x0, orig_size[1] - x1, y0, orig_size[0] - y1), value=False)
            for i, rle in zip(chunk, masks_to_rle(masks, compressed=self.output_mode == "coco_rle")):
                data.rles[i] = rle
                data.pending[i] = None
