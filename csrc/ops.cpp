// The torch side of every compiled op: schemas (TORCH_LIBRARY, namespace `sam2_fast`, called as
// torch.ops.sam2_fast.<name>), input checks, output allocation and per-device registration.
// Besides attention.cpp (oneDNN's micro-kernels), this is the only translation unit that
// includes torch headers; the kernels work on raw pointers (connected_components.cpp, rle.cpp,
// boxes.cpp and their cuda/*.cu), which keeps builds quick.
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addcmul.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cumsum.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/layer_norm.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/zeros.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#ifdef SAM2_FAST_WITH_CUDA
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "attention.h"
#include "boxes.h"
#include "connected_components.h"
#include "layer_norm.h"
#include "lookup.h"
#include "pool.h"
#include "rle.h"
#include "upsample.h"

namespace sam2_fast {
namespace {

// Error messages are concatenated as std::string (std::to_string, snprintf), never formatted
// through std::ostream (c10::str, operator<< of IntArrayRef): with a toolchain that links
// libstdc++ statically into the extension (the GCC of one CUDA image did), this library's copy
// of ostream writing into streams set up by torch's copy crashed the process on an H200
// machine instead of raising the error.
namespace msg {
inline std::string piece(const char* text) { return text; }
inline std::string piece(const std::string& text) { return text; }
inline std::string piece(c10::ScalarType type) { return c10::toString(type); }
inline std::string piece(at::IntArrayRef sizes) {
  std::string out = "[";
  for (size_t i = 0; i < sizes.size(); ++i) {
    out += (i ? ", " : "") + std::to_string(sizes[i]);
  }
  return out + "]";
}
template <typename T, std::enable_if_t<std::is_integral_v<T>, int> = 0>
std::string piece(T value) {
  return std::to_string(value);
}
inline std::string piece(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%g", value);
  return buffer;
}
template <typename... Args>
std::string cat(const Args&... args) {
  std::string out;
  ((out += piece(args)), ...);
  return out;
}
}  // namespace msg

// TORCH_CHECK_VALUE / TORCH_CHECK_TYPE (ValueError / TypeError in Python) with the message
// built by msg::cat; a single std::string argument reaches c10 without any stream.
#define SAM2_CHECK_VALUE(cond, ...) TORCH_CHECK_VALUE(cond, ::sam2_fast::msg::cat(__VA_ARGS__))
#define SAM2_CHECK_TYPE(cond, ...) TORCH_CHECK_TYPE(cond, ::sam2_fast::msg::cat(__VA_ARGS__))

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
  SAM2_CHECK_TYPE(masks.scalar_type() == at::kBool || masks.scalar_type() == at::kByte, op, ": ",
                   name, " must be bool or uint8 (nonzero = foreground), got ",
                   masks.scalar_type());
}

// ---------------------------------------------------------------------------------------------
// connected_components(mask [N, 1, H, W] bool/uint8, connectivity 4 | 8)
//   -> (labels, areas) [N, 1, H, W] int32

void check_connected_components_args(const at::Tensor& mask, int64_t connectivity) {
  SAM2_CHECK_VALUE(mask.dim() == 4 && mask.size(1) == 1,
                    "connected_components: mask must be [N, 1, H, W], got ", mask.sizes());
  check_binary_dtype("connected_components", "mask", mask);
  SAM2_CHECK_VALUE(mask.size(2) * mask.size(3) < std::numeric_limits<int32_t>::max(),
                    "connected_components: H * W must fit in int32, got mask ", mask.sizes());
  SAM2_CHECK_VALUE(connectivity == 4 || connectivity == 8,
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

// ---------------------------------------------------------------------------------------------
// COCO RLE
//   rle_encode(masks [N, H, W] bool/uint8) -> (counts [total] int64, offsets [N + 1] int64)
//   rle_encode_compressed(masks) -> (chars [total] uint8, offsets [N + 1] int64), on the CPU
//   rle_decode(counts, offsets, height, width) -> masks [N, H, W] bool
// Mask n's runs (characters) are counts[offsets[n] : offsets[n + 1]].

void check_masks(const char* op, const at::Tensor& masks) {
  SAM2_CHECK_VALUE(masks.dim() == 3, op, ": masks must be [N, H, W], got ", masks.sizes());
  check_binary_dtype(op, "masks", masks);
}

// The parts laid end to end in one CPU tensor of `dtype`, and offsets [parts + 1] int64.
template <typename T>
std::tuple<at::Tensor, at::Tensor> concatenate(const std::vector<std::vector<T>>& parts,
                                               at::ScalarType dtype) {
  const auto num_parts = static_cast<int64_t>(parts.size());
  at::Tensor offsets = at::empty({num_parts + 1}, at::TensorOptions().dtype(at::kLong));
  int64_t* offsets_data = offsets.mutable_data_ptr<int64_t>();
  offsets_data[0] = 0;
  for (int64_t n = 0; n < num_parts; ++n) {
    offsets_data[n + 1] = offsets_data[n] + static_cast<int64_t>(parts[n].size());
  }
  at::Tensor flat = at::empty({offsets_data[num_parts]}, at::TensorOptions().dtype(dtype));
  T* flat_data = static_cast<T*>(flat.mutable_data_ptr());
  at::parallel_for(0, num_parts, 16, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      std::copy(parts[n].begin(), parts[n].end(), flat_data + offsets_data[n]);
    }
  });
  return {flat, offsets};
}

std::tuple<at::Tensor, at::Tensor> rle_encode_cpu(const at::Tensor& masks) {
  check_masks("rle_encode", masks);
  const at::Tensor input = masks.contiguous();
  const int64_t batch = input.size(0);
  const int64_t height = input.size(1);
  const int64_t width = input.size(2);
  const uint8_t* data = mask_bytes(input);
  std::vector<std::vector<int64_t>> runs(static_cast<size_t>(batch));
  at::parallel_for(0, batch, grain_for(height * width), [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      rle_encode_mask_cpu(data + n * height * width, height, width, runs[n]);
    }
  });
  return concatenate(runs, at::kLong);
}

// pycocotools' strings of run lengths (CPU int64), mask by mask.
std::tuple<at::Tensor, at::Tensor> compress_runs(const at::Tensor& counts,
                                                 const at::Tensor& offsets) {
  const int64_t batch = offsets.numel() - 1;
  const int64_t* counts_data = counts.const_data_ptr<int64_t>();
  const int64_t* offsets_data = offsets.const_data_ptr<int64_t>();
  std::vector<std::vector<uint8_t>> chars(static_cast<size_t>(batch));
  at::parallel_for(0, batch, 64, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      rle_compress_cpu(counts_data + offsets_data[n], offsets_data[n + 1] - offsets_data[n],
                       chars[n]);
    }
  });
  return concatenate(chars, at::kByte);
}

