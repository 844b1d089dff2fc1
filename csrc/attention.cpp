// Flash attention on the CPU (attention.h): oneDNN batch-reduce GEMM micro-kernels for the
// products, an online softmax in AVX-512 between them, RoPE fused into the layout passes.
//
// Per item and head ("group"): the keys are rotated and laid out once, per block of kv_block
// keys, as the right operand of Q K^T (K^T; for bfloat16 in the VNNI layout the micro-kernels
// read: channel pairs interleaved, [dim / 2][keys][2]), and the values as the right operand of
// P V ([keys / 2][dim_v][2] for bfloat16). Then each block of q_block queries (rotated into a
// small buffer) runs over the key blocks: S = Q K^T (float32), running row maxima and sums,
// P = exp(S * scale - max) rounded to the inputs' dtype, O = O * correction + P V (float32);
// after a row's first key block the max is the running one, re-taken only when a block's scores
// rise far above it (attention_simd.inc: softmax_row).
// A last key block shorter than kv_block is padded to an even length with zero keys whose
// weights are 0.
//
// This file is compiled with -ffp-contract=off: the rotation rounds e*c and o*s separately (as
// apply_rope's plain torch ops do; aten's vectorized addcmul may fuse them, an ulp apart in
// float32); the exponential's polynomial uses explicit fused multiply-adds.
#include "attention.h"

#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

