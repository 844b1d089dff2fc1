// Bilinear upsampling fused with thresholding and counting (upsample.h), on CPU.
//
// Each output row is the y-blend of two x-interpolated source rows; consecutive output rows
// share source rows, so the two x-interpolated rows are kept and recomputed only when the
// taps move on. The values never leave registers: each is compared with the thresholds, the
// first comparison written as the mask byte, and all of them counted.
//
// This file is compiled with -ffp-contract=off (CMakeLists.txt): the only fused multiply-adds
// are the explicit std::fma calls, so both roundings are exact by construction. On x86-64 the
// rows run in a copy compiled for AVX2 + FMA when the CPU has them (chosen at run time), in a
// portable copy otherwise (the AVX2 copy in intrinsics: gathers for the x taps, 8 pixels per
// step, comparison bits spread into mask bytes through a table).
#include "upsample.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

namespace sam2_fast {
namespace {

#if defined(__GNUC__)
#define SAM2_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define SAM2_ALWAYS_INLINE inline
#endif

// a * wa + b * wb, rounded as aten's kernel rounds it (see upsample.h)
template <bool Fused>
SAM2_ALWAYS_INLINE float blend(float a, float wa, float b, float wb) {
  if constexpr (Fused) {
    return std::fma(a, wa, b * wb);
  } else {
    return a * wa + b * wb;
  }
}

template <bool Fused>
SAM2_ALWAYS_INLINE void interpolate_row(const float* source, const BilinearTaps& columns,
                                        int64_t out_w, float* row) {
  const int32_t* i0 = columns.i0.data();
  const int32_t* i1 = columns.i1.data();
  const float* w0 = columns.w0.data();
  const float* w1 = columns.w1.data();
  for (int64_t x = 0; x < out_w; ++x) {
    row[x] = blend<Fused>(source[i0[x]], w0[x], source[i1[x]], w1[x]);
  }
}

// The two x-interpolated source rows the current output row blends: consecutive output rows
// share source rows, so each is computed once and kept while the taps stay on it.
class SourceRows {
 public:
  explicit SourceRows(int64_t width) : buffer_(2 * static_cast<size_t>(width)) {
    slots_[0] = buffer_.data();
    slots_[1] = buffer_.data() + width;
  }

  // source row `r`; when not held, `interpolate(row)` computes it into the slot that does not
  // hold `keep` (the other row the caller needs)
  template <typename Interpolate>
  const float* get(int64_t r, int64_t keep, const Interpolate& interpolate) {
    for (int s = 0; s < 2; ++s) {
      if (tags_[s] == r) {
        return slots_[s];
      }
    }
    const int s = tags_[0] == keep ? 1 : 0;
    interpolate(slots_[s]);
    tags_[s] = r;
    return slots_[s];
  }

