"""``sam2-fast bench``: this project against the official ``sam2`` package, side by side, in
one process, on the same random weights and inputs.

Each benchmark runs both implementations in interleaved repetitions (ours, official, ours,
official, ...) after a warm-up, and reports medians, so slow drifts of a shared machine hit
both alike. The machine's matrix-multiply peak (fp32 and bf16 GEMM, median of a 2048^3
product) is measured in the same run, and every model benchmark reports its FLOPs (counted
with ``torch.utils.flop_counter`` on this project's model, the fused ops included) and the
fraction of the machine's GEMM peak it reaches (the faster of fp32 and bf16).

    sam2-fast bench                          # everything, sam2.1-hiera-tiny, 3 repetitions
    sam2-fast bench --only set_image,predict --repeats 5 --out bench_results
    sam2-fast bench --quick                  # one repetition, AMG at 8 points per side

This project runs in its fast mode (``compute_dtype="auto"``) and its exact float32 mode; the
official package in float32 and under bfloat16 autocast. Each benchmark has two rows: the fast
mode against the faster official mode, and exact float32 against official float32. Before
timing, the backend choices this machine has no verdict for are measured (``sam2-fast tune``),
so the timings are those of a tuned machine. Without the official package the table shows
this project's numbers alone.

One file of ~600 lines: tooling, not library; each benchmark is a short function over the
same session (models, timing, table), and they read best side by side.
"""

from __future__ import annotations

import importlib
import json
import math
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sam2_fast._bench import BENCHMARKS
from sam2_fast.errors import InvalidInputError
from sam2_fast.precision import matmul_rate

IMAGE_HW = (720, 1280)
VIDEO_HW = (384, 512)
WARM_FRAMES = 8  # frame 8 reads a full memory bank (the prompt frame + 6 previous frames)


@dataclass
class Result:
    """One row of the table: medians in seconds, None where a side did not run."""

    name: str
    ours: float | None
    official: float | None = None
    official_label: str = "official"
    gflop: float | None = None
    note: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.official is None or self.ours <= 0:
            return None
        return self.official / self.ours