std::tuple<at::Tensor, at::Tensor> rle_encode_compressed_cpu(const at::Tensor& masks) {
  check_masks("rle_encode_compressed", masks);
  const at::Tensor input = masks.contiguous();
  const int64_t batch = input.size(0);
  const int64_t height = input.size(1);
  const int64_t width = input.size(2);
  const uint8_t* data = mask_bytes(input);
  std::vector<std::vector<uint8_t>> chars(static_cast<size_t>(batch));
  at::parallel_for(0, batch, grain_for(height * width), [&](int64_t begin, int64_t end) {
    std::vector<int64_t> runs;
    for (int64_t n = begin; n < end; ++n) {
      runs.clear();
      rle_encode_mask_cpu(data + n * height * width, height, width, runs);
      rle_compress_cpu(runs.data(), static_cast<int64_t>(runs.size()), chars[n]);
    }
  });
  return concatenate(chars, at::kByte);
}

// Checks every run of every mask before anything is written: the error names the mask.
void check_rle_runs(const int64_t* counts, const int64_t* offsets, int64_t batch,
                    int64_t num_counts, int64_t height, int64_t width) {
  SAM2_CHECK_VALUE(offsets[0] == 0 && offsets[batch] == num_counts,
                    "rle_decode: offsets must run from 0 to counts.numel() = ", num_counts,
                    ", got offsets[0] = ", offsets[0], " and offsets[-1] = ", offsets[batch]);
  for (int64_t n = 0; n < batch; ++n) {
    SAM2_CHECK_VALUE(offsets[n] <= offsets[n + 1], "rle_decode: offsets must not decrease, got ",
                      "offsets[", n, "] = ", offsets[n], " > offsets[", n + 1,
                      "] = ", offsets[n + 1]);
  }
  const int64_t num_pixels = height * width;
  for (int64_t n = 0; n < batch; ++n) {
    int64_t covered = 0;
    for (int64_t i = offsets[n]; i < offsets[n + 1]; ++i) {
      SAM2_CHECK_VALUE(counts[i] >= 0, "rle_decode: run ", i - offsets[n], " of mask ", n,
                        " has negative length ", counts[i]);
      // saturates instead of overflowing: the sum is only reported when it is wrong
      covered = counts[i] > std::numeric_limits<int64_t>::max() - covered
                    ? std::numeric_limits<int64_t>::max()
                    : covered + counts[i];
    }
    SAM2_CHECK_VALUE(covered == num_pixels, "rle_decode: the runs of mask ", n, " cover ",
                      covered, " pixels, expected height * width = ", height, " * ", width,
                      " = ", num_pixels);
  }
}

at::Tensor rle_decode_cpu(const at::Tensor& counts, const at::Tensor& offsets, int64_t height,
                          int64_t width) {
  SAM2_CHECK_VALUE(counts.dim() == 1, "rle_decode: counts must be 1-D [total], got ",
                    counts.sizes());
  SAM2_CHECK_TYPE(counts.scalar_type() == at::kLong, "rle_decode: counts must be int64, got ",
                   counts.scalar_type());
  SAM2_CHECK_VALUE(offsets.dim() == 1 && offsets.numel() >= 1,
                    "rle_decode: offsets must be 1-D [N + 1], got ", offsets.sizes());
  SAM2_CHECK_TYPE(offsets.scalar_type() == at::kLong, "rle_decode: offsets must be int64, got ",
                   offsets.scalar_type());
  SAM2_CHECK_VALUE(height >= 0 && width >= 0,
                    "rle_decode: height and width must be >= 0, got ", height, " and ", width);
  const at::Tensor counts_in = counts.contiguous();
  const at::Tensor offsets_in = offsets.contiguous();
  const int64_t batch = offsets_in.numel() - 1;
  const int64_t* counts_data = counts_in.const_data_ptr<int64_t>();
  const int64_t* offsets_data = offsets_in.const_data_ptr<int64_t>();
  check_rle_runs(counts_data, offsets_data, batch, counts_in.numel(), height, width);
  at::Tensor masks = at::empty({batch, height, width}, at::TensorOptions().dtype(at::kBool));
  auto* masks_data = static_cast<uint8_t*>(masks.mutable_data_ptr());
  const int64_t num_pixels = height * width;
  at::parallel_for(0, batch, grain_for(num_pixels), [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      rle_decode_mask_cpu(counts_data + offsets_data[n], offsets_data[n + 1] - offsets_data[n],
                          height, width, masks_data + n * num_pixels);
    }
  });
  return masks;
}

#ifdef SAM2_FAST_WITH_CUDA
std::tuple<at::Tensor, at::Tensor> rle_encode_cuda(const at::Tensor& masks) {
  check_masks("rle_encode", masks);
  const c10::cuda::CUDAGuard device_guard(masks.device());
  const int64_t batch = masks.size(0);
  const int64_t num_pixels = masks.size(1) * masks.size(2);
  SAM2_CHECK_VALUE(num_pixels < std::numeric_limits<int32_t>::max(),
                    "rle_encode: H * W must fit in int32 on cuda, got masks ", masks.sizes());
  const auto long_options = masks.options().dtype(at::kLong);
  if (batch == 0 || num_pixels == 0) {  // every mask is the single empty run
    return {at::zeros({batch}, long_options), at::arange(batch + 1, long_options)};
  }
  // [N, W, H]: each mask in column-major order, so that the kernels read it coalesced
  const at::Tensor column_major = masks.transpose(1, 2).contiguous();
  at::Tensor flags = at::empty({batch, num_pixels}, masks.options().dtype(at::kByte));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  C10_CUDA_CHECK(launch_rle_boundaries_cuda(mask_bytes(column_major),
                                            flags.mutable_data_ptr<uint8_t>(), batch, num_pixels,
                                            stream));
  // rank of each boundary within its mask, 1-based; a mask has (boundaries + 1) runs
  const at::Tensor rank = at::cumsum(flags, 1, at::kInt);
  const at::Tensor runs = rank.select(1, num_pixels - 1).to(at::kLong).add(1);
  at::Tensor offsets = at::zeros({batch + 1}, long_options);
  offsets.slice(0, 1).copy_(at::cumsum(runs, 0));
  const int64_t total_runs = offsets.select(0, batch).item<int64_t>();
  at::Tensor ends = at::empty({total_runs}, long_options);
  at::Tensor counts = at::empty({total_runs}, long_options);
  C10_CUDA_CHECK(launch_rle_runs_cuda(
      flags.const_data_ptr<uint8_t>(), rank.const_data_ptr<int32_t>(),
      offsets.const_data_ptr<int64_t>(), ends.mutable_data_ptr<int64_t>(),
      counts.mutable_data_ptr<int64_t>(), batch, num_pixels, total_runs, stream));
  return {counts, offsets};
}

// The runs are found on the GPU; the strings are written on the CPU (they are short, and go
// to Python strings anyway), so the result is on the CPU.
std::tuple<at::Tensor, at::Tensor> rle_encode_compressed_cuda(const at::Tensor& masks) {
  check_masks("rle_encode_compressed", masks);
  const auto [counts, offsets] = rle_encode_cuda(masks);
  return compress_runs(counts.cpu(), offsets.cpu());
}
#endif