namespace sam2_fast {
namespace {

using bf16 = c10::BFloat16;

template <typename T>
inline float to_float(T x) {
  return static_cast<float>(x);
}

// one float32 -> the storage type (bfloat16: round to nearest even, as c10 and aten do)
template <typename T>
inline T from_float(float x) {
  return static_cast<T>(x);
}

// ---------------------------------------------------------------------------------------------
// the softmax of a row, in two copies (attention_simd.inc)

// x86-64 with a torch whose CPUBlas has the batch-reduce GEMMs for both dtypes (2.7 and newer)
#if (defined(__x86_64__) || defined(_M_X64)) && defined(CPUBLAS_BRGEMM_BF16BF16F32) && \
    defined(CPUBLAS_BRGEMM_F32F32F32)
#define SAM2_ATTENTION_X86 1
#if defined(__clang__)
#define SAM2_TARGET_BEGIN(isa) _Pragma(SAM2_STR(clang attribute push(__attribute__((target(isa))), apply_to = function)))
#define SAM2_TARGET_END _Pragma("clang attribute pop")
#else
#define SAM2_TARGET_BEGIN(isa) _Pragma("GCC push_options") _Pragma(SAM2_STR(GCC target(isa)))
#define SAM2_TARGET_END _Pragma("GCC pop_options")
#endif
#define SAM2_STR(x) #x

namespace avx512 {
SAM2_TARGET_BEGIN("avx512f,avx512bw,avx512dq,avx512vl,fma")
#define SAM2_NATIVE_BF16 0
#include "attention_simd.inc"
#undef SAM2_NATIVE_BF16
SAM2_TARGET_END
}  // namespace avx512

namespace avx512_bf16 {
SAM2_TARGET_BEGIN("avx512f,avx512bw,avx512dq,avx512vl,fma,avx512bf16")
#define SAM2_NATIVE_BF16 1
#include "attention_simd.inc"
#undef SAM2_NATIVE_BF16
SAM2_TARGET_END
}  // namespace avx512_bf16

// ---------------------------------------------------------------------------------------------
// the layout passes

// token row -> float32 pairs rotated (or copied) into `out` [dim]
template <typename T>
inline void rotated_row(const T* x, int64_t dim, const float* cos, const float* sin, float* out) {
  if (cos == nullptr) {
    for (int64_t d = 0; d < dim; ++d) {
      out[d] = to_float(x[d]);
    }
    return;
  }
  for (int64_t j = 0; j < dim / 2; ++j) {
    const float e = to_float(x[2 * j]);
    const float o = to_float(x[2 * j + 1]);
    out[2 * j] = e * cos[j] - o * sin[j];
    out[2 * j + 1] = e * sin[j] + o * cos[j];
  }
}

// rotates (or copies) the channel pairs of a bfloat16 row into 32-bit words: an AVX-512 copy
// of attention_simd.inc
using RotatePairs = void (*)(const uint16_t*, int64_t, const float*, const float*, uint32_t*);

// the AVX-512 row functions for T on this CPU (attention_simd.inc)
template <typename T>
struct RowKernels {
  float (*softmax)(const float*, int64_t, int64_t, float, float&, float&, T*);
  void (*scale)(float*, int64_t, float);
  void (*store_row)(const float*, int64_t, float, T*);
  void (*transpose)(const uint32_t*, int64_t, int64_t, uint32_t*, int64_t);
  RotatePairs rotate;  // bfloat16 rows only
  void (*pack_values)(const uint16_t* const*, int64_t, int64_t, int64_t, uint16_t*);  // bfloat16
};

template <typename T>
RowKernels<T> row_kernels() {
  if constexpr (std::is_same_v<T, float>) {
    return {&avx512::softmax_row<float, 7>, &avx512::scale_row, &avx512::store_scaled_row<float>,
            &avx512::transpose_tile, nullptr, nullptr};
  } else {
    static const bool native = __builtin_cpu_supports("avx512bf16");
    return {native ? &avx512_bf16::softmax_row<bf16, 3> : &avx512::softmax_row<bf16, 3>,
            &avx512::scale_row,
            native ? &avx512_bf16::store_scaled_row<bf16> : &avx512::store_scaled_row<bf16>,
            &avx512::transpose_tile,
            native ? &avx512_bf16::rotate_pairs_bf16 : &avx512::rotate_pairs_bf16,
            &avx512::pack_values_vnni};
  }
}

template <typename T>
struct Group {
  const T* q;
  const T* k;
  const T* v;
  T* out;
  int64_t num_q;  // its queries (windowed: those of its window inside the query grid)
  // windowed: the first query and key token (y, x), the query tile's columns inside the grid,
  // and the padding rows of its head
  int64_t qy = 0, qx = 0, q_cols = 1, ky = 0, kx = 0;
  const T* k_pad = nullptr;
  const T* v_pad = nullptr;
};

template <typename T>
Group<T> group_of(const AttentionProblem& p, int64_t g) {
  if (p.window_k == 0) {
    const int64_t b = g / p.heads, h = g % p.heads;
    return {static_cast<const T*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1],
            static_cast<const T*>(p.k) + b * p.k_stride[0] + h * p.k_stride[1],
            static_cast<const T*>(p.v) + b * p.v_stride[0] + h * p.v_stride[1],
            static_cast<T*>(p.out) + g * p.num_q * p.dim_v,
            p.num_q};
  }
  const int64_t h = g % p.heads, w = g / p.heads;
  const int64_t wx = w % p.windows_x, wy = (w / p.windows_x) % p.windows_y;
  const int64_t b = w / (p.windows_x * p.windows_y);
  Group<T> out{static_cast<const T*>(p.q) + b * p.q_stride[0] + h * p.dim,
               static_cast<const T*>(p.k) + b * p.k_stride[0] + h * p.dim,
               static_cast<const T*>(p.v) + b * p.v_stride[0] + h * p.dim_v,
               static_cast<T*>(p.out) + b * p.out_stride[0] + h * p.dim_v,
               0};
  out.qy = wy * p.window_q;
  out.qx = wx * p.window_q;
  const int64_t rows = std::clamp<int64_t>(p.q_grid[0] - out.qy, 0, p.window_q);
  out.q_cols = std::clamp<int64_t>(p.q_grid[1] - out.qx, 0, p.window_q);
  out.num_q = rows * out.q_cols;
  out.ky = wy * p.window_k;
  out.kx = wx * p.window_k;
  out.k_pad = static_cast<const T*>(p.k_pad) + h * p.dim;
  out.v_pad = static_cast<const T*>(p.v_pad) + h * p.dim_v;
  return out;
}

// query i, key t and output row i of a group
template <typename T>
inline const T* q_row(const AttentionProblem& p, const Group<T>& g, int64_t i) {
  if (p.window_k == 0) {
    return g.q + i * p.q_stride[2];
  }
  return g.q + (g.qy + i / g.q_cols) * p.q_yx[0] + (g.qx + i % g.q_cols) * p.q_yx[1];
}

// key t's row of a group's keys (base g.k, grid strides yx, token stride p.k_stride[2], padding
// row g.k_pad) or values (the same with v)
template <typename T>
inline const T* kv_row(const AttentionProblem& p, const Group<T>& g, int64_t t, const T* base,
                       const int64_t* yx, int64_t stride, const T* pad) {
  if (p.window_k == 0) {
    return base + t * stride;
  }
  const int64_t y = g.ky + t / p.window_k, x = g.kx + t % p.window_k;
  return y < p.k_grid[0] && x < p.k_grid[1] ? base + y * yx[0] + x * yx[1] : pad;
}

template <typename T>
inline const T* k_row(const AttentionProblem& p, const Group<T>& g, int64_t t) {
  return kv_row(p, g, t, g.k, p.k_yx, p.k_stride[2], g.k_pad);
}

template <typename T>
inline const T* v_row(const AttentionProblem& p, const Group<T>& g, int64_t t) {
  return kv_row(p, g, t, g.v, p.v_yx, p.v_stride[2], g.v_pad);
}

template <typename T>
inline T* out_row(const AttentionProblem& p, const Group<T>& g, int64_t i) {
  if (p.window_k == 0) {
    return g.out + i * p.dim_v;
  }
  return g.out + (g.qy + i / g.q_cols) * p.out_stride[1] + (g.qx + i % g.q_cols) * p.out_stride[2];
}

// the right operand of S = Q K^T for keys [t0, t0 + n) of a group, n_pad >= n columns:
// float32: K^T [dim][n_pad]; bfloat16: VNNI [dim / 2][n_pad][2], i.e. the channel-pair words
// of the keys transposed, written 16 keys at a time from a tile of rotated rows
template <typename T>
void pack_keys(const AttentionProblem& p, const Group<T>& g, int64_t t0, int64_t n, int64_t n_pad,
               T* out, float* row, const RowKernels<T>& kernels) {
  const int64_t dim = p.dim;
  // words of one key row: float32 channels, or bfloat16 channel pairs
  const int64_t width = std::is_same_v<T, float> ? dim : dim / 2;
  auto* tile = reinterpret_cast<uint32_t*>(row);  // [16][width] words: row holds 16 * dim floats
  for (int64_t i0 = 0; i0 < n_pad; i0 += 16) {
    const int64_t keys = std::min<int64_t>(16, n_pad - i0);
    for (int64_t r = 0; r < keys; ++r) {
      const int64_t i = i0 + r;
      uint32_t* words = tile + r * width;
      if (i >= n) {
        std::fill(words, words + width, 0u);
        continue;
      }
      const int64_t t = t0 + i;
      const bool rotated = p.cos != nullptr && t < p.num_k_rope;
      const int64_t pos = rotated ? t % p.num_q : 0;
      const float* cos = rotated ? p.cos + pos * (dim / 2) : nullptr;
      const float* sin = rotated ? p.sin + pos * (dim / 2) : nullptr;
      if constexpr (std::is_same_v<T, float>) {
        rotated_row(k_row(p, g, t), dim, cos, sin, reinterpret_cast<float*>(words));
      } else {
        kernels.rotate(reinterpret_cast<const uint16_t*>(k_row(p, g, t)), width, cos, sin, words);
      }
    }
    kernels.transpose(tile, width, keys, reinterpret_cast<uint32_t*>(out) + i0, n_pad);
  }
}

// the right operand of O += P V for keys [t0, t0 + n): float32 [n_pad][dim_v]; bfloat16 VNNI
// [n_pad / 2][dim_v][2] (n_pad even), from the value rows of 64 keys at a time
template <typename T>
void pack_values(const AttentionProblem& p, const Group<T>& g, int64_t t0, int64_t n, int64_t n_pad,
                 T* out, const RowKernels<T>& kernels) {
  const int64_t dv = p.dim_v;
  if constexpr (std::is_same_v<T, float>) {
    (void)kernels;
    for (int64_t i = 0; i < n_pad; ++i) {
      if (i < n) {
        std::memcpy(out + i * dv, v_row(p, g, t0 + i), dv * sizeof(float));
      } else {
        std::fill(out + i * dv, out + (i + 1) * dv, 0.0f);
      }
    }
  } else {
    constexpr int64_t chunk = 64;
    const uint16_t* rows[chunk];
    for (int64_t c0 = 0; c0 < n_pad; c0 += chunk) {
      const int64_t count = std::min(chunk, n_pad - c0);
      const int64_t valid = std::clamp<int64_t>(n - c0, 0, count);
      for (int64_t i = 0; i < valid; ++i) {
        rows[i] = reinterpret_cast<const uint16_t*>(v_row(p, g, t0 + c0 + i));
      }
      kernels.pack_values(rows, valid, count, dv, reinterpret_cast<uint16_t*>(out + c0 * dv));
    }
  }
}

template <typename T>
inline void gemm(int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc,
                 bool add_c, const T* a, const T* b, float* c) {
  at::native::cpublas::brgemm(m, n, k, lda, ldb, ldc, add_c, a, b, c,
                              /*is_vnni=*/!std::is_same_v<T, float>);
}

template <typename T>
inline void release() {
  at::native::cpublas::brgemm_release(/*is_vnni=*/!std::is_same_v<T, float>);
}

// ---------------------------------------------------------------------------------------------
// the kernel

// columns of S per micro-kernel call
constexpr int64_t kScoreColumns = 512;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// key block j: its first key, its keys and its padded (even) length
struct KeyBlock {
  int64_t t0, n, n_pad;
};
inline KeyBlock key_block(const AttentionProblem& p, int64_t j) {
  const int64_t t0 = j * p.kv_block;
  const int64_t n = std::min(p.kv_block, p.num_k - t0);
  return {t0, n, n + (n % 2)};
}

// Grow-only scratch memory of the calling thread, kept across calls (64-byte aligned, not
// initialized): the layout buffers are 15-20 MB for a memory-attention call, and a fresh
// allocation of that size is a fresh mapping whose pages fault in on first touch, every call.
// Slots 0-1: keys and values; 2-7: a worker's query-block buffers.
inline void* scratch(int slot, size_t bytes) {
  struct Slot {
    std::unique_ptr<unsigned char[]> data;
    size_t size = 0;
  };
  thread_local Slot slots[8];
  Slot& s = slots[slot];
  if (s.size < bytes + 64) {
    s.data.reset(new unsigned char[bytes + 64]);
    s.size = bytes + 64;
  }
  const auto address = reinterpret_cast<uintptr_t>(s.data.get());
  return reinterpret_cast<void*>((address + 63) & ~uintptr_t{63});
}

template <typename T>
T* scratch_of(int slot, int64_t count) {
  return static_cast<T*>(scratch(slot, static_cast<size_t>(count) * sizeof(T)));
}

// a view of scratch memory with the vector calls query_block makes
template <typename T>
struct Buffer {
  T* ptr;
  T* data() const { return ptr; }
  T* begin() const { return ptr; }
  T& operator[](int64_t i) const { return ptr[i]; }
};

// floats of a row buffer: a tile of 16 keys' rotated rows (float32) or channel-pair words
inline int64_t row_floats(const AttentionProblem& p) { return 16 * std::max(p.dim, p.dim_v); }

// a worker's buffers for one query block at a time (slots 2-7 of its thread)
template <typename T>
struct Workspace {
  Buffer<T> q;        // [q_block][dim]
  Buffer<float> s;    // [q_block][kv_block]
  Buffer<T> probs;    // [q_block][kv_block]
  Buffer<float> o;    // [q_block][dim_v]
  Buffer<float> m, l, row;
  explicit Workspace(const AttentionProblem& p)
      : q{scratch_of<T>(2, p.q_block * p.dim)},
        s{scratch_of<float>(3, p.q_block * p.kv_block)},
        probs{scratch_of<T>(4, p.q_block * p.kv_block)},
        o{scratch_of<float>(5, p.q_block * p.dim_v)},
        m{scratch_of<float>(6, 2 * p.q_block + row_floats(p))},
        l{m.ptr + p.q_block},
        row{m.ptr + 2 * p.q_block} {}
};

// keys and values of one group, laid out: block j at j * kv_block * dim (keys) and
// j * kv_block * dim_v (values)
template <typename T>
void pack_group(const AttentionProblem& p, const Group<T>& g, int64_t j_begin, int64_t j_end,
                T* keys, T* values, float* row, const RowKernels<T>& kernels) {
  for (int64_t j = j_begin; j < j_end; ++j) {
    const KeyBlock kb = key_block(p, j);
    pack_keys(p, g, kb.t0, kb.n, kb.n_pad, keys + j * p.kv_block * p.dim, row, kernels);
    pack_values(p, g, kb.t0, kb.n, kb.n_pad, values + j * p.kv_block * p.dim_v, kernels);
  }
}

template <typename T>
void query_block(const AttentionProblem& p, const Group<T>& g, int64_t i0,
                int64_t rows, const T* keys, const T* values, const RowKernels<T>& kernels,
                Workspace<T>& w) {
  const int64_t dim = p.dim, dv = p.dim_v;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = i0 + r;
    const float* cos = p.cos ? p.cos + i * (dim / 2) : nullptr;
    const float* sin = p.sin ? p.sin + i * (dim / 2) : nullptr;
    if constexpr (std::is_same_v<T, float>) {
      rotated_row(q_row(p, g, i), dim, cos, sin, w.q.data() + r * dim);
    } else {
      kernels.rotate(reinterpret_cast<const uint16_t*>(q_row(p, g, i)), dim / 2, cos, sin,
                     reinterpret_cast<uint32_t*>(w.q.data() + r * dim));
    }
  }
  std::fill(w.o.begin(), w.o.begin() + rows * dv, 0.0f);
  std::fill(w.m.begin(), w.m.begin() + rows, -std::numeric_limits<float>::infinity());
  std::fill(w.l.begin(), w.l.begin() + rows, 0.0f);
  const float c = p.scale * 1.44269504088896341f;  // scale * log2(e)
  const int64_t blocks = ceil_div(p.num_k, p.kv_block);
  for (int64_t j = 0; j < blocks; ++j) {
    const KeyBlock kb = key_block(p, j);
    // S = Q K^T in column chunks whose keys stay in the L2 cache (a long right operand of one
    // micro-kernel call streams from memory for every block of rows)
    const T* block_keys = keys + j * p.kv_block * dim;
    for (int64_t c0 = 0; c0 < kb.n_pad; c0 += kScoreColumns) {
      const int64_t cols = std::min(kScoreColumns, kb.n_pad - c0);
      gemm<T>(rows, cols, dim, dim, kb.n_pad, kb.n_pad, false, w.q.data(),
              block_keys + c0 * (std::is_same_v<T, float> ? 1 : 2), w.s.data() + c0);
    }
    for (int64_t r = 0; r < rows; ++r) {
      float* o = w.o.data() + r * dv;
      const float* s = w.s.data() + r * kb.n_pad;
      T* probs = w.probs.data() + r * kb.n_pad;
      const float correction = kernels.softmax(s, kb.n, kb.n_pad, c, w.m[r], w.l[r], probs);
      if (correction != 1.0f) {
        kernels.scale(o, dv, correction);
      }
    }
    gemm<T>(rows, dv, kb.n_pad, kb.n_pad, dv, dv, true, w.probs.data(),
            values + j * p.kv_block * dv, w.o.data());
  }
  for (int64_t r = 0; r < rows; ++r) {
    kernels.store_row(w.o.data() + r * dv, dv, 1.0f / w.l[r], out_row(p, g, i0 + r));
  }
}

