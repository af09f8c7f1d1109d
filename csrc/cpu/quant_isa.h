// The leaf kernels of linear quantization (defined by quant_kernels.h, compiled once per SIMD tier; see core.h).
#pragma once
#include "core.h"

namespace fd {
// One row (or a byte-aligned piece of one) of linear quantization. `sym`: symmetric codes in [-qmax, qmax];
// otherwise asymmetric codes in [0, 2^bits - 1] with zero point `zp`.
struct QuantLeaves {
  // sym: *a = max|x|; asym: *a = min(x), *b = max(x). Returns how many elements are NaN or infinite.
  int64_t (*reduce)(const float* x, int64_t n, bool sym, float* a, float* b);
  // Codes of n elements (packed 8/bits per byte; n a multiple of that except at a row's end).
  void (*quantize)(const float* x, int64_t n, float scale, int32_t zp, int bits, bool sym, uint8_t* out);
  // Inverse: out[i] = (code - zp) * scale.
  void (*dequantize)(const uint8_t* in, int64_t n, float scale, int32_t zp, int bits, bool sym, float* out);
};

FD_DECLARE_TIER_LEAVES(QuantLeaves)
}  // namespace fd
