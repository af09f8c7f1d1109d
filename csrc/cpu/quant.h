// Linear quantization of rows over raw buffers: the drivers of csrc/cpu/quant.cpp (plain C++; bad data throws
// std::invalid_argument).
#pragma once
#include <cstdint>

#include "core.h"

namespace fd {

// Bytes of one row of `length` codes of `bits` bits (8/bits codes per byte).
inline int64_t quant_row_bytes(int64_t length, int bits) { return (length * bits + 7) / 8; }

// Throws unless bits is one the kernels handle (8, 4, 2).
void check_quant_bits(int bits);

// codes (rows x quant_row_bytes), scale (rows), zero_point (rows) for x (rows x length float32): per-row absmax
// (symmetric) or min/max (asymmetric) scales. Throws if x holds NaN/inf or an asymmetric range overflows.
void quantize_rows(const float* x, int64_t rows, int64_t length, int bits, bool sym, uint8_t* codes, float* scale,
                   int32_t* zero_point, int nthreads);

// out (rows x length float32) = (code - zero_point) * scale per row.
void dequantize_rows(const uint8_t* codes, const float* scale, const int32_t* zero_point, int64_t rows,
                     int64_t length, int bits, bool sym, float* out, int nthreads);

}  // namespace fd
