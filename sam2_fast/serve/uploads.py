"""Reading what clients upload, within the server's limits: never more than the size limit,
and only into the server's own temp folder under names the server makes up (a client's file
name or a zip member's path is never used as a path)."""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Optional

import numpy as np

from sam2_fast.predictors.video_io import IMAGE_EXTENSIONS, _natural_key
from sam2_fast.serve.schemas import RequestError

CHUNK = 1 << 20


def too_large(what: str, max_bytes: int) -> RequestError:
    return RequestError(
        413, f"{what} is larger than this server's limit of {max_bytes / 2**20:g} MB (--max-upload-mb); "
        "upload a smaller file"
    )


def copy_limited(src: BinaryIO, dst: BinaryIO, max_bytes: int, what: str) -> int:
    """Copy ``src`` to ``dst`` in chunks; :class:`RequestError` 413 once more than
    ``max_bytes`` arrived. Returns the number of bytes copied."""
    total = 0
    while True:
        chunk = src.read(CHUNK)
        if not chunk:
            return total
        total += len(chunk)
        if total > max_bytes:
            raise too_large(what, max_bytes)
        dst.write(chunk)


def read_image(file: BinaryIO, filename: str, max_bytes: int) -> np.ndarray:
    """An uploaded image as ``[H, W, 3]`` uint8 RGB (in memory; nothing is written to disk)."""
    from PIL import Image, UnidentifiedImageError

    data = io.BytesIO()
    copy_limited(file, data, max_bytes, f"the image {filename!r}")
    data.seek(0)
    try:
        with Image.open(data) as im:
            return np.asarray(im.convert("RGB"))
    except UnidentifiedImageError:
        reason = "not an image format Pillow knows"
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        reason = str(exc)
    raise RequestError(
        415, f"file {filename!r} is not an image that can be read ({reason}); upload a PNG, JPEG, WebP, BMP or TIFF"
    )


def save_video(file: BinaryIO, filename: str, folder: Path, max_bytes: int, max_frames: int) -> Path:
    """Save an uploaded video file or zip of frames into ``folder`` and return what
    :func:`sam2_fast.predictors.video_io.open_video` should open: ``folder/video`` (any
    container PyAV reads) or ``folder/frames/`` (the zip's images as ``00000.png``, ... in the
    order of their numbered names)."""
    folder.mkdir(parents=True, exist_ok=True)
    upload = folder / "upload"
    with open(upload, "wb") as out:
        copy_limited(file, out, max_bytes, f"the video {filename!r}")
    if not zipfile.is_zipfile(upload):
        video = upload.rename(folder / "video")
        return video
    frames = folder / "frames"
    try:
        _extract_frames(upload, frames, filename, max_bytes, max_frames)
    finally:
        upload.unlink()
    return frames


def _extract_frames(archive: Path, frames: Path, filename: str, max_bytes: int, max_frames: int) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [
                m for m in zf.infolist()
                if not m.is_dir() and _frame_name(m.filename) is not None
            ]
            if not members:
                raise RequestError(
                    415, f"zip {filename!r} holds no frames: expected images named by number "
                    f"({', '.join(IMAGE_EXTENSIONS)}), e.g. 00000.jpg, 00001.jpg, ..."
                )
            check_frame_count(len(members), max_frames, f"zip {filename!r}")
            if sum(m.file_size for m in members) > max_bytes:
                raise too_large(f"the frames in zip {filename!r}, unpacked,", max_bytes)
            members.sort(key=lambda m: _natural_key(PurePosixPath(m.filename)))
            frames.mkdir()
            left = max_bytes
            for i, member in enumerate(members):
                suffix = PurePosixPath(member.filename).suffix.lower()
                with zf.open(member) as src, open(frames / f"{i:05d}{suffix}", "wb") as dst:
                    left -= copy_limited(src, dst, left, f"the frames in zip {filename!r}, unpacked,")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
        shutil.rmtree(frames, ignore_errors=True)
        raise RequestError(415, f"zip {filename!r} could not be read ({exc})") from None
    except RequestError:
        shutil.rmtree(frames, ignore_errors=True)
        raise


def _frame_name(name: str) -> Optional[str]:
    """The member's file name if it is a frame image (not macOS metadata), else ``None``."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.suffix.lower() not in IMAGE_EXTENSIONS or path.name.startswith("._") or "__MACOSX" in path.parts:
        return None
    return path.name


def check_frame_count(num_frames: int, max_frames: int, what: str) -> None:
    if num_frames > max_frames:
        raise RequestError(
            422, f"{what} has {num_frames} frames; this server takes at most {max_frames} (--max-frames); "
            "upload a shorter clip"
        )
