// Data-compression kernels (fastdistill.data): plain C++ drivers over raw pointers, no Python headers. Arrays are
// C-contiguous and row-major; sizes are 64-bit; bad data is reported with std::invalid_argument (the binding turns
// it into ValueError). The glue that checks numpy arrays and releases the GIL lives in csrc/bind/data.cpp.
#pragma once
#include <cstdint>

#include "core.h"

namespace fd {
namespace data {

// Nearest centroid of each row of x (n x d) among c (k x d), k >= 1, by the GEMM form
// ||x||^2 - 2 x.c + ||c||^2 in fp32: labels[i] = the smallest index of the minimum, dist2[i] = the squared distance
// (clamped at 0). Throws when a row of x or c is not finite.
void kmeans_assign(const float* x, int64_t n, int64_t d, const float* c, int64_t k, int64_t* labels, float* dist2,
                   int nthreads);

// Per-centroid float64 sums of the rows of x (n x d) assigned to it (labels[i] in [0, k)) and member counts: the M
// step of Lloyd's algorithm. sums is k x d, counts k. Throws on a label outside [0, k).
void centroid_sums(const float* x, int64_t n, int64_t d, const int64_t* labels, int64_t k, double* sums,
                   int64_t* counts, int nthreads);

// One pass of per-column statistics of x (n x d), written as float64 rows of out (6 x d): min, max, sum |x|,
// max |x|, the smallest nonzero |x| (+inf if none), and the largest |x[i+1] - x[i]| down the rows (0 for n < 2).
// Throws when x holds NaN or inf.
void column_stats(const float* x, int64_t n, int64_t d, double* out, int nthreads);

// Bin codes of x (n x d) against per-feature ascending edges (d x m, m <= 255): codes[j * n + i] = number of
// edges[j][.] <= x[i][j] (numpy's searchsorted side="right"), written feature-major (d x n). Throws on NaN.
void bin_codes(const float* x, int64_t n, int64_t d, const float* edges, int64_t m, uint8_t* codes, int nthreads);

// Joint counts of feature-major codes (d x n, values < n_bins) with a target (n values in [0, n_target)):
// out[(j * n_target + t) * n_bins + b] = #{i : target[i] == t and codes[j][i] == b}. Throws on an out-of-range
// code or target.
void joint_histograms(const uint8_t* codes, int64_t d, int64_t n, const int32_t* target, int64_t n_target,
                      int64_t n_bins, int64_t* out, int nthreads);

// Per-column linear codes of x (n x d): clamp(round_half_even((x - offset[j]) / scale[j]), qmin, qmax) stored as
// bytes (two's complement when qmin < 0). Throws (after the pass) when x holds NaN or inf.
void quantize_columns(const float* x, int64_t n, int64_t d, const float* scale, const float* offset, int32_t qmin,
                      int32_t qmax, uint8_t* codes, int nthreads);

// out (n x d) = code * scale[j] + offset[j] (two roundings); codes are int8 when is_signed, else uint8.
void dequantize_columns(const uint8_t* codes, bool is_signed, int64_t n, int64_t d, const float* scale,
                        const float* offset, float* out, int nthreads);

// Closed-loop delta (DPCM) codes of x (n x d) along rows, re-anchored every `block` rows: a row i with
// i % block == 0 gets clamp(round(x / anchor_scale[j]), -qmax, qmax) and a running value v = code * anchor_scale[j];
// every other row gets clamp(round((x - v) / step_scale[j]), -qmax, qmax) and v += code * step_scale[j]. int8 codes.
// Throws on NaN or inf.
void delta_encode(const float* x, int64_t n, int64_t d, const float* anchor_scale, const float* step_scale,
                  int64_t block, int32_t qmax, int8_t* codes, int nthreads);

// Inverse of delta_encode: the running values v (bit-identical to the encoder's).
void delta_decode(const int8_t* codes, int64_t n, int64_t d, const float* anchor_scale, const float* step_scale,
                  int64_t block, float* out, int nthreads);

}  // namespace data
}  // namespace fd
