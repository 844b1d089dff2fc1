// Connected-components kernels on raw pointers, without torch headers so that they compile
// fast: CPU in connected_components.cpp, CUDA in cuda/connected_components.cu. The torch op
// (checks, allocation, registration) is in ops.cpp.
#pragma once

#include <cstdint>

#ifdef SAM2_FAST_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace sam2_fast {

// Labels the connected components of one [height, width] image (nonzero = foreground), with
// `connectivity` 4 (edge neighbours) or 8 (edge and corner neighbours): labels 1..K in raster
// order of each component's first pixel (0 on background), areas = pixel count of each pixel's
// component (0 on background).
void label_image_cpu(const uint8_t* mask, int32_t* labels, int32_t* areas, int32_t height,
                     int32_t width, int connectivity);

#ifdef SAM2_FAST_WITH_CUDA
// CUDA, batch of [batch, height, width] images, connectivity 4 or 8, in two launches around a
// per-image inclusive cumsum of `root_flags` (done by the caller):
//   find:    labels[p] = image index of p's component root (-1 on background),
//            root_flags[p] = 1 on roots (must be zeroed before), counts[root] = component area
//            (must be zeroed before);
//   relabel: labels[p] = rank[root] (0 on background), areas[p] = counts[root].
// areas may alias root_flags. Returns the launch error, if any.
cudaError_t launch_find_components_cuda(const uint8_t* mask, int32_t* labels, int32_t* root_flags,
                                        int32_t* counts, int64_t batch, int32_t height,
                                        int32_t width, int connectivity, cudaStream_t stream);
cudaError_t launch_relabel_components_cuda(int32_t* labels, int32_t* areas, const int32_t* rank,
                                           const int32_t* counts, int64_t batch, int32_t height,
                                           int32_t width, cudaStream_t stream);
#endif

}  // namespace sam2_fast
