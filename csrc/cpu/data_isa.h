// The leaf kernels of the data-compression drivers (defined by data_kernels.h, compiled once per SIMD tier; see
// core.h) and their table. Plain C++.
#pragma once
#include "core.h"

namespace fd {
namespace data {

// Centroids packed for the assignment microkernel: panels of `nr` centroids (nr = the level's panel width); panel p
// holds d consecutive groups of nr floats, pack[(p * d + q) * nr + j] = c[p * nr + j][q], zero-padded past k, and
// cnorm[p * nr + j] = ||c||^2 (+inf past k, so padding never wins).
struct Packed {
  const float* pack;
  const float* cnorm;
  int64_t d, k, kpad;
};

// The assignment scans centroids in blocks of this many (a multiple of every level's panel width), so its distance
// tile (rows per tile x block floats) stays in L1/L2 however many centroids there are.
constexpr int64_t kCentroidBlock = 512;

}  // namespace data

struct DataLeaves {
  int64_t nr;  // centroids per panel
  int64_t mr;  // rows per microkernel tile
  // Rows [0, rows) of x (stride d): labels and squared distances; `tile` is scratch of mr * min(kpad,
  // kCentroidBlock) floats. Returns the number of rows whose norm is not finite (their outputs are unspecified).
  int64_t (*assign_rows)(const float* x, int64_t rows, const data::Packed& c, int64_t* labels, float* dist2,
                         float* tile);
  // Adds rows [0, rows) of x (stride d) to sums[labels[i]] (float64, stride d) and counts; returns how many labels
  // are outside [0, k) (those rows are skipped).
  int64_t (*accumulate_rows)(const float* x, int64_t rows, int64_t d, const int64_t* labels, int64_t k,
                             double* sums, int64_t* counts);
  // Per-column running statistics of rows [0, rows) (see column_stats), folded into st (5 x d floats: min, max,
  // max|x|, min nonzero |x|, max step; steps start at `prev`, the row before, when given) and sabs (d doubles).
  // Returns the non-finite count.
  int64_t (*column_stats_rows)(const float* x, int64_t rows, int64_t d, const float* prev, float* st, double* sabs);
  // Codes of rows [0, rows) of x (stride d) against the edges of features [j0, j1) (stride m per feature, padded
  // with +inf to 255 per feature in `edges255`), written to codes + j * n_total + row0. Returns the NaN count.
  int64_t (*bin_rows)(const float* x, int64_t rows, int64_t d, int64_t j0, int64_t j1, const float* edges255,
                      uint8_t* codes, int64_t n_total, int64_t row0);
  // Per-column linear codes of rows [0, rows) of `d` elements (see quantize_columns). Returns the non-finite
  // count.
  int64_t (*quantize_rows)(const float* x, int64_t rows, int64_t d, const float* scale, const float* offset,
                           float qmin, float qmax, uint8_t* codes);
  void (*dequantize_rows)(const uint8_t* codes, bool is_signed, int64_t rows, int64_t d, const float* scale,
                          const float* offset, float* out);
  // One block of delta codes: rows [0, rows) (the first an anchor) of `width` columns at row stride `ld`;
  // `running` is scratch of `width` floats. Returns the non-finite count.
  int64_t (*delta_encode_block)(const float* x, int64_t rows, int64_t width, int64_t ld, const float* anchor_scale,
                                const float* step_scale, float qmax, int8_t* codes, float* running);
  void (*delta_decode_block)(const int8_t* codes, int64_t rows, int64_t width, int64_t ld,
                             const float* anchor_scale, const float* step_scale, float* out);
};

FD_DECLARE_TIER_LEAVES(DataLeaves)
}  // namespace fd
