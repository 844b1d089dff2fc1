// Connected components on CPU, one image: two-pass union-find.
//
// Pass 1 scans the image in raster order and links each foreground pixel to the components of
// its already-visited neighbours (left, up-left, up, up-right for 8-connectivity; left, up for
// 4-connectivity). Links always point from a larger to a smaller pixel index, so the root of a
// component is its first pixel in raster order. The labels buffer doubles as the parent array.
// Pass 2 numbers the roots 1..K in raster order and gives every other pixel the label of its
// parent (which lies before it, so it is already numbered). Pass 3 writes the component areas.
#include "connected_components.h"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace sam2_fast {
namespace {

// Root of pixel i, halving the path on the way (parent[j] <= j holds throughout).
inline int32_t find_root(int32_t* parent, int32_t i) {
  while (parent[i] != i) {
    parent[i] = parent[parent[i]];
    i = parent[i];
  }
  return i;
}

// Merges the components of pixels a and b; returns the root of the merged component.
inline int32_t unite(int32_t* parent, int32_t a, int32_t b) {
  a = find_root(parent, a);
  b = find_root(parent, b);
  if (a == b) {
    return a;
  }
  const int32_t root = std::min(a, b);
  parent[std::max(a, b)] = root;
  return root;
}

// Pass 1: union-find, 8-connectivity. Only the neighbours that are not already known to be
// connected are looked at: "up" touches the other three; "up-left" touches "left".
void link_8_connected(const uint8_t* mask, int32_t* labels, int32_t height, int32_t width) {
  for (int32_t y = 0; y < height; ++y) {
    for (int32_t x = 0; x < width; ++x) {
      const int32_t p = y * width + x;
      if (!mask[p]) {
        labels[p] = 0;
        continue;
      }
      const int32_t up = p - width;
      const bool has_up = y > 0;
      const bool left = x > 0 && mask[p - 1];
      const bool up_left = has_up && x > 0 && mask[up - 1];
      const bool up_mid = has_up && mask[up];
      const bool up_right = has_up && x + 1 < width && mask[up + 1];
      int32_t parent = p;
      if (up_mid) {
        parent = find_root(labels, up);
      } else if (up_right) {
        parent = find_root(labels, up + 1);
        if (up_left) {
          parent = unite(labels, parent, up - 1);
        } else if (left) {
          parent = unite(labels, parent, p - 1);
        }
      } else if (up_left) {
        parent = find_root(labels, up - 1);
      } else if (left) {
        parent = find_root(labels, p - 1);
      }
      labels[p] = parent;
    }
  }
}

// Pass 1: union-find, 4-connectivity ("up" and "left" are not neighbours of each other).
void link_4_connected(const uint8_t* mask, int32_t* labels, int32_t height, int32_t width) {
  for (int32_t y = 0; y < height; ++y) {
    for (int32_t x = 0; x < width; ++x) {
      const int32_t p = y * width + x;
      if (!mask[p]) {
        labels[p] = 0;
        continue;
      }
      const bool up = y > 0 && mask[p - width];
      const bool left = x > 0 && mask[p - 1];
      int32_t parent = p;
      if (up && left) {
        parent = unite(labels, p - width, p - 1);
      } else if (up) {
        parent = find_root(labels, p - width);
      } else if (left) {
        parent = find_root(labels, p - 1);
      }
      labels[p] = parent;
    }
  }
}

}  // namespace

void label_image_cpu(const uint8_t* mask, int32_t* labels, int32_t* areas, int32_t height,
                     int32_t width, int connectivity) {
  if (connectivity == 4) {
    link_4_connected(mask, labels, height, width);
  } else {
    link_8_connected(mask, labels, height, width);
  }

  // Pass 2: number the roots in raster order; a parent precedes its child.
  const int32_t num_pixels = height * width;
  int32_t num_components = 0;
  for (int32_t p = 0; p < num_pixels; ++p) {
    if (mask[p]) {
      const int32_t parent = labels[p];
      labels[p] = parent == p ? ++num_components : labels[parent];
    }
  }

  // Pass 3: areas.
  std::vector<int32_t> counts(static_cast<size_t>(num_components) + 1, 0);
  for (int32_t p = 0; p < num_pixels; ++p) {
    ++counts[labels[p]];
  }
  counts[0] = 0;
  for (int32_t p = 0; p < num_pixels; ++p) {
    areas[p] = counts[labels[p]];
  }
}

}  // namespace sam2_fast
