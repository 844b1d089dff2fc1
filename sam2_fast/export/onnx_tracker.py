"""Video tracking from the four exported ONNX files with numpy and onnxruntime only (no torch).

:class:`OnnxVideoTracker` runs the loop of the official ``SAM2VideoPredictor`` around the
graphs of :func:`sam2_fast.export.export_onnx`: which memories and object pointers a frame
reads, the mask chosen among the decoder's outputs, the no-object score, the memory of each
frame. This module imports numpy, onnxruntime and (to resize frames of another size) PIL.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Hashable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from sam2_fast.errors import InvalidInputError, InvalidStateError

__all__ = ["OnnxVideoTracker"]

_IMAGE_FEATURES = ("image_embed", "high_res_feats_0", "high_res_feats_1")


def bilinear_matrix(size_in: int, size_out: int) -> np.ndarray:
    """``[size_out, size_in]`` weights of 1D bilinear resizing with ``align_corners=False``
    (torch's ``F.interpolate(..., mode="bilinear")`` without antialiasing)."""
    scale = size_in / size_out
    src = np.maximum((np.arange(size_out, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
    i1 = np.minimum(i0 + 1, size_in - 1)
    frac = src - i0
    weights = np.zeros((size_out, size_in), np.float64)
    rows = np.arange(size_out)
    np.add.at(weights, (rows, i0), 1.0 - frac)
    np.add.at(weights, (rows, i1), frac)
    return weights.astype(np.float32)


def resize_logits(logits: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
    """Bilinear resize (``align_corners=False``) of ``[..., h, w]`` logits to ``hw``."""
    h, w = logits.shape[-2:]
    if (h, w) == tuple(hw):
        return logits
    return bilinear_matrix(h, hw[0]) @ logits @ bilinear_matrix(w, hw[1]).T


def stability_score(logits: np.ndarray, delta: float) -> float:
    """IoU of the mask thresholded at ``+delta`` and at ``-delta`` (1 for an empty mask)."""
    union = np.count_nonzero(logits > -delta)
    return 1.0 if union == 0 else np.count_nonzero(logits > delta) / union


class OnnxVideoTracker:
    """Track objects through a clip with ``image_encoder.onnx``, ``prompt_decoder.onnx``,
    ``memory_attention.onnx`` and ``memory_encoder.onnx`` (and ``export.json``) in onnxruntime.

    Follows the official ``SAM2VideoPredictor`` (1.1.0): a prompted frame is a conditioning
    frame (its features take ``no_mem_embed``, as ``image_encoder.onnx`` writes them; one click
    gives the best of the three multimask outputs, more points or a box the single-mask output
    with the dynamic fall-back on unstable masks); every other frame attends to all the
    object's conditioning frames and the ``num_maskmem - 1`` frames before it (stride 1), and to
    the object pointers of the conditioning frames in the past and of up to
    ``max_obj_ptrs_in_encoder - 1`` frames before it; an absent object (score <= 0) gets the
    ``NO_OBJ_SCORE`` mask, the no-object pointer and the no-object memory embedding. Each
    object is tracked on its own, as officially.

    Simplifications (say so where they matter): prompts are clicks and boxes (no mask
    prompts); a new prompt on a frame replaces that object's earlier prompt there and, once
    tracking ran, drops every tracked frame of that object (propagate again), where the
    official predictor refines the tracked mask; no hole filling of the output masks
    (``fill_hole_area``, 8 in the official video predictor: compare with 0); no
    ``non_overlap_masks``; all conditioning frames are attended to
    (``max_cond_frames_in_attn = -1``, as every released config) with memory stride 1.

    Example::

        tracker = OnnxVideoTracker("onnx/")
        tracker.init(frames)                        # [T, H, W, 3] uint8 RGB, or a list of frames
        tracker.add_points(0, obj_id=1, points=[[320, 240]], labels=[1])   # video pixels
        tracker.add_box(0, obj_id=2, box=[50, 60, 400, 380])
        for frame_idx, obj_ids, masks in tracker.propagate():            # masks [N, H, W] bool
            ...
    """

    #: the file of each graph is ``<part><SUFFIX>`` in the export folder
    SUFFIX = ".onnx"

    def __init__(self, folder: Union[str, Path], providers: Optional[Sequence[str]] = None) -> None:
        folder = Path(folder).expanduser()
        self.description = json.loads((folder / "export.json").read_text())
        self.settings: Dict[str, Any] = self.description["video"]
        self.image_size = int(self.description["model"]["image_size"])
        self.providers = list(providers or ["CPUExecutionProvider"])
        self.image_encoder = self._session(folder, "image_encoder")
        self.prompt_decoder = self._session(folder, "prompt_decoder")
        self.memory_attention = self._session(folder, "memory_attention")
        self.memory_encoder = self._session(folder, "memory_encoder")
        pre = self.description["preprocessing"]
        self._mean = np.asarray(pre["mean"], np.float32)
        self._std = np.asarray(pre["std"], np.float32)
        self.frames: Sequence[np.ndarray] = []
        self.objects: Dict[Hashable, Dict[str, Any]] = {}
        self._features: Dict[int, Dict[str, np.ndarray]] = {}

    def _session(self, folder: Path, part: str) -> Any:
        """The runner of one graph: anything with onnxruntime's ``run(None, feeds)``, which
        returns the outputs as numpy arrays in the order of ``export.json``."""
        import onnxruntime as ort

        return ort.InferenceSession(str(folder / f"{part}{self.SUFFIX}"), providers=self.providers)

    # ------------------------------------------------------------------ session
    def init(self, frames: Union[np.ndarray, Sequence[np.ndarray]]) -> None:
        """Start a session on ``frames`` (``[T, H, W, 3]`` uint8 RGB, or a sequence of
        ``[H, W, 3]`` frames of one size); frames are encoded when they are needed."""
        if len(frames) == 0:
            raise InvalidInputError("frames: expected at least one [H, W, 3] uint8 frame, got none")
        first = np.asarray(frames[0])
        if first.ndim != 3 or first.shape[2] != 3:
            raise InvalidInputError(f"frames: expected [H, W, 3] RGB frames, got shape {list(first.shape)}")
        self.frames = frames
        self.video_hw = (int(first.shape[0]), int(first.shape[1]))
        self.objects = {}
        self._features = {}

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def obj_ids(self) -> List[Hashable]:
        return list(self.objects)

    def preprocess(self, frame: np.ndarray) -> np.ndarray:
        """``[H, W, 3]`` uint8 -> the encoder's ``[1, 3, S, S]`` input (export.json)."""
        s = self.image_size
        frame = np.asarray(frame)
        if frame.shape[:2] != (s, s):
            from PIL import Image

            frame = np.asarray(Image.fromarray(frame).resize((s, s), Image.BILINEAR))
        x = (frame.astype(np.float32) / 255.0 - self._mean) / self._std
        return x.transpose(2, 0, 1)[None].astype(np.float32)

    def image_features(self, frame_idx: int) -> Dict[str, np.ndarray]:
        """The encoder outputs of ``frame_idx`` (the two latest frames are kept)."""
        feats = self._features.get(frame_idx)
        if feats is None:
            outputs = self.image_encoder.run(None, {"image": self.preprocess(self.frames[frame_idx])})
            feats = dict(zip(_IMAGE_FEATURES, outputs))
            self._features = {k: v for k, v in list(self._features.items())[-1:]}
            self._features[frame_idx] = feats
        return feats

    # ------------------------------------------------------------------ prompts
    def add_points(self, frame_idx: int, obj_id: Hashable, points=None, labels=None, box=None) -> np.ndarray:
        """Prompt ``obj_id`` on ``frame_idx`` with clicks ``points [N, 2]`` (x, y video
        pixels) and ``labels [N]`` (1 object, 0 background) and / or ``box [4]`` (x0, y0, x1,
        y1). Returns the object's low-res mask logits ``[S/4, S/4]`` on that frame."""
        if not 0 <= frame_idx < self.num_frames:
            raise InvalidInputError(f"frame_idx: expected 0 <= frame_idx < {self.num_frames}, got {frame_idx}")
        h, w = self.video_hw
        scale = np.array([self.image_size / w, self.image_size / h], np.float32)
        coords, lbls = [], []
        if box is not None:
            coords.append(np.asarray(box, np.float32).reshape(2, 2) * scale)
            lbls.append(np.array([2, 3], np.float32))
        if points is not None:
            pts = np.asarray(points, np.float32).reshape(-1, 2)
            lbl = np.asarray(labels, np.float32).reshape(-1)
            if len(lbl) != len(pts):
                raise InvalidInputError(f"labels: expected one label per point ({len(pts)}), got {len(lbl)}")
            coords.append(pts * scale)
            lbls.append(lbl)
        if not coords:
            raise InvalidInputError("add_points: give points and labels, or a box")
        coords_arr, labels_arr = np.concatenate(coords)[None], np.concatenate(lbls)[None]
        out = self._decode(self.image_features(frame_idx)["image_embed"], frame_idx, coords_arr, labels_arr,
                           is_init_cond_frame=True)
        # an object is added once its first prompt ran
        obj = self.objects.setdefault(obj_id, {"cond": {}, "tracked": {}})
        obj["tracked"].clear()  # the prompt changes what the tracked frames remember
        obj["cond"][frame_idx] = out
        return out["mask"]

    def add_box(self, frame_idx: int, obj_id: Hashable, box) -> np.ndarray:
        """:meth:`add_points` with a box only."""
        return self.add_points(frame_idx, obj_id, box=box)

    # ------------------------------------------------------------------ the model steps
    def _decode(self, image_embed: np.ndarray, frame_idx: int, coords: np.ndarray, labels: np.ndarray,
                is_init_cond_frame: bool) -> Dict[str, Any]:
        """Decoder on one frame -> ``{"mask", "obj_ptr", "score"}`` as the official
        ``_forward_sam_heads`` picks them (no memory yet)."""
        cfg = self.settings
        feats = self.image_features(frame_idx)
        m = self.image_size // 4
        _, _, logits, scores, ptrs, obj_score = self.prompt_decoder.run(None, {
            "image_embed": image_embed,
            "high_res_feats_0": feats["high_res_feats_0"],
            "high_res_feats_1": feats["high_res_feats_1"],
            "point_coords": coords,
            "point_labels": labels,
            "mask_input": np.zeros((1, 1, m, m), np.float32),
            "has_mask_input": np.zeros(1, np.float32),
        })
        logits, scores, ptrs, score = logits[0], scores[0], ptrs[0], float(obj_score[0, 0])
        num_pts = labels.shape[1] if is_init_cond_frame else 0  # box corners count, as officially
        multimask = (
            cfg["multimask_output_in_sam"]
            and (is_init_cond_frame or cfg["multimask_output_for_tracking"])
            and cfg["multimask_min_pt_num"] <= num_pts <= cfg["multimask_max_pt_num"]
        )
        if multimask:
            best = 1 + int(np.argmax(scores[1:]))
            mask = logits[best]
            ptr = ptrs[best] if cfg["use_multimask_token_for_obj_ptr"] else ptrs[0]
        else:
            mask, ptr = logits[0], ptrs[0]
            unstable = stability_score(mask, cfg["dynamic_multimask_stability_delta"]) < (
                cfg["dynamic_multimask_stability_thresh"])
            if cfg["dynamic_multimask_via_stability"] and unstable:
                mask = logits[1 + int(np.argmax(scores[1:]))]
        if cfg["pred_obj_scores"] and score <= 0:
            mask = np.full_like(mask, cfg["no_obj_score"])
        return {"mask": mask, "obj_ptr": ptr, "score": score, "memory": None}

    def _encode_memory(self, frame_idx: int, out: Dict[str, Any], is_mask_from_pts: bool) -> None:
        binarize = is_mask_from_pts and self.settings["binarize_mask_from_pts_for_mem_enc"]
        (out["memory"],) = self.memory_encoder.run(None, {
            "image_embed": self.image_features(frame_idx)["image_embed"],
            "mask_logits": out["mask"][None, None],
            "object_score_logits": np.array([[out["score"]]], np.float32),
            "is_mask_from_pts": np.array([1.0 if binarize else 0.0], np.float32),
        })
        out["memory"] = out["memory"][0]

    def memory_inputs(self, obj: Dict[str, Any], frame_idx: int, reverse: bool = False) -> Dict[str, np.ndarray]:
        """The memory attention's inputs for one object on a tracked frame, by the official
        selection rules (``sam2_fast.modeling.memory_plan.select_memories`` with stride 1 and
        every conditioning frame)."""
        cfg = self.settings
        num_maskmem = cfg["num_maskmem"]
        cond, tracked = obj["cond"], obj["tracked"]
        memories = [(0, out) for out in cond.values()]
        for t_pos in range(1, num_maskmem):
            t_rel = num_maskmem - t_pos
            prev = frame_idx + t_rel if reverse else frame_idx - t_rel
            out = tracked.get(prev)
            if out is not None:
                memories.append((t_pos, out))
        max_obj_ptrs = min(self.num_frames, cfg["max_obj_ptrs_in_encoder"])
        pointers: List[Tuple[int, Dict[str, Any]]] = []
        if cfg["use_obj_ptrs_in_encoder"]:
            sign = -1 if reverse else 1
            for t, out in cond.items():
                if cfg["only_obj_ptrs_in_the_past_for_eval"] and (t < frame_idx if reverse else t > frame_idx):
                    continue
                dist = (frame_idx - t) * sign if cfg["use_signed_tpos_enc_to_obj_ptrs"] else abs(frame_idx - t)
                pointers.append((dist, out))
            for t_diff in range(1, max_obj_ptrs):
                t = frame_idx + t_diff if reverse else frame_idx - t_diff
                if t < 0 or t >= self.num_frames:
                    break
                out = tracked.get(t)
                if out is not None:
                    pointers.append((t_diff, out))
        c = self.description["files"][f"memory_attention{self.SUFFIX}"]["inputs"][3]["shape"][1]
        return {
            "memory": np.stack([out["memory"] for _, out in memories]).astype(np.float32),
            "memory_tpos": np.array([t for t, _ in memories], np.int64),
            "obj_ptrs": np.stack([out["obj_ptr"] for _, out in pointers]).astype(np.float32)
            if pointers else np.zeros((0, c), np.float32),
            # the official int64 distances divided in float32
            "obj_ptr_tpos": (np.array([d for d, _ in pointers], np.float32) / np.float32(max(max_obj_ptrs - 1, 1)))
            .astype(np.float32),
        }

    def _track(self, obj: Dict[str, Any], frame_idx: int, reverse: bool) -> Dict[str, Any]:
        feats = self.image_features(frame_idx)
        inputs = self.memory_inputs(obj, frame_idx, reverse)
        (pix_feat,) = self.memory_attention.run(None, {"image_embed": feats["image_embed"], **inputs})
        out = self._decode(pix_feat, frame_idx, np.zeros((1, 1, 2), np.float32), -np.ones((1, 1), np.float32),
                           is_init_cond_frame=False)
        self._encode_memory(frame_idx, out, is_mask_from_pts=False)
        return out

    # ------------------------------------------------------------------ propagation
    def propagate(
        self,
        start_frame_idx: Optional[int] = None,
        max_frame_num_to_track: Optional[int] = None,
        reverse: bool = False,
        output: str = "video",
    ) -> Iterator[Tuple[int, List[Hashable], np.ndarray]]:
        """Track every object, yielding ``(frame_idx, obj_ids, masks)`` per frame: ``masks``
        ``[N, H, W]`` bool at the video's size (``output="video"``), ``[N, H, W]`` float32
        logits at the video's size (``"video_logits"``), or ``[N, S/4, S/4]`` low-res logits
        (``"low_res"``). Starts at the first prompted frame (or ``start_frame_idx``), forward
        or backward."""
        if output not in ("video", "video_logits", "low_res"):
            raise InvalidInputError(f"output: expected 'video', 'video_logits' or 'low_res', got {output!r}")
        if not self.objects:
            raise InvalidStateError("no prompts: call add_points or add_box first")
        for obj in self.objects.values():
            for frame_idx, out in obj["cond"].items():
                if out["memory"] is None:
                    self._encode_memory(frame_idx, out, is_mask_from_pts=True)
                obj["tracked"].pop(frame_idx, None)
        if start_frame_idx is None:
            start_frame_idx = min(t for obj in self.objects.values() for t in obj["cond"])
        budget = self.num_frames if max_frame_num_to_track is None else max_frame_num_to_track
        if reverse:
            order = range(start_frame_idx, max(start_frame_idx - budget, 0) - 1, -1)
        else:
            order = range(start_frame_idx, min(start_frame_idx + budget, self.num_frames - 1) + 1)
        for frame_idx in order:
            masks = []
            for obj in self.objects.values():
                out = obj["cond"].get(frame_idx)
                if out is None:
                    out = obj["tracked"][frame_idx] = self._track(obj, frame_idx, reverse)
                masks.append(out["mask"])
            low_res = np.stack(masks)
            if output == "low_res":
                yield frame_idx, self.obj_ids, low_res
                continue
            logits = resize_logits(low_res, self.video_hw)
            yield frame_idx, self.obj_ids, logits > 0 if output == "video" else logits
