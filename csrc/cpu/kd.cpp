// Fused knowledge-distillation loss (soft-target divergence + hard-target cross-entropy): per-row losses and the
// gradient w.r.t. the student logits in the same passes (see kd_kernels.h), OpenMP over rows.
#include "cpu/kd.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "cpu/huge_pages.h"

namespace fd {
namespace {

constexpr int64_t kRowsWork = 1 << 14;  // elements per scheduling block: small rows are grouped

void check_target(const int64_t* y, int64_t rows, int64_t V, int64_t ignore_index) {
  if (!y) return;
  for (int64_t r = 0; r < rows; ++r) {
    if (y[r] != ignore_index && (y[r] < 0 || y[r] >= V))
      throw std::invalid_argument("target: entry " + std::to_string(r) + " is " + std::to_string(y[r]) +
                                  ", expected a class in [0, " + std::to_string(V) + ") or ignore_index (" +
                                  std::to_string(ignore_index) + ")");
  }
}

void check_scalars(double temperature, double alpha, double scale) {
  if (!(temperature > 0) || !std::isfinite(temperature))
    throw std::invalid_argument("temperature: expected a finite value > 0, got " + std::to_string(temperature));
  if (!(alpha >= 0 && alpha <= 1))
    throw std::invalid_argument("alpha: expected a value in [0, 1], got " + std::to_string(alpha));
  if (!std::isfinite(scale)) throw std::invalid_argument("scale: expected a finite value");
}

// rows_fn(P, r0, r1) over blocks of rows (small rows grouped), in parallel.
template <typename Problem, typename Fn>
void run_rows(const Problem& P, Fn rows_fn, int nthreads) {
  const int64_t per = std::max<int64_t>(1, kRowsWork / P.V);
  const int64_t nblocks = (P.rows + per - 1) / per;
#pragma omp parallel for num_threads(clamp_threads(nthreads)) schedule(dynamic, 1)
  for (int64_t b = 0; b < nblocks; ++b) rows_fn(P, b * per, std::min(P.rows, (b + 1) * per));
}
}  // namespace

void kd_loss(const KdProblem& P, int nthreads) {
  if (P.V < 1) throw std::invalid_argument("student: expected at least one class (V >= 1)");
  check_target(P.target, P.rows, P.V, P.ignore_index);
  check_scalars(P.temperature, P.alpha, P.scale);
  if (P.div == Divergence::JSD && !(P.beta > 0 && P.beta < 1))
    throw std::invalid_argument("beta: expected a value in (0, 1), got " + std::to_string(P.beta));
  if (P.grad) advise_huge_pages(P.grad, P.rows * P.V * dtype_size(P.ds));
  run_rows(P, leaves<KdLeaves>().kd_rows, nthreads);
}

void sparse_kd_loss(const SparseKdProblem& P, int nthreads) {
  if (P.V < 1) throw std::invalid_argument("student: expected at least one class (V >= 1)");
  for (int64_t i = 0; i < P.rows * P.K; ++i) {
    if (P.idx[i] < 0 || P.idx[i] >= P.V)
      throw std::invalid_argument("indices: entry " + std::to_string(i) + " is " + std::to_string(P.idx[i]) +
                                  ", expected an index in [0, " + std::to_string(P.V) + ")");
  }
  check_target(P.target, P.rows, P.V, P.ignore_index);
  check_scalars(P.temperature, P.alpha, P.scale);
  if (P.grad) advise_huge_pages(P.grad, P.rows * P.V * dtype_size(P.ds));
  run_rows(P, leaves<KdLeaves>().sparse_kd_rows, nthreads);
}
}  // namespace fd
