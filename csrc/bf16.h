// bfloat16 bit patterns <-> float32, scalar (the kernels on raw pointers: layer_norm.cpp,
// pool.cpp); the vector forms live in each kernel's AVX-512 code.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace sam2_fast {

inline float bf16_to_float(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// round to nearest even, NaN kept NaN (as c10::BFloat16)
inline uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if (std::isnan(f)) {
    return static_cast<uint16_t>((u >> 16) | 0x40);
  }
  u += 0x7fff + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}

}  // namespace sam2_fast
