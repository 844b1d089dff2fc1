// Flash attention on the CPU with optional 2D RoPE on the queries and the leading keys, values
// of any width (attention.cpp). The torch op (checks, allocation, registration) is in ops.cpp.
//
//   out[b, h] = softmax(R(q[b, h]) R(k[b, h])^T * scale) v[b, h or 0]
//
// R rotates consecutive channel pairs (2j, 2j + 1) of query token i by cos/sin[i, j] and of key
// token t < num_k_rope by cos/sin[t % num_q, j] (the keys are copies of the query grid), in
// float32, rounded once to the inputs' dtype: the rotation of position_encoding.apply_rope.
//
// The products run in oneDNN's batch-reduce GEMM micro-kernels (at::native::cpublas::brgemm:
// AMX tiles or AVX512-BF16 dot products for bfloat16, AVX2 / AVX512 FMAs for float32) on
// blocks of queries against blocks of keys that stay in the caches; the keys and values are
// rotated and laid out for those kernels once per call. The softmax is online (running row
// maxima and sums in float32, as torch's flash attention), its exponentials in AVX-512.
#pragma once

#include <cstdint>
#include <string>

namespace sam2_fast {

struct AttentionProblem {
  int64_t batch = 0, heads = 0, num_q = 0, num_k = 0, dim = 0, dim_v = 0;
  // element strides of batch, head and token (channels are contiguous); v_stride[1] == 0
  // shares one set of values between the heads of an item
  const void* q = nullptr;
  int64_t q_stride[3] = {0, 0, 0};
  const void* k = nullptr;
  int64_t k_stride[3] = {0, 0, 0};
  const void* v = nullptr;
  int64_t v_stride[3] = {0, 0, 0};
  void* out = nullptr;  // contiguous [batch, heads, num_q, dim_v]
  const float* cos = nullptr;  // [num_q, dim / 2] float32, or null: no rotation
  const float* sin = nullptr;
  int64_t num_k_rope = 0;  // leading keys that are rotated (a multiple of num_q)
  float scale = 1.0f;
  int64_t q_block = 64;    // queries per block
  int64_t kv_block = 512;  // keys per block
  // Windowed attention read in place (window > 0; no rotation): q, k, v and out are [B, Y, X, C]
  // token grids, head h at channel offset h * dim (h * dim_v for v and out), strides in elements
  // (batch, y, x; channels contiguous). Group g = ((b * windows_y + wy) * windows_x + wx) * heads
  // + h: its keys are the window_k x window_k tokens from (wy, wx) * window_k of the key grid
  // (num_k = window_k^2), a token past the grid (padding) reading the rows k_pad / v_pad
  // ([heads * dim] / [heads * dim_v]); its queries the tokens of the window_q x window_q tile
  // from (wy, wx) * window_q of the query grid that lie inside it (num_q = window_q^2 at most),
  // each written to its own token of out (the query grid's size).
  int64_t window_k = 0, window_q = 0, windows_y = 0, windows_x = 0;
  int64_t k_grid[2] = {0, 0};  // key grid rows and columns
  int64_t q_grid[2] = {0, 0};  // query grid rows and columns (also out's)
  int64_t q_yx[2] = {0, 0}, k_yx[2] = {0, 0}, v_yx[2] = {0, 0};  // y and x strides
  int64_t out_stride[3] = {0, 0, 0};  // out: batch, y, x
  const void* k_pad = nullptr;
  const void* v_pad = nullptr;
};

// bfloat16 inputs and output (float32 scores, softmax and accumulation)
void attention_cpu_bf16(const AttentionProblem& p);
// float32 inputs and output
void attention_cpu_f32(const AttentionProblem& p);

// Why the kernel cannot run on this CPU for bfloat16 (`bf16`) or float32 inputs, or "" when it
// can: it needs AVX-512 (F, BW, DQ, VL) and oneDNN's micro-kernels for that dtype (probed once).
std::string attention_cpu_unsupported(bool bf16);

}  // namespace sam2_fast
