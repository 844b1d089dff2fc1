"""The work of a batch job on one input, per task, with the model loaded once per process.

A :class:`Runner` is built from a :class:`BatchConfig` (plain data: it travels to Ray workers)
and has two steps: :meth:`Runner.read` decodes an input (run ahead in a reader thread) and
:meth:`Runner.run` segments it into an :class:`Output`: the JSON document written to
``<key>.json`` and the flat records written to Parquet.

The imports of the model, the predictors and PIL wait inside the runners: ``sam2_fast.batch``
imports no torch, so ``sam2-fast batch --help`` and a Ray driver's planning stay light.
"""

from __future__ import annotations

import abc
import json
import math
import time
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from sam2_fast.batch.inputs import TASKS, BatchUsageError, Item, Prompt
from sam2_fast.errors import VideoReadError
from sam2_fast.predictors.tracking import (
    FramePrompt,
    add_prompts,
    annotations_document,
    check_prompt_frames,
    propagate,
    track_passes,
)
from sam2_fast.zoo.registry import DEFAULT_MODEL

PRECISIONS = ("float32", "bfloat16", "float16", "auto")
#: the generator options that ``sam2-fast amg`` and ``batch amg`` take
AMG_OPTIONS = ("points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh",
               "crop_n_layers", "min_mask_region_area")


@dataclass(frozen=True)
class BatchConfig:
    """What a batch job runs: the task, the model and the task's options (those of
    ``sam2-fast amg`` / ``segment`` / ``track``).

    ``prompts`` are the default prompt rows of ``segment`` / ``track`` for inputs whose
    manifest gives none. ``precision``: ``None`` / ``"float32"`` exact (the default),
    ``"bfloat16"`` / ``"float16"``, or ``"auto"`` (16 bit where this machine is faster in it).
    """

    task: str
    model: str = DEFAULT_MODEL
    device: Optional[str] = None
    precision: Optional[str] = None
    image_size: Optional[int] = None
    random_weights: bool = False
    # amg
    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.8
    stability_score_thresh: float = 0.95
    crop_n_layers: int = 0
    min_mask_region_area: int = 0
    # segment
    multimask: bool = False
    prompts: Tuple[Prompt, ...] = field(default=())
    # track
    reverse: bool = False
    max_frames: Optional[int] = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise BatchUsageError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise BatchUsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.image_size is not None and (self.image_size < 32 or self.image_size % 32):
            raise BatchUsageError(f"image_size must be a multiple of 32 (e.g. 512 or 1024), got {self.image_size!r}")
        for name in ("points_per_side", "points_per_batch"):
            if getattr(self, name) < 1:
                raise BatchUsageError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("crop_n_layers", "min_mask_region_area"):
            if getattr(self, name) < 0:
                raise BatchUsageError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("pred_iou_thresh", "stability_score_thresh"):
            if not 0 <= getattr(self, name) <= 1:
                raise BatchUsageError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.max_frames is not None and self.max_frames < 1:
            raise BatchUsageError(f"max_frames must be >= 1, got {self.max_frames!r}")
        if self.prompts and self.task == "amg":
            raise BatchUsageError("prompts are for batch segment / track; amg segments everything")

    def to_json(self) -> Dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["prompts"] = [p.to_json() for p in self.prompts]
        return out

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "BatchConfig":
        data = dict(data)
        data["prompts"] = tuple(Prompt.from_json(p) for p in data.get("prompts", ()))
        return cls(**data)


@dataclass
class Output:
    """One input's result: ``document`` (JSON-able, written to ``<key>.json``), ``records``
    (flat rows for Parquet) and the number of masks."""

    document: Any
    records: List[Dict[str, Any]]
    masks: int


class InputError(ValueError):
    """An input that cannot be processed (unreadable, corrupt, a prompt that does not fit it):
    recorded as ``failed`` with this message, the job goes on."""


def _compute_dtype(precision: Optional[str]) -> Optional[str]:
    return None if precision in (None, "float32") else precision


def make_runner(config: BatchConfig) -> "Runner":
    """The runner of ``config.task``, its model loaded."""
    return {"amg": AmgRunner, "segment": SegmentRunner, "track": TrackRunner}[config.task](config)


