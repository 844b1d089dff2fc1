"""The video tracking session: typed state, with the official ``inference_state`` dict face.

:class:`InferenceState` holds the video (lazily decoded frames, its size, the devices), the
image-feature cache, the constants shared by all frames and the tracked objects; each object is
an :class:`ObjectState` with its prompts and outputs by frame index. The predictors read and
write attributes, and the object-id bookkeeping (ids to model-side indices, adding objects,
removing them with index compaction) lives here.

Code written for the official package reads ``inference_state`` as a dict, and every official
key keeps working: ``state["num_frames"]``, ``"obj_ids" in state``, ``state.get(key)``,
``state.keys()``. The per-object keys (``point_inputs_per_obj``, ``output_dict_per_obj``, ...)
are live views ``{obj_idx: ...}`` over the objects: reading them shows the current contents and
writing into the dicts they hold changes the state. The id maps (``obj_ids``, ``obj_id_to_idx``,
``obj_idx_to_id``) are fresh copies. Other keys a caller sets are kept, as in a dict.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Hashable, Iterable, Iterator, List, Optional, Set, Tuple

import torch

from sam2_fast.errors import InvalidTypeError, UnknownObjectError
from sam2_fast.predictors.video_io import LazyVideoFrames

#: one object's stored output on one frame: ``maskmem_features`` (bfloat16, or None before its
#: memory is encoded), ``maskmem_pos_enc``, ``pred_masks`` (low-res logits ``[1, 1, h, w]``),
#: ``obj_ptr`` and ``object_score_logits``
FrameOutput = Dict[str, Any]

_OUTPUT_KINDS = ("cond_frame_outputs", "non_cond_frame_outputs")


def _unknown_key(owner: str, key: Any, known: Iterable[str]) -> KeyError:
    return KeyError(f"{owner} has no key {key!r}; known keys: {', '.join(known)}")


@dataclass(eq=False)
class FrameOutputs(MutableMapping):
    """One object's outputs by frame index, on conditioning frames (the prompted ones, which
    every tracked frame reads) and on tracked frames. Reads as the official
    ``{"cond_frame_outputs": {...}, "non_cond_frame_outputs": {...}}`` dict, the form the
    model's memory selection takes."""

    cond_frame_outputs: Dict[int, FrameOutput] = field(default_factory=dict)
    non_cond_frame_outputs: Dict[int, FrameOutput] = field(default_factory=dict)

    def frames(self, cond: bool) -> Dict[int, FrameOutput]:
        """The conditioning frames' outputs (``cond=True``) or the tracked frames'."""
        return self.cond_frame_outputs if cond else self.non_cond_frame_outputs

    def output_at(self, frame_idx: int) -> Optional[FrameOutput]:
        """The output on ``frame_idx`` (a conditioning one first), or None."""
        out = self.cond_frame_outputs.get(frame_idx)
        return self.non_cond_frame_outputs.get(frame_idx) if out is None else out

    def is_empty(self) -> bool:
        return not self.cond_frame_outputs and not self.non_cond_frame_outputs

    def clear_frames(self) -> None:
        self.cond_frame_outputs.clear()
        self.non_cond_frame_outputs.clear()

    # the official dict face: exactly the two keys
    def __getitem__(self, key: str) -> Dict[int, FrameOutput]:
        if key not in _OUTPUT_KINDS:
            raise _unknown_key("an output dict", key, _OUTPUT_KINDS)
        return getattr(self, key)

    def __setitem__(self, key: str, value: Dict[int, FrameOutput]) -> None:
        if key not in _OUTPUT_KINDS:
            raise _unknown_key("an output dict", key, _OUTPUT_KINDS)
        setattr(self, key, value)

    def __delitem__(self, key: str) -> None:
        raise InvalidTypeError(f"an output dict always has the keys {_OUTPUT_KINDS}; clear {key!r} instead of deleting it")

    def __iter__(self) -> Iterator[str]:
        return iter(_OUTPUT_KINDS)

    def __len__(self) -> int:
        return len(_OUTPUT_KINDS)


