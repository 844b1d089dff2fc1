// The torch side of every compiled op: schemas (TORCH_LIBRARY, namespace `sam2_fast`, called as
// torch.ops.sam2_fast.<name>), input checks, output allocation and per-device registration.
// This is the only translation unit that includes torch headers; the kernels work on raw
// pointers (connected_components.cpp, cuda/connected_components.cu), which keeps builds quick.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/cumsum.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#ifdef SAM2_FAST_WITH_CUDA
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <algorithm>
#include <cstdint>
#include <limits>
#include <tuple>

#include "connected_components.h"

namespace sam2_fast {
namespace {

// bool and uint8 are both one byte per pixel, nonzero = foreground
const uint8_t* mask_bytes(const at::Tensor& mask) {
  return static_cast<const uint8_t*>(mask.const_data_ptr());
}

// Items per parallel task for work of `pixels` per item: one item per task, but no threads for
// a handful of small items.
int64_t grain_for(int64_t pixels) {
  return std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, pixels));
}

void check_binary_dtype(const char* op, const char* name, const at::Tensor& masks) {
  TORCH_CHECK_TYPE(masks.scalar_type() == at::kBool || masks.scalar_type() == at::kByte, op, ": ",
                   name, " must be bool or uint8 (nonzero = foreground), got ",
                   masks.scalar_type());
}

// ---------------------------------------------------------------------------------------------
// connected_components(mask [N, 1, H, W] bool/uint8, connectivity 4 | 8)
//   -> (labels, areas) [N, 1, H, W] int32

void check_connected_components_args(const at::Tensor& mask, int64_t connectivity) {
  TORCH_CHECK_VALUE(mask.dim() == 4 && mask.size(1) == 1,
                    "connected_components: mask must be [N, 1, H, W], got ", mask.sizes());
  check_binary_dtype("connected_components", "mask", mask);
  TORCH_CHECK_VALUE(mask.size(2) * mask.size(3) < std::numeric_limits<int32_t>::max(),
                    "connected_components: H * W must fit in int32, got mask ", mask.sizes());
  TORCH_CHECK_VALUE(connectivity == 4 || connectivity == 8,
                    "connected_components: connectivity must be 4 or 8, got ", connectivity);
}

std::tuple<at::Tensor, at::Tensor> connected_components_cpu(const at::Tensor& mask,
                                                            int64_t connectivity) {
  check_connected_components_args(mask, connectivity);
  const at::Tensor input = mask.contiguous();
  at::Tensor labels = at::empty(input.sizes(), input.options().dtype(at::kInt));
  at::Tensor areas = at::empty(input.sizes(), input.options().dtype(at::kInt));
  const int64_t batch = input.size(0);
  const auto height = static_cast<int32_t>(input.size(2));
  const auto width = static_cast<int32_t>(input.size(3));
  const int64_t num_pixels = static_cast<int64_t>(height) * width;
  if (batch == 0 || num_pixels == 0) {
    return {labels, areas};
  }
  const uint8_t* mask_data = mask_bytes(input);
  int32_t* labels_data = labels.mutable_data_ptr<int32_t>();
  int32_t* areas_data = areas.mutable_data_ptr<int32_t>();
  at::parallel_for(0, batch, grain_for(num_pixels), [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const int64_t offset = n * num_pixels;
      label_image_cpu(mask_data + offset, labels_data + offset, areas_data + offset, height,
                      width, static_cast<int>(connectivity));
    }
  });
  return {labels, areas};
}

#ifdef SAM2_FAST_WITH_CUDA
std::tuple<at::Tensor, at::Tensor> connected_components_cuda(const at::Tensor& mask,
                                                             int64_t connectivity) {
  check_connected_components_args(mask, connectivity);
  const c10::cuda::CUDAGuard device_guard(mask.device());
  const at::Tensor input = mask.contiguous();
  const int64_t batch = input.size(0);
  const auto height = static_cast<int32_t>(input.size(2));
  const auto width = static_cast<int32_t>(input.size(3));
  const int64_t num_pixels = static_cast<int64_t>(height) * width;
  // labels first holds the union-find forest, areas first holds the root flags
  at::Tensor labels = at::empty(input.sizes(), input.options().dtype(at::kInt));
  at::Tensor areas = at::zeros(input.sizes(), input.options().dtype(at::kInt));
  if (batch == 0 || num_pixels == 0) {
    return {labels, areas};
  }
  const at::Tensor counts = at::zeros({batch, num_pixels}, input.options().dtype(at::kInt));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  C10_CUDA_CHECK(launch_find_components_cuda(
      mask_bytes(input), labels.mutable_data_ptr<int32_t>(), areas.mutable_data_ptr<int32_t>(),
      counts.mutable_data_ptr<int32_t>(), batch, height, width, static_cast<int>(connectivity),
      stream));
  // 1-based rank of each root among the roots of its image, in raster order
  const at::Tensor rank = at::cumsum(areas.view({batch, num_pixels}), 1, at::kInt);
  C10_CUDA_CHECK(launch_relabel_components_cuda(
      labels.mutable_data_ptr<int32_t>(), areas.mutable_data_ptr<int32_t>(),
      rank.const_data_ptr<int32_t>(), counts.const_data_ptr<int32_t>(), batch, height, width,
      stream));
  return {labels, areas};
}
#endif

}  // namespace
}  // namespace sam2_fast

TORCH_LIBRARY(sam2_fast, m) {
  // connectivity 4 or 8; components numbered 1..K per image in raster order of their first pixel
  m.def(
      "connected_components(Tensor mask, int connectivity=8) -> (Tensor labels, Tensor areas)");
}

TORCH_LIBRARY_IMPL(sam2_fast, CPU, m) {
  m.impl("connected_components", &sam2_fast::connected_components_cpu);
}

#ifdef SAM2_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(sam2_fast, CUDA, m) {
  m.impl("connected_components", &sam2_fast::connected_components_cuda);
}
#endif
