"""Triton kernel of ``mask_postprocess``: bilinear upsampling of mask logits, threshold and
per-mask pixel counts in one pass, one byte written per output pixel.

Each program computes a ``[BLOCK_H, BLOCK_W]`` tile of one mask. Source taps follow aten's
``upsample_bilinear2d`` (``align_corners=False``, output size given, no scale factor) as its CPU
kernel computes them, fused multiply-adds included, so on a GPU every output value is bitwise
the one ``F.interpolate`` gives on the CPU:

* ``scale = in / out``, rounded once to float32 (passed in, see ``scale_h`` / ``scale_w``);
* ``src = fma(dst + 0.5, scale, -0.5)`` clamped at 0; ``i0 = min(floor(src), in - 1)``,
  ``i1 = i0 + 1`` except on the last row / column and when ``in == out`` (a plain copy);
  ``w1 = clamp(src - i0, 0, 1)``, ``w0 = 1 - w1``;
* ``row = fma(a, wx0, b * wx1)`` for the two source rows, ``value = fma(row0, wy0, row1 * wy1)``.

Per-mask counts of ``value > threshold`` (and of ``> upper``, ``> lower`` for the stability
score) are summed per tile and added atomically to ``counts [N, 1 or 3]`` int32.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import triton
import triton.language as tl

from sam2_fast.kernels._aot import AotSpec

BLOCK_H = 16
BLOCK_W = 128
NUM_WARPS = 8

_POINTER_TYPES = {torch.float32: "*fp32", torch.bfloat16: "*bf16", torch.float16: "*fp16"}


@triton.jit
def mask_postprocess_kernel(
    logits_ptr,  # [N, in_h, in_w] contiguous, fp32 / bf16 / fp16
    masks_ptr,  # [N, out_h, out_w] uint8 (the bytes of a bool tensor)
    counts_ptr,  # [N, 1 or 3] int32, zeroed: pixels > threshold (, > upper, > lower)
    in_h,
    in_w,
    out_h,
    out_w,
    scale_h,  # in_h / out_h rounded to float32
    scale_w,
    threshold,
    upper,  # threshold + stability offset, rounded to float32 (unused without STABILITY)
    lower,
    tiles_w,  # tiles per output row of tiles
    tiles_per_mask,
    STABILITY: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    pid = tl.program_id(0)
    n = pid // tiles_per_mask
    tile = pid % tiles_per_mask
    rows = (tile // tiles_w) * BLOCK_H + tl.arange(0, BLOCK_H)
    cols = (tile % tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W)

    # vertical taps, one per output row; rows past the end clamp to the last source row, so
    # every load below is in bounds and needs no mask
    src_y = tl.maximum(tl.fma(rows.to(tl.float32) + 0.5, scale_h, -0.5), 0.0)
    y0 = tl.minimum(src_y.to(tl.int32), in_h - 1)  # src_y >= 0: truncation is floor
    wy1 = tl.minimum(tl.maximum(src_y - y0.to(tl.float32), 0.0), 1.0)
    wy0 = 1.0 - wy1
    y1 = tl.where((y0 < in_h - 1) & (in_h != out_h), y0 + 1, y0)
    # horizontal taps, one per output column
    src_x = tl.maximum(tl.fma(cols.to(tl.float32) + 0.5, scale_w, -0.5), 0.0)
    x0 = tl.minimum(src_x.to(tl.int32), in_w - 1)
    wx1 = tl.minimum(tl.maximum(src_x - x0.to(tl.float32), 0.0), 1.0)
    wx0 = 1.0 - wx1
    x1 = tl.where((x0 < in_w - 1) & (in_w != out_w), x0 + 1, x0)

    source = logits_ptr + n.to(tl.int64) * in_h * in_w
    top = source + (y0 * in_w)[:, None]
    bottom = source + (y1 * in_w)[:, None]
    a = tl.load(top + x0[None, :]).to(tl.float32)
    b = tl.load(top + x1[None, :]).to(tl.float32)
    c = tl.load(bottom + x0[None, :]).to(tl.float32)
    d = tl.load(bottom + x1[None, :]).to(tl.float32)
    row0 = tl.fma(a, wx0[None, :], b * wx1[None, :])
    row1 = tl.fma(c, wx0[None, :], d * wx1[None, :])
    value = tl.fma(row0, wy0[:, None], row1 * wy1[:, None])

    inside = (rows < out_h)[:, None] & (cols < out_w)[None, :]
    foreground = value > threshold
    out = masks_ptr + n.to(tl.int64) * out_h * out_w + (rows * out_w)[:, None] + cols[None, :]
    tl.store(out, foreground.to(tl.uint8), mask=inside)

    if STABILITY:
        counts = counts_ptr + n * 3
        tl.atomic_add(counts, tl.sum((foreground & inside).to(tl.int32)))
        tl.atomic_add(counts + 1, tl.sum(((value > upper) & inside).to(tl.int32)))
        tl.atomic_add(counts + 2, tl.sum(((value > lower) & inside).to(tl.int32)))
    else:
        tl.atomic_add(counts_ptr + n, tl.sum((foreground & inside).to(tl.int32)))


def mask_postprocess(
    logits: torch.Tensor,
    out_h: int,
    out_w: int,
    scale_h: float,
    scale_w: float,
    thresholds: tuple[float, ...],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch :func:`mask_postprocess_kernel`.

    Args:
        logits: ``[B, C, h, w]`` float32 / bfloat16 / float16 on cuda (cpu under
            ``TRITON_INTERPRET=1``); made contiguous here.
        out_h, out_w: output size in pixels.
        scale_h, scale_w: ``h / out_h`` and ``w / out_w`` rounded to float32.
        thresholds: ``(threshold,)`` or ``(threshold, upper, lower)`` for stability counts.

    Returns:
        ``masks [B, C, out_h, out_w]`` bool and ``counts [B, C, len(thresholds)]`` int32.
    """
    b, c, h, w = logits.shape
    stability = len(thresholds) == 3
    masks = torch.empty((b, c, out_h, out_w), dtype=torch.bool, device=logits.device)
    counts = torch.zeros((b, c, len(thresholds)), dtype=torch.int32, device=logits.device)
    if b * c == 0:
        return masks, counts
    threshold, upper, lower = thresholds if stability else (thresholds[0],) * 3
    tiles_w = triton.cdiv(out_w, BLOCK_W)
    tiles_per_mask = triton.cdiv(out_h, BLOCK_H) * tiles_w
    grid = (b * c * tiles_per_mask,)
    with torch.cuda.device(logits.device) if logits.is_cuda else nullcontext():
        mask_postprocess_kernel[grid](
            logits.contiguous(),
            masks.view(torch.uint8),
            counts,
            h,
            w,
            out_h,
            out_w,
            scale_h,
            scale_w,
            threshold,
            upper,
            lower,
            tiles_w,
            tiles_per_mask,
            STABILITY=stability,
            BLOCK_H=BLOCK_H,
            BLOCK_W=BLOCK_W,
            num_warps=NUM_WARPS,
        )
    return masks, counts