// ---------------------------------------------------------------------------------------------
// masks_to_boxes(masks [..., H, W] bool/uint8) -> boxes [..., 4] int64 XYXY, max inclusive
// box_nms(boxes [N, 4] float32/float64, scores [N] floating, iou_threshold) -> keep [K] int64

// (batch, H, W) of masks [..., H, W]: every leading dim is flattened into the batch.
std::tuple<int64_t, int64_t, int64_t> check_box_masks(const at::Tensor& masks) {
  SAM2_CHECK_VALUE(masks.dim() >= 2, "masks_to_boxes: masks must be [..., H, W], got ",
                    masks.sizes());
  check_binary_dtype("masks_to_boxes", "masks", masks);
  int64_t batch = 1;
  for (int64_t d = 0; d < masks.dim() - 2; ++d) {
    batch *= masks.size(d);
  }
  return {batch, masks.size(-2), masks.size(-1)};
}

// zeros [..., 4] int64: the box of a mask without pixels
at::Tensor empty_boxes(const at::Tensor& masks) {
  std::vector<int64_t> shape(masks.sizes().begin(), masks.sizes().end() - 2);
  shape.push_back(4);
  return at::zeros(shape, masks.options().dtype(at::kLong));
}

at::Tensor masks_to_boxes_cpu(const at::Tensor& masks) {
  const auto [batch, height, width] = check_box_masks(masks);
  at::Tensor boxes = empty_boxes(masks);
  if (batch == 0 || height * width == 0) {
    return boxes;
  }
  const at::Tensor input = masks.contiguous();
  const uint8_t* data = mask_bytes(input);
  int64_t* boxes_data = boxes.mutable_data_ptr<int64_t>();
  at::parallel_for(0, batch, grain_for(height * width), [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      mask_box_cpu(data + n * height * width, height, width, boxes_data + 4 * n);
    }
  });
  return boxes;
}

#ifdef SAM2_FAST_WITH_CUDA
at::Tensor masks_to_boxes_cuda(const at::Tensor& masks) {
  const auto [batch, height, width] = check_box_masks(masks);
  SAM2_CHECK_VALUE(height < std::numeric_limits<int32_t>::max() &&
                        width < std::numeric_limits<int32_t>::max(),
                    "masks_to_boxes: H and W must fit in int32 on cuda, got masks ",
                    masks.sizes());
  const c10::cuda::CUDAGuard device_guard(masks.device());
  at::Tensor boxes = empty_boxes(masks);
  if (batch == 0 || height * width == 0) {
    return boxes;
  }
  const at::Tensor input = masks.contiguous();
  C10_CUDA_CHECK(launch_mask_boxes_cuda(mask_bytes(input), boxes.mutable_data_ptr<int64_t>(),
                                        batch, height, width,
                                        c10::cuda::getCurrentCUDAStream()));
  return boxes;
}
#endif

// ---------------------------------------------------------------------------------------------
// upsample_threshold(logits [N, h, w] float32, out_h, out_w, thresholds (1..3), fused)
//   -> (masks [N, out_h, out_w] bool, counts [N, K] int32)

std::tuple<at::Tensor, at::Tensor> upsample_threshold_cpu(const at::Tensor& logits,
                                                          int64_t out_h, int64_t out_w,
                                                          at::ArrayRef<double> thresholds,
                                                          bool fused) {
  SAM2_CHECK_VALUE(logits.dim() == 3, "upsample_threshold: logits must be [N, h, w], got ",
                    logits.sizes());
  SAM2_CHECK_TYPE(logits.scalar_type() == at::kFloat,
                   "upsample_threshold: logits must be float32, got ", logits.scalar_type());
  SAM2_CHECK_VALUE(logits.size(1) > 0 && logits.size(2) > 0,
                    "upsample_threshold: logits must have a non-empty [h, w], got ",
                    logits.sizes());
  SAM2_CHECK_VALUE(out_h > 0 && out_w > 0,
                    "upsample_threshold: out_h and out_w must be > 0, got ", out_h, " and ",
                    out_w);
  SAM2_CHECK_VALUE(out_h * out_w <= std::numeric_limits<int32_t>::max(),
                    "upsample_threshold: out_h * out_w must fit the int32 counts, got ", out_h,
                    " x ", out_w);
  SAM2_CHECK_VALUE(logits.size(1) < std::numeric_limits<int32_t>::max() &&
                        logits.size(2) < std::numeric_limits<int32_t>::max(),
                    "upsample_threshold: h and w must fit in int32, got logits ",
                    logits.sizes());
  const int num_thresholds = static_cast<int>(thresholds.size());
  SAM2_CHECK_VALUE(num_thresholds >= 1 && num_thresholds <= 3,
                    "upsample_threshold: thresholds must hold 1 to 3 values, got ",
                    num_thresholds);
  const at::Tensor input = logits.contiguous();
  const int64_t batch = input.size(0);
  const int64_t in_h = input.size(1);
  const int64_t in_w = input.size(2);
  at::Tensor masks = at::empty({batch, out_h, out_w}, input.options().dtype(at::kBool));
  at::Tensor counts = at::zeros({batch, num_thresholds}, input.options().dtype(at::kInt));
  if (batch == 0) {
    return {masks, counts};
  }
  float levels[3];
  for (int k = 0; k < num_thresholds; ++k) {
    levels[k] = static_cast<float>(thresholds[k]);  // compared in float32, as torch.gt does
  }
  const BilinearTaps rows = bilinear_taps(in_h, out_h, fused);
  const BilinearTaps columns = bilinear_taps(in_w, out_w, fused);
  // tasks = (mask, band of rows): whole masks when there are enough of them, else bands of
  // at least 32 rows so that every thread has work
  const int64_t threads = at::get_num_threads();
  const int64_t bands = std::clamp<int64_t>((4 * threads + batch - 1) / batch, 1,
                                            std::max<int64_t>(1, out_h / 32));
  const int64_t band_rows = (out_h + bands - 1) / bands;
  const int64_t tasks = batch * bands;
  std::vector<int64_t> partial(static_cast<size_t>(tasks) * num_thresholds, 0);
  const float* source = input.const_data_ptr<float>();
  uint8_t* mask_data = static_cast<uint8_t*>(masks.mutable_data_ptr());
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / bands;
      const int64_t y_begin = (t % bands) * band_rows;
      const int64_t y_end = std::min(out_h, y_begin + band_rows);
      if (y_begin >= y_end) {
        continue;
      }
      upsample_threshold_rows_cpu(source + n * in_h * in_w, in_w, rows, columns, y_begin, y_end,
                                  levels, num_thresholds, fused,
                                  mask_data + n * out_h * out_w,
                                  partial.data() + t * num_thresholds);
    }
  });
  int32_t* count_data = counts.mutable_data_ptr<int32_t>();
  for (int64_t t = 0; t < tasks; ++t) {
    for (int k = 0; k < num_thresholds; ++k) {
      count_data[(t / bands) * num_thresholds + k] +=
          static_cast<int32_t>(partial[t * num_thresholds + k]);
    }
  }
  return {masks, counts};
}

