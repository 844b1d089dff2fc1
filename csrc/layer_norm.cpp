// A residual add and a LayerNorm to bfloat16 in one pass (layer_norm.h).
#include "layer_norm.h"

#include "bf16.h"

#include <ATen/Parallel.h>
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace sam2_fast {
namespace {

// where one row's operands are: base pointers already offset to the row
struct Row {
  const void* x;
  bool x_bf16;
  const void* delta;  // or null
  bool delta_bf16;
  void* sum;  // or null
  bool sum_bf16;
  uint16_t* normed;
};

inline float load_scalar(const void* p, bool bf16, int64_t i) {
  return bf16 ? bf16_to_float(static_cast<const uint16_t*>(p)[i]) : static_cast<const float*>(p)[i];
}

// one row, scalar; `row` is float32 scratch of `c` values
void row_scalar(const Row& r, int64_t c, float* row, const float* w, const float* b, float eps) {
  for (int64_t i = 0; i < c; ++i) {
    float s = load_scalar(r.x, r.x_bf16, i);
    if (r.delta != nullptr) s += load_scalar(r.delta, r.delta_bf16, i);
    if (r.sum_bf16) {
      const uint16_t bits = float_to_bf16(s);
      s = bf16_to_float(bits);
      if (r.sum != nullptr) static_cast<uint16_t*>(r.sum)[i] = bits;
    } else if (r.sum != nullptr) {
      static_cast<float*>(r.sum)[i] = s;
    }
    row[i] = s;
  }
  float mean = 0.0f;
  for (int64_t i = 0; i < c; ++i) mean += row[i];
  mean /= static_cast<float>(c);
  float var = 0.0f;
  for (int64_t i = 0; i < c; ++i) var += (row[i] - mean) * (row[i] - mean);
  const float rstd = 1.0f / std::sqrt(var / static_cast<float>(c) + eps);
  for (int64_t i = 0; i < c; ++i) {
    r.normed[i] = float_to_bf16((row[i] - mean) * rstd * w[i] + b[i]);
  }
}

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define SAM2_LAYER_NORM_X86 1
#define SAM2_LN_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma")))

SAM2_LN_TARGET inline __mmask16 lanes(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1);
}

// 16 float32 -> 16 bfloat16 bits, round to nearest even, NaN kept NaN
SAM2_LN_TARGET inline __m256i bf16_bits(__m512 x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(u, _mm512_set1_epi32(0x400000)));
  return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
}

SAM2_LN_TARGET inline __m512 bits_to_float(__m256i bits) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

SAM2_LN_TARGET inline __m512 load16(const void* p, bool bf16, int64_t i, __mmask16 m) {
  return bf16 ? bits_to_float(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(p) + i))
              : _mm512_maskz_loadu_ps(m, static_cast<const float*>(p) + i);
}

// one row, AVX-512: the sums into `row` (and their running total), then the centred squares,
// then the normalised values; the row (at most a few KB) stays in the L1 cache between passes
SAM2_LN_TARGET void row_avx512(const Row& r, int64_t c, float* row, const float* w, const float* b,
                               float eps) {
  __m512 total = _mm512_setzero_ps();
  for (int64_t i = 0; i < c; i += 16) {
    const __mmask16 m = lanes(c - i);
    __m512 s = load16(r.x, r.x_bf16, i, m);
    if (r.delta != nullptr) s = _mm512_add_ps(s, load16(r.delta, r.delta_bf16, i, m));
    if (r.sum_bf16) {
      const __m256i bits = bf16_bits(s);
      s = bits_to_float(bits);
      if (r.sum != nullptr) _mm256_mask_storeu_epi16(static_cast<uint16_t*>(r.sum) + i, m, bits);
    } else if (r.sum != nullptr) {
      _mm512_mask_storeu_ps(static_cast<float*>(r.sum) + i, m, s);
    }
    _mm512_mask_storeu_ps(row + i, m, s);
    total = _mm512_add_ps(total, s);
  }
  const float mean = _mm512_reduce_add_ps(total) / static_cast<float>(c);
  const __m512 vmean = _mm512_set1_ps(mean);
  __m512 squares = _mm512_setzero_ps();
  for (int64_t i = 0; i < c; i += 16) {
    const __mmask16 m = lanes(c - i);
    const __m512 centred = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, row + i), vmean);
    squares = _mm512_fmadd_ps(centred, centred, squares);
  }
  const float rstd = 1.0f / std::sqrt(_mm512_reduce_add_ps(squares) / static_cast<float>(c) + eps);
  const __m512 vrstd = _mm512_set1_ps(rstd);
  for (int64_t i = 0; i < c; i += 16) {
    const __mmask16 m = lanes(c - i);
    const __m512 centred = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, row + i), vmean);
    const __m512 y = _mm512_fmadd_ps(_mm512_mul_ps(centred, vrstd), _mm512_maskz_loadu_ps(m, w + i),
                                     _mm512_maskz_loadu_ps(m, b + i));
    _mm256_mask_storeu_epi16(r.normed + i, m, bf16_bits(y));
  }
}
#endif

inline const void* offset(const void* p, bool bf16, int64_t at) {
  if (p == nullptr) return nullptr;
  return bf16 ? static_cast<const void*>(static_cast<const uint16_t*>(p) + at)
              : static_cast<const void*>(static_cast<const float*>(p) + at);
}

}  // namespace

bool add_layer_norm_is_vectorized() {
#ifdef SAM2_LAYER_NORM_X86
  static const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  return avx512;
#else
  return false;
#endif
}

void add_layer_norm_bf16(const void* x, bool x_is_bf16, const void* delta, bool delta_is_bf16,
                         void* sum, bool sum_is_bf16, uint16_t* normed, int64_t rows,
                         int64_t channels, const float* weight, const float* bias, float eps) {
  const bool vectorized = add_layer_norm_is_vectorized();
  const int64_t grain = std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(channels, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(static_cast<size_t>(channels));
    for (int64_t i = begin; i < end; ++i) {
      const int64_t at = i * channels;
      const Row r{offset(x, x_is_bf16, at),
                  x_is_bf16,
                  offset(delta, delta_is_bf16, at),
                  delta_is_bf16,
                  const_cast<void*>(offset(sum, sum_is_bf16, at)),
                  sum_is_bf16,
                  normed + at};
#ifdef SAM2_LAYER_NORM_X86
      if (vectorized) {
        row_avx512(r, channels, scratch.data(), weight, bias, eps);
        continue;
      }
#endif
      (void)vectorized;
      row_scalar(r, channels, scratch.data(), weight, bias, eps);
    }
  });
}

}  // namespace sam2_fast
