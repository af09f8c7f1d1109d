// CSR sparse matmul over raw buffers: the driver of csrc/cpu/sparse.cpp (plain C++; bad data throws
// std::invalid_argument). The Csr struct is in sparse_isa.h.
#pragma once
#include "cpu/sparse_isa.h"

namespace fd {

// out = x @ W^T (+ bias) for the CSR weight w (rows = output features). x holds M samples of w.cols features,
// sample-major (M, cols) or feature-major (cols, M); out is (M, rows) or, when out_feature_major, (rows, M).
// Throws for a malformed indptr (not starting at 0, decreasing, not ending at the number of values) or a column
// index outside [0, cols).
void sparse_matmul(const Csr& w, const float* x, int64_t M, bool x_feature_major, float* out,
                   bool out_feature_major, const float* bias, int nthreads);

}  // namespace fd
