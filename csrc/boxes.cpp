// Boxes on CPU: the tight box of a mask, and greedy non-maximum suppression.
//
// mask_box_cpu finds the first and the last non-empty row, then narrows the columns: on each
// row in between it only looks left of the leftmost and right of the rightmost pixel found so
// far, eight pixels per 64-bit load. A mask is rarely read in full.
//
// nms_sorted_cpu is torchvision's CPU nms on boxes already in score order and stored as
// columns, so that the inner loop over later boxes runs without gathers or branches and the
// compiler vectorises it (it also computes the IoU of boxes already suppressed, which is
// cheaper than skipping them). The IoU is the same float arithmetic as torchvision's; its
// comparison with the double threshold is made in the boxes' type with an equivalent threshold.
#include "boxes.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace sam2_fast {
namespace {

// Index of the first nonzero byte of pixels[0, count), or count.
inline int64_t first_nonzero(const uint8_t* pixels, int64_t count) {
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    uint64_t word;
    std::memcpy(&word, pixels + i, 8);
    if (word != 0) {
      return i + std::countr_zero(word) / 8;  // little-endian: byte 0 is the lowest
    }
  }
  for (; i < count; ++i) {
    if (pixels[i] != 0) {
      return i;
    }
  }
  return count;
}

// Index of the last nonzero byte of pixels[0, count), or -1.
inline int64_t last_nonzero(const uint8_t* pixels, int64_t count) {
  int64_t end = count;
  for (; end >= 8; end -= 8) {
    uint64_t word;
    std::memcpy(&word, pixels + end - 8, 8);
    if (word != 0) {
      return end - 1 - std::countl_zero(word) / 8;
    }
  }
  for (; end > 0; --end) {
    if (pixels[end - 1] != 0) {
      return end - 1;
    }
  }
  return -1;
}

static_assert(std::endian::native == std::endian::little,
              "first_nonzero / last_nonzero read byte i of a 64-bit word as pixel i");

// std::max / std::min (the same result, NaN included) by value: a reference to one of two
// operands is a conditional address, which keeps the compiler from vectorising.
template <typename T>
inline T max_of(T a, T b) {
  return a < b ? b : a;
}
template <typename T>
inline T min_of(T a, T b) {
  return b < a ? b : a;
}

// t such that, for every x of type T, x > t exactly when double(x) > threshold: the largest T
// that is <= threshold (a float IoU just above the threshold's float rounding still counts).
template <typename T>
T threshold_in(double threshold) {
  using limits = std::numeric_limits<T>;
  if (std::isnan(threshold) || std::isinf(threshold)) {
    return static_cast<T>(threshold);
  }
  if (threshold >= static_cast<double>(limits::max())) {
    return limits::max();
  }
  if (threshold < static_cast<double>(limits::lowest())) {
    return -limits::infinity();
  }
  T t = static_cast<T>(threshold);
  if (static_cast<double>(t) > threshold) {
    t = std::nextafter(t, -limits::infinity());
  }
  return t;
}

}  // namespace

void mask_box_cpu(const uint8_t* mask, int64_t height, int64_t width, int64_t* box) {
  int64_t top = 0;
  while (top < height && first_nonzero(mask + top * width, width) == width) {
    ++top;
  }
  if (top == height) {
    std::fill(box, box + 4, 0);
    return;
  }
  int64_t bottom = height - 1;
  while (bottom > top && last_nonzero(mask + bottom * width, width) < 0) {
    --bottom;
  }
  int64_t left = first_nonzero(mask + top * width, width);
  int64_t right = last_nonzero(mask + top * width, width);
  for (int64_t y = top + 1; y <= bottom; ++y) {
    const uint8_t* row = mask + y * width;
    left = first_nonzero(row, left);  // left itself when nothing lies left of it
    const int64_t beyond = last_nonzero(row + right + 1, width - right - 1);
    if (beyond >= 0) {
      right += 1 + beyond;
    }
  }
  box[0] = left;
  box[1] = top;
  box[2] = right;
  box[3] = bottom;
}

template <typename T>
int64_t nms_sorted_cpu(const T* x1, const T* y1, const T* x2, const T* y2, int64_t num_boxes,
                       double iou_threshold, T* areas, uint8_t* suppressed, int64_t* keep) {
  for (int64_t i = 0; i < num_boxes; ++i) {
    areas[i] = (x2[i] - x1[i]) * (y2[i] - y1[i]);
    suppressed[i] = 0;
  }
  const T threshold = threshold_in<T>(iou_threshold);
  int64_t num_kept = 0;
  for (int64_t i = 0; i < num_boxes; ++i) {
    if (suppressed[i]) {
      continue;
    }
    keep[num_kept++] = i;
    const T ix1 = x1[i];
    const T iy1 = y1[i];
    const T ix2 = x2[i];
    const T iy2 = y2[i];
    const T iarea = areas[i];
    for (int64_t j = i + 1; j < num_boxes; ++j) {
      // the same operations in the same order as torchvision, so the same roundings
      const T xx1 = max_of(ix1, x1[j]);
      const T yy1 = max_of(iy1, y1[j]);
      const T xx2 = min_of(ix2, x2[j]);
      const T yy2 = min_of(iy2, y2[j]);
      const T w = max_of(static_cast<T>(0), xx2 - xx1);
      const T h = max_of(static_cast<T>(0), yy2 - yy1);
      const T inter = w * h;
      const T iou = inter / (iarea + areas[j] - inter);
      suppressed[j] |= static_cast<uint8_t>(iou > threshold);
    }
  }
  return num_kept;
}

template int64_t nms_sorted_cpu<float>(const float*, const float*, const float*, const float*,
                                       int64_t, double, float*, uint8_t*, int64_t*);
template int64_t nms_sorted_cpu<double>(const double*, const double*, const double*,
                                        const double*, int64_t, double, double*, uint8_t*,
                                        int64_t*);

}  // namespace sam2_fast
