// COCO run-length encoding kernels on raw pointers, without torch headers: CPU in rle.cpp, CUDA
// in cuda/rle.cu. The torch ops (checks, allocation, registration) are in ops.cpp.
//
// A [height, width] mask is read in column-major (Fortran) order and stored as the lengths of
// its alternating runs, starting with a (possibly empty) run of zeros: pycocotools'
// uncompressed counts. A mask without pixels is the single run 0.
#pragma once

#include <cstdint>
#include <vector>

#ifdef SAM2_FAST_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace sam2_fast {

// Appends the run lengths of one row-major [height, width] mask (nonzero = set) to `runs`.
void rle_encode_mask_cpu(const uint8_t* mask, int64_t height, int64_t width,
                         std::vector<int64_t>& runs);

// Appends pycocotools' compressed string of `num_runs` run lengths (rleToString: each length,
// minus the one two places before it from the fourth on, as a signed little-endian base-32
// number, 5 bits per character, 0x20 on all characters but a number's last, + 48) to `chars`.
void rle_compress_cpu(const int64_t* runs, int64_t num_runs, std::vector<uint8_t>& chars);

// Writes the row-major [height, width] mask (0 / 1) of `num_runs` run lengths into `mask`. The
// runs must be >= 0 and sum to height * width (the caller checks).
void rle_decode_mask_cpu(const int64_t* runs, int64_t num_runs, int64_t height, int64_t width,
                         uint8_t* mask);

#ifdef SAM2_FAST_WITH_CUDA
// CUDA, batch of column-major [batch, num_pixels] masks (the caller transposes), in two
// launches around a per-mask inclusive cumsum of `flags` (done by the caller):
//   boundaries: flags[i] = 1 where pixel i differs from the one before it in its mask (the one
//               before the first pixel counts as 0), else 0;
//   runs:       with rank = that cumsum (int32) and offsets [batch + 1] = the first run of each
//               mask (mask n has rank[last pixel of n] + 1 runs), writes ends[t] = column-major
//               index where run t ends, then counts[t] = its length.
// num_pixels must be > 0. Returns the launch error, if any.
cudaError_t launch_rle_boundaries_cuda(const uint8_t* column_major, uint8_t* flags, int64_t batch,
                                       int64_t num_pixels, cudaStream_t stream);
cudaError_t launch_rle_runs_cuda(const uint8_t* flags, const int32_t* rank,
                                 const int64_t* offsets, int64_t* ends, int64_t* counts,
                                 int64_t batch, int64_t num_pixels, int64_t total_runs,
                                 cudaStream_t stream);
#endif

}  // namespace sam2_fast
