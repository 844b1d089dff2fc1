// Max pooling of channels-last maps with kernel = stride (CPU, pool.cpp): Hiera's query pooling
// and stage-change shortcut, read in place from any strides (a query pooled straight out of
// qkv), one pass over the input instead of torch's pairwise maxima (stride^2 - 1 passes).
#pragma once

#include <cstdint>

namespace sam2_fast {

// out[b, i, j, c] = max over a, e in [0, stride) of x[b, i * stride + a, j * stride + e, c], for
// float32 (is_bf16 false) or bfloat16 values: x read through its element strides (channels
// contiguous: stride 1), out contiguous [batch, out_h, out_w, channels]. NaN propagates (as
// torch.maximum and max_pool2d). Rows of the output are split across torch's threads.
void max_pool_nhwc(const void* x, bool is_bf16, int64_t batch, int64_t out_h, int64_t out_w,
                   int64_t channels, int64_t stride, int64_t stride_b, int64_t stride_h,
                   int64_t stride_w, void* out);

}  // namespace sam2_fast
