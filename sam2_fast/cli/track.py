"""``sam2-fast track``: track objects through a video from clicks, boxes or masks.

Writes one PNG per object and frame, a COCO-RLE ``annotations.json`` and an overlay video.
See ``sam2-fast track --help`` and the README's "Video" section.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Sequence, Tuple

import numpy as np

from sam2_fast.cli._args import (
    DEFAULT_MODEL,
    frame_index_arg,
    image_size_arg,
    positive_float,
    positive_int,
    track_box_arg,
    track_point_arg,
)
from sam2_fast.cli._shared import video_predictor
from sam2_fast.predictors.tracking import (
    FramePrompt,
    Tracked,
    add_prompts,
    check_prompt_frames,
    propagate,
    track_passes,
    write_overlay_video,
)

if TYPE_CHECKING:  # pragma: no cover - for type hints only (imports torch)
    from sam2_fast.predictors.video_io import FrameSource
    from sam2_fast.predictors.video_state import InferenceState



# ---------------------------------------------------------------- argument types
def track_mask_arg(text: str) -> Tuple[int, str, int]:
    """``FRAME,PNG[,OBJ]`` -> (frame, png path, obj); a last field of digits only is OBJ
    (default 1), anything else belongs to the path."""
    option = "--mask FRAME,PNG[,OBJ]"
    frame, sep, rest = text.partition(",")
    path, obj = rest, "1"
    head, sep2, tail = rest.rpartition(",")
    if sep2 and tail.strip().isdigit():
        path, obj = head, tail
    if not sep or not path or not frame.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{option} expects an integer frame, a PNG path and an optional object id, got {text!r}")
    return int(frame), path, int(obj)


# ---------------------------------------------------------------- track
def collect_prompts(
    points: Sequence[Tuple[int, float, float, int, int]],
    boxes: Sequence[Tuple[int, Tuple[float, float, float, float], int]],
    masks: Sequence[Tuple[int, str, int]],
) -> List[FramePrompt]:
    """Group parsed ``--point`` / ``--box`` / ``--mask`` options into one prompt per
    (frame, object), in frame order (then object id)."""
    prompts: Dict[Tuple[int, int], FramePrompt] = {}

    def prompt(frame: int, obj: int) -> FramePrompt:
        return prompts.setdefault((frame, obj), FramePrompt(frame, obj))

    for frame, x, y, label, obj in points:
        p = prompt(frame, obj)
        p.points.append((x, y))
        p.labels.append(label)
    for frame, box, obj in boxes:
        p = prompt(frame, obj)
        if p.box is not None:
            raise SystemExit(f"error: two --box for object {obj} on frame {frame}; give one box per object and frame")
        p.box = box
    for frame, path, obj in masks:
        p = prompt(frame, obj)
        if p.mask_path is not None or p.points or p.box is not None:
            raise SystemExit(
                f"error: --mask for object {obj} on frame {frame} cannot be combined with another "
                "--mask, --point or --box for the same object and frame"
            )
        p.mask_path = path
    if not prompts:
        raise SystemExit("error: give at least one --point FRAME,X,Y, --box FRAME,X0,Y0,X1,Y1 or --mask FRAME,PNG")
    return [prompts[key] for key in sorted(prompts)]


def load_mask(path: str, height: int, width: int) -> np.ndarray:
    """A ``--mask`` PNG as a bool ``[H, W]`` mask (nonzero = object); it must have the
    video's size."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"error: --mask {path!r} does not exist or is not a file")
    try:
        with Image.open(p) as im:
            mask = np.asarray(im.convert("L")) > 0
    except (UnidentifiedImageError, OSError) as exc:
        raise SystemExit(f"error: --mask {path!r} could not be read as an image: {exc}") from None
    if mask.shape != (height, width):
        raise SystemExit(
            f"error: --mask {path!r} is {mask.shape[1]}x{mask.shape[0]} but the video is "
            f"{width}x{height}; give a mask of the video's size"
        )
    return mask


def _open_video(path: str):
    from sam2_fast.predictors.video_io import VideoReadError, open_video

    try:
        return open_video(path)
    except VideoReadError as exc:
        raise SystemExit(f"error: VIDEO {path!r} could not be read: {exc}") from None


def write_annotations(
    path: Path,
    tracked: Tracked,
    video: str,
    source: FrameSource,
    fps: float,
    model: str,
    random_weights: bool,
) -> None:
    """Write the tracked masks as COCO-style JSON (format:
    :func:`sam2_fast.predictors.tracking.annotations_document`)."""
    from sam2_fast.predictors.tracking import annotations_document

    document = annotations_document(tracked, video, source.height, source.width, len(source), fps, model, random_weights)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))


def _propagate(predictor, state: "InferenceState", passes: Sequence[Tuple[int, bool, int]], mask_dir: Path, quiet: bool) -> Tracked:
    """Run the tracking passes with one progress bar, writing each frame's mask PNGs as they
    come; a frame tracked again (by the backward pass) keeps its latest masks."""
    from tqdm import tqdm

    from sam2_fast.utils.visualize import save_png

    total = sum(count for _, _, count in passes)
    with tqdm(total=total, desc="track", unit="frame", file=sys.stderr, disable=quiet) as bar:

        def on_frame(frame_idx: int, obj_ids: Sequence[int], masks: np.ndarray) -> None:
            for obj_id, mask in zip(obj_ids, masks):
                save_png(mask, mask_dir / f"{frame_idx:05d}_obj{obj_id}.png")
            bar.update()

        return propagate(predictor, state, passes, on_frame)


