// Wanda masks over raw buffers: the driver of csrc/cpu/wanda.cpp (plain C++; bad data throws std::invalid_argument).
#pragma once
#include <cstdint>

#include "core.h"

namespace fd {
// Keep-mask (rows x cols bytes) pruning in each row of w (rows x cols, fp32 or bf16 bits, row-major) the k lowest
// scores |w[i, j]| * norms[j] (fp32 product; ties: lower column first). Throws for k outside [0, cols] or a NaN
// score.
void wanda_mask(const void* w, DType dt, int64_t rows, int64_t cols, const float* norms, int64_t k, uint8_t* mask,
                int nthreads);
}  // namespace fd
