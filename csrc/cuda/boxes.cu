// Mask boxes on CUDA: one thread block per mask (blocks loop over masks beyond the grid). Each
// thread walks the pixels p = threadIdx.x, threadIdx.x + blockDim.x, ... (coalesced across the
// block), keeping its row and column by increments instead of divisions, and folds the pixels
// it finds into shared minima and maxima.
#include "boxes.h"

#include <algorithm>
#include <climits>
#include <cstdint>

namespace sam2_fast {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 16;

__global__ void mask_boxes_kernel(const uint8_t* __restrict__ masks, int64_t* __restrict__ boxes,
                                  int64_t batch, int32_t height, int32_t width) {
  __shared__ int32_t extent[4];  // x_min, y_min, x_max, y_max of the block's mask
  const int64_t num_pixels = static_cast<int64_t>(height) * width;
  const int32_t step_y = blockDim.x / width;
  const int32_t step_x = blockDim.x % width;
  for (int64_t n = blockIdx.x; n < batch; n += gridDim.x) {
    if (threadIdx.x == 0) {
      extent[0] = INT_MAX;
      extent[1] = INT_MAX;
      extent[2] = -1;
      extent[3] = -1;
    }
    __syncthreads();
    const uint8_t* mask = masks + n * num_pixels;
    int32_t x_min = INT_MAX;
    int32_t y_min = INT_MAX;
    int32_t x_max = -1;
    int32_t y_max = -1;
    int32_t y = threadIdx.x / width;
    int32_t x = threadIdx.x % width;
    for (int64_t p = threadIdx.x; p < num_pixels; p += blockDim.x) {
      if (mask[p] != 0) {
        x_min = min(x_min, x);
        x_max = max(x_max, x);
        y_min = min(y_min, y);
        y_max = y;  // p only grows
      }
      x += step_x;
      y += step_y;
      if (x >= width) {
        x -= width;
        ++y;
      }
    }
    if (x_max >= 0) {
      atomicMin(extent + 0, x_min);
      atomicMin(extent + 1, y_min);
      atomicMax(extent + 2, x_max);
      atomicMax(extent + 3, y_max);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      const bool empty = extent[2] < 0;
      for (int c = 0; c < 4; ++c) {
        boxes[4 * n + c] = empty ? 0 : extent[c];
      }
    }
    __syncthreads();  // extent is reset for the next mask only after it was read
  }
}

}  // namespace

cudaError_t launch_mask_boxes_cuda(const uint8_t* masks, int64_t* boxes, int64_t batch,
                                   int64_t height, int64_t width, cudaStream_t stream) {
  const auto blocks = static_cast<unsigned int>(std::min(batch, kMaxBlocks));
  mask_boxes_kernel<<<blocks, kThreads, 0, stream>>>(masks, boxes, batch,
                                                     static_cast<int32_t>(height),
                                                     static_cast<int32_t>(width));
  return cudaGetLastError();
}

}  // namespace sam2_fast
