// Python glue of the int8 GEMM drivers (csrc/cpu/int8.cpp): numpy argument checks, GIL release, registration.
#include "bind/checks.h"
#include "cpu/int8.h"

namespace fd {
namespace {

// Checks the packed weight of a K x N matrix.
void check_packed(const py::array& packed, const py::array& comp, int64_t k, int64_t n) {
  require_buffer<int8_t>(packed, "packed");
  require_buffer<int32_t>(comp, "comp");
  require_shape(packed, "packed", {int8_packed_bytes(k, n)});
  require_shape(comp, "comp", {int8_comp_size(n)});
}

const float* optional_vector(const py::object& v, const char* argname, int64_t n) {
  if (v.is_none()) return nullptr;
  const auto arr = py::cast<py::array>(v);
  require_buffer<float>(arr, argname);
  require_shape(arr, argname, {n});
  return static_cast<const float*>(arr.data());
}

// x: fp32, or bf16 bits; float16 is refused.
DType linear_input_dtype(const py::array& x) {
  const DType dt = float_dtype_of(x, "x");
  if (dt == DType::F16) throw py::type_error("x: expected float32 or bfloat16 (as uint16 bits), got float16");
  require_c_contiguous(x, "x");
  require_2d(x, "x");
  return dt;
}

void int8_pack_py(const py::array& b, const py::array& packed, const py::array& comp, int nthreads) {
  require_dtype<int8_t>(b, "b");
  require_2d(b, "b");
  if (b.strides(0) < 0 || b.strides(1) < 0) throw py::value_error("b: negative strides are not supported");
  const int64_t k = b.shape(0), n = b.shape(1);
  check_packed(packed, comp, k, n);
  require_writeable(packed, "packed");
  require_writeable(comp, "comp");
  py::gil_scoped_release nogil;
  int8_pack(static_cast<const int8_t*>(b.data()), k, n, b.strides(0), b.strides(1), data_of<int8_t>(packed),
            data_of<int32_t>(comp), nthreads);
}

void int8_gemm_py(const py::array& a, const py::array& packed, const py::array& comp, int64_t n,
                  const py::array& out, int nthreads) {
  require_buffer<int8_t>(a, "a");
  require_2d(a, "a");
  const int64_t m = a.shape(0), k = a.shape(1);
  if (n < 0) throw py::value_error("n: expected n >= 0, got " + std::to_string(n));
  check_packed(packed, comp, k, n);
  require_buffer<int32_t>(out, "out", true);
  require_shape(out, "out", {m, n});
  py::gil_scoped_release nogil;
  int8_gemm(static_cast<const int8_t*>(a.data()), m, k, static_cast<const int8_t*>(packed.data()),
            static_cast<const int32_t*>(comp.data()), n, data_of<int32_t>(out), nthreads);
}

void int8_linear_py(const py::array& x, const py::array& packed, const py::array& comp, const py::array& wscale,
                    const py::object& bias, const py::array& out, int nthreads) {
  const DType dt = linear_input_dtype(x);
  const int64_t m = x.shape(0), k = x.shape(1);
  require_buffer<float>(wscale, "wscale");
  if (wscale.ndim() != 1) throw py::value_error("wscale: expected a 1-D array, got shape " + shape_str(wscale));
  const int64_t n = wscale.shape(0);
  check_packed(packed, comp, k, n);
  const float* bp = optional_vector(bias, "bias", n);
  require_buffer<float>(out, "out", true);
  require_shape(out, "out", {m, n});
  py::gil_scoped_release nogil;
  int8_linear(x.data(), dt, m, k, static_cast<const int8_t*>(packed.data()), static_cast<const int32_t*>(comp.data()),
              static_cast<const float*>(wscale.data()), n, bp, data_of<float>(out), nthreads);
}

void int8_quantize_rows_py(const py::array& x, const py::array& q, const py::array& scales, int nthreads) {
  const DType dt = linear_input_dtype(x);
  const int64_t m = x.shape(0), k = x.shape(1);
  require_buffer<int8_t>(q, "q", true);
  require_shape(q, "q", {m, k});
  require_buffer<float>(scales, "scales", true);
  require_shape(scales, "scales", {m});
  py::gil_scoped_release nogil;
  int8_quantize_rows(x.data(), dt, m, k, data_of<int8_t>(q), data_of<float>(scales), nthreads);
}

void int8_dequantize_py(const py::array& c, const py::array& row_scale, const py::array& col_scale,
                        const py::object& bias, const py::array& out, int nthreads) {
  require_buffer<int32_t>(c, "c");
  require_2d(c, "c");
  const int64_t m = c.shape(0), n = c.shape(1);
  require_buffer<float>(row_scale, "row_scale");
  require_shape(row_scale, "row_scale", {m});
  require_buffer<float>(col_scale, "col_scale");
  require_shape(col_scale, "col_scale", {n});
  const float* bp = optional_vector(bias, "bias", n);
  require_buffer<float>(out, "out", true);
  require_shape(out, "out", {m, n});
  py::gil_scoped_release nogil;
  int8_dequantize(static_cast<const int32_t*>(c.data()), m, n, static_cast<const float*>(row_scale.data()),
                  static_cast<const float*>(col_scale.data()), bp, data_of<float>(out), nthreads);
}
}  // namespace

void bind_int8(py::module_& m) {
  m.def("int8_set_amx", &int8_set_amx, py::arg("enabled"),
        "Allow (default) or forbid the AMX int8 kernel at the avx512 level; for tests and benchmarks.");
  m.def("int8_amx_in_use", &int8_amx_in_use, py::arg("m") = kAmxMinRows, "Whether an int8 GEMM of m rows runs on AMX tiles now.");
  m.attr("INT8_PANEL") = kPanel;
  m.def("int8_pack", &int8_pack_py, py::arg("b"), py::arg("packed"), py::arg("comp"), py::arg("nthreads") = 1,
        "Packs b (K x N int8, any strides) into the GEMM's panel layout (size n_panels * k_groups * 256) and the "
        "shift compensation comp[n] = 128 * sum_k b[k, n] (size n_panels * 64).");
  m.def("int8_gemm", &int8_gemm_py, py::arg("a"), py::arg("packed"), py::arg("comp"), py::arg("n"), py::arg("out"),
        py::arg("nthreads") = 1, "out (M x N int32) = a (M x K int8) @ b, b packed by int8_pack; exact (int32 wraps).");
  m.def("int8_linear", &int8_linear_py, py::arg("x"), py::arg("packed"), py::arg("comp"), py::arg("wscale"),
        py::arg("bias"), py::arg("out"), py::arg("nthreads") = 1,
        "out (M x N fp32) = dynamic per-row int8 quantization of x (fp32 or bf16 bits) @ packed int8 weight, "
        "dequantized by row scale x wscale, + bias (or None).");
  m.def("int8_quantize_rows", &int8_quantize_rows_py, py::arg("x"), py::arg("q"), py::arg("scales"),
        py::arg("nthreads") = 1, "Symmetric per-row int8 quantization: scales = absmax / 127, q = round(x / scale).");
  m.def("int8_dequantize", &int8_dequantize_py, py::arg("c"), py::arg("row_scale"), py::arg("col_scale"),
        py::arg("bias"), py::arg("out"), py::arg("nthreads") = 1,
        "out (M x N fp32) = c (int32) * row_scale[:, None] * col_scale[None, :] + bias (or None).");
}
}  // namespace fd