class Runner(abc.ABC):
    """Loads the model once; :meth:`read` then :meth:`run` per input. Each task subclasses it."""

    def __init__(self, config: BatchConfig) -> None:
        self.config = config
        self.overrides = [] if config.image_size is None else [f"++model.image_size={config.image_size}"]

    def _model(self, video: bool = False):
        """The model of ``config.model``: loaded, or with seeded random weights."""
        from sam2_fast.build_sam import build_sam2_random

        c = self.config
        if not c.random_weights:
            return None
        return build_sam2_random(
            c.model, c.device, video=video, hydra_overrides_extra=self.overrides,
            compute_dtype=_compute_dtype(c.precision),
        )

    def _pretrained_kwargs(self) -> Dict[str, Any]:
        return {
            "device": self.config.device,
            "hydra_overrides_extra": self.overrides,
            "compute_dtype": _compute_dtype(self.config.precision),
        }

    def read(self, item: Item) -> Any:
        return read_image(item.path)

    @abc.abstractmethod
    def run(self, item: Item, data: Any) -> Output:
        """Segment one input, already read by :meth:`read`."""


def read_image(path: str) -> np.ndarray:
    """An image file as ``[H, W, 3]`` uint8 RGB; :class:`InputError` when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise InputError("the file does not exist") from None
    except IsADirectoryError:
        raise InputError("expected an image file, got a folder") from None
    except UnidentifiedImageError:
        raise InputError("not an image (PIL cannot identify it)") from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated / corrupt data
        raise InputError(f"corrupt image: {exc}") from None
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"empty image ({image.shape[1]}x{image.shape[0]})")
    return image


class AmgRunner(Runner):
    """``batch amg``: the official generator's records with ``output_mode="coco_rle"``."""

    def __init__(self, config: BatchConfig) -> None:
        super().__init__(config)
        from sam2_fast.automatic_mask_generator import SAM2AutomaticMaskGenerator

        options = {name: getattr(config, name) for name in AMG_OPTIONS}
        options.update(output_mode="coco_rle", progress=False)
        model = self._model()
        if model is None:
            self.generator = SAM2AutomaticMaskGenerator.from_pretrained(config.model, **self._pretrained_kwargs(), **options)
        else:
            self.generator = SAM2AutomaticMaskGenerator(model, **options)

    def run(self, item: Item, image: np.ndarray) -> Output:
        records = self.generator.generate(image)
        return Output(records, records, len(records))


def _check_inside(prompt: Prompt, width: int, height: int, where: str) -> None:
    """A prompt must lie on the image: a click or box outside it belongs to another image."""
    for x, y in prompt.points or ():
        if not (0 <= x <= width and 0 <= y <= height):
            raise InputError(f"{where}: the point ({x:g}, {y:g}) is outside the {width}x{height} image")
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
        if not (0 <= x0 <= width and 0 <= x1 <= width and 0 <= y0 <= height and 0 <= y1 <= height):
            raise InputError(f"{where}: the box {list(prompt.box)} is outside the {width}x{height} image")


class SegmentRunner(Runner):
    """``batch segment``: for every prompt row the masks (COCO RLE), their scores, areas and
    boxes; the image is embedded once for all its rows."""

    def __init__(self, config: BatchConfig) -> None:
        super().__init__(config)
        from sam2_fast.predictors.image_predictor import SAM2ImagePredictor

        model = self._model()
        if model is None:
            self.predictor = SAM2ImagePredictor.from_pretrained(config.model, **self._pretrained_kwargs())
        else:
            self.predictor = SAM2ImagePredictor(model)

    def run(self, item: Item, image: np.ndarray) -> Output:
        from sam2_fast.ops.rle import mask_to_rle, rle_area, rle_to_bbox

        prompts = item.prompts or self.config.prompts
        if not prompts:
            raise InputError("no prompt: give --point / --box or a manifest with points / box columns")
        height, width = image.shape[:2]
        for i, p in enumerate(prompts):
            _check_inside(p, width, height, f"prompt row {i}")
        self.predictor.set_image(image)
        rows, records, total = [], [], 0
        for i, p in enumerate(prompts):
            masks, scores, _ = self.predictor.predict(
                point_coords=np.array(p.points, np.float32) if p.points else None,
                point_labels=np.array(p.labels, np.int32) if p.points else None,
                box=np.array(p.box, np.float32) if p.box is not None else None,
                multimask_output=self.config.multimask,
            )
            rles = [mask_to_rle(m > 0.5) for m in masks]
            areas = [rle_area(r) for r in rles]
            boxes = [rle_to_bbox(r).tolist() for r in rles]
            scores = [float(s) for s in scores]
            prompt = {k: v for k, v in p.to_json().items() if k in ("points", "labels", "box")}
            rows.append({**prompt, "masks": rles, "scores": scores, "areas": areas, "bboxes": boxes})
            for j, rle in enumerate(rles):
                records.append({
                    "prompt_index": i, "mask_index": j, **prompt,
                    "segmentation": rle, "area": areas[j], "bbox": boxes[j], "score": scores[j],
                })
            total += len(rles)
        document = {
            "image": {"file_name": item.path, "height": height, "width": width},
            "model": self.config.model,
            "random_weights": self.config.random_weights,
            "prompts": rows,
        }
        return Output(document, records, total)