# ---------------------------------------------------------------------------------------------
# timing


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1,
                setup: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """Seconds of each call of each function, the functions taking turns in every repetition."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for rep in range(warmup + repeats):
        for name, fn in fns.items():
            if setup is not None:
                setup(name)
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            if rep >= warmup:
                times[name].append(elapsed)
    return times


#: seconds one product of the GEMM peak may take; slower (a dtype with no fast kernel, e.g.
#: bfloat16 under ONEDNN_MAX_CPU_ISA=AVX2: a 2048^3 product ran for minutes) uses a smaller size
PEAK_PRODUCT_BUDGET_S = 1.0


def gemm_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> tuple[float, int]:
    """``(median FLOP/s, size)`` of a ``size``^3 matrix product in ``dtype`` on the CPU, or of
    a smaller one where a product would take over :data:`PEAK_PRODUCT_BUDGET_S`."""
    return matmul_rate(dtype, size, repeats, warmup=2, budget_s=PEAK_PRODUCT_BUDGET_S)


def _fused_op_flops() -> None:
    """FLOP formulas for this project's fused attention ops and for torch's CPU flash
    attention, so ``FlopCounterMode`` counts attention everywhere (2 FLOPs per multiply-add of
    QK^T and PV, as torch's formulas for its CUDA attention kernels)."""
    from torch.utils.flop_counter import register_flop_formula

    importlib.import_module("sam2_fast.ops")  # registers the custom ops

    ops = torch.ops.sam2_fast
    if getattr(_fused_op_flops, "done", False):
        return

    @register_flop_formula(ops.rope_attention)
    def _rope(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
        b, h, nq, d = q_shape
        return 2 * b * h * nq * k_shape[2] * (d + v_shape[3])

    @register_flop_formula(ops.attention)
    def _plain(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
        b, h, nq, d = q_shape
        return 2 * b * h * nq * k_shape[2] * (d + v_shape[3])

    @register_flop_formula(ops.window_attention)
    def _window(qkv_shape, num_heads, window_size, q_stride=1, *args, out_shape=None, **kwargs) -> int:
        b, hh, ww, c3 = qkv_shape
        c = c3 // 3
        if window_size > 0:
            windows = math.ceil(hh / window_size) * math.ceil(ww / window_size)
            n_k = window_size**2
            n_q = n_k // q_stride**2
        else:
            windows, n_k, n_q = 1, hh * ww, (hh // q_stride) * (ww // q_stride)
        return 4 * b * windows * n_q * n_k * c

    from sam2_fast._ext import load_extension

    if load_extension()[0] is not None and hasattr(ops, "upscale_masks"):

        @register_flop_formula(ops.upscale_masks)
        def _upscale(base_shape, left_shape, right_shape, shared_shape, scales_shape, ln_weight_shape,
                     ln_bias_shape, eps, w2_shape, bias2_shape, hyper_shape, *args, out_shape=None,
                     **kwargs) -> int:
            # per prompt and image token: the low-rank and shared parts of the first transposed
            # convolution, the second one (4 pixels), the hypernetwork product (16 pixels)
            num_f, width1 = base_shape
            n, m, c2 = hyper_shape
            per_token = 2 * (left_shape[1] + shared_shape[0]) * width1
            per_token += 2 * 4 * ln_weight_shape[0] * w2_shape[1] + 2 * 16 * c2 * m
            return n * num_f * per_token

    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is not None:  # torch counts its CUDA attention kernels but not this one

        @register_flop_formula(cpu_sdpa)
        def _cpu_sdpa(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
            b, h, nq, d = q_shape
            return 2 * b * h * nq * k_shape[-2] * (d + v_shape[-1])

    _fused_op_flops.done = True


def count_gflop(fn: Callable[[], Any]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    _fused_op_flops()
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


# ---------------------------------------------------------------------------------------------
# the benchmarks


class Session:
    """Models and inputs shared by the benchmarks of one run. This project runs in its fast
    mode (``compute_dtype="auto"``: bfloat16 where this CPU multiplies it faster than float32)
    and in its exact float32 mode; the official package in float32 and under bfloat16
    autocast, the faster of which is each fast row's baseline."""

    def __init__(self, model: str, repeats: int, with_official: bool, amg_points: int,
                 log: Callable[[str], None]) -> None:
        from sam2_fast.modeling.config import PRESETS
        from sam2_fast.modeling.init import random_state_dict
        from sam2_fast.precision import resolve_compute_dtype
        from sam2_fast.sample import sample_image

        self.name = model
        self.repeats = repeats
        self.amg_points = amg_points
        self.log = log
        self.state_dict = random_state_dict(PRESETS[model], seed=1)
        self.image = sample_image(*IMAGE_HW)
        self.fast_dtype = resolve_compute_dtype("auto", torch.device("cpu"))
        self.official_error: str | None = None
        if with_official:
            from sam2_fast._bench.official import OfficialUnavailable, import_official

            try:
                import_official()
            except OfficialUnavailable as exc:
                self.official_error = str(exc)
        else:
            self.official_error = "not requested (--no-official)"
        self._ours: dict[bool, Any] = {}
        self._official = None
        self.peaks: dict[str, float] = {}

    @property
    def has_official(self) -> bool:
        return self.official_error is None

    @property
    def fast_name(self) -> str:
        return "float32" if self.fast_dtype is None else str(self.fast_dtype).removeprefix("torch.")

    @property
    def fast_differs(self) -> bool:
        """Whether the fast mode is not the exact one on this machine (then both are timed)."""
        return self.fast_dtype is not None

    def ours(self, fast: bool = False):
        fast = fast and self.fast_differs
        if fast not in self._ours:
            from sam2_fast.build_sam import build_sam2

            model = build_sam2(self.name, None, device="cpu", compute_dtype=self.fast_dtype if fast else None)
            model.load_state_dict(self.state_dict)
            self._ours[fast] = model
        return self._ours[fast]

    def official(self):
        if self._official is None:
            from sam2_fast._bench.official import official_model

            self._official = official_model(self.name, self.state_dict)
        return self._official


def in_bf16_autocast(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` run under CPU bfloat16 autocast (the official package's fast mode)."""

    def run() -> Any:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fn()

    return run


def mode_rows(s: Session, label: str, times: dict[str, list[float]], gflop: float | None = None,
              gflop_fast: float | None = None) -> list[Result]:
    """The rows of one benchmark from the samples of ``ours`` (fast mode), ``ours exact``
    (absent when the fast mode is float32 here), ``official`` and ``official bf16``: the fast
    mode against the faster official mode, and the exact mode against official float32."""
    exact = times.get("ours exact", times["ours"])
    official = {name: times[name] for name in ("official", "official bf16") if name in times}
    rows = []
    if official:
        best = min(official, key=lambda name: statistics.median(official[name]))
        rows.append(_result(f"{label}: fast mode ({s.fast_name}) vs the faster official mode",
                            {"ours": times["ours"], "official": official[best]}, gflop=gflop_fast or gflop,
                            official_label=best.replace("official", "official fp32") if best == "official" else best))
        rows.append(_result(f"{label}: exact fp32 vs official fp32", {"ours": exact, "official": official["official"]},
                            gflop=gflop))
    else:
        rows.append(_result(f"{label}: fast mode ({s.fast_name})", {"ours": times["ours"]}, gflop=gflop_fast or gflop))
        if s.fast_differs:
            rows.append(_result(f"{label}: exact fp32", {"ours": exact}, gflop=gflop))
    return rows


def bench_cold_start(s: Session) -> list[Result]:
    """A fresh Python: import, build the model and load a checkpoint (the tiny one by default)."""
    folder = Path(tempfile.mkdtemp(prefix="sam2_fast_bench_"))
    ckpt = folder / "model.pt"
    torch.save({"model": s.state_dict}, ckpt)
    from sam2_fast._bench.official import official_config

    scripts = {
        "ours": f"from sam2_fast import build_sam2\nbuild_sam2({s.name!r}, {str(ckpt)!r}, device='cpu')",
        "official": f"from sam2.build_sam import build_sam2\nbuild_sam2({official_config(s.name)!r}, {str(ckpt)!r}, device='cpu')",
    }
    wrapper = textwrap.dedent(
        """
        import time
        start = time.perf_counter()
        exec(compile({script!r}, "<bench>", "exec"))
        print("SECONDS", time.perf_counter() - start)
        """
    )

    def run(impl: str) -> float:
        # cwd: a fresh folder, so a source checkout in the current folder cannot shadow the
        # installed packages
        proc = subprocess.run([sys.executable, "-c", wrapper.format(script=scripts[impl])],
                              capture_output=True, text=True, timeout=600, cwd=folder)
        if proc.returncode != 0:
            raise RuntimeError(f"cold start ({impl}) failed:\n{proc.stderr[-2000:]}")
        return float(proc.stdout.strip().splitlines()[-1].split()[1])

    impls = ["ours"] + (["official"] if s.has_official else [])
    times: dict[str, list[float]] = {impl: [] for impl in impls}
    for _ in range(s.repeats):
        for impl in impls:
            times[impl].append(run(impl))
    shutil.rmtree(folder, ignore_errors=True)
    return [_result(f"cold start: import + build + load {s.name} (fresh process)", times)]


def bench_set_image(s: Session) -> list[Result]:
    from sam2_fast import SAM2ImagePredictor

    fast, exact = SAM2ImagePredictor(s.ours(fast=True)), SAM2ImagePredictor(s.ours())
    fns: dict[str, Callable[[], Any]] = {"ours": lambda: fast.set_image(s.image)}
    if s.fast_differs:
        fns["ours exact"] = lambda: exact.set_image(s.image)
    if s.has_official:
        from sam2.sam2_image_predictor import SAM2ImagePredictor as OfficialPredictor

        official = OfficialPredictor(s.official())
        fns["official"] = lambda: official.set_image(s.image)
        fns["official bf16"] = in_bf16_autocast(lambda: official.set_image(s.image))
    with torch.inference_mode():
        gflop = count_gflop(lambda: exact.set_image(s.image))
        times = interleaved(fns, s.repeats)
    return mode_rows(s, f"set_image {IMAGE_HW[0]}x{IMAGE_HW[1]}", times, gflop=gflop)


def bench_predict(s: Session) -> list[Result]:
    from sam2_fast import SAM2ImagePredictor

    click = dict(point_coords=np.array([[383.0, 351.0]]), point_labels=np.array([1]))
    fast, exact = SAM2ImagePredictor(s.ours(fast=True)), SAM2ImagePredictor(s.ours())
    fns: dict[str, Callable[[], Any]] = {"ours": lambda: fast.predict(**click)}
    if s.fast_differs:
        fns["ours exact"] = lambda: exact.predict(**click)
    with torch.inference_mode():
        for predictor in {id(p): p for p in (fast, exact)}.values():
            predictor.set_image(s.image)
            predictor.predict(**click)  # the first click also computes the image's share of the decoder
        if s.has_official:
            from sam2.sam2_image_predictor import SAM2ImagePredictor as OfficialPredictor

            official = OfficialPredictor(s.official())
            official_bf16 = OfficialPredictor(s.official())
            official.set_image(s.image)
            in_bf16_autocast(lambda: official_bf16.set_image(s.image))()
            fns["official"] = lambda: official.predict(**click)
            fns["official bf16"] = in_bf16_autocast(lambda: official_bf16.predict(**click))
        gflop = count_gflop(lambda: exact.predict(**click))  # per further click
        times = interleaved(fns, 5 * s.repeats, warmup=2)
    return mode_rows(s, "predict: 1 click, 3 masks at image size", times, gflop=gflop)


def bench_amg(s: Session) -> list[Result]:
    from sam2_fast import SAM2AutomaticMaskGenerator

    kwargs = dict(points_per_side=s.amg_points)
    fast = SAM2AutomaticMaskGenerator(s.ours(fast=True), **kwargs)
    fns: dict[str, Callable[[], Any]] = {"ours": lambda: fast.generate(s.image)}
    if s.fast_differs:
        exact = SAM2AutomaticMaskGenerator(s.ours(), **kwargs)
        fns["ours exact"] = lambda: exact.generate(s.image)
    if s.has_official:
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator as OfficialAMG

        official = OfficialAMG(s.official(), **kwargs)
        fns["official"] = lambda: official.generate(s.image)
        fns["official bf16"] = in_bf16_autocast(lambda: official.generate(s.image))
    with torch.inference_mode():
        times = interleaved(fns, max(1, s.repeats - 1), warmup=0)
    return mode_rows(s, f"automatic masks: {s.amg_points}x{s.amg_points} points, default thresholds", times)


def bench_video(s: Session, object_counts: Iterable[int] = (1, 8)) -> list[Result]:
    from PIL import Image

    from sam2_fast import build_sam2_video_predictor
    from sam2_fast.sample import sample_video_frame, sample_video_objects

    folder = Path(tempfile.mkdtemp(prefix="sam2_fast_bench_video_"))
    for i in range(WARM_FRAMES + 1):
        Image.fromarray(sample_video_frame(i, *VIDEO_HW)).save(folder / f"{i:05d}.jpg", quality=95)
    sd = dict(s.state_dict)
    # random weights: keep every object "present" so the memory is used as with real weights
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] = sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] + 3.0

    def ours_predictor(dtype):
        predictor = build_sam2_video_predictor(s.name, None, device="cpu", compute_dtype=dtype)
        predictor.load_state_dict(sd)
        predictor.show_progress = False
        return predictor.eval()

    # name -> (predictor, runs under bf16 autocast)
    predictors: dict[str, tuple[Any, bool]] = {"ours": (ours_predictor(s.fast_dtype), False)}
    if s.fast_differs:
        predictors["ours exact"] = (ours_predictor(None), False)
    if s.has_official:
        from sam2_fast._bench.official import official_video_predictor

        official = official_video_predictor(s.name, sd)
        predictors["official"] = (official, False)
        predictors["official bf16"] = (official, True)
    ours = predictors["ours"][0]
    objects = list(sample_video_objects(0, *VIDEO_HW).values())
    memory_seconds: list[float] = []
    original_forward = ours.memory_attention.forward

    def timed_forward(*args, **kwargs):
        start = time.perf_counter()
        out = original_forward(*args, **kwargs)
        memory_seconds.append(time.perf_counter() - start)
        return out

    rows = []
    per_frame: dict[int, dict[str, list[float]]] = {}
    frame_gflop: dict[int, float] = {}
    official_gflop: dict[int, float] = {}
    for n in object_counts:
        states = {}
        with torch.inference_mode():
            for impl, (predictor, bf16) in predictors.items():
                def track(predictor=predictor) -> Any:
                    state = predictor.init_state(str(folder))
                    for k in range(n):
                        x, y = objects[k % len(objects)]
                        point = (x + 7 * (k // len(objects)), y + 5 * (k // len(objects)))
                        predictor.add_new_points_or_box(state, 0, k + 1, points=[point], labels=[1])
                    for _ in predictor.propagate_in_video(state, max_frame_num_to_track=WARM_FRAMES - 1):
                        pass
                    return state

                states[impl] = (in_bf16_autocast(track) if bf16 else track)()

            def one_frame(impl: str) -> Callable[[], None]:
                predictor, bf16 = predictors[impl]

                def run() -> None:
                    for _ in predictor.propagate_in_video(
                        states[impl], start_frame_idx=WARM_FRAMES, max_frame_num_to_track=0
                    ):
                        pass
                return in_bf16_autocast(run) if bf16 else run

            def drop_features(impl: str) -> None:
                states[impl]["cached_features"].clear()  # the image encoder is part of a frame

            exact = "ours exact" if s.fast_differs else "ours"
            drop_features(exact)
            gflop, memory_gflop = _frame_gflop(predictors[exact][0], one_frame(exact))
            if s.has_official:
                drop_features("official")
                official_gflop[n] = _frame_gflop(predictors["official"][0], one_frame("official"))[0]
            memory_seconds.clear()
            ours.memory_attention.forward = timed_forward
            try:
                times = interleaved({impl: one_frame(impl) for impl in predictors}, s.repeats, setup=drop_features)
            finally:
                del ours.memory_attention.forward
            memory = statistics.median(memory_seconds[-s.repeats:]) if memory_seconds else None
        per_frame[n] = times
        frame_gflop[n] = gflop
        rows += mode_rows(s, f"video: one tracked frame, {n} object(s), full memory", times, gflop=gflop)
        if memory is not None and n == 1:
            rows.append(Result(f"  of which memory attention, {n} object, fast mode", memory, gflop=memory_gflop,
                               note="this project only"))
    counts = sorted(per_frame)
    if len(counts) >= 2 and counts[0] != counts[-1]:
        lo, hi = counts[0], counts[-1]
        marginal = {
            impl: [(b - a) / (hi - lo) for a, b in zip(per_frame[lo][impl], per_frame[hi][impl])]
            for impl in per_frame[lo]
        }
        rows += mode_rows(s, "video: each extra object (marginal)", marginal,
                          gflop=(frame_gflop[hi] - frame_gflop[lo]) / (hi - lo))
        if official_gflop:
            # the extra object's floor: the official package's FLOPs for it at the higher of
            # the two measured GEMM peaks
            extra = (official_gflop[hi] - official_gflop[lo]) / (hi - lo)
            ours_extra = statistics.median(marginal["ours"])
            floor = extra * 1e9 / max(s.peaks.values())
            rows.append(Result("video: each extra object vs its FLOP floor (official FLOPs / GEMM peak)",
                               ours_extra, floor, official_label="floor", gflop=extra,
                               note=f"{ours_extra / floor:.2f}x the floor (goal <= 1.3x)"))
    shutil.rmtree(folder, ignore_errors=True)
    return rows


def _frame_gflop(model, run: Callable[[], None]) -> tuple[float, float]:
    """GFLOP of one tracked frame and of its memory attention (a counter nested in the
    frame's: both see the memory attention's ops)."""
    from torch.utils.flop_counter import FlopCounterMode

    _fused_op_flops()
    counted: list[float] = []
    original = model.memory_attention.forward

    def counting_forward(*args, **kwargs):
        with FlopCounterMode(display=False) as counter:
            out = original(*args, **kwargs)
        counted.append(counter.get_total_flops() / 1e9)
        return out

    model.memory_attention.forward = counting_forward
    try:
        with FlopCounterMode(display=False) as frame:
            run()
    finally:
        del model.memory_attention.forward
    return frame.get_total_flops() / 1e9, sum(counted)


def _result(name: str, times: dict[str, list[float]], gflop: float | None = None,
            official_label: str = "official", note: str = "") -> Result:
    med = {impl: statistics.median(ts) for impl, ts in times.items() if ts}
    return Result(name, med.get("ours"), med.get("official"), official_label, gflop, note, samples=times)


# ---------------------------------------------------------------------------------------------
# the table


def machine_line(peaks: dict[str, float], sizes: dict[str, int] | None = None) -> str:
    """The machine every figure of a run comes from: CPU model, the flags that decide kernel
    speed (AMX, AVX512-BF16, ...), cores and threads, a oneDNN ISA cap, torch, both GEMM peaks."""
    import os

    from sam2_fast.ops._tuning import cpu_description

    cpu = cpu_description()
    flags = " ".join(cpu["flags"]) or "no AMX / AVX512-BF16 / AVX2 flags"
    amx = "AMX" if any(f.startswith("amx") for f in cpu["flags"]) else (
        "AVX512-BF16, no AMX" if "avx512_bf16" in cpu["flags"] else "no AMX, no AVX512-BF16")
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return (
        f"{cpu['cpu']} ({amx}; flags: {flags}), {cpu['cpus']} CPUs, {torch.get_num_threads()} torch threads"
        + (f", ONEDNN_MAX_CPU_ISA={isa} (emulating an older CPU class for oneDNN)" if isa else "")
        + f"; torch {torch.__version__}, Python {platform.python_version()}; GEMM peak fp32 "
        f"{peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s ({_peak_sizes(sizes)}, median); "
        "no GPU used"
    )


def _peak_sizes(sizes: dict[str, int] | None) -> str:
    sizes = sizes or {"fp32": 2048, "bf16": 2048}
    if len(set(sizes.values())) == 1:
        return f"{next(iter(sizes.values()))}^3"
    return ", ".join(f"{name} {size}^3" for name, size in sizes.items())


def format_table(results: list[Result], peaks: dict[str, float], header: str) -> str:
    """Markdown table; the last column is each row's rate over the machine's GEMM peak (the
    faster of fp32 and bf16)."""
    peak_name, peak = max(peaks.items(), key=lambda item: item[1])
    lines = [
        header,
        "",
        f"| benchmark | this project | official | speed-up | GFLOP | ours GFLOP/s | % of GEMM peak ({peak_name}) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rate = r.gflop / r.ours if r.gflop and r.ours else None
        cells = [
            r.name + (f" ({r.note})" if r.note else ""),
            _seconds(r.ours),
            _seconds(r.official) + (f" ({r.official_label})" if r.official is not None and r.official_label != "official" else ""),
            f"{r.ratio:.2f}x" if r.ratio is not None else "",
            f"{r.gflop:.1f}" if r.gflop else "",
            f"{rate:.0f}" if rate else "",
            f"{100 * rate * 1e9 / peak:.0f} %" if rate else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1e3:.1f} ms" if value < 1 else f"{value:.2f} s"


def run(only: Iterable[str] = BENCHMARKS, model: str = "sam2.1-hiera-tiny", repeats: int = 3,
        with_official: bool = True, amg_points: int = 16, out: Path | None = None,
        log: Callable[[str], None] = print, tune: bool = True) -> str:
    """Run the benchmarks, print progress with ``log`` and return the markdown table; with
    ``out``, also write ``out/bench.md`` and ``out/bench.json`` (every sample)."""
    only = list(only)
    unknown = sorted(set(only) - set(BENCHMARKS))
    if unknown:
        raise InvalidInputError(f"only: unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    if not isinstance(repeats, int) or repeats < 1:
        raise InvalidInputError(f"repeats must be an int >= 1, got {repeats!r}")
    log("measuring the GEMM peak ...")
    measured = {"fp32": gemm_peak(torch.float32), "bf16": gemm_peak(torch.bfloat16)}
    peaks = {name: flops for name, (flops, _) in measured.items()}
    session = Session(model, repeats, with_official, amg_points, log)
    session.peaks = peaks
    sizes = {name: size for name, (_, size) in measured.items()}
    if not session.has_official:
        log(f"official package: {session.official_error}")
    if tune:
        from sam2_fast.ops import _tuning
        from sam2_fast.tune import tune as tune_model

        if _tuning.tuning_mode() != "off":
            log("tuning (measures the backend choices this machine has no verdict for yet) ...")
            tune_model(model, dtypes=["float32", "auto"], objects=[1], progress=False, mode="on")
    functions = {"cold_start": bench_cold_start, "set_image": bench_set_image, "predict": bench_predict,
                 "amg": bench_amg, "video": bench_video}
    results: list[Result] = []
    for name in only:
        log(f"{name} ...")
        start = time.perf_counter()
        results += functions[name](session)
        log(f"{name}: {time.perf_counter() - start:.0f} s")
    header = (
        f"`sam2-fast bench` ({model} on the CPU, same random weights, {repeats} interleaved "
        f"repetitions, medians; {time.strftime('%Y-%m-%d')}). This project's fast mode here: "
        f"{session.fast_name} (compute_dtype='auto'); the official package in fp32 and under bf16 "
        f"autocast, each fast row against the faster of the two.\n\n{machine_line(peaks, sizes)}"
    )
    if not session.has_official:
        header += f"\n\nofficial package not measured: {session.official_error}"
    table = format_table(results, peaks, header)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.md").write_text(table + "\n")
        from sam2_fast.ops._tuning import cpu_description

        (out / "bench.json").write_text(json.dumps(
            {"peaks_flops": peaks, "model": model, "repeats": repeats, "torch": torch.__version__,
             "machine": cpu_description() | {"threads": torch.get_num_threads()},
             "fast_mode": session.fast_name, "results": [asdict(r) for r in results]}, indent=1))
    return table
