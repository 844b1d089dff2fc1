"""``/api/videos``: upload a video or a zip of frames, prompt objects on frames, track them
through the video (progress and masks streamed as Server-Sent Events), export the result."""

from __future__ import annotations

import io
import json
import queue
import shutil
import threading
import time
import zipfile
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, List, Sequence

import numpy as np
from fastapi import APIRouter, File, Query, Response, UploadFile
from fastapi.responses import FileResponse, StreamingResponse

from sam2_fast.serve.schemas import FrameMasks, ObjectList, RequestError, RLEMask, VideoInfo, VideoPrompt
from sam2_fast.serve.sessions import VideoSession, tensor_bytes
from sam2_fast.serve.uploads import check_frame_count, save_video

if TYPE_CHECKING:  # pragma: no cover
    from sam2_fast.serve.app import ServeContext


class ExportFormat(str, Enum):
    mp4 = "mp4"
    rle = "rle"
    png_zip = "png-zip"


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def _frame_masks(frame_idx: int, obj_ids: Sequence[int], masks: np.ndarray) -> FrameMasks:
    """``masks`` bool ``[num_objects, H, W]`` as RLE, one per object id."""
    from sam2_fast.ops.rle import mask_to_rle

    return FrameMasks(frame_idx=frame_idx, obj_ids=list(obj_ids), masks=[RLEMask(**mask_to_rle(m)) for m in masks])


