"""The JSON API's requests and answers (they make the OpenAPI schema at ``/docs``) and the
checks of prompts against the image they are for."""

from __future__ import annotations

from typing import List, Optional, Tuple

from pydantic import BaseModel, Field, model_validator

from sam2_fast.errors import InvalidInputError


class RequestError(ValueError):
    """A request the server refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Prompt(BaseModel):
    """Clicks and/or a box, in pixels of the uploaded image (or video frame)."""

    points: List[Tuple[float, float]] = Field(default_factory=list, description="clicks [[x, y], ...] in pixels")
    labels: List[int] = Field(default_factory=list, description="one per point: 1 = object, 0 = background")
    box: Optional[Tuple[float, float, float, float]] = Field(None, description="[x0, y0, x1, y1] in pixels")

    @model_validator(mode="after")
    def _consistent(self) -> "Prompt":
        if len(self.labels) != len(self.points):
            raise InvalidInputError(f"labels: expected one label per point ({len(self.points)}), got {len(self.labels)}")
        bad = [v for v in self.labels if v not in (0, 1)]
        if bad:
            raise InvalidInputError(f"labels: expected 1 (object) or 0 (background), got {bad[0]}")
        if not self.points and self.box is None:
            raise InvalidInputError("give at least one point or a box")
        if self.box is not None and not (self.box[0] < self.box[2] and self.box[1] < self.box[3]):
            raise InvalidInputError(f"box: expected [x0, y0, x1, y1] with x0 < x1 and y0 < y1, got {list(self.box)}")
        return self

    def check_inside(self, width: int, height: int, what: str) -> None:
        """:class:`RequestError` 422 for a point or box corner outside ``what``."""
        for i, (x, y) in enumerate(self.points):
            if not (0 <= x <= width and 0 <= y <= height):
                raise RequestError(
                    422, f"points[{i}]: ({x:g}, {y:g}) is outside {what}, which is {width}x{height} "
                    f"(x in 0..{width}, y in 0..{height} pixels)"
                )
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if not (0 <= x0 and 0 <= y0 and x1 <= width and y1 <= height):
                raise RequestError(
                    422, f"box: {list(self.box)} reaches outside {what}, which is {width}x{height} "
                    f"(x in 0..{width}, y in 0..{height} pixels)"
                )


class SegmentRequest(Prompt):
    multimask: bool = Field(True, description="three candidate masks (true) or one (false)")


class VideoPrompt(Prompt):
    frame_idx: int = Field(..., ge=0, description="the frame the prompt is on")
    obj_id: int = Field(..., ge=0, description="the object's id (any integer >= 0 the client picks)")


class RLEMask(BaseModel):
    """A mask as compressed COCO RLE (pycocotools' ``{"size": [h, w], "counts": str}``)."""

    size: Tuple[int, int]
    counts: str


class ImageInfo(BaseModel):
    image_id: str
    width: int
    height: int


class SegmentResponse(BaseModel):
    masks: List[RLEMask]
    scores: List[float]
    overlay_url: str = Field(..., description="a PNG of the image with the best mask and the prompts drawn")


class VideoInfo(BaseModel):
    video_id: str
    num_frames: int
    fps: float
    width: int
    height: int


class FrameMasks(BaseModel):
    frame_idx: int
    obj_ids: List[int]
    masks: List[RLEMask] = Field(..., description="one per object id, in the order of obj_ids")


class ObjectList(BaseModel):
    obj_ids: List[int]


class Health(BaseModel):
    status: str
    model: str
    random_weights: bool
    device: str
    image_size: int
    sessions: int
    queue: int
    auth: bool
    limits: dict
