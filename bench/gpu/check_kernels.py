"""Every GPU kernel of sam2-fast on real shapes, on a real GPU: correctness against a float64
reference, then time against the torch sequence it replaces and against the card's measured
ceilings.

    python bench/gpu/check_kernels.py [--out kernels.md] [--small]

For each op and dtype: fresh random inputs (never zeros), the kernel's output checked for
NaN / Inf and compared with the float64 reference by ``||out - ref|| / ||ref||`` (the eager torch
path in the same dtype is measured the same way, for scale). Timings are medians of
``triton.testing.do_bench`` (CUDA events) over 3 rotating input sets, so repeated calls do not
run out of L2. The ceilings are measured first: a bf16 8192^3 matmul and a device-to-device
copy (bytes read + written).

``--small`` runs tiny shapes on the CPU under ``TRITON_INTERPRET=1`` to check this script itself
on a machine without a GPU (no timings worth reading).

Prints one markdown table per section and writes them to ``--out`` as they complete, so a run
cut short still leaves what finished.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "ops"))

from _report import Report  # noqa: E402  (bench/gpu, the script's folder)
from sam2_fast.modeling.position_encoding import axial_rope_cos_sin  # noqa: E402
from sam2_fast.ops import get_op, use_backend  # noqa: E402
from sam2_fast.ops.mask_postprocess import upsample_masks  # noqa: E402
from sam2_fast.ops.rope_attention import rope_attention, rope_attention_reference  # noqa: E402
from sam2_fast.ops.window_attention import window_attention, window_attention_reference  # noqa: E402

# ||out - ref|| / ||ref|| ceilings per input dtype (float32 accumulation in every kernel)
MAX_REL_ERR = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

SMALL = False
DEVICE = "cuda"
CEILINGS = {"bf16 TFLOP/s": float("nan"), "copy TB/s": float("nan")}
REPORT = Report()
FAILURES = REPORT.failures
emit = REPORT.emit
WINDOW_DTYPES = ("bf16", "fp16", "fp32")




def bench_ms(fns: list[Callable[[], object]]) -> float:
    """Median ms of one call, cycling through ``fns`` (one per input set)."""
    if DEVICE != "cuda":
        start = time.perf_counter()
        for fn in fns:
            fn()
        return (time.perf_counter() - start) * 1e3 / len(fns)
    import triton.testing

    state = {"i": 0}

    def step() -> None:
        fns[state["i"] % len(fns)]()
        state["i"] += 1

    return triton.testing.do_bench(step, warmup=50, rep=300, return_mode="median")


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    if not torch.isfinite(out).all():
        return float("nan")
    return (torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref).clamp_min(1e-300)).item()


def verdict(err: float, dtype: torch.dtype, label: str) -> str:
    ok = math.isfinite(err) and err <= MAX_REL_ERR[dtype]
    if not ok:
        FAILURES.append(f"{label}: rel err {err:.2e} > {MAX_REL_ERR[dtype]:.0e}")
    return "ok" if ok else "**FAIL**"




def triton_vs_reference(op: str, fn, reference, sets: list, reference64, dtype: torch.dtype, label: str):
    """The Triton backend of ``op`` (forced) on ``sets[0]`` against ``reference64()``, the
    eager ``reference`` in the same dtype for scale, then both timed over every set:
    ``(rel err triton, rel err eager, verdict, triton ms, reference ms)``."""
    with torch.inference_mode():
        with use_backend("triton", op=op):
            assert get_op(op).select(*sets[0]).name == "triton"
            out = fn(*sets[0])
        ref64 = reference64()
        err, err_eager = rel_err(out, ref64), rel_err(reference(*sets[0]), ref64)
        check = verdict(err, dtype, label)
        with use_backend("triton", op=op):
            t_triton = bench_ms([lambda s=s: fn(*s) for s in sets])
        t_ref = bench_ms([lambda s=s: reference(*s) for s in sets])
    return err, err_eager, check, t_triton, t_ref


# ---------------------------------------------------------------------------------------------
# ceilings


def ceilings() -> None:
    if DEVICE != "cuda":
        emit("ceilings: no GPU")
        return
    n = 8192
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    ms = bench_ms([lambda: a @ b])
    CEILINGS["bf16 TFLOP/s"] = 2 * n**3 / ms / 1e9
    src = torch.randn(1 << 29, device="cuda", dtype=torch.float32)  # 2 GiB
    dst = torch.empty_like(src)
    ms = bench_ms([lambda: dst.copy_(src)])
    CEILINGS["copy TB/s"] = 2 * src.numel() * 4 / ms / 1e9
    torch.cuda.empty_cache()
    props = torch.cuda.get_device_properties(0)
    emit(
        f"## {props.name}: {props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB; "
        f"torch {torch.__version__}, triton {__import__('triton').__version__}\n\n"
        f"measured ceilings: bf16 matmul 8192^3 {CEILINGS['bf16 TFLOP/s']:.0f} TFLOP/s, "
        f"device copy {CEILINGS['copy TB/s']:.2f} TB/s (read + write)"
    )


def roofline_us(flop: float, nbytes: float) -> float:
    return max(flop / (CEILINGS["bf16 TFLOP/s"] * 1e12), nbytes / (CEILINGS["copy TB/s"] * 1e12)) * 1e6


# ---------------------------------------------------------------------------------------------
# window attention (Hiera)


def window_shapes() -> dict:
    """The bench's real trunk shapes plus base-plus (head dim 56)."""
    import bench_window_attention as bw

    return {
        **bw.SHAPES,
        "base-plus stage 1 (window 8)": bw.Shape(256, 256, 112, 2, 8, 1),
        "base-plus stage 3 (window 14, padded)": bw.Shape(64, 64, 448, 8, 14, 1),
    }


