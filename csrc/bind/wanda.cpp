// Python glue of the Wanda mask driver (csrc/cpu/wanda.cpp): numpy argument checks, GIL release, registration.
#include "bind/checks.h"
#include "cpu/wanda.h"

namespace fd {
namespace {

void wanda_mask_py(const py::array& w, const py::array& norms, int64_t k, const py::array& mask, int nthreads) {
  const DType dt = float_dtype_of(w, "w");
  if (dt == DType::F16) throw py::type_error("w: expected float32 or bfloat16 (as uint16 bits), got float16");
  require_c_contiguous(w, "w");
  require_2d(w, "w");
  const int64_t rows = w.shape(0), cols = w.shape(1);
  require_buffer<float>(norms, "norms");
  require_shape(norms, "norms", {cols});
  if (!(mask.dtype().kind() == 'b' || (mask.dtype().kind() == 'u' && mask.itemsize() == 1)))
    throw py::type_error("mask: expected bool or uint8, got " + std::string(py::str(mask.dtype())));
  require_c_contiguous(mask, "mask");
  require_writeable(mask, "mask");
  require_shape(mask, "mask", {rows, cols});
  if (k < 0 || k > cols)
    throw py::value_error("k: expected 0 <= k <= " + std::to_string(cols) + ", got " + std::to_string(k));
  py::gil_scoped_release nogil;
  wanda_mask(w.data(), dt, rows, cols, static_cast<const float*>(norms.data()), k, data_of<uint8_t>(mask), nthreads);
}
}  // namespace

void bind_wanda(py::module_& m) {
  m.def("wanda_mask", &wanda_mask_py, py::arg("w"), py::arg("norms"), py::arg("k"), py::arg("mask"),
        py::arg("nthreads") = 1,
        "Writes the keep-mask pruning, in each row of w (fp32 or bf16 bits), the k lowest |w| * norms (fp32 product; "
        "ties: lower column first).");
}
}  // namespace fd