def _track(args: argparse.Namespace, prompts: List[FramePrompt], source: FrameSource) -> int:
    n = len(source)
    try:
        check_prompt_frames(prompts, n, "VIDEO")
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    if args.start is not None and args.start >= n:
        raise SystemExit(f"error: --start {args.start} is outside VIDEO, which has {n} frames (0..{n - 1})")
    for p in prompts:  # a bad mask file fails before the model loads
        if p.mask_path is not None:
            p.mask = load_mask(p.mask_path, source.height, source.width)
    fps = args.fps or source.fps or 24.0
    predictor = video_predictor(args.model, args.device, args.random_weights, args.image_size)

    t0 = time.perf_counter()
    state = predictor.init_state(source)
    try:
        add_prompts(predictor, state, prompts)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    passes = track_passes(prompts, args.start, args.reverse, args.max_frames, n)
    out_dir = Path(args.out)
    tracked = _propagate(predictor, state, passes, out_dir / "masks", args.quiet)
    seconds = time.perf_counter() - t0

    written = [f"{out_dir / 'masks'}/ ({sum(map(len, tracked.values()))} PNGs)", str(out_dir / "annotations.json")]
    write_annotations(out_dir / "annotations.json", tracked, str(args.video), source, fps,
                      args.model, args.random_weights)
    if not args.no_video:
        codec = write_overlay_video(out_dir / "overlay.mp4", source, tracked, prompts, fps)
        written.append(f"{out_dir / 'overlay.mp4'} ({codec}, {fps:g} fps)")
    obj_ids = sorted({obj_id for masks in tracked.values() for obj_id in masks})
    steps = sum(count for _, _, count in passes)
    print(
        f"tracked object(s) {', '.join(map(str, obj_ids))} over {len(tracked)} of {n} frames with "
        f"{args.model}{' (RANDOM weights)' if args.random_weights else ''} on {predictor.device} "
        f"in {seconds:.1f}s ({steps / seconds:.2f} frames/s)\nwrote {', '.join(written)}"
    )
    return 0


def cmd_track(args: argparse.Namespace) -> int:
    from sam2_fast.predictors.video_io import VideoReadError

    prompts = collect_prompts(args.point, args.box, args.mask)
    if not args.no_video and importlib.util.find_spec("av") is None:
        raise SystemExit("error: writing overlay.mp4 needs PyAV: pip install av (or pass --no-video)")
    source = _open_video(args.video)
    try:
        return _track(args, prompts, source)
    except VideoReadError as exc:
        raise SystemExit(f"error: VIDEO {args.video!r} could not be read: {exc}") from None
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def add_parser(sub) -> None:
    """The ``track`` subcommand of the ``sam2-fast`` parser."""
    p = sub.add_parser("track", help="track objects through a video from clicks, boxes or masks")
    p.add_argument("video", metavar="VIDEO", help="a video file (PyAV) or a folder of JPEG/PNG frames named by number")
    p.add_argument("--point", action="append", type=track_point_arg, default=[], metavar="FRAME,X,Y[,LABEL][,OBJ]",
                   help="a click in pixels on frame FRAME; LABEL 1 = object (default), 0 = background; "
                        "OBJ the object id (default 1); clicks with the same FRAME and OBJ form one prompt")
    p.add_argument("--box", action="append", type=track_box_arg, default=[], metavar="FRAME,X0,Y0,X1,Y1[,OBJ]",
                   help="a box in pixels on frame FRAME for object OBJ (default 1)")
    p.add_argument("--mask", action="append", type=track_mask_arg, default=[], metavar="FRAME,PNG[,OBJ]",
                   help="a mask PNG of the video's size (nonzero = object) on frame FRAME for object OBJ (default 1)")
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME|PATH",
                   help=f"zoo name, Hub id or checkpoint path (default {DEFAULT_MODEL})")
    p.add_argument("--out", default="track_out", metavar="DIR",
                   help="output folder: masks/, annotations.json, overlay.mp4 (default track_out)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--image-size", type=image_size_arg, metavar="PIXELS",
                   help="model input size, a multiple of 32 (default: the variant's, 1024); smaller "
                        "is faster and coarser")
    p.add_argument("--start", type=frame_index_arg, metavar="FRAME",
                   help="track forward from this frame (default: the first prompted frame)")
    p.add_argument("--reverse", action="store_true",
                   help="then also track backward, from the later of the start and the last prompted frame")
    p.add_argument("--max-frames", type=positive_int, metavar="N",
                   help="track at most N frames in each direction (the start frame included)")
    p.add_argument("--no-video", action="store_true", help="do not write overlay.mp4")
    p.add_argument("--fps", type=positive_float, metavar="F",
                   help="frame rate of overlay.mp4 (default: the video's, else 24)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--random-weights", action="store_true",
                   help="build the --model variant with random weights instead of loading a checkpoint "
                        "(meaningless masks; for trying out the command)")
    p.set_defaults(func=cmd_track)
