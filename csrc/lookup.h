// Elementwise functions of bfloat16 values by table lookup (CPU, lookup.cpp). A bfloat16 has
// 65 536 bit patterns, so any function of one bfloat16 to one bfloat16 is a 128 KiB table that
// stays in the L2 cache: the table holds torch's own result for every pattern (GELU: torch's
// exact erf GELU in float32, rounded), so the lookup is bit-identical to torch's kernel on the
// same bfloat16 input, at the cost of a gather instead of an erf polynomial.
#pragma once

#include <cstdint>

namespace sam2_fast {

// values[i] = table[values[i]] for i in [0, n), in place (raw bfloat16 bit patterns). `table`
// holds 65 536 entries plus one of padding (the AVX-512 gather reads 32 bits per entry).
void lookup_u16_inplace(uint16_t* values, int64_t n, const uint16_t* table);

// whether lookup_u16_inplace runs the AVX-512 gather on this CPU (else a scalar loop)
bool lookup_u16_is_vectorized();

}  // namespace sam2_fast
