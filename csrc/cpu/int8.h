// int8 GEMM and the dynamic-quantization linear layer over raw buffers: the packed weight layout and the drivers of
// csrc/cpu/int8.cpp (plain C++; bad sizes throw std::invalid_argument).
#pragma once
#include <cstdint>

#include "core.h"

namespace fd {
// B (K x N int8) is packed into panels of kPanel columns. Within a panel, for each group g of 4 consecutive k, the
// 4 bytes of each column are adjacent: packed[p][g][j][t] = B[4g + t][kPanel * p + j], zero-padded in k and n.
// One group of one panel is then exactly one 64-byte vector of VNNI operands (16 int32 lanes x 4 bytes), four per
// group, and 16 groups of 16 columns are one AMX B tile; K is padded to a multiple of 64 (16 groups) for the tiles.
// Every tier reads this one layout, so a weight packed once serves whatever tier runs later.
constexpr int64_t kPanel = 64;
constexpr int64_t kGroupBytes = kPanel * 4;

inline int64_t k_groups(int64_t k) { return (k + 63) / 64 * 16; }
// Rows of A the GEMM may read: whole 32-row AMX tiles (the buffers' extra rows are zero).
inline int64_t padded_rows(int64_t m) { return (m + 31) / 32 * 32; }
inline int64_t n_panels(int64_t n) { return (n + kPanel - 1) / kPanel; }
// Sizes of the packed weight (bytes) and of its compensation vector (int32) for a K x N matrix.
inline int64_t int8_packed_bytes(int64_t k, int64_t n) { return n_panels(n) * k_groups(k) * kGroupBytes; }
inline int64_t int8_comp_size(int64_t n) { return n_panels(n) * kPanel; }

// Packs b (K x N int8, element (i, j) at b[i * sk + j * sn], strides >= 0) into `packed` and the shift compensation
// comp[j] = 128 * sum_i b[i, j].
void int8_pack(const int8_t* b, int64_t k, int64_t n, int64_t sk, int64_t sn, int8_t* packed, int32_t* comp,
               int nthreads);

// out (M x N int32) = a (M x K int8, row-major) @ B, B packed by int8_pack. Exact (int32 sums wrap).
void int8_gemm(const int8_t* a, int64_t m, int64_t k, const int8_t* packed, const int32_t* comp, int64_t n,
               int32_t* out, int nthreads);

// out (M x N fp32) = (quantize_rows(x) @ B) * row_scale * wscale + bias (bias may be null), B packed; x is M x K
// fp32 or bf16 bits (dt), row-major.
void int8_linear(const void* x, DType dt, int64_t m, int64_t k, const int8_t* packed, const int32_t* comp,
                 const float* wscale, int64_t n, const float* bias, float* out, int nthreads);

// q (M x K int8), scales (M) = symmetric per-row quantization of x (M x K fp32 or bf16 bits):
// scale = absmax / 127, q = round_half_even(x / scale) clamped to [-127, 127].
void int8_quantize_rows(const void* x, DType dt, int64_t m, int64_t k, int8_t* q, float* scales, int nthreads);

// out (M x N fp32) = float(c) * row_scale[:, None] * col_scale[None, :] + bias (bias may be null).
void int8_dequantize(const int32_t* c, int64_t m, int64_t n, const float* row_scale, const float* col_scale,
                     const float* bias, float* out, int nthreads);

// Below this many rows a 32-row AMX tile pass is mostly zero padding: VNNI measured faster up to 4-8 rows
// (M=1, 4096x1024: 0.10 vs 0.15 ms), AMX from 16 on (M=16: 0.18 vs 0.26 ms).
constexpr int64_t kAmxMinRows = 8;

void int8_set_amx(bool enabled);     // allow (default) or forbid the AMX kernel at the avx512 tier (tests, benches)
bool int8_amx_in_use(int64_t m);      // whether a GEMM of m rows runs on AMX tiles now

}  // namespace fd