// ---------------------------------------------------------------------------------------------
// flash_attention(q [B, H, Nq, D], k [B, H, Nk, D], v [B, 1 | H, Nk, Dv], cos?, sin? [Nq, D / 2],
//                 num_k_rope, scale, q_block, kv_block) -> [B, H, Nq, Dv] (attention.h)

// the problem p run into out (its dtype: bf16 or float32) with the call's scale and block sizes
at::Tensor run_attention(AttentionProblem& p, at::Tensor& out, bool bf16, double scale,
                         int64_t q_block, int64_t kv_block) {
  p.out = out.mutable_data_ptr();
  p.scale = static_cast<float>(scale);
  p.q_block = q_block;
  p.kv_block = kv_block;
  if (bf16) {
    attention_cpu_bf16(p);
  } else {
    attention_cpu_f32(p);
  }
  return out;
}

at::Tensor flash_attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const std::optional<at::Tensor>& cos,
                               const std::optional<at::Tensor>& sin, int64_t num_k_rope,
                               double scale, int64_t q_block, int64_t kv_block) {
  const char* op = "flash_attention";
  SAM2_CHECK_VALUE(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op,
                    ": q, k and v must be [B, heads, tokens, dim], got ", q.sizes(), ", ",
                    k.sizes(), " and ", v.sizes());
  SAM2_CHECK_TYPE(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(), op,
                   ": q, k and v must have one dtype, got ", q.scalar_type(), ", ",
                   k.scalar_type(), " and ", v.scalar_type());
  const bool bf16 = q.scalar_type() == at::kBFloat16;
  SAM2_CHECK_TYPE(bf16 || q.scalar_type() == at::kFloat, op,
                   ": q, k and v must be float32 or bfloat16, got ", q.scalar_type());
  const int64_t batch = q.size(0), heads = q.size(1), num_q = q.size(2), dim = q.size(3);
  const int64_t num_k = k.size(2), dim_v = v.size(3);
  SAM2_CHECK_VALUE(k.size(0) == batch && k.size(1) == heads && k.size(3) == dim, op,
                    ": k must be [", batch, ", ", heads, ", Nk, ", dim, "] to match q ",
                    q.sizes(), ", got ", k.sizes());
  SAM2_CHECK_VALUE(v.size(0) == batch && (v.size(1) == 1 || v.size(1) == heads) &&
                        v.size(2) == num_k,
                    op, ": v must be [", batch, ", 1 or ", heads, ", ", num_k,
                    ", Dv] to match q and k, got ", v.sizes());
  SAM2_CHECK_VALUE(dim % 2 == 0 && dim > 0 && dim_v > 0, op,
                    ": the head dims must be > 0 and D even, got D ", dim, ", Dv ", dim_v);
  SAM2_CHECK_VALUE(num_q > 0 && num_k > 0, op, ": needs queries and keys, got q ", q.sizes(),
                    ", k ", k.sizes());
  SAM2_CHECK_VALUE(q_block >= 16 && kv_block >= 16 && kv_block % 16 == 0, op,
                    ": q_block must be >= 16 and kv_block a multiple of 16, got ", q_block,
                    " and ", kv_block);
  SAM2_CHECK_VALUE(cos.has_value() == sin.has_value(), op,
                    ": cos and sin must be given together");
  SAM2_CHECK_VALUE(q.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu(), op,
                    ": q, k and v must be CPU tensors");
  const std::string unsupported = attention_cpu_unsupported(bf16);
  SAM2_CHECK_VALUE(unsupported.empty(), op, ": ", unsupported);
  // channels contiguous; any other strides are read as they are
  const at::Tensor qc = q.stride(3) == 1 ? q : q.contiguous();
  const at::Tensor kc = k.stride(3) == 1 ? k : k.contiguous();
  const at::Tensor vc = v.stride(3) == 1 ? v : v.contiguous();
  at::Tensor cos_c, sin_c;
  AttentionProblem p;
  if (cos.has_value()) {
    SAM2_CHECK_VALUE(cos->sizes() == sin->sizes() && cos->dim() == 2 && cos->size(0) == num_q &&
                          cos->size(1) == dim / 2,
                      op, ": cos and sin must be [", num_q, ", ", dim / 2, "], got ",
                      cos->sizes(), " and ", sin->sizes());
    SAM2_CHECK_TYPE(cos->scalar_type() == at::kFloat && sin->scalar_type() == at::kFloat, op,
                     ": cos and sin must be float32, got ", cos->scalar_type(), " and ",
                     sin->scalar_type());
    SAM2_CHECK_VALUE(num_k_rope >= 0 && num_k_rope <= num_k && num_k_rope % num_q == 0, op,
                      ": num_k_rope must be a multiple of the ", num_q,
                      " queries in [0, ", num_k, "], got ", num_k_rope);
    cos_c = cos->contiguous();
    sin_c = sin->contiguous();
    p.cos = cos_c.const_data_ptr<float>();
    p.sin = sin_c.const_data_ptr<float>();
    p.num_k_rope = num_k_rope;
  }
  at::Tensor out = at::empty({batch, heads, num_q, dim_v}, q.options());
  p.batch = batch;
  p.heads = heads;
  p.num_q = num_q;
  p.num_k = num_k;
  p.dim = dim;
  p.dim_v = dim_v;
  p.q = qc.const_data_ptr();
  p.k = kc.const_data_ptr();
  p.v = vc.const_data_ptr();
  for (int i = 0; i < 3; ++i) {
    p.q_stride[i] = qc.stride(i);
    p.k_stride[i] = kc.stride(i);
    p.v_stride[i] = vc.stride(i);
  }
  if (vc.size(1) == 1) {
    p.v_stride[1] = 0;
  }
  return run_attention(p, out, bf16, scale, q_block, kv_block);
}

// ---------------------------------------------------------------------------------------------
// window_flash_attention(q [B, Hq, Wq, heads * D], k [B, H, W, heads * D], v [B, H, W, heads * Dv],
//                        k_pad [heads * D], v_pad [heads * Dv], heads, window, q_window, scale,
//                        q_block, kv_block) -> [B, Hq, Wq, heads * Dv]
// Attention inside window x window tiles of the key grid (the keys of a tile past the grid read
// k_pad / v_pad), each query of the q_window x q_window tile at the same tile index attending to
// its tile's keys, read and written in place in the token grids (attention.h, windowed mode).

