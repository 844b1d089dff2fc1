"""Work that several ``sam2-fast`` commands share: reading an image, building a model with
random weights, segmenting one image and writing its PNGs."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from sam2_fast.cli._args import DEFAULT_MODEL


def load_image(path: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"error: IMAGE {path!r} does not exist or is not a file")
    try:
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise SystemExit(f"error: IMAGE {path!r} could not be read as an image: {exc}") from None


def segment(
    predictor,
    image: np.ndarray,
    points: Optional[np.ndarray],
    labels: Optional[np.ndarray],
    box: Optional[np.ndarray],
    multimask: bool,
) -> Tuple[np.ndarray, float, dict]:
    """Embed ``image``, predict, and return the best mask (bool ``[H, W]``), its predicted
    IoU and timings in seconds."""
    t0 = time.perf_counter()
    predictor.set_image(image)
    t1 = time.perf_counter()
    masks, scores, _ = predictor.predict(
        point_coords=points, point_labels=labels, box=box, multimask_output=multimask
    )
    t2 = time.perf_counter()
    best = int(np.argmax(scores))
    return masks[best] > 0.5, float(scores[best]), {"set_image": t1 - t0, "predict": t2 - t1}


def write_outputs(image, mask, points, labels, box, mask_path: Path, overlay_path: Optional[Path]) -> None:
    from sam2_fast.utils.visualize import overlay_masks, save_png

    save_png(mask, mask_path)
    if overlay_path is not None:
        save_png(overlay_masks(image, [mask], points=points, labels=labels, boxes=box), overlay_path)


def requested_random_weights_model(name: str, device, video: bool = False, overrides: Sequence[str] = ()):
    """:func:`sam2_fast.build_sam.build_sam2_random` for a command's ``--random-weights``:
    refuses a checkpoint file as ``--model`` and warns loudly that the masks are meaningless."""
    from sam2_fast.build_sam import build_sam2_random, random_weights_warning

    if Path(name).exists():
        raise SystemExit(
            "error: --random-weights builds the variant named by --model with random weights: "
            f"give a zoo name or Hub id (e.g. {DEFAULT_MODEL}), not the file {name!r}"
        )
    print(random_weights_warning(name), file=sys.stderr)
    return build_sam2_random(name, device, video=video, hydra_overrides_extra=overrides)


def video_predictor(model: str, device, random_weights: bool, image_size: Optional[int]):
    """The :class:`~sam2_fast.SAM2VideoPredictor` of ``--model`` (``--random-weights``:
    :func:`requested_random_weights_model`) at ``--image-size`` (``None``: the variant's),
    without its progress bar."""
    from sam2_fast import SAM2VideoPredictor

    overrides = [] if image_size is None else [f"++model.image_size={image_size}"]
    if not random_weights:
        predictor = SAM2VideoPredictor.from_pretrained(model, device=device, hydra_overrides_extra=overrides)
    else:
        predictor = requested_random_weights_model(model, device, video=True, overrides=overrides)
    predictor.show_progress = False
    return predictor