@dataclass(eq=False)
class ObjectState:
    """One tracked object: its prompts and its outputs, by frame index."""

    obj_id: Hashable
    #: clicks per frame: ``{"point_coords": [1, N, 2]`` (pixels of the model input),
    #: ``"point_labels": [1, N]`` int32 (1 object, 0 background, 2 / 3 box corners)``}``
    point_inputs: Dict[int, Dict[str, torch.Tensor]] = field(default_factory=dict)
    #: mask prompts per frame: ``[1, 1, S, S]`` float 0 / 1 at the model's input size
    mask_inputs: Dict[int, torch.Tensor] = field(default_factory=dict)
    #: outputs whose memories are encoded: what tracking reads
    outputs: FrameOutputs = field(default_factory=FrameOutputs)
    #: outputs of prompts whose memories are not encoded yet (moved into ``outputs`` when
    #: tracking starts, after the user's last prompt)
    temp_outputs: FrameOutputs = field(default_factory=FrameOutputs)
    #: frames with a consolidated output, and the direction they were tracked in:
    #: ``{frame_idx: {"reverse": bool}}``
    frames_tracked: Dict[int, Dict[str, bool]] = field(default_factory=dict)

    def prompted_frames(self) -> Set[int]:
        return set(self.point_inputs) | set(self.mask_inputs)

    def latest_output(self, frame_idx: int, cond: bool) -> Optional[FrameOutput]:
        """The newest output on ``frame_idx``: a prompt's not yet encoded one (conditioning
        or not, as ``cond``), else the stored one."""
        out = self.temp_outputs.frames(cond).get(frame_idx)
        return self.outputs.output_at(frame_idx) if out is None else out

    def set_prompt(
        self, frame_idx: int, point_inputs: Optional[Dict[str, torch.Tensor]], mask_inputs: Optional[torch.Tensor]
    ) -> None:
        """Clicks (``point_inputs``) or a mask on ``frame_idx``; either replaces the other."""
        if point_inputs is not None:
            self.point_inputs[frame_idx] = point_inputs
            self.mask_inputs.pop(frame_idx, None)
        else:
            self.mask_inputs[frame_idx] = mask_inputs
            self.point_inputs.pop(frame_idx, None)

    def clear_prompts(self, frame_idx: int) -> None:
        """Forget the prompts on ``frame_idx``: an output stored there becomes an ordinary
        tracked frame's (to be tracked again)."""
        self.point_inputs.pop(frame_idx, None)
        self.mask_inputs.pop(frame_idx, None)
        self.temp_outputs.cond_frame_outputs.pop(frame_idx, None)
        self.temp_outputs.non_cond_frame_outputs.pop(frame_idx, None)
        out = self.outputs.cond_frame_outputs.pop(frame_idx, None)
        if out is not None:
            self.outputs.non_cond_frame_outputs[frame_idx] = out
            self.frames_tracked.pop(frame_idx, None)

    def forget_tracked(self, frames: Iterable[int]) -> None:
        """Drop the tracked (non-conditioning) outputs on ``frames``."""
        for t in frames:
            self.outputs.non_cond_frame_outputs.pop(t, None)

    def clear(self) -> None:
        """Forget every prompt and output (the object stays)."""
        self.point_inputs.clear()
        self.mask_inputs.clear()
        self.outputs.clear_frames()
        self.temp_outputs.clear_frames()
        self.frames_tracked.clear()

    def forget_old_frames(self, frame_idx: int, spatial_window: int, pointer_window: int) -> None:
        """When frames only come in order (a stream), drop what no frame after ``frame_idx``
        reads: tracked outputs ``pointer_window`` or more frames old, the spatial memory and
        mask of the frame ``spatial_window`` back (its object pointer stays), tracking marks
        and prompts before the previous frame (prompts are only added on the latest frame, and
        a 1024x1024 float mask per correction would otherwise stay for good)."""
        non_cond = self.outputs.non_cond_frame_outputs
        for t in [t for t in non_cond if t <= frame_idx - pointer_window]:
            del non_cond[t]
        old = frame_idx - spatial_window
        if old in non_cond and non_cond[old].get("maskmem_features") is not None:
            non_cond[old] = {**non_cond[old], "maskmem_features": None, "pred_masks": None}
        cond = self.outputs.cond_frame_outputs
        for t in [t for t in self.frames_tracked if t < frame_idx - 1 and t not in cond]:
            del self.frames_tracked[t]
        for inputs in (self.point_inputs, self.mask_inputs):
            for t in [t for t in inputs if t < frame_idx - 1]:
                del inputs[t]


