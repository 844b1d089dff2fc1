"""The model interface the predictors are written against, as ``typing.Protocol`` classes: what
a model family must provide for the image predictor, the automatic mask generator and the
video / stream predictors to run on it. :class:`~sam2_fast.modeling.sam2_base.SAM2Base`
implements both (``tests/test_import_graph.py`` checks it); a family with another backbone or
memory implements them too, and the predictors need no change.

The image side (:class:`PromptableImageModel`): a batch of images -> multi-scale features
(``forward_image`` + ``_prepare_backbone_features``: the lowest resolution level is the image
embedding, the others the decoder's high-res features), the prompt encoder, the mask decoder,
and the compute-precision context.

The video side (:class:`TrackingModel`) adds one tracking step per frame over a memory of past
frames: which memories a frame attends to (``select_memories``), their tensors
(``assemble_memory``), the memory attention and encoder, and ``track_step``. The video
predictor is a subclass of the model (the official package's design, kept for drop-in
compatibility), so its model type is the class it extends.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Dict, List, Optional, Protocol, Tuple, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class PromptableImageModel(Protocol):
    """What :class:`~sam2_fast.predictors.image_predictor.SAM2ImagePredictor` and the automatic
    mask generator use of a model."""

    image_size: int
    directly_add_no_mem_embed: bool
    no_mem_embed: torch.Tensor
    sam_prompt_encoder: nn.Module
    sam_mask_decoder: nn.Module

    @property
    def device(self) -> torch.device: ...

    def forward_image(self, img_batch: torch.Tensor) -> Dict[str, Any]:
        """``[B, 3, S, S]`` normalised images -> backbone outputs (``backbone_fpn``,
        ``vision_pos_enc``, ``vision_features``)."""
        ...

    def _prepare_backbone_features(
        self, backbone_out: Dict[str, Any]
    ) -> Tuple[Dict[str, Any], List[torch.Tensor], List[torch.Tensor], List[Tuple[int, int]]]:
        """Backbone outputs -> ``(backbone_out, vision_feats [HW, B, C] per level,
        vision_pos_embeds, feat_sizes)``, lowest resolution last."""
        ...

    def compute_context(self) -> AbstractContextManager:
        """The model's compute precision and backend choice for the duration of a call."""
        ...

    def eval(self) -> Any: ...


@runtime_checkable
class TrackingModel(PromptableImageModel, Protocol):
    """What the video and stream predictors use of a model beyond the image side."""

    num_maskmem: int
    memory_attention: nn.Module
    memory_encoder: nn.Module

    def select_memories(self, *args: Any, **kwargs: Any) -> Any:
        """The memory frames and object pointers one frame attends to (a ``MemoryPlan``)."""
        ...

    def assemble_memory(self, *args: Any, **kwargs: Any) -> Any:
        """The memory tensors of plans: ``(memory, memory_pos, num_obj_ptr_tokens)``."""
        ...

    def track_step(self, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        """One frame of one batch of objects: prompts and / or memory -> masks, object
        pointer, and (optionally) the frame's new memory."""
        ...

    def _forward_sam_heads(self, *args: Any, **kwargs: Any) -> Any: ...

    def _encode_new_memory(self, *args: Any, **kwargs: Any) -> Any: ...


def model_refusal(model: Any, protocol: type = PromptableImageModel) -> Optional[str]:
    """None when ``model`` provides ``protocol``'s members, else which ones it lacks."""
    missing = [name for name in sorted(_members(protocol)) if not hasattr(model, name)]
    if not missing:
        return None
    return f"{type(model).__name__} lacks {', '.join(missing)} of {protocol.__name__}"


def _members(protocol: type) -> set:
    """The attribute and method names ``protocol`` (and the protocols it extends) declares."""
    names: set = set()
    for klass in protocol.__mro__:
        if klass in (Protocol, object, nn.Module) or not getattr(klass, "_is_protocol", False):
            continue
        names |= {n for n in vars(klass) if not n.startswith(("__", "_abc_", "_is_"))}
        names |= set(getattr(klass, "__annotations__", {}))
    return names