class TrackRunner(Runner):
    """``batch track``: every object of the prompt rows tracked through the whole video
    (forward from the first prompted frame, with ``reverse`` also backward); the document is
    ``sam2-fast track``'s ``annotations.json``."""

    def __init__(self, config: BatchConfig) -> None:
        super().__init__(config)
        from sam2_fast.predictors.video_predictor import SAM2VideoPredictor

        predictor = self._model(video=True)
        if predictor is None:
            predictor = SAM2VideoPredictor.from_pretrained(config.model, **self._pretrained_kwargs())
        predictor.show_progress = False
        self.predictor = predictor

    def read(self, item: Item):
        from sam2_fast.predictors.video_io import open_video

        try:
            return open_video(item.path)
        except VideoReadError as exc:
            raise InputError(f"unreadable video: {exc}") from None

    def run(self, item: Item, source) -> Output:
        try:
            prompts = self._frame_prompts(item.prompts or self.config.prompts, source)
            check_prompt_frames(prompts, len(source))
            state = self.predictor.init_state(source)
            _add_prompts(self.predictor, state, prompts)
            passes = track_passes(prompts, None, self.config.reverse, self.config.max_frames, len(source))
            tracked = propagate(self.predictor, state, passes)
        except VideoReadError as exc:
            raise InputError(f"unreadable video: {exc}") from None
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()
        fps = source.fps
        document = annotations_document(
            tracked, item.path, source.height, source.width, len(source),
            fps if fps and math.isfinite(fps) else None,
            self.config.model, self.config.random_weights,
        )
        annotations = document["annotations"]
        return Output(document, annotations, len(annotations))

    @staticmethod
    def _frame_prompts(prompts: Tuple[Prompt, ...], source) -> list:
        if not prompts:
            raise InputError("no prompt: give --point / --box or a manifest with points / box columns")
        grouped: Dict[Tuple[int, int], FramePrompt] = {}
        for i, p in enumerate(prompts):
            _check_inside(p, source.width, source.height, f"prompt row {i}")
            fp = grouped.setdefault((p.frame_idx, p.obj_id), FramePrompt(p.frame_idx, p.obj_id))
            if p.points:
                fp.points.extend(tuple(xy) for xy in p.points)
                fp.labels.extend(p.labels)
            if p.box is not None:
                if fp.box is not None:
                    raise InputError(f"two boxes for object {p.obj_id} on frame {p.frame_idx}; give one box per object and frame")
                fp.box = p.box
        return [grouped[key] for key in sorted(grouped)]


def _add_prompts(predictor, state, prompts) -> None:
    try:
        add_prompts(predictor, state, prompts)
    except ValueError as exc:
        raise InputError(str(exc)) from None


@dataclass
class Processed:
    """One input's outcome as the engines pass it on: ``status`` ``ok`` / ``failed``, the
    ``error`` message, the ``payload`` to write (JSON text: the document for ``json``, the
    records for ``parquet``), the number of masks and the seconds spent."""

    status: str
    error: Optional[str] = None
    payload: Optional[str] = None
    masks: Optional[int] = None
    seconds: float = 0.0


def describe_error(exc: BaseException) -> str:
    """A one-line message for an input that failed."""
    if isinstance(exc, InputError):
        return str(exc)
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text[:500]}"


def process(runner: Runner, item: Item, fmt: str, data: Any = None, read_seconds: float = 0.0) -> Processed:
    """Read (unless ``data`` is given: the input already read, or the exception reading it
    raised) and run one input; any error becomes a ``failed`` outcome, so that the job goes
    on (only ``KeyboardInterrupt`` and ``SystemExit`` pass)."""
    start = time.perf_counter()
    try:
        if data is None:
            data = runner.read(item)
        if isinstance(data, BaseException):
            raise data
        output = runner.run(item, data)
        payload = json.dumps(output.document if fmt == "json" else output.records)
    except Exception as exc:
        return Processed("failed", error=describe_error(exc), seconds=read_seconds + time.perf_counter() - start)
    return Processed("ok", payload=payload, masks=output.masks, seconds=read_seconds + time.perf_counter() - start)
