"""``/api/images``: upload an image (its embedding is computed once), segment it from clicks
and boxes, draw the result, delete it."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
from fastapi import APIRouter, File, Response, UploadFile

from sam2_fast.serve.schemas import ImageInfo, SegmentRequest, SegmentResponse
from sam2_fast.serve.sessions import ImageSession, tensor_bytes
from sam2_fast.serve.uploads import read_image

if TYPE_CHECKING:  # pragma: no cover
    from sam2_fast.serve.app import ServeContext


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def router(ctx: "ServeContext") -> APIRouter:
    from sam2_fast import SAM2ImagePredictor
    from sam2_fast.ops.rle import mask_to_rle
    from sam2_fast.utils.visualize import overlay_masks

    r = APIRouter(prefix="/api/images", tags=["images"])

    @r.post("", response_model=ImageInfo)
    def upload_image(file: UploadFile = File(..., description="a PNG, JPEG, WebP, BMP or TIFF image")) -> ImageInfo:
        """Upload an image and compute its embedding (kept until the session is deleted,
        expires or is evicted)."""
        image = read_image(file.file, file.filename or "upload", ctx.limits.max_upload_bytes)
        session_id = ctx.new_session_id()
        session = ImageSession(
            id=session_id, folder=ctx.workdir / session_id, image=image, predictor=SAM2ImagePredictor(ctx.model)
        )
        with ctx.queue.turn():
            session.predictor.set_image(image)
        ctx.store.add(session)
        ctx.store.resize(session, tensor_bytes(session.predictor) + image.nbytes)
        return ImageInfo(image_id=session_id, width=session.width, height=session.height)

    @r.post("/{image_id}/segment", response_model=SegmentResponse)
    def segment(image_id: str, request: SegmentRequest) -> SegmentResponse:
        """Masks for clicks and/or a box on the image: the same masks as
        ``SAM2ImagePredictor.predict`` (3 candidates with ``multimask``, else 1), as COCO RLE,
        with their predicted IoU scores."""
        session = ctx.store.get(image_id, "image")
        request.check_inside(session.width, session.height, "the image")
        points = np.array(request.points, np.float32) if request.points else None
        labels = np.array(request.labels, np.int32) if request.points else None
        box = np.array(request.box, np.float32) if request.box is not None else None
        with session.lock:
            with ctx.queue.turn():
                masks, scores, _ = session.predictor.predict(
                    point_coords=points, point_labels=labels, box=box, multimask_output=request.multimask
                )
            masks = masks > 0.5
            version = 1 + (session.last or {}).get("version", 0)
            session.last = {
                "version": version, "mask": masks[int(np.argmax(scores))], "points": points, "labels": labels,
                "box": box,
            }
        return SegmentResponse(
            masks=[mask_to_rle(m) for m in masks],
            scores=[float(s) for s in scores],
            overlay_url=f"/api/images/{image_id}/overlay.png?v={version}",
        )

    @r.get("/{image_id}/overlay.png", response_class=Response,
           responses={200: {"content": {"image/png": {}}, "description": "the overlay"}})
    def overlay(image_id: str) -> Response:
        """The image with the best mask of the latest ``segment`` call and its prompts drawn
        (the plain image before the first call)."""
        session = ctx.store.get(image_id, "image")
        last = session.last
        if last is None:
            drawn = session.image
        else:
            drawn = overlay_masks(session.image, [last["mask"]], points=last["points"], labels=last["labels"],
                                  boxes=last["box"])
        return Response(png_bytes(drawn), media_type="image/png")

    @r.delete("/{image_id}", status_code=204, response_class=Response)
    def delete_image(image_id: str) -> Response:
        """Forget the image and its embedding."""
        ctx.store.delete(image_id, "image")
        return Response(status_code=204)

    return r
