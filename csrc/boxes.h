// Box kernels on raw pointers, without torch headers: CPU in boxes.cpp, CUDA in
// cuda/boxes.cu. The torch ops (checks, sorting, allocation, registration) are in ops.cpp.
#pragma once

#include <cstdint>

#ifdef SAM2_FAST_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace sam2_fast {

// box = [x_min, y_min, x_max, y_max] of the nonzero pixels of one row-major [height, width]
// mask, max inclusive; [0, 0, 0, 0] when it has none.
void mask_box_cpu(const uint8_t* mask, int64_t height, int64_t width, int64_t* box);

// Greedy non-maximum suppression of `num_boxes` boxes already sorted by decreasing score, in
// columns x1, y1, x2, y2 (XYXY). Walking the boxes in order, a box not yet suppressed is kept
// and suppresses every later box whose IoU with it is > iou_threshold; IoU is computed as
// torchvision's nms computes it (areas (x2 - x1) * (y2 - y1), in T, compared in double).
// `areas` and `suppressed` are scratch of num_boxes elements; the kept positions (into the
// sorted order, increasing) are written to `keep`. Returns how many were kept.
// Instantiated for float and double.
template <typename T>
int64_t nms_sorted_cpu(const T* x1, const T* y1, const T* x2, const T* y2, int64_t num_boxes,
                       double iou_threshold, T* areas, uint8_t* suppressed, int64_t* keep);

#ifdef SAM2_FAST_WITH_CUDA
// CUDA: boxes [batch, 4] of row-major [batch, height, width] masks (as mask_box_cpu), one
// thread block per mask. height * width must be > 0. Returns the launch error, if any.
cudaError_t launch_mask_boxes_cuda(const uint8_t* masks, int64_t* boxes, int64_t batch,
                                   int64_t height, int64_t width, cudaStream_t stream);
#endif

}  // namespace sam2_fast
