// int4 weight-only linear layer over raw buffers: the packed weight layout and the drivers of csrc/cpu/int4.cpp
// (plain C++; bad sizes throw std::invalid_argument).
#pragma once
#include <cstdint>

#include "core.h"

namespace fd {
// The weight W (N x K) arrives as int4 codes in [-7, 7] stored as unsigned fields code + 8, two per byte along K
// (the lower k in the low nibble), with one fp32 scale per group of g consecutive k (g % 4 == 0, K % g == 0).
//
// Packed, it is the int8 GEMM's panel layout (int8.h) at half the size: panels of kInt4Panel = 64 columns; within a
// panel, for each group t of 4 consecutive k, 128 bytes = 4 chunks of 32 bytes, chunk i covering columns
// 16i .. 16i + 15. A chunk holds 64 fields in the VNNI order v = 4 * column + (k - 4t) (the 4 k of a column
// adjacent, what vpdpbusd multiplies): byte b carries field v = b in its low nibble and v = b + 32 in its high
// nibble, so unpacking is an and, a shift and a concatenation (and, with code = field - 8, the int8 GEMM's own
// panel layout for the same group). Columns past N are zero fields. After the codes, the scales: for each panel and
// group, 64 floats (zero past N); then the int8 GEMM's shift compensation of each panel and group,
// comp[c] = 128 * sum over the group of code[k][c] (64 int32). Every tier reads this one layout.
constexpr int64_t kInt4Panel = 64;
constexpr int64_t kInt4GroupBytes = 128;

inline int64_t int4_panels(int64_t n) { return (n + kInt4Panel - 1) / kInt4Panel; }
inline int64_t int4_code_bytes(int64_t k, int64_t n) { return int4_panels(n) * (k / 4) * kInt4GroupBytes; }
// Bytes of the packed weight: codes, then int4_panels(n) * (k / g) * 64 fp32 scales and as many int32 comps.
inline int64_t int4_packed_bytes(int64_t k, int64_t n, int64_t g) {
  return int4_code_bytes(k, n) + 2 * int4_panels(n) * (k / g) * kInt4Panel * 4;
}

// Packs codes (N x K/2 bytes, row-major) and scale (N x K/g fp32, row-major) into `packed`.
void int4_pack(const uint8_t* codes, const float* scale, int64_t n, int64_t k, int64_t g, uint8_t* packed,
               int nthreads);

// out (M x N fp32) = x (M x K, fp32 or bf16 bits, row-major) times the packed W^T, + bias (may be null).
// act_int8 (W4A8): each row of x quantized to int8 (scale = absmax / 127, as int8_linear), per group an exact int32
// dot product with the codes (on the int8 GEMM), out = sum_g float(dot_g) * scale[n, g] * row_scale + bias.
// Otherwise (W4A16): out = sum_g scale[n, g] * (sum over the group of x * code) + bias, in fp32.
void int4_linear(const void* x, DType dt, int64_t m, int64_t k, const uint8_t* packed, int64_t g, int64_t n,
                 const float* bias, float* out, bool act_int8, int nthreads);

}  // namespace fd
