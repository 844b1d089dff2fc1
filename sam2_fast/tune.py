"""``sam2-fast tune``: measure every op's backend choice for a model on this machine ahead of
time, so that the first image or video of a real run does not pay for it.

It runs the model's own work -- ``set_image`` on a 720x1280 image, a click, a box, a batch of
64 clicks (the automatic mask generator's batch), and a short tracked clip that fills the
memory bank -- with tuning in ``"remeasure"`` mode (:mod:`sam2_fast.ops._tuning`): every shape
class met is measured again, and the verdicts land in the cache that later runs read. The
weights do not change the timings: a zoo name runs its architecture with random weights (the
objects kept "present" so that the memory is used as with real weights); a checkpoint path is
loaded as it is.

    sam2-fast tune                               # sam2.1-hiera-tiny, the fast mode ("auto")
    sam2-fast tune --model sam2.1-hiera-large --dtype all --objects 1,2
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sam2_fast.errors import InvalidInputError

__all__ = ["TuneRow", "format_rows", "tune"]

DTYPES = ("auto", "float32", "bfloat16")
IMAGE_HW = (720, 1280)
VIDEO_HW = (384, 512)
VIDEO_FRAMES = 9  # the prompt frame + 8: the memory bank fills up (7 frames + pointers)


@dataclass(frozen=True)
class TuneRow:
    """One measured choice: the op, its shape class (with the mode it was met in), each
    candidate's fastest timed call (seconds), notes, and the winner."""

    op: str
    shape_class: str
    seconds: dict[str, float]
    notes: dict[str, str]
    winner: str


def _model(name: str, device: torch.device):
    from sam2_fast import build_sam2_video_predictor
    from sam2_fast.modeling.init import random_state_dict
    from sam2_fast.zoo import get_model_info

    if Path(name).exists():  # a checkpoint: its own variant and weights
        from sam2_fast.build_sam import build_sam2_video_predictor_hf

        return build_sam2_video_predictor_hf(name, device=device).eval(), False
    model = build_sam2_video_predictor(name, None, device=device)
    sd = random_state_dict(get_model_info(name).config, seed=0)
    key = "sam_mask_decoder.pred_obj_score_head.layers.2.bias"
    if key in sd:  # random weights: keep every object "present" so that the memory is used
        sd[key] = sd[key] + 3.0
    model.load_state_dict(sd)
    return model.eval(), True


