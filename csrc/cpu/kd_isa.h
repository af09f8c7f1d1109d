// The knowledge-distillation loss problems as the row kernels see them (defined by kd_kernels.h, compiled once per
// SIMD tier; see core.h).
#pragma once
#include "core.h"

namespace fd {
enum class Divergence : int { KL = 0, ReverseKL = 1, JSD = 2, None = 3 };

struct KdProblem {
  const void* s;           // student logits, rows x V
  const void* t;           // teacher logits (or log-probabilities when t_logp), rows x V; unused for Divergence::None
  DType ds, dt;
  const int64_t* target;   // rows class indices, or null (no cross-entropy term)
  int64_t rows, V;
  float temperature;
  float alpha;             // weight of the soft-target term; the cross-entropy term has weight 1 - alpha
  Divergence div;
  float beta;              // JSD mixture weight of the teacher
  int64_t ignore_index;
  float scale;             // the reduction's factor, folded into the gradient
  bool t_logp;             // teacher given as log-probabilities: no temperature, no normalisation
  void* grad;              // d(scale * row_loss)/d(student), rows x V in dtype ds; null when not wanted
  float* row_loss;         // rows unscaled per-row losses
};

using KdRowsFn = void (*)(const KdProblem&, int64_t, int64_t);

// The teacher given sparsely: per row K entries (index, value), see fastdistill.sparse_kd_loss.
enum class SparseValues : int { Logits = 0, LogProbs = 1, Probs = 2 };

struct SparseKdProblem {
  const void* s;            // student logits, rows x V, dtype ds
  DType ds;
  const int64_t* idx;       // rows x K indices in [0, V)
  const float* val;         // rows x K teacher logits, log-probabilities or probabilities
  const float* sprobs;      // rows x K proposal probabilities of importance-sampled entries, or null
  const int64_t* target;    // rows class indices, or null (no cross-entropy term)
  int64_t rows, V, K;
  float temperature, alpha;
  SparseValues kind;
  bool bucket;              // the teacher's remaining mass as one extra bin
  int64_t ignore_index;
  float scale;
  void* grad;               // d(scale * row_loss)/d(student), rows x V in dtype ds; null when not wanted
  float* row_loss;
};

using SparseKdRowsFn = void (*)(const SparseKdProblem&, int64_t, int64_t);

struct KdLeaves {
  KdRowsFn kd_rows;                // rows [r0, r1) of a KdProblem
  SparseKdRowsFn sparse_kd_rows;  // rows [r0, r1) of a SparseKdProblem
};

FD_DECLARE_TIER_LEAVES(KdLeaves)
}  // namespace fd