 private:
  std::vector<float> buffer_;
  float* slots_[2];
  int64_t tags_[2] = {-1, -1};
};

template <bool Fused, int K>
SAM2_ALWAYS_INLINE void rows_impl(const float* logits, int64_t in_w, const BilinearTaps& rows,
                                  const BilinearTaps& columns, int64_t y_begin, int64_t y_end,
                                  const float* thresholds, uint8_t* mask, int64_t* counts) {
  const int64_t out_w = static_cast<int64_t>(columns.i0.size());
  SourceRows source_rows(out_w);
  const auto source_row = [&](int64_t r, int64_t keep) {
    return source_rows.get(r, keep, [&](float* row) {
      interpolate_row<Fused>(logits + r * in_w, columns, out_w, row);
    });
  };
  const float t0 = thresholds[0];
  const float t1 = K > 1 ? thresholds[1] : 0.0f;
  const float t2 = K > 2 ? thresholds[2] : 0.0f;
  int64_t total[3] = {0, 0, 0};
  for (int64_t y = y_begin; y < y_end; ++y) {
    const int64_t r0 = rows.i0[y];
    const int64_t r1 = rows.i1[y];
    const float* above = source_row(r0, r1);
    const float* below = source_row(r1, r0);
    const float wy0 = rows.w0[y];
    const float wy1 = rows.w1[y];
    uint8_t* out = mask + y * out_w;
    int32_t c0 = 0, c1 = 0, c2 = 0;
    for (int64_t x = 0; x < out_w; ++x) {
      const float value = blend<Fused>(above[x], wy0, below[x], wy1);
      const int32_t fg = value > t0;
      out[x] = static_cast<uint8_t>(fg);
      c0 += fg;
      if constexpr (K > 1) {
        c1 += value > t1;
      }
      if constexpr (K > 2) {
        c2 += value > t2;
      }
    }
    total[0] += c0;
    total[1] += c1;
    total[2] += c2;
  }
  for (int k = 0; k < K; ++k) {
    counts[k] += total[k];
  }
}

template <bool Fused>
SAM2_ALWAYS_INLINE void rows_any_k(const float* logits, int64_t in_w, const BilinearTaps& rows,
                                   const BilinearTaps& columns, int64_t y_begin, int64_t y_end,
                                   const float* thresholds, int num_thresholds, uint8_t* mask,
                                   int64_t* counts) {
  switch (num_thresholds) {
    case 1:
      return rows_impl<Fused, 1>(logits, in_w, rows, columns, y_begin, y_end, thresholds, mask,
                                 counts);
    case 2:
      return rows_impl<Fused, 2>(logits, in_w, rows, columns, y_begin, y_end, thresholds, mask,
                                 counts);
    default:
      return rows_impl<Fused, 3>(logits, in_w, rows, columns, y_begin, y_end, thresholds, mask,
                                 counts);
  }
}

void rows_portable(const float* logits, int64_t in_w, const BilinearTaps& rows,
                   const BilinearTaps& columns, int64_t y_begin, int64_t y_end,
                   const float* thresholds, int num_thresholds, bool fused, uint8_t* mask,
                   int64_t* counts) {
  if (fused) {
    rows_any_k<true>(logits, in_w, rows, columns, y_begin, y_end, thresholds, num_thresholds,
                     mask, counts);
  } else {
    rows_any_k<false>(logits, in_w, rows, columns, y_begin, y_end, thresholds, num_thresholds,
                      mask, counts);
  }
}

#if defined(__GNUC__) && defined(__x86_64__)
#define SAM2_HAVE_AVX2_COPY 1

// byte i of kSpread[bits] is bit i of bits: 8 comparison results as 8 mask bytes (0 / 1)
constexpr auto kSpread = [] {
  std::array<uint64_t, 256> table{};
  for (uint64_t bits = 0; bits < 256; ++bits) {
    for (int i = 0; i < 8; ++i) {
      table[bits] |= ((bits >> i) & 1) << (8 * i);
    }
  }
  return table;
}();

// blend() on 8 lanes, with the same roundings
template <bool Fused>
__attribute__((target("avx2,fma"), always_inline)) inline __m256 blend8(__m256 a, __m256 wa,
                                                                        __m256 b, __m256 wb) {
  if constexpr (Fused) {
    return _mm256_fmadd_ps(a, wa, _mm256_mul_ps(b, wb));
  } else {
    return _mm256_add_ps(_mm256_mul_ps(a, wa), _mm256_mul_ps(b, wb));
  }
}

template <bool Fused>
__attribute__((target("avx2,fma"))) void interpolate_row_avx2(const float* source,
                                                              const BilinearTaps& columns,
                                                              int64_t out_w, float* row) {
  const int32_t* i0 = columns.i0.data();
  const int32_t* i1 = columns.i1.data();
  const float* w0 = columns.w0.data();
  const float* w1 = columns.w1.data();
  int64_t x = 0;
  for (; x + 8 <= out_w; x += 8) {
    const __m256 a = _mm256_i32gather_ps(
        source, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(i0 + x)), 4);
    const __m256 b = _mm256_i32gather_ps(
        source, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(i1 + x)), 4);
    _mm256_storeu_ps(row + x, blend8<Fused>(a, _mm256_loadu_ps(w0 + x), b,
                                            _mm256_loadu_ps(w1 + x)));
  }
  for (; x < out_w; ++x) {
    row[x] = blend<Fused>(source[i0[x]], w0[x], source[i1[x]], w1[x]);
  }
}

template <bool Fused, int K>
__attribute__((target("avx2,fma"))) void rows_avx2_impl(const float* logits, int64_t in_w,
                                                        const BilinearTaps& rows,
                                                        const BilinearTaps& columns,
                                                        int64_t y_begin, int64_t y_end,
                                                        const float* thresholds, uint8_t* mask,
                                                        int64_t* counts) {
  const int64_t out_w = static_cast<int64_t>(columns.i0.size());
  SourceRows source_rows(out_w);
  const auto source_row = [&](int64_t r, int64_t keep) {
    return source_rows.get(r, keep, [&](float* row) {
      interpolate_row_avx2<Fused>(logits + r * in_w, columns, out_w, row);
    });
  };
  const __m256 t0 = _mm256_set1_ps(thresholds[0]);
  const __m256 t1 = _mm256_set1_ps(K > 1 ? thresholds[1] : 0.0f);
  const __m256 t2 = _mm256_set1_ps(K > 2 ? thresholds[2] : 0.0f);
  int64_t total[3] = {0, 0, 0};
  for (int64_t y = y_begin; y < y_end; ++y) {
    const int64_t r0 = rows.i0[y];
    const int64_t r1 = rows.i1[y];
    const float* above = source_row(r0, r1);
    const float* below = source_row(r1, r0);
    const float wy0 = rows.w0[y];
    const float wy1 = rows.w1[y];
    const __m256 v0 = _mm256_set1_ps(wy0);
    const __m256 v1 = _mm256_set1_ps(wy1);
    uint8_t* out = mask + y * out_w;
    // lanes count -1 per pixel above a threshold (a comparison's all-ones is -1)
    __m256i n0 = _mm256_setzero_si256(), n1 = n0, n2 = n0;
    int64_t x = 0;
    for (; x + 8 <= out_w; x += 8) {
      const __m256 value =
          blend8<Fused>(_mm256_loadu_ps(above + x), v0, _mm256_loadu_ps(below + x), v1);
      const __m256 fg = _mm256_cmp_ps(value, t0, _CMP_GT_OQ);
      const uint64_t bytes = kSpread[static_cast<unsigned>(_mm256_movemask_ps(fg))];
      std::memcpy(out + x, &bytes, 8);
      n0 = _mm256_add_epi32(n0, _mm256_castps_si256(fg));
      if constexpr (K > 1) {
        n1 = _mm256_add_epi32(n1, _mm256_castps_si256(_mm256_cmp_ps(value, t1, _CMP_GT_OQ)));
      }
      if constexpr (K > 2) {
        n2 = _mm256_add_epi32(n2, _mm256_castps_si256(_mm256_cmp_ps(value, t2, _CMP_GT_OQ)));
      }
    }
    alignas(32) int32_t lanes[3][8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes[0]), n0);
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes[1]), n1);
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes[2]), n2);
    for (int k = 0; k < K; ++k) {
      for (int lane = 0; lane < 8; ++lane) {
        total[k] -= lanes[k][lane];
      }
    }
    for (; x < out_w; ++x) {
      const float value = blend<Fused>(above[x], wy0, below[x], wy1);
      const int fg = value > thresholds[0];
      out[x] = static_cast<uint8_t>(fg);
      total[0] += fg;
      if constexpr (K > 1) {
        total[1] += value > thresholds[1];
      }
      if constexpr (K > 2) {
        total[2] += value > thresholds[2];
      }
    }
  }
  for (int k = 0; k < K; ++k) {
    counts[k] += total[k];
  }
}

