// connected_components on CUDA: block-based union-find (label equivalence), 4- or
// 8-connectivity (`diagonal`: corner neighbours are neighbours too).
//
//   1. local_merge:    one thread block per kTileH x kTileW tile; union-find in shared memory
//                      over the tile, then every pixel stores the image index of its tile root.
//   2. boundary_merge: pixels on tile borders unite, in global memory, with their previously
//                      visited neighbours (left, up-left, up, up-right; left, up without
//                      diagonals) that lie in another tile.
//   3. resolve:        every pixel finds its root, roots are flagged, component areas counted.
//   4. relabel:        roots are ranked per image in raster order (the caller's cumsum of the
//                      flags), and every pixel gets its root's rank as label and its root's
//                      count as area.
//
// Unions always hang the larger root under the smaller (atomicMin), so parent[i] <= i and the
// root of a component is its first pixel in raster order: labels are the same 1..K numbering as
// the CPU op, whatever order the threads ran in.
#include "connected_components.h"

#include <algorithm>
#include <cstdint>
#include <limits>

namespace sam2_fast {
namespace {

constexpr int kTileW = 32;  // a tile is one block of kTileW x kTileH threads
constexpr int kTileH = 8;
constexpr int kThreads = 256;          // block size of the per-pixel kernels
constexpr int64_t kMaxBlocks = 1 << 16;  // per-pixel kernels loop over the rest

// Reads through volatile: other threads shorten the path while we walk it.
__device__ __forceinline__ int32_t load(const int32_t* address) {
  return *reinterpret_cast<const volatile int32_t*>(address);
}

// Root of i in the forest `parent` (shared or global memory).
__device__ __forceinline__ int32_t find_root(const int32_t* parent, int32_t i) {
  int32_t next = load(parent + i);
  while (next != i) {
    i = next;
    next = load(parent + i);
  }
  return i;
}

// Merges the trees of a and b, safe against concurrent unite() calls: the larger root is hung
// under the smaller one with atomicMin; if it stopped being a root meanwhile, the value it
// pointed to is merged instead (no link is lost because atomicMin only lowers it).
__device__ void unite(int32_t* parent, int32_t a, int32_t b) {
  while (true) {
    a = find_root(parent, a);
    b = find_root(parent, b);
    if (a == b) {
      return;
    }
    if (a > b) {
      const int32_t tmp = a;
      a = b;
      b = tmp;
    }
    const int32_t old = atomicMin(parent + b, a);
    if (old == b) {
      return;
    }
    b = old;
  }
}

// parent[p] = image index of p's root within its tile (-1 on background).
__global__ void local_merge_kernel(const uint8_t* __restrict__ mask, int32_t* __restrict__ parent,
                                   int32_t height, int32_t width, int32_t tiles_x,
                                   int32_t tiles_per_image, bool diagonal) {
  __shared__ int32_t tile_parent[kTileH * kTileW];
  __shared__ bool tile_fg[kTileH * kTileW];

  const int64_t image = blockIdx.x / tiles_per_image;
  const int32_t tile = blockIdx.x % tiles_per_image;
  const int32_t x0 = (tile % tiles_x) * kTileW;
  const int32_t y0 = (tile / tiles_x) * kTileH;
  const int32_t tx = threadIdx.x;
  const int32_t ty = threadIdx.y;
  const int32_t x = x0 + tx;
  const int32_t y = y0 + ty;
  const int32_t local = ty * kTileW + tx;
  const bool inside = x < width && y < height;
  const int64_t pixel = image * height * width + static_cast<int64_t>(y) * width + x;

  const bool fg = inside && mask[pixel] != 0;
  tile_fg[local] = fg;
  tile_parent[local] = local;
  __syncthreads();

  if (fg) {
    if (tx > 0 && tile_fg[local - 1]) {
      unite(tile_parent, local, local - 1);
    }
    if (ty > 0) {
      const int32_t up = local - kTileW;
      if (diagonal && tx > 0 && tile_fg[up - 1]) {
        unite(tile_parent, local, up - 1);
      }
      if (tile_fg[up]) {
        unite(tile_parent, local, up);
      }
      if (diagonal && tx + 1 < kTileW && tile_fg[up + 1]) {
        unite(tile_parent, local, up + 1);
      }
    }
  }
  __syncthreads();

  if (inside) {
    int32_t root = -1;
    if (fg) {
      const int32_t r = find_root(tile_parent, local);
      root = (y0 + r / kTileW) * width + x0 + r % kTileW;
    }
    parent[pixel] = root;
  }
}

// Unites each pixel with its previously visited neighbours that lie in another tile.
__global__ void boundary_merge_kernel(int32_t* __restrict__ parent, int64_t total, int32_t height,
                                      int32_t width, bool diagonal) {
  const int64_t num_pixels = static_cast<int64_t>(height) * width;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    int32_t* image_parent = parent + (i / num_pixels) * num_pixels;
    const auto p = static_cast<int32_t>(i % num_pixels);
    const int32_t y = p / width;
    const int32_t x = p % width;
    const bool tile_left = x % kTileW == 0;
    const bool tile_top = y % kTileH == 0;
    const bool tile_right = x % kTileW == kTileW - 1;
    if (image_parent[p] < 0 || !(tile_left || tile_top || tile_right)) {
      continue;
    }
    // (dy, dx) of the left, up, up-left and up-right neighbours
    constexpr int kOffsets[4][2] = {{0, -1}, {-1, 0}, {-1, -1}, {-1, 1}};
    const int num_neighbours = diagonal ? 4 : 2;
    for (int i = 0; i < num_neighbours; ++i) {
      const int32_t ny = y + kOffsets[i][0];
      const int32_t nx = x + kOffsets[i][1];
      if (ny < 0 || nx < 0 || nx >= width) {
        continue;
      }
      const bool other_tile = ny / kTileH != y / kTileH || nx / kTileW != x / kTileW;
      const int32_t q = ny * width + nx;
      if (other_tile && image_parent[q] >= 0) {
        unite(image_parent, p, q);
      }
    }
  }
}

// parent[p] = root of p; is_root[root] = 1; counts[root] = component area.
__global__ void resolve_kernel(int32_t* __restrict__ parent, int32_t* __restrict__ is_root,
                               int32_t* __restrict__ counts, int64_t total, int64_t num_pixels) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    if (parent[i] < 0) {
      continue;
    }
    const int64_t offset = (i / num_pixels) * num_pixels;
    const int32_t p = static_cast<int32_t>(i - offset);
    const int32_t root = find_root(parent + offset, p);
    parent[i] = root;  // a valid path compression: concurrent finds stay correct
    if (root == p) {
      is_root[i] = 1;
    }
    atomicAdd(counts + offset + root, 1);
  }
}