at::Tensor window_flash_attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const at::Tensor& k_pad, const at::Tensor& v_pad,
                                      int64_t heads, int64_t window, int64_t q_window, double scale,
                                      int64_t q_block, int64_t kv_block) {
  const char* op = "window_flash_attention";
  SAM2_CHECK_VALUE(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op,
                    ": q, k and v must be [B, rows, columns, channels] token grids, got ",
                    q.sizes(), ", ", k.sizes(), " and ", v.sizes());
  SAM2_CHECK_TYPE(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type() &&
                       q.scalar_type() == k_pad.scalar_type() &&
                       q.scalar_type() == v_pad.scalar_type(),
                   op, ": q, k, v, k_pad and v_pad must have one dtype, got ", q.scalar_type(),
                   ", ", k.scalar_type(), ", ", v.scalar_type(), ", ", k_pad.scalar_type(), " and ",
                   v_pad.scalar_type());
  const bool bf16 = q.scalar_type() == at::kBFloat16;
  SAM2_CHECK_TYPE(bf16 || q.scalar_type() == at::kFloat, op,
                   ": q, k and v must be float32 or bfloat16, got ", q.scalar_type());
  SAM2_CHECK_VALUE(heads > 0 && window > 0 && q_window > 0, op,
                    ": heads, window and q_window must be > 0, got ", heads, ", ", window, " and ",
                    q_window);
  const int64_t batch = q.size(0);
  SAM2_CHECK_VALUE(k.size(0) == batch && v.size(0) == batch && k.size(1) == v.size(1) &&
                        k.size(2) == v.size(2),
                    op, ": k and v must be one [", batch, ", H, W, C] grid with q's batch, got ",
                    k.sizes(), " and ", v.sizes());
  SAM2_CHECK_VALUE(q.size(3) % heads == 0 && v.size(3) % heads == 0 && k.size(3) == q.size(3), op,
                    ": the channels of q and k (", q.size(3), ", ", k.size(3), ") must be equal and, "
                    "like v's (", v.size(3), "), a multiple of heads = ", heads);
  const int64_t dim = q.size(3) / heads, dim_v = v.size(3) / heads;
  SAM2_CHECK_VALUE(dim % 2 == 0 && dim_v > 0, op,
                    ": the head dims must be > 0 and D even, got D ", dim, ", Dv ", dim_v);
  SAM2_CHECK_VALUE(k_pad.dim() == 1 && k_pad.size(0) == k.size(3) && v_pad.dim() == 1 &&
                        v_pad.size(0) == v.size(3),
                    op, ": k_pad and v_pad must be [", k.size(3), "] and [", v.size(3), "], got ",
                    k_pad.sizes(), " and ", v_pad.sizes());
  const int64_t windows_y = (k.size(1) + window - 1) / window;
  const int64_t windows_x = (k.size(2) + window - 1) / window;
  SAM2_CHECK_VALUE(q.size(1) > 0 && q.size(2) > 0 && k.size(1) > 0 && k.size(2) > 0 &&
                        q.size(1) <= windows_y * q_window && q.size(2) <= windows_x * q_window,
                    op, ": the query grid ", q.size(1), " x ", q.size(2), " must be non-empty and "
                    "covered by the ", windows_y, " x ", windows_x, " tiles of ", q_window,
                    " queries (one per key tile of ", window, " over ", k.size(1), " x ",
                    k.size(2), ")");
  SAM2_CHECK_VALUE(q_block >= 16 && kv_block >= 16 && kv_block % 16 == 0, op,
                    ": q_block must be >= 16 and kv_block a multiple of 16, got ", q_block,
                    " and ", kv_block);
  SAM2_CHECK_VALUE(q.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu() &&
                        k_pad.device().is_cpu() && v_pad.device().is_cpu(),
                    op, ": q, k, v, k_pad and v_pad must be CPU tensors");
  const std::string unsupported = attention_cpu_unsupported(bf16);
  SAM2_CHECK_VALUE(unsupported.empty(), op, ": ", unsupported);
  // channels contiguous; any other strides are read as they are
  const at::Tensor qc = q.stride(3) == 1 ? q : q.contiguous();
  const at::Tensor kc = k.stride(3) == 1 ? k : k.contiguous();
  const at::Tensor vc = v.stride(3) == 1 ? v : v.contiguous();
  const at::Tensor kp = k_pad.contiguous(), vp = v_pad.contiguous();
  at::Tensor out = at::empty({batch, q.size(1), q.size(2), v.size(3)}, q.options());
  AttentionProblem p;
  p.batch = batch;
  p.heads = heads;
  p.num_q = q_window * q_window;
  p.num_k = window * window;
  p.dim = dim;
  p.dim_v = dim_v;
  p.q = qc.const_data_ptr();
  p.k = kc.const_data_ptr();
  p.v = vc.const_data_ptr();
  p.q_stride[0] = qc.stride(0);
  p.k_stride[0] = kc.stride(0);
  p.v_stride[0] = vc.stride(0);
  for (int i = 0; i < 2; ++i) {
    p.q_yx[i] = qc.stride(i + 1);
    p.k_yx[i] = kc.stride(i + 1);
    p.v_yx[i] = vc.stride(i + 1);
    p.q_grid[i] = q.size(i + 1);
    p.k_grid[i] = k.size(i + 1);
  }
  for (int i = 0; i < 3; ++i) {
    p.out_stride[i] = out.stride(i);
  }
  p.window_k = window;
  p.window_q = q_window;
  p.windows_y = windows_y;
  p.windows_x = windows_x;
  p.k_pad = kp.const_data_ptr();
  p.v_pad = vp.const_data_ptr();
  return run_attention(p, out, bf16, scale, q_block, kv_block);
}

// why flash_attention cannot run bfloat16 (bf16) or float32 inputs on this CPU, "" if it can
std::string flash_attention_unsupported(bool bf16) { return attention_cpu_unsupported(bf16); }

// ---------------------------------------------------------------------------------------------
// lookup_bf16_(values, table) -> values: values[i] = table[bits of values[i]], in place
// (lookup.h); values a contiguous bfloat16 CPU tensor, table 65 537 bfloat16 (the last one
// padding)

at::Tensor lookup_bf16_(at::Tensor values, const at::Tensor& table) {
  constexpr const char* op = "lookup_bf16_";
  SAM2_CHECK_VALUE(values.scalar_type() == at::kBFloat16 && values.is_contiguous(), op,
                   ": values must be a contiguous bfloat16 tensor, got ", values.scalar_type(),
                   values.is_contiguous() ? "" : " (not contiguous)");
  SAM2_CHECK_VALUE(table.scalar_type() == at::kBFloat16 && table.dim() == 1 &&
                       table.size(0) == 65537 && table.is_contiguous(),
                   op, ": table must be a contiguous bfloat16 tensor of 65537 entries, got ",
                   table.scalar_type(), " ", table.sizes());
  SAM2_CHECK_VALUE(values.device() == table.device(), op,
                   ": values and table must be on the same device, got ", values.device().str(),
                   " and ", table.device().str());
  lookup_u16_inplace(reinterpret_cast<uint16_t*>(values.mutable_data_ptr<at::BFloat16>()),
                     values.numel(), reinterpret_cast<const uint16_t*>(table.const_data_ptr<at::BFloat16>()));
  return values;
}

bool lookup_bf16_vectorized() { return lookup_u16_is_vectorized(); }

// ---------------------------------------------------------------------------------------------
// layer_norm_bf16(x, weight, bias, eps) -> normed and add_layer_norm_bf16(x, delta, weight, bias,
// eps) -> (x + delta, normed): LayerNorm over the last dim of a contiguous float32 or bfloat16
// CPU tensor, rounded to bfloat16, after a residual add for the second (delta float32 or
// bfloat16, x's shape; the sum in torch's promoted dtype: bfloat16 only when both are)
// (layer_norm.h)