def _steps(model, objects: Sequence[int], video: bool, folder: Path) -> list[tuple[str, Callable[[], Any]]]:
    """The work to run in each mode, as (label, function) steps."""
    import numpy as np

    from sam2_fast import SAM2ImagePredictor
    from sam2_fast.sample import sample_image, sample_video_objects

    image = sample_image(*IMAGE_HW)
    predictor = SAM2ImagePredictor(model)
    h, w = IMAGE_HW
    clicks = np.stack([np.linspace(20, w - 20, 64), np.linspace(20, h - 20, 64)], 1)[:, None, :]
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("set_image", lambda: predictor.set_image(image)),
        ("a click", lambda: predictor.predict(point_coords=np.array([[w / 3, h / 2]]), point_labels=np.array([1]))),
        ("a box", lambda: predictor.predict(box=np.array([w / 4, h / 4, w / 2, h / 2]), multimask_output=False)),
        ("64 clicks", lambda: predictor.predict(point_coords=clicks, point_labels=np.ones((64, 1)))),
    ]
    if video:
        points = list(sample_video_objects(0, *VIDEO_HW).values())

        def track(n: int) -> None:
            state = model.init_state(str(folder))
            for k in range(n):
                x, y = points[k % len(points)]
                model.add_new_points_or_box(state, 0, k + 1, points=[(x + 7 * (k // len(points)), y)], labels=[1])
            for _ in model.propagate_in_video(state):
                pass

        steps += [(f"track {n} object{'s' * (n > 1)}", lambda n=n: track(n)) for n in objects]
    return steps


def tune(
    model: str = "sam2.1-hiera-tiny",
    dtypes: Iterable[str] = ("auto",),
    device: str | torch.device | None = None,
    objects: Sequence[int] = (1,),
    video: bool = True,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    mode: str = "remeasure",
) -> list[TuneRow]:
    """Measure the backend choices of ``model``'s work in each of ``dtypes`` ("auto": the
    fast mode :func:`~sam2_fast.build_sam2` picks with ``compute_dtype="auto"``) and return
    the verdicts measured (also written to the tuning cache). ``mode``: ``"remeasure"``
    measures every shape class met again; ``"on"`` only those without a verdict."""
    from tqdm.auto import tqdm

    from sam2_fast.ops import _tuning, tuning
    from sam2_fast.precision import resolve_compute_dtype
    from sam2_fast.sample import sample_video_frame

    dtypes = list(dtypes)
    unknown = [d for d in dtypes if d not in DTYPES]
    if not dtypes or unknown:
        raise InvalidInputError(f"dtypes: expected a non-empty list of {list(DTYPES)}, got {dtypes!r}")
    if any(not isinstance(n, int) or n < 1 for n in objects):
        raise InvalidInputError(f"objects: expected object counts >= 1, got {list(objects)!r}")
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net, random = _model(model, device)
    if log is not None and random:
        log(f"{model}: random weights (the timings do not depend on them)")
    modes = list(dict.fromkeys(resolve_compute_dtype(d if d != "float32" else None, device) for d in dtypes))
    remeasured_before, memo_before = set(_tuning._REMEASURED), set(_tuning._memo)
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sam2_fast_tune_")))
        if video:
            from PIL import Image

            for i in range(VIDEO_FRAMES):
                Image.fromarray(sample_video_frame(i, *VIDEO_HW)).save(folder / f"{i:05d}.jpg", quality=95)
        stack.enter_context(tuning(mode))
        stack.enter_context(torch.inference_mode())
        net.show_progress = False
        plan = [(mode, label, fn) for mode in modes for label, fn in _steps(net, objects, video, folder)]
        bar = tqdm(plan, desc="tuning", unit="step", disable=not progress)
        for mode, label, fn in bar:
            name = "float32" if mode is None else str(mode).removeprefix("torch.")
            bar.set_postfix_str(f"{name}: {label}")
            net.set_compute_dtype(mode)
            start = time.perf_counter()
            with net.compute_context():
                fn()
            if log is not None:
                log(f"{name}: {label} ({time.perf_counter() - start:.1f} s)")
    if mode == "remeasure":
        measured = _tuning._REMEASURED - remeasured_before  # (machine, op, shape class)
    else:
        measured = set(_tuning._memo) - memo_before
    rows = [
        TuneRow(key[1], key[2], dict(verdict.seconds), dict(verdict.notes), verdict.winner)
        for key, verdict in _tuning._memo.items()
        if key in measured
    ]
    return sorted(rows, key=lambda r: (r.op, r.shape_class))


def format_rows(rows: Sequence[TuneRow], machine: str = "") -> str:
    """A markdown table: op, shape class, each candidate's time (the winner in bold)."""
    lines = [machine, ""] if machine else []
    lines += ["| op | shape class | candidates (fastest call, ms) | winner |", "|---|---|---|---|"]
    for r in rows:
        cells = []
        for name, seconds in sorted(r.seconds.items(), key=lambda item: item[1]):
            cell = f"{name} {seconds * 1e3:.2f}"
            cells.append(f"**{cell}**" if name == r.winner else cell + (" (dropped)" if name in r.notes else ""))
        cells += [f"{name}: failed" for name in r.notes if name not in r.seconds]
        lines.append(f"| {r.op} | {r.shape_class} | {', '.join(cells)} | {r.winner} |")
    return "\n".join(lines)
