// The fastdistill._C module: each op family registers its functions here.
#include <omp.h>

#include "common.h"

namespace fd {
void bind_simd(py::module_& m);
void bind_prune(py::module_& m);
void bind_quant(py::module_& m);
void bind_kd(py::module_& m);
void bind_sparse(py::module_& m);
void bind_int8(py::module_& m);
void bind_data(py::module_& m);
}  // namespace fd

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastdistill native CPU kernels (C++17, OpenMP, run-time SIMD dispatch)";
  m.def("max_threads", [] { return omp_get_max_threads(); }, "OpenMP's default thread count.");
  fd::bind_simd(m);
  fd::bind_prune(m);
  fd::bind_quant(m);
  fd::bind_kd(m);
  fd::bind_sparse(m);
  fd::bind_int8(m);
  fd::bind_data(m);
}