bool is_ln_dtype(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16;
}

void check_layer_norm_args(const char* op, const at::Tensor& x, const at::Tensor& weight,
                           const at::Tensor& bias) {
  SAM2_CHECK_VALUE(x.device().is_cpu() && is_ln_dtype(x) && x.is_contiguous() && x.dim() >= 1, op,
                   ": x must be a contiguous float32 or bfloat16 CPU tensor, got ", x.scalar_type(),
                   " on ", x.device().str(), x.is_contiguous() ? "" : " (not contiguous)");
  const int64_t c = x.size(-1);
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"weight", &weight},
                                std::pair<const char*, const at::Tensor*>{"bias", &bias}}) {
    SAM2_CHECK_VALUE(t->device().is_cpu() && t->scalar_type() == at::kFloat && t->dim() == 1 &&
                         t->size(0) == c && t->is_contiguous(),
                     op, ": ", name, " must be a contiguous float32 CPU tensor of ", std::to_string(c),
                     " (x's last dim), got ", t->scalar_type(), " ", t->sizes());
  }
}

at::Tensor run_layer_norm(const at::Tensor& x, const at::Tensor* delta, at::Tensor* sum,
                          const at::Tensor& weight, const at::Tensor& bias, double eps) {
  at::Tensor normed = at::empty(x.sizes(), x.options().dtype(at::kBFloat16));
  const int64_t c = x.size(-1);
  const int64_t rows = c == 0 ? 0 : x.numel() / c;
  const bool x_bf16 = x.scalar_type() == at::kBFloat16;
  const bool delta_bf16 = delta != nullptr && delta->scalar_type() == at::kBFloat16;
  const bool sum_bf16 = x_bf16 && (delta == nullptr || delta_bf16);
  add_layer_norm_bf16(x.const_data_ptr(), x_bf16, delta == nullptr ? nullptr : delta->const_data_ptr(),
                      delta_bf16, sum == nullptr ? nullptr : sum->mutable_data_ptr(), sum_bf16,
                      reinterpret_cast<uint16_t*>(normed.mutable_data_ptr<at::BFloat16>()), rows, c,
                      weight.const_data_ptr<float>(), bias.const_data_ptr<float>(),
                      static_cast<float>(eps));
  return normed;
}

at::Tensor layer_norm_bf16_cpu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                               double eps) {
  check_layer_norm_args("layer_norm_bf16", x, weight, bias);
  return run_layer_norm(x, nullptr, nullptr, weight, bias, eps);
}

std::tuple<at::Tensor, at::Tensor> add_layer_norm_bf16_cpu(const at::Tensor& x, const at::Tensor& delta,
                                                           const at::Tensor& weight,
                                                           const at::Tensor& bias, double eps) {
  constexpr const char* op = "add_layer_norm_bf16";
  check_layer_norm_args(op, x, weight, bias);
  SAM2_CHECK_VALUE(delta.device().is_cpu() && is_ln_dtype(delta) && delta.is_contiguous() &&
                       delta.sizes() == x.sizes(),
                   op, ": delta must be a contiguous float32 or bfloat16 CPU tensor of x's shape ",
                   x.sizes(), ", got ", delta.scalar_type(), " ", delta.sizes(),
                   delta.is_contiguous() ? "" : " (not contiguous)");
  const bool both_bf16 = x.scalar_type() == at::kBFloat16 && delta.scalar_type() == at::kBFloat16;
  at::Tensor sum = at::empty(x.sizes(), x.options().dtype(both_bf16 ? at::kBFloat16 : at::kFloat));
  at::Tensor normed = run_layer_norm(x, &delta, &sum, weight, bias, eps);
  return {sum, normed};
}

bool add_layer_norm_vectorized() { return add_layer_norm_is_vectorized(); }

// ---------------------------------------------------------------------------------------------
// max_pool_nhwc(x, stride) -> [B, H / stride, W / stride, C]: max pooling with kernel = stride of
// a channels-last float32 / bfloat16 CPU tensor [B, H, W, C] (channels contiguous, other strides
// any; sizes floored), NaN propagating (pool.h)

at::Tensor max_pool_nhwc_cpu(const at::Tensor& x, int64_t stride) {
  constexpr const char* op = "max_pool_nhwc";
  SAM2_CHECK_VALUE(x.device().is_cpu() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16) &&
                       x.dim() == 4 && (x.size(3) <= 1 || x.stride(3) == 1),
                   op, ": x must be a float32 or bfloat16 CPU tensor [B, H, W, C] with contiguous channels, got ",
                   x.scalar_type(), " ", x.sizes(), " on ", x.device().str());
  SAM2_CHECK_VALUE(stride >= 1, op, ": stride must be >= 1, got ", std::to_string(stride));
  const int64_t out_h = x.size(1) / stride, out_w = x.size(2) / stride;
  at::Tensor out = at::empty({x.size(0), out_h, out_w, x.size(3)}, x.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  max_pool_nhwc(x.const_data_ptr(), x.scalar_type() == at::kBFloat16, x.size(0), out_h, out_w, x.size(3),
                stride, x.stride(0), x.stride(1), x.stride(2), out.mutable_data_ptr());
  return out;
}

// ---------------------------------------------------------------------------------------------
// parallel_threads(tasks) -> how many of torch's threads ran a share of `tasks` one-item tasks
// through at::parallel_for, as every C++ op here splits its work (1 = serial)

int64_t parallel_threads(int64_t tasks) {
  SAM2_CHECK_VALUE(tasks >= 0, "parallel_threads: tasks must be >= 0, got ", tasks);
  std::vector<uint8_t> ran(static_cast<size_t>(std::max(1, at::get_num_threads())), 0);
  at::parallel_for(0, tasks, 1, [&](int64_t, int64_t) {
    const int thread = at::get_thread_num();
    if (thread >= 0 && static_cast<size_t>(thread) < ran.size()) {
      ran[thread] = 1;
    }
  });
  return std::count(ran.begin(), ran.end(), uint8_t{1});
}

// ---------------------------------------------------------------------------------------------
// upscale_masks: the mask decoder's upscaler and hypernetwork product for prompts that share
// an image (modeling/shared_image_decoder.py, _upscale_masks), per image token f:
//   y[f]   = base[f] + sum_k left[i, k, f] * right[i, k] + sum_j scales[i, j, f] * shared[j, f]
//            ([4 * c1]: the first 2x2 transposed convolution's four output pixels)
//   z      = gelu(layer_norm(y as [4, c1]))  @ w2 + bias2[4f .. 4f + 3]   ([4, 4 * c2])
//   r      = gelu(z as [16, c2]) @ hyper[i].T                             ([16, m])
// and r[8 a + 4 b + 2 a2 + b2, k] is mask k's pixel (4 y + 2 a + a2, 4 x + 2 b + b2) of image
// token f = y * width + x: out [n, m, 4 height, 4 width], the decoder's mask logits.
// One task per (prompt, tile of image tokens): its intermediates stay in the core's cache and
// every ATen call in it runs on that thread (ATen does not nest parallel regions).

