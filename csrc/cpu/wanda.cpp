// Wanda masks: rows split over the threads, each with its own scratch (the selection itself is in wanda_kernels.h).
#include <omp.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/wanda_isa.h"

namespace fd {

void wanda_mask(const void* w, DType dt, int64_t rows, int64_t cols, const float* norms, int64_t k, uint8_t* mask,
                int nthreads) {
  if (dt == DType::F16) throw std::invalid_argument("w: expected float32 or bfloat16, got float16");
  if (rows < 0 || cols < 0) throw std::invalid_argument("wanda_mask: expected non-negative sizes");
  if (k < 0 || k > cols)
    throw std::invalid_argument("k: expected 0 <= k <= " + std::to_string(cols) + ", got " + std::to_string(k));
  const WandaLeaves& leaf = leaves<WandaLeaves>();
  const int64_t esz = dt == DType::F32 ? 4 : 2;
  std::atomic<bool> nan{false};
  // One parallel region only for enough work (see int8.cpp: each region can wait out a descheduled thread).
  const int threads = rows * cols >= (1 << 16) ? clamp_threads(nthreads) : 1;
#pragma omp parallel num_threads(threads)
  {
    std::vector<uint32_t> keys(static_cast<size_t>(cols)), hist(static_cast<size_t>(4 * kWandaBins));
    std::vector<uint64_t> cand(static_cast<size_t>(cols + 16));  // + 16: the vector pass stores whole vectors
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r)
      if (!leaf.row(static_cast<const char*>(w) + r * cols * esz, dt, norms, cols, k, keys.data(), hist.data(),
                    cand.data(), mask + r * cols))
        nan.store(true, std::memory_order_relaxed);
  }
  if (nan.load()) throw std::invalid_argument("w: a score |w| * norm is NaN (NaN weight, or inf times a zero norm)");
}
}  // namespace fd