# official key -> ObjectState attribute, for the per-object views
_PER_OBJECT = {
    "point_inputs_per_obj": "point_inputs",
    "mask_inputs_per_obj": "mask_inputs",
    "output_dict_per_obj": "outputs",
    "temp_output_dict_per_obj": "temp_outputs",
    "frames_tracked_per_obj": "frames_tracked",
}
#: the keys of the official ``inference_state``, in its order
OFFICIAL_KEYS = (
    "images", "num_frames", "offload_video_to_cpu", "offload_state_to_cpu", "video_height", "video_width",
    "device", "storage_device", "point_inputs_per_obj", "mask_inputs_per_obj", "cached_features", "constants",
    "obj_id_to_idx", "obj_idx_to_id", "obj_ids", "output_dict_per_obj", "temp_output_dict_per_obj",
    "frames_tracked_per_obj",
)
# keys computed from the objects: readable, not replaceable
_DERIVED = frozenset(("obj_id_to_idx", "obj_idx_to_id", "obj_ids", *_PER_OBJECT))


class PerObjectView(MutableMapping):
    """``inference_state["<...>_per_obj"]``: ``{obj_idx: that object's <...>}``, live over the
    objects (an item can be replaced; objects come and go through the predictor)."""

    def __init__(self, state: "InferenceState", attribute: str) -> None:
        self._state = state
        self._attribute = attribute

    def _object(self, obj_idx: int) -> ObjectState:
        objects = self._state.objects
        try:
            return objects[range(len(objects)).index(obj_idx)]  # dict-like: 1.0 finds 1, "1" does not
        except ValueError:
            raise KeyError(obj_idx) from None

    def __getitem__(self, obj_idx: int) -> Any:
        return getattr(self._object(obj_idx), self._attribute)

    def __setitem__(self, obj_idx: int, value: Any) -> None:
        setattr(self._object(obj_idx), self._attribute, value)

    def __delitem__(self, obj_idx: int) -> None:
        raise InvalidTypeError("objects are removed with the predictor's remove_object(inference_state, obj_id)")

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self._state.objects)))

    def __len__(self) -> int:
        return len(self._state.objects)

    def __repr__(self) -> str:
        return repr(dict(self))


