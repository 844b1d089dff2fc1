// COCO run-length encoding on CUDA, for a batch of masks already in column-major order.
//
//   1. boundaries: one thread per pixel flags where a run starts (the pixel differs from the one
//                  before it; the one before a mask's first pixel counts as 0, so a mask that
//                  starts with a set pixel starts with an empty run of zeros).
//   2. the caller's per-mask cumsum of the flags ranks every boundary within its mask, which
//      also gives the number of runs of each mask and so their offsets in the output.
//   3. ends:       boundary j of mask n writes its index as the end of run j of n; the last
//                  pixel writes num_pixels as the end of the last run.
//   4. counts:     run t's length is its end minus the end of the run before it in its mask
//                  (0 for the first run of a mask, found by binary search in the offsets).
#include "rle.h"

#include <algorithm>
#include <cstdint>

namespace sam2_fast {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 16;  // the kernels loop over the rest

__global__ void boundaries_kernel(const uint8_t* __restrict__ column_major,
                                  uint8_t* __restrict__ flags, int64_t total, int64_t num_pixels) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const bool set = column_major[i] != 0;
    const bool before = i % num_pixels != 0 && column_major[i - 1] != 0;
    flags[i] = set != before ? 1 : 0;
  }
}

__global__ void ends_kernel(const uint8_t* __restrict__ flags, const int32_t* __restrict__ rank,
                            const int64_t* __restrict__ offsets, int64_t* __restrict__ ends,
                            int64_t total, int64_t num_pixels) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t n = i / num_pixels;
    const int64_t k = i - n * num_pixels;
    if (flags[i]) {
      ends[offsets[n] + rank[i] - 1] = k;
    }
    if (k == num_pixels - 1) {
      ends[offsets[n + 1] - 1] = num_pixels;
    }
  }
}

__global__ void counts_kernel(const int64_t* __restrict__ ends,
                              const int64_t* __restrict__ offsets, int64_t* __restrict__ counts,
                              int64_t total_runs, int64_t batch) {
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < total_runs;
       t += int64_t{gridDim.x} * blockDim.x) {
    // the mask of run t: offsets[mask] <= t < offsets[mask + 1] (every mask has a run)
    int64_t mask = 0;
    int64_t next = batch;
    while (next - mask > 1) {
      const int64_t middle = (mask + next) / 2;
      if (offsets[middle] <= t) {
        mask = middle;
      } else {
        next = middle;
      }
    }
    counts[t] = ends[t] - (t == offsets[mask] ? 0 : ends[t - 1]);
  }
}

unsigned int blocks_for(int64_t total) {
  return static_cast<unsigned int>(
      std::max<int64_t>(1, std::min<int64_t>((total + kThreads - 1) / kThreads, kMaxBlocks)));
}

}  // namespace

cudaError_t launch_rle_boundaries_cuda(const uint8_t* column_major, uint8_t* flags, int64_t batch,
                                       int64_t num_pixels, cudaStream_t stream) {
  const int64_t total = batch * num_pixels;
  boundaries_kernel<<<blocks_for(total), kThreads, 0, stream>>>(column_major, flags, total,
                                                                num_pixels);
  return cudaGetLastError();
}

cudaError_t launch_rle_runs_cuda(const uint8_t* flags, const int32_t* rank,
                                 const int64_t* offsets, int64_t* ends, int64_t* counts,
                                 int64_t batch, int64_t num_pixels, int64_t total_runs,
                                 cudaStream_t stream) {
  const int64_t total = batch * num_pixels;
  ends_kernel<<<blocks_for(total), kThreads, 0, stream>>>(flags, rank, offsets, ends, total,
                                                          num_pixels);
  counts_kernel<<<blocks_for(total_runs), kThreads, 0, stream>>>(ends, offsets, counts,
                                                                 total_runs, batch);
  return cudaGetLastError();
}

}  // namespace sam2_fast
