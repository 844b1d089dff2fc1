// Max pooling of channels-last maps, kernel = stride (pool.h).
#include "pool.h"

#include "bf16.h"

#include <ATen/Parallel.h>
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

namespace sam2_fast {
namespace {

template <typename T>
inline float load(T v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else {
    return bf16_to_float(v);
  }
}

// one output pixel's channels [c0, channels), scalar: the largest of the window's values, a
// NaN if any is one (torch.maximum), stored with its own bits
template <typename T>
void pixel_scalar(const T* src, int64_t c0, int64_t channels, int64_t stride, int64_t stride_h,
                  int64_t stride_w, T* dst) {
  for (int64_t c = c0; c < channels; ++c) {
    T best = src[c];
    float value = load(best);
    for (int64_t a = 0; a < stride && !std::isnan(value); ++a) {
      for (int64_t e = 0; e < stride; ++e) {
        const T candidate = src[a * stride_h + e * stride_w + c];
        const float v = load(candidate);
        if (std::isnan(v) || v > value) {
          best = candidate;
          value = v;
          if (std::isnan(v)) break;
        }
      }
    }
    dst[c] = best;
  }
}

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define SAM2_POOL_X86 1
#define SAM2_POOL_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))

// 16 channels of one output pixel: maxima in float32 with NaN carried (a lane that is NaN in
// any input ends NaN); bfloat16 converts exactly both ways (the result is one of the inputs)
template <typename T>
SAM2_POOL_TARGET int64_t pixel_avx512(const T* src, int64_t channels, int64_t stride,
                                      int64_t stride_h, int64_t stride_w, T* dst) {
  int64_t c = 0;
  for (; c + 16 <= channels; c += 16) {
    __m512 best;
    __mmask16 nan = 0;
    for (int64_t a = 0; a < stride; ++a) {
      for (int64_t e = 0; e < stride; ++e) {
        const T* p = src + a * stride_h + e * stride_w + c;
        __m512 v;
        if constexpr (std::is_same_v<T, float>) {
          v = _mm512_loadu_ps(p);
        } else {
          v = _mm512_castsi512_ps(_mm512_slli_epi32(
              _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
        }
        nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        best = (a == 0 && e == 0) ? v : _mm512_max_ps(best, v);
      }
    }
    best = _mm512_mask_mov_ps(best, nan, _mm512_set1_ps(std::nanf("")));
    if constexpr (std::is_same_v<T, float>) {
      _mm512_storeu_ps(dst + c, best);
    } else {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + c),
                          _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(best), 16)));
    }
  }
  return c;
}

bool vectorized() {
  static const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  return avx512;
}
#endif

template <typename T>
void run(const T* x, int64_t batch, int64_t out_h, int64_t out_w, int64_t channels, int64_t stride,
         int64_t stride_b, int64_t stride_h, int64_t stride_w, T* out) {
#ifdef SAM2_POOL_X86
  const bool simd = vectorized();
#endif
  const int64_t grain = std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(out_w * channels, 1));
  at::parallel_for(0, batch * out_h, grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / out_h, i = row % out_h;
      for (int64_t j = 0; j < out_w; ++j) {
        const T* src = x + b * stride_b + i * stride * stride_h + j * stride * stride_w;
        T* dst = out + (row * out_w + j) * channels;
        int64_t c0 = 0;
#ifdef SAM2_POOL_X86
        if (simd) c0 = pixel_avx512(src, channels, stride, stride_h, stride_w, dst);
#endif
        pixel_scalar(src, c0, channels, stride, stride_h, stride_w, dst);
      }
    }
  });
}

}  // namespace

void max_pool_nhwc(const void* x, bool is_bf16, int64_t batch, int64_t out_h, int64_t out_w,
                   int64_t channels, int64_t stride, int64_t stride_b, int64_t stride_h,
                   int64_t stride_w, void* out) {
  if (is_bf16) {
    run(static_cast<const uint16_t*>(x), batch, out_h, out_w, channels, stride, stride_b, stride_h,
        stride_w, static_cast<uint16_t*>(out));
  } else {
    run(static_cast<const float*>(x), batch, out_h, out_w, channels, stride, stride_b, stride_h,
        stride_w, static_cast<float*>(out));
  }
}

}  // namespace sam2_fast
