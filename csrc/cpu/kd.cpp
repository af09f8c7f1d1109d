// Fused knowledge-distillation loss (soft-target divergence + hard-target cross-entropy): per-row losses and the
// gradient w.r.t. the student logits in the same passes (see kd_kernels.h), OpenMP over rows.
#include "cpu/kd.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

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
  if (P.weighting == 0 || P.div == Divergence::None) {
    run_rows(P, leaves<KdLeaves>().kd_rows, nthreads);
    return;
  }
  if (P.weighting != 1) throw std::invalid_argument("weighting: expected 0 (none) or 1 (info_entropy)");
  // info_entropy: the teacher's normalisers and confidences of every row first (the teacher pass kd_rows would
  // make), their normalisation to mean 1 over the rows that count, then kd_rows with both given.
  std::vector<double> t_norm(P.t_logp ? 0 : 2 * P.rows);
  std::vector<float> conf(P.rows);
  const auto entropy = leaves<KdLeaves>().teacher_entropy_rows;
  double* tn = t_norm.data();
  float* cf = conf.data();
  run_rows(P, [entropy, tn, cf](const KdProblem& Q, int64_t r0, int64_t r1) { entropy(Q, r0, r1, tn, cf); },
           nthreads);
  double total = 0.0;
  int64_t counted = 0;
  for (int64_t r = 0; r < P.rows; ++r) {
    total += conf[r];
    counted += !P.target || P.target[r] != P.ignore_index;
  }
  const double factor = total > 0.0 ? static_cast<double>(counted) / total : 0.0;
  for (float& c : conf) c = static_cast<float>(c * factor);
  KdProblem Q = P;
  Q.t_norm = P.t_logp ? nullptr : tn;
  Q.kd_weight = cf;
  run_rows(Q, leaves<KdLeaves>().kd_rows, nthreads);
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