@dataclass(eq=False, repr=False)
class InferenceState(MutableMapping):
    """A video tracking session (``init_state``'s result): the video, the objects, and what
    is cached between calls. Also readable as the official ``inference_state`` dict."""

    #: the frames: ``images[i]`` is the normalised ``[3, S, S]`` model input of frame ``i``
    images: LazyVideoFrames
    num_frames: int
    #: the video's size in pixels (output masks have it)
    video_height: int
    video_width: int
    #: where the model runs
    device: torch.device
    offload_video_to_cpu: bool = False
    offload_state_to_cpu: bool = False
    #: where stored masks and memories live: the CPU with ``offload_state_to_cpu``, else ``device``
    storage_device: torch.device = field(init=False)
    #: image features of recent frames, least recently used first:
    #: ``{frame_idx: (image [1, 3, S, S], backbone_out)}``
    cached_features: "OrderedDict[int, Tuple[torch.Tensor, Dict[str, Any]]]" = field(default_factory=OrderedDict)
    #: values shared by every frame and object (the memory position encoding)
    constants: Dict[str, Any] = field(default_factory=dict)
    #: the tracked objects; the position is the model-side object index
    objects: List[ObjectState] = field(default_factory=list)
    #: keys set by a caller that are not official ones (the official state is a plain dict)
    extras: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.storage_device = torch.device("cpu") if self.offload_state_to_cpu else self.device
        self._index: Dict[Hashable, int] = {}
        self._reindex()

    __eq__ = object.__eq__  # a session is itself (a Mapping would compare contents)
    __hash__ = None  # as the official dict

    def __repr__(self) -> str:
        return (
            f"InferenceState(num_frames={self.num_frames}, video={self.video_width}x{self.video_height}, "
            f"device={self.device}, storage_device={self.storage_device}, obj_ids={self.obj_ids})"
        )

    @property
    def video_hw(self) -> Tuple[int, int]:
        """``(video_height, video_width)`` in pixels."""
        return self.video_height, self.video_width

    # ------------------------------------------------------------------ objects
    def _reindex(self) -> None:
        self._index = {obj.obj_id: i for i, obj in enumerate(self.objects)}

    @property
    def num_objects(self) -> int:
        return len(self.objects)

    @property
    def obj_ids(self) -> List[Hashable]:
        """The object ids, in model-side index order."""
        return [obj.obj_id for obj in self.objects]

    @property
    def obj_id_to_idx(self) -> "OrderedDict[Hashable, int]":
        return OrderedDict(self._index)

    @property
    def obj_idx_to_id(self) -> "OrderedDict[int, Hashable]":
        return OrderedDict((i, obj_id) for obj_id, i in self._index.items())

    def index_of(self, obj_id: Hashable) -> Optional[int]:
        """Model-side index of ``obj_id``, None if it is not tracked."""
        return self._index.get(obj_id)

    def existing_index(self, obj_id: Hashable) -> int:
        """Model-side index of ``obj_id``; :class:`UnknownObjectError` if it is not tracked."""
        obj_idx = self._index.get(obj_id)
        if obj_idx is None:
            raise UnknownObjectError(f"obj_id: unknown object id {obj_id!r}; existing ids: {self.obj_ids}")
        return obj_idx

    def index_or_add(self, obj_id: Hashable) -> int:
        """Model-side index of ``obj_id``; a new id gets the next slot (objects may be added
        at any time, also after tracking started)."""
        obj_idx = self._index.get(obj_id)
        if obj_idx is None:
            obj_idx = self._index[obj_id] = len(self.objects)
            self.objects.append(ObjectState(obj_id))
        return obj_idx

    def remove_object(self, obj_idx: int) -> ObjectState:
        """Remove the object at ``obj_idx``; the ones after it move down one index."""
        obj = self.objects.pop(obj_idx)
        self._reindex()
        return obj

    def clear_objects(self) -> None:
        """Remove every object (their prompt and output dicts are emptied too)."""
        for obj in self.objects:
            obj.clear()
        self.objects.clear()
        self._index.clear()

    def has_temp_outputs(self) -> bool:
        """Whether some prompt's memory is not encoded yet."""
        return any(not obj.temp_outputs.is_empty() for obj in self.objects)

    def has_temp_cond_output(self, frame_idx: int) -> bool:
        """Whether some object has a conditioning prompt output on ``frame_idx`` whose memory
        is not encoded yet."""
        return any(frame_idx in obj.temp_outputs.cond_frame_outputs for obj in self.objects)

    def first_cond_frame(self) -> int:
        """The earliest frame on which some object has a stored conditioning output."""
        return min(t for obj in self.objects for t in obj.outputs.cond_frame_outputs)

    def forget_old_frames(self, frame_idx: int, spatial_window: int, pointer_window: int) -> None:
        """:meth:`ObjectState.forget_old_frames` for every object (a stream's pruning)."""
        for obj in self.objects:
            obj.forget_old_frames(frame_idx, spatial_window, pointer_window)

    # ------------------------------------------------------------------ cached and stored values
    def image_features(
        self, frame_idx: int, encode: Callable[[torch.Tensor], Dict[str, Any]], keep: int
    ) -> Tuple[torch.Tensor, Dict[str, Any]]:
        """``(image [1, 3, S, S], backbone_out)`` of ``frame_idx``: from the cache of the ``keep``
        most recently used frames, or ``encode(image)`` (then cached)."""
        entry = self.cached_features.get(frame_idx)
        if entry is None:
            image = self.images[frame_idx].to(self.device).float().unsqueeze(0)
            entry = self.cached_features[frame_idx] = (image, encode(image))
            while len(self.cached_features) > keep:
                self.cached_features.popitem(last=False)
        else:
            self.cached_features.move_to_end(frame_idx)
        return entry

    def shared_maskmem_pos_enc(self, maskmem_pos_enc: Optional[List[torch.Tensor]]) -> Optional[List[torch.Tensor]]:
        """The memory position encoding is the same for every frame and object: keep one copy
        (batch 1) in ``constants`` and hand out views expanded to ``maskmem_pos_enc``'s batch."""
        if maskmem_pos_enc is None:
            return None
        if "maskmem_pos_enc" not in self.constants:
            self.constants["maskmem_pos_enc"] = [x[0:1].clone() for x in maskmem_pos_enc]
        batch_size = maskmem_pos_enc[0].size(0)
        return [x.expand(batch_size, -1, -1, -1) for x in self.constants["maskmem_pos_enc"]]

    def stored_memory(
        self, maskmem_features: Optional[torch.Tensor], maskmem_pos_enc: Optional[List[torch.Tensor]]
    ) -> Tuple[Optional[torch.Tensor], Optional[List[torch.Tensor]]]:
        """A new memory as it is kept: features in bfloat16 on the storage device, the position
        encoding shared."""
        if maskmem_features is not None:
            maskmem_features = maskmem_features.to(torch.bfloat16).to(self.storage_device, non_blocking=True)
        return maskmem_features, self.shared_maskmem_pos_enc(maskmem_pos_enc)

    def tensor_bytes(self) -> int:
        """Bytes of all tensors held by the session (distinct storages), decoded frames
        included, for monitoring."""
        seen, total = set(), 0

        def visit(value: Any) -> None:
            nonlocal total
            if isinstance(value, torch.Tensor):
                key = (value.untyped_storage().data_ptr(), value.device)
                if key not in seen:
                    seen.add(key)
                    total += value.untyped_storage().nbytes()
            elif isinstance(value, Mapping):
                for v in value.values():
                    visit(v)
            elif isinstance(value, (list, tuple)):
                for v in value:
                    visit(v)

        visit(self)
        visit(list(self.images._cache.values()))
        return total

    # ------------------------------------------------------------------ the official dict face
    def __getitem__(self, key: str) -> Any:
        if key in _PER_OBJECT:
            return PerObjectView(self, _PER_OBJECT[key])
        if key in OFFICIAL_KEYS:
            return getattr(self, key)
        if key in self.extras:
            return self.extras[key]
        raise _unknown_key("inference_state", key, self)

    def __setitem__(self, key: str, value: Any) -> None:
        if key in _DERIVED:
            raise InvalidTypeError(
                f"inference_state[{key!r}] is derived from the tracked objects and cannot be replaced: "
                "objects are added by the predictor's add_new_points_or_box / add_new_mask and removed "
                "by remove_object / reset_state"
            )
        if key in OFFICIAL_KEYS:
            setattr(self, key, value)
        else:
            self.extras[key] = value

    def __delitem__(self, key: str) -> None:
        if key in OFFICIAL_KEYS:
            raise InvalidTypeError(f"inference_state[{key!r}] is part of every session and cannot be deleted")
        del self.extras[key]

    def __contains__(self, key: object) -> bool:
        return key in OFFICIAL_KEYS or key in self.extras

    def __iter__(self) -> Iterator[str]:
        yield from OFFICIAL_KEYS
        yield from self.extras

    def __len__(self) -> int:
        return len(OFFICIAL_KEYS) + len(self.extras)
