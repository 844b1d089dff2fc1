// Table lookup of bfloat16 bit patterns (lookup.h).
#include "lookup.h"

#include <ATen/Parallel.h>
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace sam2_fast {
namespace {

void lookup_scalar(uint16_t* values, int64_t n, const uint16_t* table) {
  for (int64_t i = 0; i < n; ++i) {
    values[i] = table[values[i]];
  }
}

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define SAM2_LOOKUP_X86 1
// 16 values per gather: zero-extend to 32-bit indices, gather 32 bits at byte offset 2 * index
// (the entry and its neighbour, hence the padding entry), keep the low 16 bits
__attribute__((target("avx512f,avx512bw"))) void lookup_avx512(uint16_t* values, int64_t n,
                                                               const uint16_t* table) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512i idx0 = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(values + i)));
    const __m512i idx1 =
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(values + i + 16)));
    const __m512i got0 = _mm512_i32gather_epi32(idx0, table, 2);
    const __m512i got1 = _mm512_i32gather_epi32(idx1, table, 2);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(values + i), _mm512_cvtepi32_epi16(got0));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(values + i + 16), _mm512_cvtepi32_epi16(got1));
  }
  lookup_scalar(values + i, n - i, table);
}
#endif

}  // namespace

bool lookup_u16_is_vectorized() {
#ifdef SAM2_LOOKUP_X86
  static const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  return avx512;
#else
  return false;
#endif
}

void lookup_u16_inplace(uint16_t* values, int64_t n, const uint16_t* table) {
  const bool vectorized = lookup_u16_is_vectorized();
  // chunks of 16 Ki values (32 KiB): small enough to split a band of a Hiera MLP across threads
  at::parallel_for(0, n, 1 << 14, [&](int64_t begin, int64_t end) {
#ifdef SAM2_LOOKUP_X86
    if (vectorized) {
      lookup_avx512(values + begin, end - begin, table);
      return;
    }
#endif
    (void)vectorized;
    lookup_scalar(values + begin, end - begin, table);
  });
}

}  // namespace sam2_fast
