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

// The student-side checks both losses share: returns the dtype; sets rows and V.
DType check_student(const py::array& student, int64_t* rows, int64_t* V) {
  const DType ds = float_dtype_of(student, "student");
  require_c_contiguous(student, "student");
  if (student.ndim() != 2) throw py::value_error("student: expected a 2-D (rows, V) array");
  *rows = student.shape(0);
  *V = student.shape(1);
  if (*V < 1) throw py::value_error("student: expected at least one class (V >= 1)");
  return ds;
}

// Checks target (int64, rows entries in [0, V) or ignore_index) and returns its data, or null for None.
const int64_t* check_target(const py::object& target, py::array* keep, int64_t rows, int64_t V, int64_t ignore_index) {
  if (target.is_none()) return nullptr;
  *keep = py::array::ensure(target);
  if (!*keep) throw py::type_error("target: expected a numpy array");
  require_dtype<int64_t>(*keep, "target");
  require_c_contiguous(*keep, "target");
  if (keep->size() != rows)
    throw py::value_error("target: expected " + std::to_string(rows) + " entries, got " + std::to_string(keep->size()));
  const auto* y = static_cast<const int64_t*>(keep->data());
  for (int64_t r = 0; r < rows; ++r) {
    if (y[r] != ignore_index && (y[r] < 0 || y[r] >= V))
      throw py::value_error("target: entry " + std::to_string(r) + " is " + std::to_string(y[r]) +
                            ", expected a class in [0, " + std::to_string(V) + ") or ignore_index (" +
                            std::to_string(ignore_index) + ")");
  }
  return y;
}

// Checks grad (None, or writeable C-contiguous rows x V in the student's dtype) and returns its data, or null.
void* check_grad(const py::object& grad, py::array* keep, const py::array& student, DType ds, int64_t rows,
                 int64_t V) {
  if (grad.is_none()) return nullptr;
  *keep = py::array::ensure(grad);
  if (!*keep) throw py::type_error("grad: expected a numpy array");
  if (float_dtype_of(*keep, "grad") != ds || keep->itemsize() != student.itemsize())
    throw py::type_error("grad: expected the student's dtype");
  require_c_contiguous(*keep, "grad");
  require_writeable(*keep, "grad");
  require_shape(*keep, rows, V, "grad");
  return keep->mutable_data();
}

void check_scalars(double temperature, double alpha, double scale) {
  if (!(temperature > 0) || !std::isfinite(temperature))
    throw py::value_error("temperature: expected a finite value > 0, got " + std::to_string(temperature));
  if (!(alpha >= 0 && alpha <= 1)) throw py::value_error("alpha: expected a value in [0, 1], got " + std::to_string(alpha));
  if (!std::isfinite(scale)) throw py::value_error("scale: expected a finite value");
}

float* check_row_loss(const py::array& row_loss, int64_t rows) {
  require_dtype<float>(row_loss, "row_loss");
  require_c_contiguous(row_loss, "row_loss");
  require_writeable(row_loss, "row_loss");
  if (row_loss.size() != rows) throw py::value_error("row_loss: expected " + std::to_string(rows) + " entries");
  return static_cast<float*>(const_cast<void*>(row_loss.data()));
}

// rows_fn(P, r0, r1) over blocks of rows (small rows grouped), in parallel, without the GIL.
template <typename Problem, typename Fn>
void run_rows(const Problem& P, Fn rows_fn, int nthreads) {
  const int64_t per = std::max<int64_t>(1, kRowsWork / P.V);
  const int64_t nblocks = (P.rows + per - 1) / per;
  py::gil_scoped_release nogil;
#pragma omp parallel for num_threads(clamp_threads(nthreads)) schedule(dynamic, 1)
  for (int64_t b = 0; b < nblocks; ++b) rows_fn(P, b * per, std::min(P.rows, (b + 1) * per));
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
  P.ds = check_student(student, &P.rows, &P.V);
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
  py::array y_arr, g_arr;
  P.target = check_target(target, &y_arr, P.rows, P.V, ignore_index);
  check_scalars(temperature, alpha, scale);
  if (div == Divergence::JSD && !(beta > 0 && beta < 1))
    throw py::value_error("beta: expected a value in (0, 1), got " + std::to_string(beta));
  P.grad = check_grad(grad, &g_arr, student, P.ds, P.rows, P.V);
  P.row_loss = check_row_loss(row_loss, P.rows);
  P.temperature = static_cast<float>(temperature);
  P.alpha = static_cast<float>(alpha);
  P.div = div;
  P.beta = static_cast<float>(beta);
  P.ignore_index = ignore_index;
  P.scale = static_cast<float>(scale);
  P.t_logp = teacher_log_probs;

  if (P.grad) advise_huge_pages(P.grad, static_cast<int64_t>(g_arr.nbytes()));
  run_rows(P, kd_rows_fn(), nthreads);
}