def window_attention_section() -> None:
    import bench_window_attention as bw

    shapes = window_shapes()
    if SMALL:
        shapes = {
            "small win4 pooled": bw.Shape(12, 10, 24, 2, 4, 2),
            "small global": bw.Shape(9, 9, 16, 1, 0, 1),
            "small win4 d40 (32 + 16 channels)": bw.Shape(9, 7, 80, 2, 4, 1),
        }
    emit(
        "\n### window_attention (triton vs torch reference in the same dtype)\n\n"
        "| shape | dtype | rel err triton | rel err torch | check | triton us | torch us | speed-up "
        "| roofline us | % of roofline |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    for name, shape in shapes.items():
        for dname in WINDOW_DTYPES:
            dtype = DTYPES[dname]
            sets = [shape_inputs(shape, dtype, seed) for seed in range(3)]
            qkv, heads, window, stride, bias = sets[0]
            err, err_eager, check, t_triton, t_ref = triton_vs_reference(
                "window_attention", window_attention, window_attention_reference, sets,
                lambda: window_attention_reference(qkv.double(), heads, window, stride, bias.double()),
                dtype, f"window_attention {name} {dname}",
            )
            elem = torch.finfo(dtype).bits // 8
            roof = roofline_us(bw.flops(shape), bw.fused_bytes(shape, elem))
            emit(
                f"| {name} {shape.label} | {dname} | {err:.1e} | {err_eager:.1e} | {check} | "
                f"{t_triton * 1e3:.0f} | {t_ref * 1e3:.0f} | {t_ref / t_triton:.2f}x | {roof:.0f} | "
                f"{100 * roof / (t_triton * 1e3):.0f}% |"
            )
            del sets


def shape_inputs(shape, dtype: torch.dtype, seed: int) -> tuple:
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    qkv = torch.randn(shape.batch, shape.h, shape.w, 3 * shape.dim, generator=g, device=DEVICE)
    bias = torch.randn(3 * shape.dim, generator=g, device=DEVICE)
    return qkv.to(dtype), shape.heads, shape.window, shape.q_stride, bias.to(dtype)


def window_tuning_section() -> None:
    """Every tile candidate of the kernel on each real bf16 shape: the tuned choice (picked
    for no register spills) against the fastest one measured here."""
    import bench_window_attention as bw

    from sam2_fast.kernels.window_attention import block_config, candidates, window_attention_triton

    shapes = window_shapes()
    if SMALL:
        shapes = {"small win4 pooled": bw.Shape(12, 10, 24, 2, 4, 2), "small win4 d40": bw.Shape(9, 7, 80, 2, 4, 1)}
    emit(
        "\n### window_attention tile sweep, bf16 (BLOCK_M cap, BLOCK_N cap, warps)\n\n"
        "| shape | default tiles | default us | best tiles | best us | default / best | all (us) |\n"
        "|---|---|---|---|---|---|---|"
    )
    dtype = torch.bfloat16
    for name, shape in shapes.items():
        sets = [shape_inputs(shape, dtype, seed) for seed in range(3)]
        head_dim = shape.dim // shape.heads
        default = block_config(head_dim, shape.window, shape.q_stride, shape.h, shape.w, dtype)
        timings = {}
        with torch.inference_mode():
            reference = window_attention_reference(*sets[0])
            for tiles in candidates(dtype):
                try:
                    out = window_attention_triton(*sets[0], tiles=tiles)
                    if rel_err(out, reference) > MAX_REL_ERR[dtype]:
                        FAILURES.append(f"window_attention tiles {tiles} {name}: wrong result")
                        continue
                    timings[tiles] = bench_ms([lambda s=s, t=tiles: window_attention_triton(*s, tiles=t) for s in sets])
                except Exception as exc:  # a candidate that does not compile for this shape
                    emit(f"<!-- {name} tiles {tiles}: {type(exc).__name__}: {str(exc)[:200]} -->")
        if not timings:
            continue
        best = min(timings, key=timings.get)
        chosen = next(
            (t for t in timings if block_config(head_dim, shape.window, shape.q_stride, shape.h, shape.w, dtype, t) == default),
            None,
        )
        t_default = timings.get(chosen, float("nan"))
        every = ", ".join(f"{t}: {v * 1e3:.0f}" for t, v in timings.items())
        emit(
            f"| {name} | {chosen} | {t_default * 1e3:.0f} | {best} | {timings[best] * 1e3:.0f} | "
            f"{t_default / timings[best]:.2f}x | {every} |"
        )


# ---------------------------------------------------------------------------------------------
# RoPE memory attention


def rope_problem() -> tuple:
    """``(side, head dim, queries, cos, sin, shapes)`` of the memory attention: shapes maps a
    name to (objects, keys, value width, excluded keys)."""
    side, d = (8, 32) if SMALL else (64, 256)
    nq = side * side
    shapes = {
        "cross 1 obj, 7 memories + 16 pointers, v64": (1, 7 * nq + 64, 64, 64),
        "cross 8 obj batched, 7 memories + 16 pointers, v64": (8, 7 * nq + 64, 64, 64),
        "self-attention 4096x4096, v256": (1, nq, d, 0),
    }
    if SMALL:
        shapes = {"small cross": (2, 3 * nq + 8, 16, 8), "small self": (1, nq, d, 0)}
    cos, sin = (t.to(DEVICE) for t in axial_rope_cos_sin(d, side, side, 10000.0))
    return side, d, nq, cos, sin, shapes


def rope_sets(b: int, nq: int, nk: int, d: int, dv: int, excluded: int, cos, sin, dtype) -> list:
    """3 input sets of rope_attention (fresh random q, k, v; keys scaled so softmax is not flat)."""
    sets = []
    for seed in range(3):
        g = torch.Generator(device=DEVICE).manual_seed(seed)
        q = torch.randn(b, 1, nq, d, generator=g, device=DEVICE)
        k = torch.randn(b, 1, nk, d, generator=g, device=DEVICE) / 4
        v = torch.randn(b, 1, nk, dv, generator=g, device=DEVICE)
        sets.append((q.to(dtype), k.to(dtype), v.to(dtype), cos, sin, excluded))
    return sets


def rope_section() -> None:
    side, d, nq, cos, sin, shapes = rope_problem()
    emit(
        "\n### rope_attention (triton vs torch reference: rotate + SDPA, same dtype)\n\n"
        "| shape | dtype | rel err triton | rel err torch | check | triton us | torch us | speed-up "
        "| roofline us | % of roofline |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    for name, (b, nk, dv, excluded) in shapes.items():
        for dname in ("bf16", "fp16"):
            dtype = DTYPES[dname]
            sets = rope_sets(b, nq, nk, d, dv, excluded, cos, sin, dtype)
            q, k, v = (t.double() for t in sets[0][:3])
            err, err_eager, check, t_triton, t_ref = triton_vs_reference(
                "rope_attention", rope_attention, rope_attention_reference, sets,
                lambda: rope_attention_reference(q, k, v, cos.double(), sin.double(), excluded),
                dtype, f"rope_attention {name} {dname}",
            )
            flop = 2 * b * nq * nk * (d + dv)
            nbytes = 2 * b * (nq * d + nk * d + nk * dv + nq * dv)
            roof = roofline_us(flop, nbytes)
            emit(
                f"| {name} | {dname} | {err:.1e} | {err_eager:.1e} | {check} | {t_triton * 1e3:.0f} | "
                f"{t_ref * 1e3:.0f} | {t_ref / t_triton:.2f}x | {roof:.0f} | {100 * roof / (t_triton * 1e3):.0f}% |"
            )
            del sets


def rope_tuning_section() -> None:
    """Every tile candidate x key-split count of the rope_attention kernel on the real bf16
    shapes: the default choice against the fastest one measured here, and both against the
    reference (RoPE + torch SDPA)."""
    from sam2_fast.kernels.rope_attention import (
        _compute_capability,
        _multiprocessors,
        block_config,
        candidates,
        num_splits,
        rope_attention_triton,
    )

    side, d, nq, cos, sin, shapes = rope_problem()
    dtype = torch.bfloat16
    device = torch.device(DEVICE)
    cc = _compute_capability(device)
    emit(
        "\n### rope_attention tile x split sweep, bf16 (BLOCK_M, BLOCK_N, warps, stages; splits)\n\n"
        "| shape | default | default us | best | best us | default / best | reference us | best vs reference "
        "| all (us) |\n|---|---|---|---|---|---|---|---|---|"
    )
    for name, (b, nk, dv, excluded) in shapes.items():
        sets = rope_sets(b, nq, nk, d, dv, excluded, cos, sin, dtype)
        default_tiles = block_config(d, dv, dtype, cc)
        default_splits = num_splits(
            math.ceil(nq / default_tiles.block_m) * b, nk, default_tiles.block_n, _multiprocessors(device)
        )
        timings = {}
        with torch.inference_mode():
            reference = rope_attention_reference(*sets[0])
            t_ref = bench_ms([lambda s=s: rope_attention_reference(*s) for s in sets])
            for tiles in candidates(d, dv, dtype, cc):
                auto = num_splits(math.ceil(nq / tiles.block_m) * b, nk, tiles.block_n, _multiprocessors(device))
                for splits in sorted({1, 2, 4, auto, 2 * auto}):
                    key = (tuple(tiles), splits)
                    try:
                        run = lambda s, t=tiles, n=splits: rope_attention_triton(*s, tiles=t, splits=n)  # noqa: E731
                        if rel_err(run(sets[0]), reference) > MAX_REL_ERR[dtype]:
                            FAILURES.append(f"rope_attention tiles {key} {name}: wrong result")
                            continue
                        timings[key] = bench_ms([lambda s=s: run(s) for s in sets])
                    except Exception as exc:  # a candidate that does not fit this card
                        emit(f"<!-- {name} {key}: {type(exc).__name__}: {str(exc)[:200]} -->")
        if not timings:
            continue
        best = min(timings, key=timings.get)
        default = (tuple(default_tiles), default_splits)
        t_default = timings.get(default, float("nan"))
        every = ", ".join(f"{t}: {v * 1e3:.0f}" for t, v in sorted(timings.items(), key=lambda kv: kv[1]))
        emit(
            f"| {name} | {default} | {t_default * 1e3:.0f} | {best} | {timings[best] * 1e3:.0f} | "
            f"{t_default / timings[best]:.2f}x | {t_ref * 1e3:.0f} | {t_ref / timings[best]:.2f}x | {every} |"
        )
        del sets


# ---------------------------------------------------------------------------------------------
# mask post-processing and the compiled CUDA ops


def mask_section() -> None:
    # name -> (logits shape, image size)
    shapes = {
        "AMG batch: 64 masks 256^2 -> 720x1280": ((64, 1, 256, 256), (720, 1280)),
        "predict: 3 masks 256^2 -> 1080x1920": ((1, 3, 256, 256), (1080, 1920)),
    }
    if SMALL:
        shapes = {"small": ((4, 1, 32, 32), (45, 81))}
    emit(
        "\n### mask_postprocess (triton vs reference: F.interpolate + threshold + counts)\n\n"
        "| shape | dtype | pixels differing | areas equal | triton us | torch us | speed-up "
        "| roofline us | % of roofline |\n|---|---|---|---|---|---|---|---|---|"
    )
    for name, (shape, size) in shapes.items():
        for dname in ("fp32", "bf16"):
            dtype = DTYPES[dname]
            sets = [
                (4 * torch.randn(shape, generator=torch.Generator(device=DEVICE).manual_seed(s), device=DEVICE)).to(dtype)
                for s in range(3)
            ]
            with torch.inference_mode():
                with use_backend("triton", op="mask_postprocess"):
                    ours = upsample_masks(sets[0], size, 0.0, 1.0)
                with use_backend("reference", op="mask_postprocess"):
                    ref = upsample_masks(sets[0], size, 0.0, 1.0)
                differing = (ours.masks != ref.masks).float().mean().item()
                areas_ok = bool(((ours.areas - ref.areas).abs() <= 2).all())  # rounding band only
                if differing > 1e-4 or not areas_ok:
                    FAILURES.append(f"mask_postprocess {name} {dname}: {differing:.1e} of pixels differ")
                with use_backend("triton", op="mask_postprocess"):
                    t_triton = bench_ms([lambda s=s: upsample_masks(s, size, 0.0, 1.0) for s in sets])
                with use_backend("reference", op="mask_postprocess"):
                    t_ref = bench_ms([lambda s=s: upsample_masks(s, size, 0.0, 1.0) for s in sets])
            n_masks = shape[0] * shape[1]
            nbytes = sets[0].numel() * sets[0].element_size() + n_masks * size[0] * size[1]  # logits in, bool out
            roof = roofline_us(0, nbytes)
            emit(
                f"| {name} | {dname} | {differing:.1e} | {areas_ok} | {t_triton * 1e3:.0f} | {t_ref * 1e3:.0f} | "
                f"{t_ref / t_triton:.2f}x | {roof:.0f} | {100 * roof / (t_triton * 1e3):.0f}% |"
            )


def compiled_ops_section() -> None:
    """The C++/CUDA ops of ``sam2_fast._C`` on GPU masks: equal to the reference, and timed."""
    from sam2_fast._ext import load_extension
    from sam2_fast.ops import box_nms, connected_components, masks_to_boxes, rle_encode

    module, reason = load_extension()
    if module is None or (DEVICE == "cuda" and not module.build_info().get("cuda")):
        FAILURES.append(f"compiled ops: extension without CUDA ops ({reason})")
        emit(f"compiled ops: not available ({reason})")
        return
    emit(
        "\n### compiled CUDA ops (sam2_fast._C) vs torch reference on the same GPU tensors\n\n"
        "| op | input | equal | cuda us | reference us | speed-up |\n|---|---|---|---|---|---|"
    )
    n, h, w = (8, 40, 56) if SMALL else (64, 720, 1280)
    sets = []
    for seed in range(3):
        g = torch.Generator(device=DEVICE).manual_seed(seed)
        blobs = torch.nn.functional.interpolate(
            torch.randn(n, 1, h // 16, w // 16, generator=g, device=DEVICE), size=(h, w), mode="bilinear"
        )
        sets.append(blobs > 0.3)
    boxes = torch.rand(3000, 4, device=DEVICE) * 600
    boxes[:, 2:] += boxes[:, :2] + 20
    scores = torch.rand(3000, device=DEVICE)
    cases = {
        "connected_components": (connected_components, lambda m: (m,), f"{n} masks {h}x{w}"),
        "rle_encode": (rle_encode, lambda m: (m[:, 0],), f"{n} masks {h}x{w}"),
        "masks_to_boxes": (masks_to_boxes, lambda m: (m[:, 0],), f"{n} masks {h}x{w}"),
        "box_nms": (box_nms, lambda m: (boxes, scores, 0.7), "3000 boxes, iou 0.7"),
    }
    fast = "cuda" if DEVICE == "cuda" else "cpp"  # --small checks the script with the C++ ops
    for op, (fn, args_of, label) in cases.items():
        if fast not in get_op(op).backend_names:
            emit(f"| {op} | {label} | no {fast} backend | | | |")
            continue
        with torch.inference_mode():
            with use_backend(fast, op=op):
                ours = fn(*args_of(sets[0]))
            with use_backend("reference", op=op):
                ref = fn(*args_of(sets[0]))
            ours_t = ours if isinstance(ours, tuple) else (ours,)
            ref_t = ref if isinstance(ref, tuple) else (ref,)
            equal = all(torch.equal(a.cpu(), b.cpu()) for a, b in zip(ours_t, ref_t))
            if not equal:
                FAILURES.append(f"{op}: cuda differs from the reference")
            with use_backend(fast, op=op):
                t_ours = bench_ms([lambda m=m: fn(*args_of(m)) for m in sets])
            with use_backend("reference", op=op):
                t_ref = bench_ms([lambda m=m: fn(*args_of(m)) for m in sets])
        emit(f"| {op} | {label} | {equal} | {t_ours * 1e3:.0f} | {t_ref * 1e3:.0f} | {t_ref / t_ours:.2f}x |")


def main() -> int:
    global SMALL, DEVICE, WINDOW_DTYPES
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--small", action="store_true", help="tiny shapes on CPU (TRITON_INTERPRET=1)")
    parser.add_argument("--only", default="ceilings,window,rope,mask,compiled,tune,rope_tune")
    parser.add_argument("--window-dtypes", default=",".join(WINDOW_DTYPES))
    args = parser.parse_args()
    SMALL = args.small
    WINDOW_DTYPES = tuple(args.window_dtypes.split(","))
    DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    if DEVICE == "cpu" and not (SMALL and os.environ.get("TRITON_INTERPRET") == "1"):
        parser.error("no CUDA device: run with --small under TRITON_INTERPRET=1 to check the script")
    REPORT.start(args.out)
    sections = {
        "ceilings": ceilings, "window": window_attention_section, "rope": rope_section,
        "mask": mask_section, "compiled": compiled_ops_section, "tune": window_tuning_section,
        "rope_tune": rope_tuning_section,
    }
    for name in args.only.split(","):
        REPORT.section(name, sections[name])
    return REPORT.finish()


if __name__ == "__main__":
    sys.exit(main())
