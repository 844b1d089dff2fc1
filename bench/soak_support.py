"""Soak runs of the stream API: many frames through :class:`~sam2_fast.SAM2StreamPredictor`
with the process's resident memory (RSS) sampled, to catch memory that grows with the stream.
Measuring tooling, not library code: ``bench/bench_soak.py`` runs it on 2 000 frames,
``tests/test_soak.py`` on 300.

Usage::

    stream = SAM2StreamPredictor(soak_video_predictor(image_size=64))
    result = run_soak(stream, num_frames=300, warmup_frames=100)
    print(result.table())
    assert not result.leak_reasons(), result.table()

The workload repeats every ``cycle`` frames so that every piece of the stream's bookkeeping
runs again and again, not once: two objects are tracked all along (a click and a box on the
first frame) and, in each cycle, a third object with a new id is clicked, clicked again on a
later frame (a second prompted frame for it) and then removed; ``correct_tracked_objects``
adds corrections of the first two in every cycle.

Before each sample, ``gc.collect()`` and glibc's ``malloc_trim(0)`` give freed memory back to
the system, so the RSS follows what is held rather than what the allocator keeps around. The
leak criterion is a trend: the least-squares slope of RSS against the frame index must stay
under ``max_slope`` bytes per frame in *both* halves of the window after the warm-up, so a
one-time step (a new malloc arena, a pool that grows once) does not count as a leak, while
memory retained on every frame does. The tensors held by the session
(:meth:`~sam2_fast.SAM2StreamPredictor.state_tensor_bytes`) are deterministic and must not
grow at all: at the same point of the cycle they are the same after the warm-up.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import importlib.util
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from sam2_fast.errors import InvalidInputError

if TYPE_CHECKING:
    from sam2_fast.predictors.stream_predictor import SAM2StreamPredictor
    from sam2_fast.predictors.video_predictor import SAM2VideoPredictor

logger = logging.getLogger(__name__)

#: Default leak threshold, bytes per frame. Calibrated on the 2-core Xeon at image size 64 with
#: 96x128 frames (tests/test_soak.py): clean runs measure at most 0.4 KiB/frame in either
#: half-window; keeping each frame's image features (a [1, 256, 4, 4] float32 tensor, 16 KiB)
#: measures 21 KiB/frame, a 256x256 float32 mask per frame 257 KiB/frame.
DEFAULT_MAX_SLOPE = 8 * 1024

#: Frame size of the soak's generated video (pixels); small, the workload is the point.
SOAK_HW = (96, 128)


# ---------------------------------------------------------------------------------------------
# process memory


def _statm_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _psutil_rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _rss_reader() -> Tuple[Callable[[], int], str]:
    if os.path.exists("/proc/self/statm"):
        return _statm_rss, "/proc/self/statm"
    if importlib.util.find_spec("psutil") is None:
        raise RuntimeError(
            "process_rss_bytes: the current resident memory cannot be read here (no "
            "/proc/self/statm, which Linux has, and psutil is not installed); "
            "pip install psutil to run soak tests on this system"
        )
    return _psutil_rss, "psutil"


def process_rss_bytes() -> int:
    """The current resident set size of this process, in bytes (``/proc/self/statm`` on
    Linux, else psutil). ``resource.getrusage`` is no substitute: it gives the peak, which
    cannot go down, so it hides memory that is given back."""
    return _rss_reader()[0]()


@functools.lru_cache(maxsize=None)
def _malloc_trim() -> Optional[Callable[[], None]]:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim  # glibc only (musl has none)
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


def release_free_memory() -> None:
    """Collect garbage and hand the C allocator's free pages back to the system (glibc's
    ``malloc_trim``, where there is one), so that RSS measures memory in use."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim()


# ---------------------------------------------------------------------------------------------
# results


@dataclass
class SoakSample:
    """Memory after frame ``frame`` (0-based) has been tracked."""

    frame: int
    rss_bytes: int
    state_bytes: int
    num_objects: int
    seconds: float  # since the first frame was given