// The sparse-teacher loss (fastdistill.sparse_kd_loss): like kd_loss, with the teacher as K entries per row.
void sparse_kd_loss(const py::array& student, const py::array& indices, const py::array& values,
                    const py::object& sampling_probs, const py::object& target, double temperature, double alpha,
                    int kind, bool bucket, int64_t ignore_index, double scale, const py::object& grad,
                    const py::array& row_loss, int nthreads) {
  SparseKdProblem P{};
  P.ds = check_student(student, &P.rows, &P.V);
  P.s = student.data();
  require_dtype<int64_t>(indices, "indices");
  require_c_contiguous(indices, "indices");
  if (indices.ndim() != 2 || indices.shape(0) != P.rows || indices.shape(1) < 1)
    throw py::value_error("indices: expected shape (" + std::to_string(P.rows) + ", K) with K >= 1");
  P.K = indices.shape(1);
  require_dtype<float>(values, "values");
  require_c_contiguous(values, "values");
  require_shape(values, P.rows, P.K, "values");
  P.idx = static_cast<const int64_t*>(indices.data());
  for (int64_t i = 0; i < P.rows * P.K; ++i) {
    if (P.idx[i] < 0 || P.idx[i] >= P.V)
      throw py::value_error("indices: entry " + std::to_string(i) + " is " + std::to_string(P.idx[i]) +
                            ", expected an index in [0, " + std::to_string(P.V) + ")");
  }
  P.val = static_cast<const float*>(values.data());
  if (kind < 0 || kind > 2)
    throw py::value_error("kind: expected 0 (logits), 1 (log_probs) or 2 (probs), got " + std::to_string(kind));
  P.kind = static_cast<SparseValues>(kind);
  py::array r_arr;
  if (!sampling_probs.is_none()) {
    r_arr = py::array::ensure(sampling_probs);
    if (!r_arr) throw py::type_error("sampling_probs: expected a numpy array");
    require_dtype<float>(r_arr, "sampling_probs");
    require_c_contiguous(r_arr, "sampling_probs");
    require_shape(r_arr, P.rows, P.K, "sampling_probs");
    P.sprobs = static_cast<const float*>(r_arr.data());
  }
  py::array y_arr, g_arr;
  P.target = check_target(target, &y_arr, P.rows, P.V, ignore_index);
  check_scalars(temperature, alpha, scale);
  P.grad = check_grad(grad, &g_arr, student, P.ds, P.rows, P.V);
  P.row_loss = check_row_loss(row_loss, P.rows);
  P.temperature = static_cast<float>(temperature);
  P.alpha = static_cast<float>(alpha);
  P.bucket = bucket;
  P.ignore_index = ignore_index;
  P.scale = static_cast<float>(scale);
  if (P.grad) advise_huge_pages(P.grad, static_cast<int64_t>(g_arr.nbytes()));
  run_rows(P, sparse_kd_rows_fn(), nthreads);
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
  m.def("sparse_kd_loss", &sparse_kd_loss, py::arg("student"), py::arg("indices"), py::arg("values"),
        py::arg("sampling_probs"), py::arg("target"), py::arg("temperature"), py::arg("alpha"), py::arg("kind"),
        py::arg("bucket"), py::arg("ignore_index"), py::arg("scale"), py::arg("grad"), py::arg("row_loss"),
        py::arg("nthreads") = 1,
        "Distillation loss against a sparse teacher (see fastdistill.sparse_kd_loss): student (rows, V) float "
        "(float32, float16, or uint16 holding bfloat16 bits), indices (rows, K) int64 in [0, V), values (rows, K) "
        "float32 (kind: 0 logits, 1 log_probs, 2 probs), sampling_probs (rows, K) float32 or None. Writes the "
        "unscaled per-row losses into row_loss (float32) and, when grad is given, scale * their gradient.");
}
}  // namespace fd