template <typename T>
void run(const AttentionProblem& problem) {
  AttentionProblem p = problem;
  const int64_t groups =
      p.batch * p.heads * (p.window_k > 0 ? p.windows_y * p.windows_x : 1);
  const int64_t threads = at::get_num_threads();
  // few groups (one object's memory attention, a global window): blocks of queries are the
  // tasks, so smaller blocks when there would be fewer than two per thread
  while (groups < threads && p.q_block > 32 && ceil_div(p.num_q, p.q_block) < 2 * threads) {
    p.q_block /= 2;
  }
  const int64_t q_blocks = ceil_div(p.num_q, p.q_block);
  const int64_t k_blocks = ceil_div(p.num_k, p.kv_block);
  const int64_t keys_size = k_blocks * p.kv_block * p.dim;
  const int64_t values_size = k_blocks * p.kv_block * p.dim_v;
  const RowKernels<T> kernels = row_kernels<T>();
  if (q_blocks >= 2 * threads || groups < threads) {
    // enough query blocks per group: lay out each group's keys once, shared by the threads
    T* keys = scratch_of<T>(0, keys_size);
    T* values = scratch_of<T>(1, values_size);
    for (int64_t gi = 0; gi < groups; ++gi) {
      const Group<T> g = group_of<T>(p, gi);
      if (g.num_q == 0) {
        continue;
      }
      at::parallel_for(0, k_blocks, 1, [&](int64_t begin, int64_t end) {
        pack_group(p, g, begin, end, keys, values, scratch_of<float>(7, row_floats(p)), kernels);
      });
      at::parallel_for(0, ceil_div(g.num_q, p.q_block), 1, [&](int64_t begin, int64_t end) {
        Workspace<T> w(p);
        for (int64_t qb = begin; qb < end; ++qb) {
          const int64_t i0 = qb * p.q_block;
          query_block(p, g, i0, std::min(p.q_block, g.num_q - i0), keys, values, kernels, w);
        }
        release<T>();
      });
    }
    return;
  }
  // many small groups (windows): each task lays out its own group
  at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
    Workspace<T> w(p);
    T* keys = scratch_of<T>(0, keys_size);
    T* values = scratch_of<T>(1, values_size);
    for (int64_t gi = begin; gi < end; ++gi) {
      const Group<T> g = group_of<T>(p, gi);
      if (g.num_q == 0) {
        continue;
      }
      pack_group(p, g, 0, k_blocks, keys, values, w.row.data(), kernels);
      for (int64_t qb = 0; qb < ceil_div(g.num_q, p.q_block); ++qb) {
        const int64_t i0 = qb * p.q_block;
        query_block(p, g, i0, std::min(p.q_block, g.num_q - i0), keys, values, kernels, w);
      }
    }
    release<T>();
  });
}

