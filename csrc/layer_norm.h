// A residual add and the LayerNorm of its result in one pass over the rows (CPU,
// layer_norm.cpp): Hiera's blocks under bfloat16 autocast keep their residual stream in float32
// and feed every normalised token to a bfloat16 product, so torch runs an add, a float32
// LayerNorm and a cast, each a pass over a tensor of tens of MB; this reads the stream once.
#pragma once

#include <cstdint>

namespace sam2_fast {

// For each of `rows` rows of `channels` values: s = x + delta (x and delta float32 or
// bfloat16, each flagged; no delta: s = x), rounded to bfloat16 when sum_is_bf16 (torch's
// result of the add when both inputs are bfloat16) and written to `sum` when given; then
// normed = (s - mean) / sqrt(var + eps) * weight + bias (mean and biased variance of the row
// in float32, two passes), rounded to bfloat16 (round to nearest even). Rows are split across
// torch's threads.
void add_layer_norm_bf16(const void* x, bool x_is_bf16, const void* delta, bool delta_is_bf16,
                         void* sum, bool sum_is_bf16, uint16_t* normed, int64_t rows,
                         int64_t channels, const float* weight, const float* bias, float eps);

// whether add_layer_norm_bf16 runs its AVX-512 loop on this CPU (else a scalar loop)
bool add_layer_norm_is_vectorized();

}  // namespace sam2_fast
