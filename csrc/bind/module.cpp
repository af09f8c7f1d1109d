// The fastdistill._C module: the SIMD tier controls, and each op family's functions (bind/<family>.cpp).
#include <omp.h>

#include "bind/checks.h"

namespace fd {
void bind_prune(py::module_& m);
void bind_quant(py::module_& m);
void bind_kd(py::module_& m);
void bind_sparse(py::module_& m);
void bind_int8(py::module_& m);
void bind_data(py::module_& m);
void bind_int4(py::module_& m);
void bind_wanda(py::module_& m);

namespace {
void bind_simd(py::module_& m) {
  m.def("simd_level", [] { return std::string(simd_name(simd_level())); }, "SIMD level the kernels use now.");
  m.def("detected_simd_level", [] { return std::string(simd_name(detected_simd_level())); },
        "Best SIMD level this CPU supports.");
  m.def("supported_simd_levels", [] {
          py::list out;
          for (Simd s : supported_simd_levels()) out.append(simd_name(s));
          return out;
        }, "SIMD levels compiled into this build that this CPU runs, lowest first.");
  m.def("set_simd_level", &set_simd_level, py::arg("level"),
        "Force a level of this build: 'scalar', 'avx2' or 'avx512' on x86-64, 'scalar', 'neon' or 'neon_dot' on "
        "aarch64 (at most the detected level); for tests and benchmarks.");
  m.def("cpu_features", [] {
          py::dict d;
          for (const auto& [name, on] : cpu_features()) d[py::str(name)] = on;
          return d;
        }, "CPU feature flags relevant to the kernels.");
}
}  // namespace
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
  fd::bind_int4(m);
  fd::bind_wanda(m);
}