// a small problem (odd key count, rotation, shared values) against a float64 loop: catches a
// micro-kernel that is missing or reads another layout on this CPU / oneDNN ISA
template <typename T>
std::string probe() {
  constexpr int64_t nq = 4, nk = 2 * nq + 3, dim = 6, dv = 5;
  std::vector<T> q(nq * dim), k(nk * dim), v(nk * dv), out(nq * dv);
  std::vector<float> cos(nq * dim / 2), sin(nq * dim / 2);
  for (int64_t i = 0; i < nq * dim; ++i) q[i] = from_float<T>(std::sin(0.7 * i) * 0.9);
  for (int64_t i = 0; i < nk * dim; ++i) k[i] = from_float<T>(std::cos(1.3 * i) * 0.8);
  for (int64_t i = 0; i < nk * dv; ++i) v[i] = from_float<T>(std::sin(0.37 * i + 1.0));
  for (int64_t i = 0; i < nq * dim / 2; ++i) {
    cos[i] = static_cast<float>(std::cos(0.5 * i));
    sin[i] = static_cast<float>(std::sin(0.5 * i));
  }
  AttentionProblem p;
  p.batch = p.heads = 1;
  p.num_q = nq;
  p.num_k = nk;
  p.dim = dim;
  p.dim_v = dv;
  p.q = q.data();
  p.q_stride[2] = dim;
  p.k = k.data();
  p.k_stride[2] = dim;
  p.v = v.data();
  p.v_stride[2] = dv;
  p.out = out.data();
  p.cos = cos.data();
  p.sin = sin.data();
  p.num_k_rope = 2 * nq;
  p.scale = 0.7f;
  p.q_block = 2;
  p.kv_block = 4;
  try {
    run<T>(p);
  } catch (const c10::Error& e) {
    return std::string("oneDNN's micro-kernel for this dtype is unavailable: ") +
           e.what_without_backtrace();
  } catch (const std::exception& e) {  // oneDNN's own errors ("could not generate a kernel")
    return std::string("oneDNN's micro-kernel for this dtype is unavailable on this CPU: ") + e.what();
  }
  auto rot = [&](const T* x, int64_t pos, int64_t d) {
    const int64_t j = d / 2;
    const double e = to_float(x[2 * j]), o = to_float(x[2 * j + 1]);
    const double c = cos[pos * dim / 2 + j], s = sin[pos * dim / 2 + j];
    return d % 2 == 0 ? e * c - o * s : e * s + o * c;
  };
  double worst = 0.0;
  for (int64_t i = 0; i < nq; ++i) {
    std::vector<double> score(nk);
    double mx = -1e300, sum = 0.0;
    for (int64_t t = 0; t < nk; ++t) {
      double dot = 0.0;
      for (int64_t d = 0; d < dim; ++d) {
        const double kd = t < p.num_k_rope ? rot(&k[t * dim], t % nq, d) : to_float(k[t * dim + d]);
        dot += rot(&q[i * dim], i, d) * kd;
      }
      score[t] = dot * p.scale;
      mx = std::max(mx, score[t]);
    }
    for (auto& s : score) sum += (s = std::exp(s - mx));
    for (int64_t c = 0; c < dv; ++c) {
      double ref = 0.0;
      for (int64_t t = 0; t < nk; ++t) ref += score[t] / sum * to_float(v[t * dv + c]);
      worst = std::max(worst, std::abs(ref - to_float(out[i * dv + c])));
    }
  }
  const double tolerance = std::is_same_v<T, float> ? 1e-5 : 3e-2;
  if (!(worst <= tolerance)) {
    return "oneDNN's micro-kernel on this CPU reads another layout (probe error " +
           std::to_string(worst) + ")";
  }
  return "";
}

#endif  // SAM2_ATTENTION_X86

}  // namespace

#ifdef SAM2_ATTENTION_X86
void attention_cpu_bf16(const AttentionProblem& p) { run<bf16>(p); }
void attention_cpu_f32(const AttentionProblem& p) { run<float>(p); }
#else
void attention_cpu_bf16(const AttentionProblem&) {
  TORCH_CHECK(false, "sam2_fast attention: ", attention_cpu_unsupported(true));
}
void attention_cpu_f32(const AttentionProblem& p) { attention_cpu_bf16(p); }
#endif

std::string attention_cpu_unsupported(bool bf16_inputs) {
#ifdef SAM2_ATTENTION_X86
  __builtin_cpu_init();
  if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))) {
    return "needs AVX-512 (F, BW, DQ, VL), which this CPU lacks";
  }
  static const std::string bf16_reason = probe<bf16>();
  static const std::string f32_reason = probe<float>();
  return bf16_inputs ? bf16_reason : f32_reason;
#else
  (void)bf16_inputs;
  return "needs an x86-64 CPU with AVX-512 and torch >= 2.7 (oneDNN micro-kernels in CPUBlas)";
#endif
}

}  // namespace sam2_fast
