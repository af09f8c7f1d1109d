// Python glue of the distillation-loss drivers (csrc/cpu/kd.cpp): numpy argument checks, GIL release, registration.
#include "bind/checks.h"
#include "cpu/kd.h"

namespace fd {
namespace {

void require_rows_v(const py::array& a, int64_t rows, int64_t V, const char* argname) {
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

// Checks target (int64, rows entries; their range is the driver's check) and returns its data, or null for None.
const int64_t* check_target(const py::object& target, py::array* keep, int64_t rows) {
  if (target.is_none()) return nullptr;
  *keep = py::array::ensure(target);
  if (!*keep) throw py::type_error("target: expected a numpy array");
  require_buffer<int64_t>(*keep, "target");
  if (keep->size() != rows)
    throw py::value_error("target: expected " + std::to_string(rows) + " entries, got " + std::to_string(keep->size()));
  return static_cast<const int64_t*>(keep->data());
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
  require_rows_v(*keep, rows, V, "grad");
  return keep->mutable_data();
}

float* check_row_loss(const py::array& row_loss, int64_t rows) {
  require_buffer<float>(row_loss, "row_loss", true);
  if (row_loss.size() != rows) throw py::value_error("row_loss: expected " + std::to_string(rows) + " entries");
  return data_of<float>(row_loss);
}

// The arguments both losses share, after the student's: target, grad, row_loss and the scalar settings (ranges are
// the driver's checks). `keep` holds converted arrays alive for the call.
template <typename Problem>
void check_shared(Problem& P, const py::array& student, const py::object& target, const py::object& grad,
                  const py::array& row_loss, double temperature, double alpha, int64_t ignore_index, double scale,
                  py::array (&keep)[2]) {
  P.target = check_target(target, &keep[0], P.rows);
  P.grad = check_grad(grad, &keep[1], student, P.ds, P.rows, P.V);
  P.row_loss = check_row_loss(row_loss, P.rows);
  P.temperature = static_cast<float>(temperature);
  P.alpha = static_cast<float>(alpha);
  P.ignore_index = ignore_index;
  P.scale = static_cast<float>(scale);
}

void kd_loss_py(const py::array& student, const py::object& teacher, const py::object& target, double temperature,
                double alpha, int divergence, double beta, int64_t ignore_index, double scale,
                bool teacher_log_probs, const py::object& grad, const py::array& row_loss, int nthreads) {
  if (divergence < 0 || divergence > 3)
    throw py::value_error("divergence: expected 0 (kl), 1 (reverse_kl), 2 (jsd) or 3 (none), got " +
                          std::to_string(divergence));
  KdProblem P{};
  P.div = static_cast<Divergence>(divergence);
  P.ds = check_student(student, &P.rows, &P.V);
  P.s = student.data();
  py::array t_arr;
  if (P.div != Divergence::None) {
    if (teacher.is_none()) throw py::value_error("teacher: required unless divergence is 3 (none)");
    t_arr = py::array::ensure(teacher);
    if (!t_arr) throw py::type_error("teacher: expected a numpy array");
    P.dt = float_dtype_of(t_arr, "teacher");
    require_c_contiguous(t_arr, "teacher");
    require_rows_v(t_arr, P.rows, P.V, "teacher");
    P.t = t_arr.data();
  }
  py::array keep[2];
  check_shared(P, student, target, grad, row_loss, temperature, alpha, ignore_index, scale, keep);
  P.beta = static_cast<float>(beta);
  P.t_logp = teacher_log_probs;
  py::gil_scoped_release nogil;
  kd_loss(P, nthreads);
}

void sparse_kd_loss_py(const py::array& student, const py::array& indices, const py::array& values,
                       const py::object& sampling_probs, const py::object& target, double temperature, double alpha,
                       int kind, bool bucket, int64_t ignore_index, double scale, const py::object& grad,
                       const py::array& row_loss, int nthreads) {
  SparseKdProblem P{};
  P.ds = check_student(student, &P.rows, &P.V);
  P.s = student.data();
  require_buffer<int64_t>(indices, "indices");
  if (indices.ndim() != 2 || indices.shape(0) != P.rows || indices.shape(1) < 1)
    throw py::value_error("indices: expected shape (" + std::to_string(P.rows) + ", K) with K >= 1");
  P.K = indices.shape(1);
  require_buffer<float>(values, "values");
  require_rows_v(values, P.rows, P.K, "values");
  P.idx = static_cast<const int64_t*>(indices.data());
  P.val = static_cast<const float*>(values.data());
  if (kind < 0 || kind > 2)
    throw py::value_error("kind: expected 0 (logits), 1 (log_probs) or 2 (probs), got " + std::to_string(kind));
  P.kind = static_cast<SparseValues>(kind);
  py::array r_arr;
  if (!sampling_probs.is_none()) {
    r_arr = py::array::ensure(sampling_probs);
    if (!r_arr) throw py::type_error("sampling_probs: expected a numpy array");
    require_buffer<float>(r_arr, "sampling_probs");
    require_rows_v(r_arr, P.rows, P.K, "sampling_probs");
    P.sprobs = static_cast<const float*>(r_arr.data());
  }
  py::array keep[2];
  check_shared(P, student, target, grad, row_loss, temperature, alpha, ignore_index, scale, keep);
  P.bucket = bucket;
  py::gil_scoped_release nogil;
  sparse_kd_loss(P, nthreads);
}
}  // namespace

void bind_kd(py::module_& m) {
  m.def("kd_loss", &kd_loss_py, py::arg("student"), py::arg("teacher"), py::arg("target"), py::arg("temperature"),
        py::arg("alpha"), py::arg("divergence"), py::arg("beta"), py::arg("ignore_index"), py::arg("scale"),
        py::arg("teacher_log_probs"), py::arg("grad"), py::arg("row_loss"), py::arg("nthreads") = 1,
        "Fused distillation loss over (rows, V) float arrays (float32, float16, or uint16 holding bfloat16 bits): "
        "writes the unscaled per-row losses alpha*T^2*D(p_t||p_s) + (1-alpha)*CE into row_loss (float32) and, "
        "when grad is given, scale * their gradient w.r.t. the student (student's dtype). divergence: 0 kl, "
        "1 reverse_kl, 2 jsd, 3 none (cross-entropy only).");
  m.def("sparse_kd_loss", &sparse_kd_loss_py, py::arg("student"), py::arg("indices"), py::arg("values"),
        py::arg("sampling_probs"), py::arg("target"), py::arg("temperature"), py::arg("alpha"), py::arg("kind"),
        py::arg("bucket"), py::arg("ignore_index"), py::arg("scale"), py::arg("grad"), py::arg("row_loss"),
        py::arg("nthreads") = 1,
        "Distillation loss against a sparse teacher (see fastdistill.sparse_kd_loss): student (rows, V) float "
        "(float32, float16, or uint16 holding bfloat16 bits), indices (rows, K) int64 in [0, V), values (rows, K) "
        "float32 (kind: 0 logits, 1 log_probs, 2 probs), sampling_probs (rows, K) float32 or None. Writes the "
        "unscaled per-row losses into row_loss (float32) and, when grad is given, scale * their gradient.");
}
}  // namespace fd
