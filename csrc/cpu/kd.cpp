// Fused knowledge-distillation loss (soft-target divergence + hard-target cross-entropy): per-row losses and the
// gradient w.r.t. the student logits in the same passes (see kd_kernels.h), OpenMP over rows.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "common.h"
#include "huge_pages.h"
#include "kd_isa.h"

namespace fd {
namespace {

constexpr int64_t kRowsWork = 1 << 14;  // elements per scheduling block: small rows are grouped

void require_shape(const py::array& a, int64_t rows, int64_t V, const char* argname) {
  if (a.ndim() != 2 || a.shape(0) != rows || a.shape(1) != V)
    throw py::value_error(std::string(argname) + ": expected shape (" + std::to_string(rows) + ", " +
                          std::to_string(V) + ")");
}

// Writes row_loss[r] (unscaled) and, when grad is given, grad = scale * d(row_loss)/d(student). Checks every
// argument before touching memory; target values must be in [0, V) or equal ignore_index.
void kd_loss(const py::array& student, const py::object& teacher, const py::object& target, double temperature,
             double alpha, int divergence, double beta, int64_t ignore_index, double scale, bool teacher_log_probs,
             const py::object& grad, const py::array& row_loss, int nthreads) {
  if (divergence < 0 || divergence > 3)
    throw py::value_error("divergence: expected 0 (kl), 1 (reverse_kl), 2 (jsd) or 3 (none), got " +
                          std::to_string(divergence));
  const auto div = static_cast<Divergence>(divergence);
  KdProblem P{};
  P.ds = float_dtype_of(student, "student");
  require_c_contiguous(student, "student");
  if (student.ndim() != 2) throw py::value_error("student: expected a 2-D (rows, V) array");
  P.rows = student.shape(0);
  P.V = student.shape(1);
  if (P.V < 1) throw py::value_error("student: expected at least one class (V >= 1)");
  P.s = student.data();
  py::array t_arr;
  if (div != Divergence::None) {
    if (teacher.is_none()) throw py::value_error("teacher: required unless divergence is 3 (none)");
    t_arr = py::array::ensure(teacher);
    if (!t_arr) throw py::type_error("teacher: expected a numpy array");
    P.dt = float_dtype_of(t_arr, "teacher");
    require_c_contiguous(t_arr, "teacher");
    require_shape(t_arr, P.rows, P.V, "teacher");
    P.t = t_arr.data();
  }
  py::array y_arr;
  if (!target.is_none()) {
    y_arr = py::array::ensure(target);
    if (!y_arr) throw py::type_error("target: expected a numpy array");
    require_dtype<int64_t>(y_arr, "target");
    require_c_contiguous(y_arr, "target");
    if (y_arr.size() != P.rows)
      throw py::value_error("target: expected " + std::to_string(P.rows) + " entries, got " +
                            std::to_string(y_arr.size()));
    P.target = static_cast<const int64_t*>(y_arr.data());
    for (int64_t r = 0; r < P.rows; ++r) {
      const int64_t y = P.target[r];
      if (y != ignore_index && (y < 0 || y >= P.V))
        throw py::value_error("target: entry " + std::to_string(r) + " is " + std::to_string(y) +
                              ", expected a class in [0, " + std::to_string(P.V) + ") or ignore_index (" +
                              std::to_string(ignore_index) + ")");
    }
  }
  if (!(temperature > 0) || !std::isfinite(temperature))
    throw py::value_error("temperature: expected a finite value > 0, got " + std::to_string(temperature));
  if (!(alpha >= 0 && alpha <= 1)) throw py::value_error("alpha: expected a value in [0, 1], got " + std::to_string(alpha));
  if (div == Divergence::JSD && !(beta > 0 && beta < 1))
    throw py::value_error("beta: expected a value in (0, 1), got " + std::to_string(beta));
  if (!std::isfinite(scale)) throw py::value_error("scale: expected a finite value");
  py::array g_arr;
  if (!grad.is_none()) {
    g_arr = py::array::ensure(grad);
    if (!g_arr) throw py::type_error("grad: expected a numpy array");
    if (float_dtype_of(g_arr, "grad") != P.ds || g_arr.itemsize() != student.itemsize())
      throw py::type_error("grad: expected the student's dtype");
    require_c_contiguous(g_arr, "grad");
    require_writeable(g_arr, "grad");
    require_shape(g_arr, P.rows, P.V, "grad");
    P.grad = g_arr.mutable_data();
  }
  require_dtype<float>(row_loss, "row_loss");
  require_c_contiguous(row_loss, "row_loss");
  require_writeable(row_loss, "row_loss");
  if (row_loss.size() != P.rows)
    throw py::value_error("row_loss: expected " + std::to_string(P.rows) + " entries");
  P.row_loss = static_cast<float*>(const_cast<void*>(row_loss.data()));
  P.temperature = static_cast<float>(temperature);
  P.alpha = static_cast<float>(alpha);
  P.div = div;
  P.beta = static_cast<float>(beta);
  P.ignore_index = ignore_index;
  P.scale = static_cast<float>(scale);
  P.t_logp = teacher_log_probs;

  if (P.grad) advise_huge_pages(P.grad, static_cast<int64_t>(g_arr.nbytes()));
  const KdRowsFn rows_fn = kd_rows_fn();
  const int64_t per = std::max<int64_t>(1, kRowsWork / P.V);
  const int64_t nblocks = (P.rows + per - 1) / per;
  py::gil_scoped_release nogil;
#pragma omp parallel for num_threads(clamp_threads(nthreads)) schedule(dynamic, 1)
  for (int64_t b = 0; b < nblocks; ++b) rows_fn(P, b * per, std::min(P.rows, (b + 1) * per));
}
}  // namespace

void bind_kd(py::module_& m) {
  m.def("kd_loss", &kd_loss, py::arg("student"), py::arg("teacher"), py::arg("target"), py::arg("temperature"),
        py::arg("alpha"), py::arg("divergence"), py::arg("beta"), py::arg("ignore_index"), py::arg("scale"),
        py::arg("teacher_log_probs"), py::arg("grad"), py::arg("row_loss"), py::arg("nthreads") = 1,
        "Fused distillation loss over (rows, V) float arrays (float32, float16, or uint16 holding bfloat16 bits): "
        "writes the unscaled per-row losses alpha*T^2*D(p_t||p_s) + (1-alpha)*CE into row_loss (float32) and, "
        "when grad is given, scale * their gradient w.r.t. the student (student's dtype). divergence: 0 kl, "
        "1 reverse_kl, 2 jsd, 3 none (cross-entropy only).");
}
}  // namespace fd
