// Fused distillation losses over raw buffers: the drivers of csrc/cpu/kd.cpp (plain C++; bad data throws
// std::invalid_argument). The problem structs are in kd_isa.h.
#pragma once
#include "cpu/kd_isa.h"

namespace fd {

// Writes P.row_loss (unscaled per-row losses) and, when P.grad is set, scale * their gradient w.r.t. the student.
// Throws for a temperature, alpha, beta or scale out of range, or a target outside [0, V) that is not ignore_index.
void kd_loss(const KdProblem& P, int nthreads);

// The same against a sparse teacher; also throws for an index outside [0, V).
void sparse_kd_loss(const SparseKdProblem& P, int nthreads);

}  // namespace fd