// labels[p] = rank of p's root (in place over parent), areas[p] = its component's area.
__global__ void relabel_kernel(int32_t* __restrict__ labels, int32_t* __restrict__ areas,
                               const int32_t* __restrict__ rank, const int32_t* __restrict__ counts,
                               int64_t total, int64_t num_pixels) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int32_t root = labels[i];
    if (root < 0) {
      labels[i] = 0;
      areas[i] = 0;
      continue;
    }
    const int64_t root_index = (i / num_pixels) * num_pixels + root;
    labels[i] = rank[root_index];
    areas[i] = counts[root_index];
  }
}

int per_pixel_blocks(int64_t total) {
  return static_cast<int>(std::min<int64_t>((total + kThreads - 1) / kThreads, kMaxBlocks));
}

}  // namespace

cudaError_t launch_find_components_cuda(const uint8_t* mask, int32_t* labels, int32_t* root_flags,
                                        int32_t* counts, int64_t batch, int32_t height,
                                        int32_t width, int connectivity, cudaStream_t stream) {
  const bool diagonal = connectivity == 8;
  const int64_t num_pixels = static_cast<int64_t>(height) * width;
  const int64_t total = batch * num_pixels;
  const int32_t tiles_x = (width + kTileW - 1) / kTileW;
  const int32_t tiles_per_image = tiles_x * ((height + kTileH - 1) / kTileH);
  // one block per tile; images in chunks so that the grid stays below 2^31 blocks
  const int64_t images_per_launch = std::numeric_limits<int32_t>::max() / tiles_per_image;
  for (int64_t first = 0; first < batch; first += images_per_launch) {
    const int64_t images = std::min(images_per_launch, batch - first);
    local_merge_kernel<<<static_cast<unsigned int>(images * tiles_per_image),
                         dim3(kTileW, kTileH), 0, stream>>>(mask + first * num_pixels,
                                                            labels + first * num_pixels, height,
                                                            width, tiles_x, tiles_per_image,
                                                            diagonal);
  }
  boundary_merge_kernel<<<per_pixel_blocks(total), kThreads, 0, stream>>>(labels, total, height,
                                                                           width, diagonal);
  resolve_kernel<<<per_pixel_blocks(total), kThreads, 0, stream>>>(labels, root_flags, counts,
                                                                    total, num_pixels);
  return cudaGetLastError();
}

cudaError_t launch_relabel_components_cuda(int32_t* labels, int32_t* areas, const int32_t* rank,
                                           const int32_t* counts, int64_t batch, int32_t height,
                                           int32_t width, cudaStream_t stream) {
  const int64_t num_pixels = static_cast<int64_t>(height) * width;
  const int64_t total = batch * num_pixels;
  relabel_kernel<<<per_pixel_blocks(total), kThreads, 0, stream>>>(labels, areas, rank, counts,
                                                                    total, num_pixels);
  return cudaGetLastError();
}

}  // namespace sam2_fast
