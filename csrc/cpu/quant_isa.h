// Declarations of the per-ISA leaf kernels of quantization (defined by quant_kernels.h, compiled once per ISA) and
// the table that selects one set at run time.
#pragma once
#include "common.h"

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

#define FD_DECLARE_QUANT_LEAVES(NS)                                                       \
  namespace NS {                                                                          \
  int64_t reduce(const float*, int64_t, bool, float*, float*);                            \
  void quantize(const float*, int64_t, float, int32_t, int, bool, uint8_t*);              \
  void dequantize(const uint8_t*, int64_t, float, int32_t, int, bool, float*);            \
  inline QuantLeaves quant_leaves() { return {reduce, quantize, dequantize}; }            \
  }
FD_DECLARE_QUANT_LEAVES(scalar)
FD_DECLARE_QUANT_LEAVES(avx2)
FD_DECLARE_QUANT_LEAVES(avx512)
#undef FD_DECLARE_QUANT_LEAVES

inline QuantLeaves quant_leaves() {
  switch (simd_level()) {
    case Simd::Avx512: return avx512::quant_leaves();
    case Simd::Avx2: return avx2::quant_leaves();
    default: return scalar::quant_leaves();
  }
}
}  // namespace fd
