// Python glue of the int4 linear drivers (csrc/cpu/int4.cpp): numpy argument checks, GIL release, registration.
#include "bind/checks.h"
#include "cpu/int4.h"

namespace fd {
namespace {

void int4_pack_py(const py::array& codes, const py::array& scale, int64_t group_size, const py::array& packed,
                  int nthreads) {
  require_buffer<uint8_t>(codes, "codes");
  require_2d(codes, "codes");
  const int64_t n = codes.shape(0), k = 2 * codes.shape(1);
  if (group_size < 4 || group_size % 4 || k % group_size)
    throw py::value_error("group_size: expected a multiple of 4 dividing K = " + std::to_string(k) + ", got " +
                          std::to_string(group_size));
  require_buffer<float>(scale, "scale");
  require_shape(scale, "scale", {n, k / group_size});
  require_buffer<uint8_t>(packed, "packed", true);
  require_shape(packed, "packed", {int4_packed_bytes(k, n, group_size)});
  py::gil_scoped_release nogil;
  int4_pack(static_cast<const uint8_t*>(codes.data()), static_cast<const float*>(scale.data()), n, k, group_size,
            data_of<uint8_t>(packed), nthreads);
}

void int4_linear_py(const py::array& x, const py::array& packed, int64_t n, int64_t group_size,
                    const py::object& bias, const py::array& out, bool act_int8, int nthreads) {
  const DType dt = float_dtype_of(x, "x");
  if (dt == DType::F16) throw py::type_error("x: expected float32 or bfloat16 (as uint16 bits), got float16");
  require_c_contiguous(x, "x");
  require_2d(x, "x");
  const int64_t m = x.shape(0), k = x.shape(1);
  if (n < 0) throw py::value_error("n: expected n >= 0, got " + std::to_string(n));
  if (group_size < 4 || group_size % 4 || k % group_size)
    throw py::value_error("group_size: expected a multiple of 4 dividing K = " + std::to_string(k) + ", got " +
                          std::to_string(group_size));
  require_buffer<uint8_t>(packed, "packed");
  require_shape(packed, "packed", {int4_packed_bytes(k, n, group_size)});
  const float* bp = nullptr;
  if (!bias.is_none()) {
    const auto b = py::cast<py::array>(bias);
    require_buffer<float>(b, "bias");
    require_shape(b, "bias", {n});
    bp = static_cast<const float*>(b.data());
  }
  require_buffer<float>(out, "out", true);
  require_shape(out, "out", {m, n});
  py::gil_scoped_release nogil;
  int4_linear(x.data(), dt, m, k, static_cast<const uint8_t*>(packed.data()), group_size, n, bp,
              data_of<float>(out), act_int8, nthreads);
}
}  // namespace

void bind_int4(py::module_& m) {
  m.def("int4_packed_bytes", &int4_packed_bytes, py::arg("k"), py::arg("n"), py::arg("group_size"),
        "Bytes of a packed int4 weight (codes, then fp32 scales) of K x N with groups of group_size.");
  m.def("int4_pack", &int4_pack_py, py::arg("codes"), py::arg("scale"), py::arg("group_size"), py::arg("packed"),
        py::arg("nthreads") = 1,
        "Packs int4 codes (N x K/2 uint8, fields code + 8, lower k in the low nibble) and group scales (N x K/g "
        "fp32) into the kernels' panel layout.");
  m.def("int4_linear", &int4_linear_py, py::arg("x"), py::arg("packed"), py::arg("n"), py::arg("group_size"),
        py::arg("bias"), py::arg("out"), py::arg("act_int8"), py::arg("nthreads") = 1,
        "out (M x N fp32) = x (fp32 or bf16 bits) @ the packed int4 weight^T + bias (or None); act_int8: x "
        "quantized per row to int8 first (W4A8), else float activations (W4A16).");
}
}  // namespace fd