template <bool Fused>
void rows_avx2_any_k(const float* logits, int64_t in_w, const BilinearTaps& rows,
                     const BilinearTaps& columns, int64_t y_begin, int64_t y_end,
                     const float* thresholds, int num_thresholds, uint8_t* mask,
                     int64_t* counts) {
  switch (num_thresholds) {
    case 1:
      return rows_avx2_impl<Fused, 1>(logits, in_w, rows, columns, y_begin, y_end, thresholds,
                                      mask, counts);
    case 2:
      return rows_avx2_impl<Fused, 2>(logits, in_w, rows, columns, y_begin, y_end, thresholds,
                                      mask, counts);
    default:
      return rows_avx2_impl<Fused, 3>(logits, in_w, rows, columns, y_begin, y_end, thresholds,
                                      mask, counts);
  }
}

void rows_avx2(const float* logits, int64_t in_w, const BilinearTaps& rows,
               const BilinearTaps& columns, int64_t y_begin, int64_t y_end,
               const float* thresholds, int num_thresholds, bool fused, uint8_t* mask,
               int64_t* counts) {
  if (fused) {
    rows_avx2_any_k<true>(logits, in_w, rows, columns, y_begin, y_end, thresholds,
                          num_thresholds, mask, counts);
  } else {
    rows_avx2_any_k<false>(logits, in_w, rows, columns, y_begin, y_end, thresholds,
                           num_thresholds, mask, counts);
  }
}

// SAM2_FAST_PORTABLE_CPU=1 selects the portable copy (its tests run it that way)
bool cpu_has_avx2_fma() {
  static const bool has = [] {
    const char* portable = std::getenv("SAM2_FAST_PORTABLE_CPU");
    if (portable != nullptr && std::string_view(portable) == "1") {
      return false;
    }
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
}
#endif

}  // namespace

BilinearTaps bilinear_taps(int64_t in_size, int64_t out_size, bool fused) {
  BilinearTaps taps;
  taps.i0.resize(out_size);
  taps.i1.resize(out_size);
  taps.w0.resize(out_size);
  taps.w1.resize(out_size);
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  for (int64_t d = 0; d < out_size; ++d) {
    const float centre = static_cast<float>(d) + 0.5f;
    float src = fused ? std::fma(scale, centre, -0.5f) : scale * centre - 0.5f;
    src = std::max(src, 0.0f);
    const int64_t i0 = std::min(static_cast<int64_t>(std::floor(src)), in_size - 1);
    const float w1 = std::min(std::max(src - static_cast<float>(i0), 0.0f), 1.0f);
    taps.i0[d] = static_cast<int32_t>(i0);
    taps.i1[d] = static_cast<int32_t>(i0 + (i0 < in_size - 1 ? 1 : 0));
    taps.w1[d] = w1;
    taps.w0[d] = 1.0f - w1;
  }
  return taps;
}

void upsample_threshold_rows_cpu(const float* logits, int64_t in_w, const BilinearTaps& rows,
                                 const BilinearTaps& columns, int64_t y_begin, int64_t y_end,
                                 const float* thresholds, int num_thresholds, bool fused,
                                 uint8_t* mask, int64_t* counts) {
#ifdef SAM2_HAVE_AVX2_COPY
  if (cpu_has_avx2_fma()) {
    return rows_avx2(logits, in_w, rows, columns, y_begin, y_end, thresholds, num_thresholds,
                     fused, mask, counts);
  }
#endif
  rows_portable(logits, in_w, rows, columns, y_begin, y_end, thresholds, num_thresholds, fused,
                mask, counts);
}

}  // namespace sam2_fast
