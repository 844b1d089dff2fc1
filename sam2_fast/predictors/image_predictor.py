"""Drop-in ``SAM2ImagePredictor``: embed an image once, then predict masks from prompts.

Same constructor, methods, return types, shapes and dtypes as the official
``sam2.sam2_image_predictor.SAM2ImagePredictor`` 1.1.0. Differences a user can see:
bad input raises a clear error (and leaves the predictor usable), and hole / sprinkle
removal (``max_hole_area`` / ``max_sprinkle_area``) also runs on CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from sam2_fast.errors import InvalidInputError, InvalidStateError, InvalidTypeError
from sam2_fast.modeling.interface import PromptableImageModel, model_refusal
from sam2_fast.ops._dispatch import Op
from sam2_fast.ops._tuning import size_class
from sam2_fast.precision import in_compute_dtype
from sam2_fast.utils import validation as V
from sam2_fast.utils.transforms import SAM2Transforms

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image

logger = logging.getLogger(__name__)

_PREDICTOR_KWARGS = ("mask_threshold", "max_hole_area", "max_sprinkle_area")


def _float32_numpy(t: torch.Tensor) -> np.ndarray:
    """``t.float().detach().cpu().numpy()``. Boolean masks convert in numpy: torch's CPU bool
    -> float32 copy is not vectorized (3 masks at 720x1280: about 2.4 ms against 0.5 ms)."""
    t = t.detach().cpu()
    if t.dtype == torch.bool:
        return t.numpy().astype(np.float32)
    return t.float().numpy()


# ---------------------------------------------------------------------------------------------
# the mask decoder for the prompts of one image: the plain decoder, or (no mask prompt) the
# image's share computed once and reused by every prompt -- an op, measured on the machine


@dataclass
class DecoderCall:
    """The decoder inputs of one :meth:`SAM2ImagePredictor._predict` call."""

    predictor: "SAM2ImagePredictor"
    image_key: int
    image_embed: torch.Tensor  # [1, C, h, w]
    sparse: torch.Tensor  # [n, T, C]
    dense: torch.Tensor  # [n or 1, C, h, w]
    has_mask_input: bool
    multimask_output: bool
    high_res_features: List[torch.Tensor]


def _decode_plain(call: DecoderCall) -> Tuple[torch.Tensor, torch.Tensor]:
    model = call.predictor.model
    low_res, iou, _, _ = model.sam_mask_decoder(
        image_embeddings=call.image_embed,
        image_pe=model.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=call.sparse,
        dense_prompt_embeddings=call.dense,
        multimask_output=call.multimask_output,
        repeat_image=call.sparse.shape[0] > 1,  # several prompts share the image
        high_res_features=call.high_res_features,
    )
    return low_res, iou


def _decode_shared(call: DecoderCall) -> Tuple[torch.Tensor, torch.Tensor]:
    """The image's share of the decoder computed on its first prompt and kept (float32, also
    under autocast; sam2_fast.modeling.shared_image_decoder): each further click of tiny costs
    about 21 instead of 37 ms on a 2-core CPU. The same sums up to float32 rounding."""
    model = call.predictor.model
    decoder = model.sam_mask_decoder
    shared = call.predictor._shared_images.get(call.image_key)
    if shared is None:
        shared = call.predictor._shared_images[call.image_key] = decoder.prepare_shared_image(
            call.image_embed, model.sam_prompt_encoder.get_dense_pe(), call.dense[:1], call.high_res_features
        )
    low_res, iou, _, _ = decoder.forward_shared_image(shared, call.sparse, call.multimask_output)
    return low_res, iou


def _shared_refusal(call: DecoderCall) -> Optional[str]:
    if call.has_mask_input:
        return "a mask prompt changes every prompt's image tokens"
    if call.predictor.model.sam_mask_decoder.training or torch.is_grad_enabled():
        return "training or autograd: the plain decoder"
    return None


def _shared_preference(call: DecoderCall) -> Optional[str]:
    if call.image_embed.device.type != "cpu":
        return "on a GPU a click is bound by kernel launches: the plain decoder by default"
    if torch.is_autocast_enabled("cpu"):
        return "16-bit mode: the plain decoder by default (this path computes in float32)"
    return None


def _decoder_shape_class(call: DecoderCall) -> str:
    n, t, _ = call.sparse.shape
    dtype = str(call.image_embed.dtype).removeprefix("torch.")
    return (f"{dtype} prompts {size_class(n)} x {t} tokens, image {list(call.image_embed.shape[1:])}, "
            f"{'3 masks' if call.multimask_output else '1 mask'}")


prompt_decoder_op = Op("prompt_decoder", shape_class=_decoder_shape_class, kind="model")
prompt_decoder_op.add_backend("shared_image", _decode_shared, _shared_refusal, _shared_preference)
prompt_decoder_op.add_backend("reference", _decode_plain)


class SAM2ImagePredictor:
    """Predict masks for one image (or a batch of images) from clicks, boxes and masks."""

    def __init__(
        self,
        sam_model: PromptableImageModel,
        mask_threshold: float = 0.0,
        max_hole_area: float = 0.0,
        max_sprinkle_area: float = 0.0,
        **kwargs: Any,
    ) -> None:
        """
        Arguments:
          sam_model: the SAM 2 model (from :func:`sam2_fast.build_sam2`), or any model with
            the interface :class:`~sam2_fast.modeling.interface.PromptableImageModel`.
          mask_threshold: logits above it are foreground.
          max_hole_area: fill background regions of up to this many low-res pixels.
          max_sprinkle_area: remove foreground regions of up to this many low-res pixels.
        """
        missing = model_refusal(sam_model) if isinstance(sam_model, torch.nn.Module) else "not a torch module"
        if missing is not None:
            raise InvalidTypeError(
                f"sam_model: expected a SAM 2 model (from build_sam2), got {type(sam_model).__name__} ({missing})"
            )
        self.model = sam_model
        self._transforms = SAM2Transforms(
            resolution=self.model.image_size,
            mask_threshold=mask_threshold,
            max_hole_area=max_hole_area,
            max_sprinkle_area=max_sprinkle_area,
        )
        self.mask_threshold = mask_threshold
        self._is_image_set = False
        self._features: Optional[Dict[str, Any]] = None
        self._orig_hw: Optional[List[Tuple[int, int]]] = None
        self._is_batch = False
        # per image (and autocast mode): the mask decoder's share of the image, reused by every
        # prompt without a mask input (sam2_fast.modeling.shared_image_decoder)
        self._shared_images: Dict[Any, Any] = {}
        stride = 4
        s = self.model.image_size
        # spatial sizes of the backbone levels used by the decoder (stride 4, 8, 16)
        self._bb_feat_sizes = [(s // stride, s // stride), (s // 8, s // 8), (s // 16, s // 16)]

    @classmethod
    def from_pretrained(cls, model_id: str, **kwargs: Any) -> "SAM2ImagePredictor":
        """Load a model by Hub id (``"facebook/sam2.1-hiera-tiny"``), zoo name
        (``"sam2.1-hiera-tiny"``) or checkpoint path, and wrap it in a predictor.

        Predictor options (``mask_threshold``, ``max_hole_area``, ``max_sprinkle_area``) go to
        the predictor; the rest (``device``, ``mode``, ``apply_postprocessing``...) to
        :func:`sam2_fast.build_sam2_hf`.
        """
        from sam2_fast.factory import build_from_hub

        predictor_kwargs = {k: kwargs.pop(k) for k in _PREDICTOR_KWARGS if k in kwargs}
        return cls(build_from_hub(model_id, kwargs), **predictor_kwargs)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ------------------------------------------------------------------ images
    def _embed(self, images: List[np.ndarray]) -> Dict[str, Any]:
        batch = torch.stack([self._transforms.to_input(img, self.device) for img in images])
        backbone_out = self.model.forward_image(batch)
        _, vision_feats, _, feat_sizes = self.model._prepare_backbone_features(backbone_out)
        if self.model.directly_add_no_mem_embed:
            # as during video training: the no-memory embedding on the lowest-res level
            vision_feats[-1] = vision_feats[-1] + self.model.no_mem_embed
        b = batch.shape[0]
        feats = [
            feat.permute(1, 2, 0).reshape(b, -1, *size)
            for feat, size in zip(vision_feats, feat_sizes)
        ]
        return {"image_embed": feats[-1], "high_res_feats": feats[:-1]}

    @torch.no_grad()
    @in_compute_dtype
    def set_image(self, image: Union[np.ndarray, "Image"]) -> None:
        """Compute the embeddings of ``image`` (``[H, W, 3]`` uint8 RGB array or PIL image)."""
        img = V.as_rgb_uint8(image, "image")
        logger.info("Computing image embeddings for the provided image...")
        features = self._embed([img])
        self.reset_predictor()
        self._orig_hw = [tuple(img.shape[:2])]
        self._features = features
        self._is_image_set = True

    @torch.no_grad()
    @in_compute_dtype
    def set_image_batch(self, image_list: List[np.ndarray]) -> None:
        """Compute embeddings of several images, for :meth:`predict_batch`."""
        if not isinstance(image_list, (list, tuple)) or len(image_list) == 0:
            raise InvalidTypeError(
                "image_list: expected a non-empty list of [H, W, 3] uint8 numpy arrays, got "
                + (f"an empty {type(image_list).__name__}" if isinstance(image_list, (list, tuple))
                   else type(image_list).__name__)
            )
        imgs = [V.as_rgb_uint8(img, f"image_list[{i}]") for i, img in enumerate(image_list)]
        logger.info("Computing image embeddings for %d images...", len(imgs))
        features = self._embed(imgs)
        self.reset_predictor()
        self._orig_hw = [tuple(img.shape[:2]) for img in imgs]
        self._features = features
        self._is_image_set = True
        self._is_batch = True

    def get_image_embedding(self) -> torch.Tensor:
        """The image embedding ``[1, C, h, w]`` (``[B, C, h, w]`` after set_image_batch)."""
        if not self._is_image_set:
            raise InvalidStateError("An image must be set with .set_image(...) to generate an embedding.")
        return self._features["image_embed"]

    def reset_predictor(self) -> None:
        """Forget the current image(s)."""
        self._is_image_set = False
        self._features = None
        self._orig_hw = None
        self._is_batch = False
        self._shared_images = {}

    # ------------------------------------------------------------------ prompts
    @in_compute_dtype
    def predict(
        self,
        point_coords: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
        box: Optional[np.ndarray] = None,
        mask_input: Optional[np.ndarray] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predict masks for the current image.

        Arguments:
          point_coords: ``[N, 2]`` (or ``[B, N, 2]``) clicks as (x, y) pixels.
          point_labels: ``[N]`` (or ``[B, N]``): 1 foreground, 0 background.
          box: ``[4]`` (or ``[B, 4]``) as (x0, y0, x1, y1) pixels.
          mask_input: ``[1, 256, 256]`` (or ``[B, 1, 256, 256]``) low-res logits of a
            previous prediction.
          multimask_output: return 3 candidate masks instead of 1.
          return_logits: return float logits instead of boolean masks.
          normalize_coords: coordinates are pixels of the original image (else ``[0, 1]``).

        Returns:
          masks ``[C, H, W]`` float32 (0/1, or logits with ``return_logits``), iou predictions ``[C]`` float32 and
          low-res logits ``[C, 256, 256]`` float32, with ``C = 3`` or ``1``; a leading
          batch dimension ``B`` is kept when several prompts are given.
        """
        if not self._is_image_set:
            raise InvalidStateError("An image must be set with .set_image(...) before mask prediction.")
        if self._is_batch:
            raise InvalidStateError(
                "predict() works on one image; images were set with set_image_batch(), "
                "use predict_batch() or call set_image() first"
            )
        return self._predict_numpy(
            point_coords, point_labels, box, mask_input, multimask_output, return_logits,
            normalize_coords, img_idx=0,
        )

    @in_compute_dtype
    def predict_batch(
        self,
        point_coords_batch: Optional[List[np.ndarray]] = None,
        point_labels_batch: Optional[List[np.ndarray]] = None,
        box_batch: Optional[List[np.ndarray]] = None,
        mask_input_batch: Optional[List[np.ndarray]] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> Tuple[List[np.ndarray], List[np.ndarray], List[np.ndarray]]:
        """:meth:`predict` for each image set with :meth:`set_image_batch`; lists of results."""
        if not self._is_image_set:
            raise InvalidStateError(
                "An image must be set with .set_image_batch(...) before mask prediction."
            )
        if not self._is_batch:
            raise InvalidStateError(
                "predict_batch() needs images set with set_image_batch(); use predict() after set_image()"
            )
        num_images = len(self._orig_hw)
        prompt_lists = {
            "point_coords_batch": point_coords_batch,
            "point_labels_batch": point_labels_batch,
            "box_batch": box_batch,
            "mask_input_batch": mask_input_batch,
        }
        for name, value in prompt_lists.items():
            if value is not None and len(value) != num_images:
                raise InvalidInputError(f"{name}: expected one entry per image ({num_images}), got {len(value)}")
        results: Tuple[List[np.ndarray], List[np.ndarray], List[np.ndarray]] = ([], [], [])
        for i in range(num_images):
            pick = lambda seq: seq[i] if seq is not None else None  # noqa: E731
            out = self._predict_numpy(
                pick(point_coords_batch), pick(point_labels_batch), pick(box_batch),
                pick(mask_input_batch), multimask_output, return_logits, normalize_coords,
                img_idx=i,
            )
            for acc, value in zip(results, out):
                acc.append(value)
        return results

    def _predict_numpy(
        self, point_coords, point_labels, box, mask_input, multimask_output, return_logits,
        normalize_coords, img_idx: int,
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        mask_input, unnorm_coords, labels, unnorm_box = self._prep_prompts(
            point_coords, point_labels, box, mask_input, normalize_coords, img_idx=img_idx
        )
        masks, iou_predictions, low_res_masks = self._predict(
            unnorm_coords, labels, unnorm_box, mask_input, multimask_output,
            return_logits=return_logits, img_idx=img_idx,
        )
        # as official: masks come back as float32 (0/1 unless return_logits)
        return (
            _float32_numpy(masks.squeeze(0)),
            _float32_numpy(iou_predictions.squeeze(0)),
            _float32_numpy(low_res_masks.squeeze(0)),
        )

    def _prep_prompts(
        self, point_coords, point_labels, box, mask_logits, normalize_coords, img_idx=-1
    ):
        """Validate numpy prompts and move them into the model's input frame (tensors)."""
        orig_hw = self._orig_hw[img_idx]
        coords, labels = V.check_points(point_coords, point_labels, orig_hw, normalize_coords)
        boxes = V.check_box(box)
        mask_hw = self.model.sam_prompt_encoder.mask_input_size
        masks = V.check_mask_input(mask_logits, mask_hw)
        if coords is not None and coords.ndim == 2:
            coords, labels = coords[None], labels[None]
        V.check_batch_sizes(
            point_coords=None if coords is None else coords.shape[0],
            box=None if boxes is None else boxes.shape[0],
            mask_input=None if masks is None else masks.shape[0],
        )
        device = self.device
        unnorm_coords = unnorm_box = mask_input = labels_t = None
        if coords is not None:
            unnorm_coords = self._transforms.transform_coords(
                torch.as_tensor(coords, device=device), normalize=normalize_coords, orig_hw=orig_hw
            )
            labels_t = torch.as_tensor(labels, dtype=torch.int, device=device)
        if boxes is not None:
            unnorm_box = self._transforms.transform_boxes(
                torch.as_tensor(boxes, device=device), normalize=normalize_coords, orig_hw=orig_hw
            )
        if masks is not None:
            mask_input = torch.as_tensor(masks, device=device)
        return mask_input, unnorm_coords, labels_t, unnorm_box

    @torch.no_grad()
    def _predict(
        self,
        point_coords: Optional[torch.Tensor],
        point_labels: Optional[torch.Tensor],
        boxes: Optional[torch.Tensor] = None,
        mask_input: Optional[torch.Tensor] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        img_idx: int = -1,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predict from prompts already in the model's input frame (tensors).

        ``point_coords [B, N, 2]``, ``point_labels [B, N]``, ``boxes [B, 4]`` or
        ``[B, 2, 2]``, ``mask_input [B, 1, 256, 256]``. Returns masks ``[B, C, H, W]``,
        IoU predictions ``[B, C]`` and low-res logits ``[B, C, 256, 256]`` (clamped to
        +/-32) as tensors.
        """
        if not self._is_image_set:
            raise InvalidStateError("An image must be set with .set_image(...) before mask prediction.")
        concat_points = (point_coords, point_labels) if point_coords is not None else None
        if boxes is not None:
            box_coords = boxes.reshape(-1, 2, 2)
            box_labels = torch.tensor([[2, 3]], dtype=torch.int, device=boxes.device)
            box_labels = box_labels.repeat(box_coords.size(0), 1)
            if concat_points is not None:
                n = max(box_coords.shape[0], concat_points[0].shape[0])
                concat_points = (
                    torch.cat([box_coords.expand(n, -1, -1), concat_points[0].expand(n, -1, -1)], dim=1),
                    torch.cat([box_labels.expand(n, -1), concat_points[1].expand(n, -1)], dim=1),
                )
            else:
                concat_points = (box_coords, box_labels)
        if concat_points is not None and mask_input is not None and mask_input.shape[0] > 1:
            n = max(concat_points[0].shape[0], mask_input.shape[0])
            concat_points = (concat_points[0].expand(n, -1, -1), concat_points[1].expand(n, -1))

        sparse_embeddings, dense_embeddings = self.model.sam_prompt_encoder(
            points=concat_points, boxes=None, masks=mask_input
        )
        call = DecoderCall(
            predictor=self,
            image_key=img_idx % len(self._orig_hw),
            image_embed=self._features["image_embed"][img_idx].unsqueeze(0),
            sparse=sparse_embeddings,
            dense=dense_embeddings,
            has_mask_input=mask_input is not None,
            multimask_output=multimask_output,
            high_res_features=[level[img_idx].unsqueeze(0) for level in self._features["high_res_feats"]],
        )
        low_res_masks, iou_predictions = prompt_decoder_op(call)
        orig_hw = self._orig_hw[img_idx]
        if return_logits:
            masks = self._transforms.postprocess_masks(low_res_masks, orig_hw)
        else:  # upsampled and thresholded in one pass, no full-size float logits
            masks = self._transforms.postprocess_binary_masks(
                low_res_masks, orig_hw, self.mask_threshold
            )
        low_res_masks = torch.clamp(low_res_masks, -32.0, 32.0)
        return masks, iou_predictions, low_res_masks