def _slope(frames: Sequence[int], values: Sequence[int]) -> float:
    """Least-squares slope of ``values`` against ``frames`` (units of values per frame)."""
    if len(frames) < 2:
        return 0.0
    x = np.asarray(frames, np.float64)
    y = np.asarray(values, np.float64)
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / (x * x).sum())


@dataclass
class SoakResult:
    """Samples of one soak run and the statistics of the window after the warm-up."""

    num_frames: int
    warmup_frames: int
    cycle: int
    sample_every: int
    seconds: float
    rss_source: str
    samples: List[SoakSample] = field(default_factory=list)

    @property
    def window(self) -> List[SoakSample]:
        """Samples after the warm-up (frames ``>= warmup_frames``)."""
        return [s for s in self.samples if s.frame >= self.warmup_frames]

    @property
    def seconds_per_frame(self) -> float:
        return self.seconds / max(self.num_frames, 1)

    @property
    def rss_start(self) -> int:
        """RSS at the first sample after the warm-up, bytes."""
        return self.window[0].rss_bytes

    @property
    def rss_end(self) -> int:
        return self.window[-1].rss_bytes

    @property
    def rss_growth(self) -> int:
        """RSS at the last sample minus at the first after the warm-up, bytes."""
        return self.rss_end - self.rss_start

    @property
    def rss_slope(self) -> float:
        """Least-squares slope of RSS over the window after the warm-up, bytes per frame."""
        w = self.window
        return _slope([s.frame for s in w], [s.rss_bytes for s in w])

    @property
    def rss_half_slopes(self) -> Tuple[float, float]:
        """The slope over the first and over the second half of the window, bytes per frame."""
        w = self.window
        half = len(w) // 2
        first, second = w[: half + 1], w[half:]
        return (
            _slope([s.frame for s in first], [s.rss_bytes for s in first]),
            _slope([s.frame for s in second], [s.rss_bytes for s in second]),
        )

    @property
    def state_bytes_by_phase(self) -> Dict[int, List[int]]:
        """``state_tensor_bytes()`` after the warm-up, grouped by the point of the cycle
        (``frame % cycle``); each list holds one value per cycle."""
        phases: Dict[int, List[int]] = {}
        for s in self.window:
            phases.setdefault(s.frame % self.cycle, []).append(s.state_bytes)
        return phases

    @property
    def state_bytes_max(self) -> int:
        return max(s.state_bytes for s in self.window)

    def leak_reasons(self, max_slope: float = DEFAULT_MAX_SLOPE) -> List[str]:
        """Why the run looks like a leak; empty when it does not.

        A leak is RSS growing by more than ``max_slope`` bytes per frame in both halves of
        the window after the warm-up, or session tensors that differ between cycles at the
        same point of the cycle.
        """
        if self.num_frames - self.warmup_frames < 2 * self.cycle or len(self.window) < 4:
            raise InvalidInputError(
                f"leak_reasons: {self.num_frames - self.warmup_frames} frames and {len(self.window)} "
                f"samples after the warm-up, expected two cycles ({2 * self.cycle} frames) and 4 "
                "samples at least; run more frames or a shorter warm-up"
            )
        reasons = []
        slopes = self.rss_half_slopes
        if min(slopes) > max_slope:
            reasons.append(
                f"RSS grows by {slopes[0] / 1024:.1f} and {slopes[1] / 1024:.1f} KiB/frame in the two "
                f"halves of frames {self.warmup_frames}-{self.num_frames - 1} (limit "
                f"{max_slope / 1024:.1f} KiB/frame; {self.rss_growth / 2**20:+.1f} MiB in all)"
            )
        grown = {p: v for p, v in self.state_bytes_by_phase.items() if len(set(v)) > 1}
        if grown:
            phase, values = min(grown.items())
            reasons.append(
                f"session tensors change between cycles at {len(grown)} point(s) of the cycle, "
                f"e.g. frame {phase} mod {self.cycle}: {values} bytes"
            )
        return reasons

    def summary(self) -> Dict[str, float]:
        """The headline numbers (bytes, bytes per frame, seconds), for JSON or extra_info."""
        first, second = self.rss_half_slopes
        return {
            "frames": self.num_frames,
            "warmup_frames": self.warmup_frames,
            "seconds_per_frame": round(self.seconds_per_frame, 4),
            "rss_first_sample": self.samples[0].rss_bytes,
            "rss_start": self.rss_start,
            "rss_end": self.rss_end,
            "rss_growth": self.rss_growth,
            "rss_slope_bytes_per_frame": round(self.rss_slope, 1),
            "rss_slope_first_half": round(first, 1),
            "rss_slope_second_half": round(second, 1),
            "state_bytes_max": self.state_bytes_max,
        }

    def as_dict(self) -> Dict[str, object]:
        """Summary plus every sample (JSON-serialisable)."""
        return {**self.summary(), "samples": [asdict(s) for s in self.samples]}

    def table(self, rows: int = 12) -> str:
        """A short text report: the headline numbers and about ``rows`` of the samples."""
        mib = 2**20
        s = self.summary()
        lines = [
            f"soak: {self.num_frames} frames in {self.seconds:.0f} s ({s['seconds_per_frame']:.3f} s/frame), "
            f"warm-up {self.warmup_frames} frames, cycle {self.cycle}, RSS from {self.rss_source}",
            f"RSS {s['rss_first_sample'] / mib:.1f} MiB at the first sample, {self.rss_start / mib:.1f} MiB "
            f"after the warm-up, {self.rss_end / mib:.1f} MiB at the end ({self.rss_growth / mib:+.2f} MiB)",
            f"RSS slope after the warm-up {self.rss_slope / 1024:+.2f} KiB/frame "
            f"(halves {s['rss_slope_first_half'] / 1024:+.2f} / {s['rss_slope_second_half'] / 1024:+.2f})",
            f"session tensors at most {self.state_bytes_max / 1024:.0f} KiB after the warm-up",
            "",
            f"{'frame':>6} {'RSS MiB':>9} {'state KiB':>10} {'objects':>8} {'s':>7}",
        ]
        step = max(1, len(self.samples) // rows)
        shown = self.samples[::step]
        if shown[-1] is not self.samples[-1]:
            shown.append(self.samples[-1])
        for x in shown:
            lines.append(
                f"{x.frame:>6} {x.rss_bytes / mib:>9.1f} {x.state_bytes / 1024:>10.0f} "
                f"{x.num_objects:>8} {x.seconds:>7.1f}"
            )
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the run


def soak_video_predictor(image_size: int = 64, seed: int = 0) -> "SAM2VideoPredictor":
    """sam2.1-hiera-tiny with random weights at a small ``image_size`` on the CPU, tuned so
    that objects are mostly present (so their memories are written), for soak runs."""
    from sam2_fast.build_sam import build_sam2_video_predictor
    from sam2_fast.modeling.config import PRESETS
    from sam2_fast.modeling.init import random_state_dict

    predictor = build_sam2_video_predictor(
        "sam2.1-hiera-tiny", None, device="cpu", hydra_overrides_extra=[f"++model.image_size={image_size}"]
    )
    sd = random_state_dict(PRESETS["sam2.1-hiera-tiny"], seed=seed)
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += 3.0  # mostly "object present"
    predictor.load_state_dict(sd)
    predictor.show_progress = False
    return predictor.eval()


def run_soak(
    stream: "SAM2StreamPredictor",
    num_frames: int,
    warmup_frames: Optional[int] = None,
    sample_every: int = 5,
    cycle: int = 50,
    hw: Tuple[int, int] = SOAK_HW,
    num_threads: Optional[int] = 1,
    correct_tracked_objects: bool = False,
    progress: Optional[Callable[[SoakSample], None]] = None,
) -> SoakResult:
    """Track ``num_frames`` generated frames with ``stream`` (a fresh
    :class:`~sam2_fast.SAM2StreamPredictor`, or anything with its methods) and sample memory.

    Arguments:
      num_frames: frames to track.
      warmup_frames: frames before the window the statistics are taken over (default: half
        the run). Make it and ``num_frames`` multiples of ``cycle`` so the window holds whole
        cycles.
      sample_every: frames between samples; ``cycle`` must be a multiple of it.
      cycle: frames between two additions of the transient object (at least 40: it is
        added at 10, clicked again at 20 and removed at ``cycle - 10`` within the cycle).
      hw: ``(height, width)`` of the frames, pixels.
      num_threads: torch's intra-op threads during the run (restored after); None leaves
        them. One by default: the soak's small tensors gain nothing from more, and on a
        shared 2-core machine OpenMP threads waiting for a busy core made frames 10x slower.
      correct_tracked_objects: also correct the two objects tracked all along, in every
        cycle (a click on one and a mask on the other, at frame 25 of the cycle). Off by
        default: the stream keeps the prompts of every corrected frame for good (a
        ``[1, 1, image_size, image_size]`` float mask per ``add_new_mask``), so the session
        grows with each correction; ``tests/test_soak.py`` records it as an expected failure.
      progress: called with each sample (for logging long runs).
    """
    warmup_frames = num_frames // 2 if warmup_frames is None else warmup_frames
    if cycle < 40 or cycle % sample_every:
        raise InvalidInputError(
            f"cycle: expected at least 40 frames and a multiple of sample_every={sample_every}, got {cycle}"
        )
    if not 0 <= warmup_frames < num_frames:
        raise InvalidInputError(
            f"warmup_frames: expected 0 <= warmup_frames < num_frames={num_frames}, got {warmup_frames}"
        )
    import torch

    threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _run(
            stream, num_frames, warmup_frames, sample_every, cycle, hw, correct_tracked_objects, progress
        )
    finally:
        torch.set_num_threads(threads)


def _run(
    stream: "SAM2StreamPredictor",
    num_frames: int,
    warmup_frames: int,
    sample_every: int,
    cycle: int,
    hw: Tuple[int, int],
    correct_tracked_objects: bool,
    progress: Optional[Callable[[SoakSample], None]],
) -> SoakResult:
    from sam2_fast.sample import sample_video_frame, sample_video_objects

    height, width = hw
    period = 32  # the generated objects move across the frame in ~32 frames; loop them
    frames = [sample_video_frame(i, height, width) for i in range(period)]
    centres = [sample_video_objects(i, height, width) for i in range(period)]
    read_rss, source = _rss_reader()
    if source != "/proc/self/statm":
        logger.info("soak: reading RSS with %s", source)
    result = SoakResult(num_frames, warmup_frames, cycle, sample_every, 0.0, source)
    half_box = max(2, min(height, width) // 10)
    x, y = centres[0]["square"]  # the square does not move
    square = [x - half_box, y - half_box, x + half_box, y + half_box]
    square_mask = np.zeros((height, width), bool)
    square_mask[square[1] : square[3], square[0] : square[2]] = True
    start = time.perf_counter()
    for f in range(num_frames):
        k = f % period
        stream.track(frames[k])
        phase, transient = f % cycle, ("transient", f // cycle)
        if f == 0:
            stream.add_new_prompt("disc", points=[centres[k]["disc"]], labels=[1])
            stream.add_new_prompt("square", box=square)
        if phase == 10:
            stream.add_new_prompt(transient, points=[centres[k]["triangle"]], labels=[1])
        if phase == 20:
            x, y = centres[k]["triangle"]
            stream.add_new_prompt(transient, points=[(x, y), (x, max(0, y - half_box))], labels=[1, 1])
        if phase == 25 and correct_tracked_objects:
            stream.add_new_prompt("disc", points=[centres[k]["disc"]], labels=[1])
            stream.add_new_mask("square", square_mask)
        if phase == cycle - 10:
            stream.remove_object(transient)
        if f % sample_every == sample_every - 1 or f == num_frames - 1:
            release_free_memory()
            sample = SoakSample(
                frame=f,
                rss_bytes=read_rss(),
                state_bytes=stream.state_tensor_bytes(),
                num_objects=len(stream.obj_ids),
                seconds=time.perf_counter() - start,
            )
            result.samples.append(sample)
            if progress is not None:
                progress(sample)
    result.seconds = time.perf_counter() - start
    return result