at::Tensor upscale_masks_cpu(const at::Tensor& base, const at::Tensor& left,
                             const at::Tensor& right, const at::Tensor& shared,
                             const at::Tensor& scales, const at::Tensor& ln_weight,
                             const at::Tensor& ln_bias, double eps, const at::Tensor& w2,
                             const at::Tensor& bias2, const at::Tensor& hyper, int64_t height,
                             int64_t tile) {
  const char* op = "upscale_masks";
  for (const auto& [name, t] :
       {std::pair<const char*, const at::Tensor&>{"base", base}, {"left", left},
        {"right", right}, {"shared", shared}, {"scales", scales}, {"ln_weight", ln_weight},
        {"ln_bias", ln_bias}, {"w2", w2}, {"bias2", bias2}, {"hyper", hyper}}) {
    SAM2_CHECK_TYPE(t.scalar_type() == at::kFloat, op, ": ", name, " must be float32, got ",
                     t.scalar_type());
  }
  SAM2_CHECK_VALUE(base.dim() == 2 && hyper.dim() == 3 && left.dim() == 3 && right.dim() == 3 &&
                        shared.dim() == 3 && scales.dim() == 3 && w2.dim() == 2 &&
                        bias2.dim() == 2,
                    op, ": expected base [F, 4*c1], left [n, K, F], right [n, K, 4*c1], shared "
                    "[J, F, 4*c1], scales [n, J, F], w2 [c1, 4*c2], bias2 [4F, 4*c2], hyper "
                    "[n, m, c2]");
  const int64_t num_f = base.size(0);
  const int64_t c1 = ln_weight.numel();
  const int64_t n = hyper.size(0);
  const int64_t m = hyper.size(1);
  const int64_t c2 = hyper.size(2);
  const int64_t k = left.size(1);
  const int64_t j = shared.size(0);
  SAM2_CHECK_VALUE(base.size(1) == 4 * c1 && ln_bias.numel() == c1 && left.size(0) == n &&
                        left.size(2) == num_f && right.size(0) == n && right.size(1) == k &&
                        right.size(2) == 4 * c1 && shared.size(1) == num_f &&
                        shared.size(2) == 4 * c1 && scales.size(0) == n &&
                        scales.size(1) == j && scales.size(2) == num_f && w2.size(0) == c1 &&
                        w2.size(1) == 4 * c2 && bias2.size(0) == 4 * num_f &&
                        bias2.size(1) == 4 * c2,
                    op, ": inconsistent shapes: base ", base.sizes(), ", left ", left.sizes(),
                    ", right ", right.sizes(), ", shared ", shared.sizes(), ", scales ",
                    scales.sizes(), ", ln ", ln_weight.sizes(), ", w2 ", w2.sizes(), ", bias2 ",
                    bias2.sizes(), ", hyper ", hyper.sizes());
  SAM2_CHECK_VALUE(tile > 0, op, ": tile must be > 0, got ", tile);
  SAM2_CHECK_VALUE(height > 0 && num_f % height == 0, op, ": height must be > 0 and divide the ",
                    num_f, " image tokens, got ", height);
  const int64_t width = num_f / height;
  at::Tensor out = at::empty({n, m, 4 * height, 4 * width}, base.options());
  if (n == 0 || num_f == 0) {
    return out;
  }
  float* out_data = out.mutable_data_ptr<float>();
  const int64_t out_w = 4 * width;
  const int64_t plane = 16 * num_f;  // pixels of one mask
  const int64_t tiles = (num_f + tile - 1) / tile;
  const at::Tensor hyper_t = hyper.transpose(1, 2);  // [n, c2, m]
  // the workers take the caller's thread-local state (inference mode: `out` and the inputs may
  // be inference tensors), with grad mode off: the op computes values only
  const at::ThreadLocalState caller_state;
  at::parallel_for(0, n * tiles, 1, [&](int64_t begin, int64_t end) {
    const at::ThreadLocalStateGuard state_guard(caller_state);
    const c10::AutoGradMode no_grad(false);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t i = task / tiles;
      const int64_t r0 = (task % tiles) * tile;
      const int64_t r1 = std::min(num_f, r0 + tile);
      at::Tensor y = k > 0 ? at::addmm(base.slice(0, r0, r1), left[i].slice(1, r0, r1).t(),
                                       right[i])
                           : base.slice(0, r0, r1).clone();
      for (int64_t s = 0; s < j; ++s) {
        y.addcmul_(scales[i][s].slice(0, r0, r1).unsqueeze(1), shared[s].slice(0, r0, r1));
      }
      y = at::layer_norm(y.view({-1, c1}), {c1}, ln_weight, ln_bias, eps);
      y = at::gelu_(y);
      y = at::addmm(bias2.slice(0, 4 * r0, 4 * r1), y, w2);
      y = at::gelu_(y);
      const at::Tensor r = at::mm(y.view({-1, c2}), hyper_t[i]);  // [16 * tokens, m]
      const float* rd = r.const_data_ptr<float>();
      for (int64_t f = r0; f < r1; ++f) {
        const int64_t top = 4 * (f / width) * out_w + 4 * (f % width);  // pixel (4 y, 4 x)
        const float* rf = rd + (f - r0) * 16 * m;
        for (int64_t k = 0; k < m; ++k) {
          float* o = out_data + (i * m + k) * plane + top;
          for (int a = 0; a < 2; ++a) {
            for (int a2 = 0; a2 < 2; ++a2) {
              float* row = o + (2 * a + a2) * out_w;
              const int64_t sub = 8 * a + 2 * a2;
              row[0] = rf[(sub + 0) * m + k];
              row[1] = rf[(sub + 1) * m + k];
              row[2] = rf[(sub + 4) * m + k];
              row[3] = rf[(sub + 5) * m + k];
            }
          }
        }
      }
    }
  });
  return out;
}

template <typename T>
int64_t run_nms(const at::Tensor& columns, double iou_threshold, int64_t* keep) {
  const int64_t num_boxes = columns.size(1);
  const T* data = columns.const_data_ptr<T>();
  std::vector<T> areas(static_cast<size_t>(num_boxes));
  std::vector<uint8_t> suppressed(static_cast<size_t>(num_boxes));
  return nms_sorted_cpu<T>(data, data + num_boxes, data + 2 * num_boxes, data + 3 * num_boxes,
                           num_boxes, iou_threshold, areas.data(), suppressed.data(), keep);
}