def router(ctx: "ServeContext") -> APIRouter:
    from sam2_fast.errors import VideoReadError
    from sam2_fast.predictors.tracking import (
        FramePrompt,
        annotations_document,
        propagate,
        track_passes,
        write_overlay_video,
    )
    from sam2_fast.predictors.video_io import open_video

    model = ctx.model
    r = APIRouter(prefix="/api/videos", tags=["videos"])

    def idle_session(video_id: str) -> VideoSession:
        session = ctx.store.get(video_id, "video")
        if session.lock.locked():
            raise RequestError(409, f"video {video_id!r} is being tracked; wait until tracking ends")
        return session

    @r.post("", response_model=VideoInfo)
    def upload_video(file: UploadFile = File(..., description="a video file (MP4, ...) or a zip of numbered frames")) -> VideoInfo:
        """Upload a video (any container PyAV reads) or a zip of frames named by number, and
        start a tracking session on it (frame 0 is embedded right away)."""
        name = file.filename or "upload"
        session_id = ctx.new_session_id()
        folder = ctx.workdir / session_id
        source = None
        try:
            path = save_video(file.file, name, folder, ctx.limits.max_upload_bytes, ctx.limits.max_frames)
            try:
                source = open_video(path)
            except VideoReadError as exc:
                raise RequestError(415, f"file {name!r} is not a video that can be read ({exc}); upload an MP4 "
                                        "(or another container PyAV reads) or a zip of numbered JPEG/PNG frames") from None
            check_frame_count(len(source), ctx.limits.max_frames, f"video {name!r}")
            with ctx.queue.turn():
                state = model.init_state(source, offload_video_to_cpu=True, offload_state_to_cpu=True)
        except BaseException:
            if source is not None and hasattr(source, "close"):
                source.close()
            shutil.rmtree(folder, ignore_errors=True)
            raise
        session = VideoSession(id=session_id, folder=folder, name=name, source=source, state=state,
                               fps=source.fps or 24.0)
        ctx.store.add(session)
        ctx.store.resize(session, tensor_bytes(state))
        return VideoInfo(video_id=session_id, num_frames=len(source), fps=session.fps,
                         width=source.width, height=source.height)

    @r.get("/{video_id}/frames/{frame_idx}", response_class=Response,
           responses={200: {"content": {"image/jpeg": {}}, "description": "the frame"}})
    def frame(video_id: str, frame_idx: int) -> Response:
        """Frame ``frame_idx`` of the video as a JPEG."""
        from PIL import Image

        session = ctx.store.get(video_id, "video")
        if not 0 <= frame_idx < len(session.source):
            raise RequestError(404, f"video {video_id!r} has no frame {frame_idx} (it has frames 0..{len(session.source) - 1})")
        buf = io.BytesIO()
        Image.fromarray(session.source.read(frame_idx)).save(buf, format="JPEG", quality=90)
        return Response(buf.getvalue(), media_type="image/jpeg")

    @r.post("/{video_id}/prompts", response_model=FrameMasks)
    def add_prompt(video_id: str, prompt: VideoPrompt) -> FrameMasks:
        """Set object ``obj_id``'s clicks and/or box on frame ``frame_idx`` (replacing the ones
        it had there); returns the masks of every object on that frame."""
        session = idle_session(video_id)
        n = len(session.source)
        if prompt.frame_idx >= n:
            raise RequestError(422, f"frame_idx: {prompt.frame_idx} is outside the video, which has {n} frames (0..{n - 1})")
        prompt.check_inside(session.source.width, session.source.height, f"frame {prompt.frame_idx}")
        with session.lock:
            with ctx.queue.turn():
                frame_idx, obj_ids, logits = model.add_new_points_or_box(
                    session.state, prompt.frame_idx, prompt.obj_id,
                    points=np.array(prompt.points, np.float32) if prompt.points else None,
                    labels=np.array(prompt.labels, np.int32) if prompt.points else None,
                    box=np.array(prompt.box, np.float32) if prompt.box is not None else None,
                )
            session.prompts[(prompt.frame_idx, prompt.obj_id)] = FramePrompt(
                prompt.frame_idx, prompt.obj_id, points=[tuple(p) for p in prompt.points],
                labels=list(prompt.labels), box=prompt.box,
            )
            return _frame_masks(frame_idx, obj_ids, (logits[:, 0] > 0).cpu().numpy())

    @r.delete("/{video_id}/objects/{obj_id}", response_model=ObjectList)
    def delete_object(video_id: str, obj_id: int) -> ObjectList:
        """Remove an object, its prompts and its tracked masks; returns the objects left."""
        session = idle_session(video_id)
        with session.lock:
            if session.state.index_of(obj_id) is None:
                raise RequestError(404, f"video {video_id!r} has no object {obj_id} (objects: {session.state.obj_ids})")
            with ctx.queue.turn():
                obj_ids, _ = model.remove_object(session.state, obj_id, need_output=False)
            session.prompts = {key: p for key, p in session.prompts.items() if p.obj != obj_id}
            for masks in session.tracked.values():
                masks.pop(obj_id, None)
            return ObjectList(obj_ids=list(obj_ids))

    @r.post("/{video_id}/propagate", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "Server-Sent Events: `frame` per tracked frame "
                                            "(frame_idx, done, total, obj_ids, masks), then `done` or `error`"}})
    def propagate_video(video_id: str) -> StreamingResponse:
        """Track every prompted object through the whole video (forward from the first
        prompted frame, then backward from the last). Streams one ``frame`` event per tracked
        frame with its masks as RLE and the progress (``done`` of ``total``), then ``done``
        (or ``error``). Other users' requests run between frames."""
        session = idle_session(video_id)
        if not session.lock.acquire(blocking=False):
            raise RequestError(409, f"video {video_id!r} is being tracked; wait until tracking ends")
        prompts = list(session.prompts.values())
        if not prompts:
            session.lock.release()
            raise RequestError(409, f"video {video_id!r} has no prompts: POST /api/videos/{video_id}/prompts first")
        passes = track_passes(prompts, None, True, None, len(session.source))
        total = sum(count for _, _, count in passes)
        events: "queue.Queue[str]" = queue.Queue()

        def run() -> None:
            done = 0
            start = time.perf_counter()
            try:
                def on_frame(frame_idx: int, obj_ids: Sequence[int], masks: np.ndarray) -> None:
                    nonlocal done
                    done += 1
                    data = _frame_masks(frame_idx, obj_ids, masks).model_dump()
                    events.put(_sse("frame", dict(data, done=done, total=total)))
                    ctx.queue.pause()

                with ctx.queue.turn():
                    session.tracked = propagate(model, session.state, passes, on_frame)
                ctx.store.resize(session, tensor_bytes(session.state))
                events.put(_sse("done", {"frames": len(session.tracked), "seconds": time.perf_counter() - start}))
            except Exception as exc:  # the stream tells the client; the session stays usable
                events.put(_sse("error", {"detail": f"{type(exc).__name__}: {exc}"}))
            finally:
                session.lock.release()
                events.put("")

        threading.Thread(target=run, name=f"track-{video_id}", daemon=True).start()

        def stream() -> Iterator[str]:
            while True:
                item = events.get()
                if not item:
                    return
                yield item

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @r.get("/{video_id}/export", response_class=Response,
           responses={200: {"content": {"video/mp4": {}, "application/json": {}, "application/zip": {}},
                            "description": "the overlay video, the COCO-RLE JSON or a zip of PNG masks"}})
    def export(video_id: str, format: ExportFormat = Query(ExportFormat.rle, description="mp4, rle or png-zip")) -> Response:
        """The tracked masks: ``mp4`` the video with the masks drawn, ``rle`` COCO-style JSON
        (the ``sam2-fast track`` annotations.json format), ``png-zip`` one PNG per object and
        frame (``masks/<frame>_obj<id>.png``)."""
        session = idle_session(video_id)
        with session.lock:
            if not session.tracked:
                raise RequestError(409, f"video {video_id!r} has not been tracked yet: POST /api/videos/{video_id}/propagate first")
            stem = f"sam2-fast_{video_id}"
            if format is ExportFormat.rle:
                document = annotations_document(
                    session.tracked, session.name, session.source.height, session.source.width, len(session.source),
                    session.fps, ctx.model_name, ctx.random_weights,
                )
                return Response(json.dumps(document), media_type="application/json",
                                headers={"Content-Disposition": f'attachment; filename="{stem}.json"'})
            if format is ExportFormat.mp4:
                path = session.folder / "overlay.mp4"
                write_overlay_video(path, session.source, session.tracked, list(session.prompts.values()), session.fps)
                return FileResponse(path, media_type="video/mp4", filename=f"{stem}.mp4")
            path = session.folder / "masks.zip"
            _write_mask_zip(path, session)
            return FileResponse(path, media_type="application/zip", filename=f"{stem}_masks.zip")

    @r.delete("/{video_id}", status_code=204, response_class=Response)
    def delete_video(video_id: str) -> Response:
        """Forget the video, its tracking state and its files."""
        ctx.store.delete(video_id, "video")
        return Response(status_code=204)

    return r


def _write_mask_zip(path: Path, session: VideoSession) -> None:
    """Zip the session's tracked masks as ``masks/<frame>_obj<id>.png`` (0 / 255)."""
    from sam2_fast.ops.rle import rle_to_mask
    from sam2_fast.utils.visualize import save_png

    folder = session.folder / "masks"
    shutil.rmtree(folder, ignore_errors=True)
    names: List[str] = []
    for frame_idx in sorted(session.tracked):
        for obj_id, rle in sorted(session.tracked[frame_idx].items()):
            name = f"{frame_idx:05d}_obj{obj_id}.png"
            save_png(rle_to_mask(rle), folder / name)
            names.append(name)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name in names:
            zf.write(folder / name, f"masks/{name}")