def aot_specs() -> list[AotSpec]:
    """Every shipped configuration: each input dtype, with and without stability counts."""
    specs = []
    for dtype, pointer in _POINTER_TYPES.items():
        for stability in (False, True):
            name = str(dtype).removeprefix("torch.")
            specs.append(
                AotSpec(
                    name=f"mask_postprocess_{name}_{'stability' if stability else 'area'}"
                    f"_{BLOCK_H}x{BLOCK_W}",
                    fn=mask_postprocess_kernel,
                    signature={
                        "logits_ptr": pointer,
                        "masks_ptr": "*u8",
                        "counts_ptr": "*i32",
                        "in_h": "i32",
                        "in_w": "i32",
                        "out_h": "i32",
                        "out_w": "i32",
                        "scale_h": "fp32",
                        "scale_w": "fp32",
                        "threshold": "fp32",
                        "upper": "fp32",
                        "lower": "fp32",
                        "tiles_w": "i32",
                        "tiles_per_mask": "i32",
                        "STABILITY": "constexpr",
                        "BLOCK_H": "constexpr",
                        "BLOCK_W": "constexpr",
                    },
                    constexprs={"STABILITY": stability, "BLOCK_H": BLOCK_H, "BLOCK_W": BLOCK_W},
                    num_warps=NUM_WARPS,
                )
            )
    return specs