at::Tensor box_nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  SAM2_CHECK_VALUE(boxes.dim() == 2 && boxes.size(1) == 4,
                    "box_nms: boxes must be [N, 4] (x1, y1, x2, y2), got ", boxes.sizes());
  SAM2_CHECK_TYPE(boxes.scalar_type() == at::kFloat || boxes.scalar_type() == at::kDouble,
                   "box_nms: boxes must be float32 or float64, got ", boxes.scalar_type());
  SAM2_CHECK_VALUE(scores.dim() == 1 && scores.size(0) == boxes.size(0),
                    "box_nms: scores must be [N] with N = boxes.size(0) = ", boxes.size(0),
                    ", got ", scores.sizes());
  SAM2_CHECK_TYPE(scores.is_floating_point(), "box_nms: scores must be floating point, got ",
                   scores.scalar_type());
  const int64_t num_boxes = boxes.size(0);
  // stable: boxes of equal score keep their input order, as in torchvision
  const at::Tensor order = std::get<1>(at::sort(scores, /*stable=*/true, /*dim=*/0,
                                                /*descending=*/true));
  // [4, N]: x1, y1, x2, y2 of the boxes in score order
  const at::Tensor columns = boxes.index_select(0, order).t().contiguous();
  at::Tensor keep = at::empty({num_boxes}, order.options());
  int64_t* keep_data = keep.mutable_data_ptr<int64_t>();
  const int64_t num_kept = boxes.scalar_type() == at::kFloat
                               ? run_nms<float>(columns, iou_threshold, keep_data)
                               : run_nms<double>(columns, iou_threshold, keep_data);
  return order.index_select(0, keep.slice(0, 0, num_kept));
}

}  // namespace
}  // namespace sam2_fast

TORCH_LIBRARY(sam2_fast, m) {
  // connectivity 4 or 8; components numbered 1..K per image in raster order of their first pixel
  m.def(
      "connected_components(Tensor mask, int connectivity=8) -> (Tensor labels, Tensor areas)");
  // COCO RLE, column-major run lengths starting with zeros; mask n is
  // counts[offsets[n] : offsets[n + 1]]. rle_encode_compressed always returns CPU tensors.
  m.def("rle_encode(Tensor masks) -> (Tensor counts, Tensor offsets)");
  m.def("rle_encode_compressed(Tensor masks) -> (Tensor chars, Tensor offsets)");
  m.def("rle_decode(Tensor counts, Tensor offsets, int height, int width) -> Tensor");
  // XYXY boxes, max inclusive, [0, 0, 0, 0] for an empty mask
  m.def("masks_to_boxes(Tensor masks) -> Tensor");
  // indices of the kept boxes by decreasing score (ties in input order), as torchvision's nms
  m.def("box_nms(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor");
  // bilinear upsampling (aten's, align_corners=False) + `> thresholds[0]` masks + per-mask
  // pixel counts above each threshold; fused: aten's fused multiply-add rounding (upsample.h)
  m.def(
      "upsample_threshold(Tensor logits, int out_h, int out_w, float[] thresholds, bool fused)"
      " -> (Tensor masks, Tensor counts)");
  m.def("parallel_threads(int tasks) -> int");
  // softmax(R(q) R(k)^T * scale) v, RoPE on q and the first num_k_rope keys when cos / sin are
  // given (csrc/attention.h); float32 / bfloat16 on CPUs with AVX-512
  m.def(
      "flash_attention(Tensor q, Tensor k, Tensor v, Tensor? cos, Tensor? sin, int num_k_rope, "
      "float scale, int q_block=256, int kv_block=512) -> Tensor");
  m.def("flash_attention_unsupported(bool bf16) -> str");
  // attention inside windows of [B, H, W, C] token grids, read and written in place (padding
  // tokens read k_pad / v_pad; csrc/attention.h, windowed mode)
  m.def(
      "window_flash_attention(Tensor q, Tensor k, Tensor v, Tensor k_pad, Tensor v_pad, int heads, "
      "int window, int q_window, float scale, int q_block=256, int kv_block=512) -> Tensor");
  // an elementwise function of bfloat16 values as a 65 537-entry table, in place (lookup.h)
  m.def("lookup_bf16_(Tensor(a!) values, Tensor table) -> Tensor(a!)");
  m.def("lookup_bf16_vectorized() -> bool");
  // LayerNorm over the last dim of float32 rows to bfloat16, after a residual add for the second
  // (layer_norm.h)
  m.def("layer_norm_bf16(Tensor x, Tensor weight, Tensor bias, float eps) -> Tensor");
  m.def("add_layer_norm_bf16(Tensor x, Tensor delta, Tensor weight, Tensor bias, float eps) -> (Tensor, Tensor)");
  m.def("add_layer_norm_vectorized() -> bool");
  // max pooling (kernel = stride) of a channels-last map read through its strides (pool.h)
  m.def("max_pool_nhwc(Tensor x, int stride) -> Tensor");
  // the mask decoder's upscaler for prompts sharing an image (upscale_masks_cpu in ops.cpp)
  m.def(
      "upscale_masks(Tensor base, Tensor left, Tensor right, Tensor shared, Tensor scales, "
      "Tensor ln_weight, Tensor ln_bias, float eps, Tensor w2, Tensor bias2, Tensor hyper, "
      "int height, int tile) -> Tensor");
}

TORCH_LIBRARY_IMPL(sam2_fast, CPU, m) {
  m.impl("connected_components", &sam2_fast::connected_components_cpu);
  m.impl("rle_encode", &sam2_fast::rle_encode_cpu);
  m.impl("rle_encode_compressed", &sam2_fast::rle_encode_compressed_cpu);
  m.impl("rle_decode", &sam2_fast::rle_decode_cpu);
  m.impl("masks_to_boxes", &sam2_fast::masks_to_boxes_cpu);
  m.impl("box_nms", &sam2_fast::box_nms_cpu);
  m.impl("upsample_threshold", &sam2_fast::upsample_threshold_cpu);
  m.impl("upscale_masks", &sam2_fast::upscale_masks_cpu);
  m.impl("flash_attention", &sam2_fast::flash_attention_cpu);
  m.impl("window_flash_attention", &sam2_fast::window_flash_attention_cpu);
  m.impl("lookup_bf16_", &sam2_fast::lookup_bf16_);
  m.impl("layer_norm_bf16", &sam2_fast::layer_norm_bf16_cpu);
  m.impl("add_layer_norm_bf16", &sam2_fast::add_layer_norm_bf16_cpu);
  m.impl("max_pool_nhwc", &sam2_fast::max_pool_nhwc_cpu);
}

// no tensor argument: the op is called without dispatch keys
TORCH_LIBRARY_IMPL(sam2_fast, CompositeExplicitAutograd, m) {
  m.impl("parallel_threads", &sam2_fast::parallel_threads);
  m.impl("flash_attention_unsupported", &sam2_fast::flash_attention_unsupported);
  m.impl("lookup_bf16_vectorized", &sam2_fast::lookup_bf16_vectorized);
  m.impl("add_layer_norm_vectorized", &sam2_fast::add_layer_norm_vectorized);
}

#ifdef SAM2_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(sam2_fast, CUDA, m) {
  m.impl("connected_components", &sam2_fast::connected_components_cuda);
  m.impl("rle_encode", &sam2_fast::rle_encode_cuda);
  m.impl("rle_encode_compressed", &sam2_fast::rle_encode_compressed_cuda);
  m.impl("masks_to_boxes", &sam2_fast::masks_to_boxes_cuda);
}
#endif
