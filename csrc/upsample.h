// Bilinear upsampling of mask logits fused with thresholding and counting, on raw pointers
// without torch headers (CPU, upsample.cpp). The torch op (checks, allocation, threads,
// registration) is in ops.cpp.
//
// A pixel's value is computed as aten's CPU upsample_bilinear2d computes it (align_corners =
// False, output size given, no scale factor): scale = in / out in float32; src = dst * scale
// shifted by half a pixel, clamped at 0; taps i0 = min(floor(src), in - 1), i1 = i0 + 1 but
// not past the edge; weights w1 = clamp(src - i0, 0, 1), w0 = 1 - w1; each source row is
// interpolated along x, then the two rows along y. aten's compiler contracts each `a * w0 +
// b * w1` into one fused multiply-add, fma(a, w0, b * w1), when the CPU has FMA (its AVX2 and
// AVX512 kernels); `fused` selects that rounding, or two plain roundings.
#pragma once

#include <cstdint>
#include <vector>

namespace sam2_fast {

// Source taps and weights of one output axis (see above).
struct BilinearTaps {
  std::vector<int32_t> i0, i1;
  std::vector<float> w0, w1;
};
BilinearTaps bilinear_taps(int64_t in_size, int64_t out_size, bool fused);

// Rows [y_begin, y_end) of one mask: `logits` row-major [in_h, in_w] float32, `mask` the
// row-major [out_h, out_w] output (0 / 1 = value > thresholds[0]); counts[k] += pixels of those
// rows whose value is > thresholds[k], k < num_thresholds (<= 3). NaN is below every threshold.
void upsample_threshold_rows_cpu(const float* logits, int64_t in_w, const BilinearTaps& rows,
                                 const BilinearTaps& columns, int64_t y_begin, int64_t y_end,
                                 const float* thresholds, int num_thresholds, bool fused,
                                 uint8_t* mask, int64_t* counts);

}  // namespace sam2_fast
