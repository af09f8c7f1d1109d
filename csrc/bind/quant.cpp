// Python glue of the quantization drivers (csrc/cpu/quant.cpp): numpy argument checks, GIL release, registration.
#include "bind/checks.h"
#include "cpu/quant.h"

namespace fd {
namespace {

void check_rows(const py::array& codes, const py::array& scale, const py::array& zp, int64_t rows,
                int64_t row_bytes) {
  if (codes.itemsize() != 1 || (codes.dtype().kind() != 'i' && codes.dtype().kind() != 'u'))
    throw py::type_error("codes: expected an int8 or uint8 array, got " + std::string(py::str(codes.dtype())));
  require_dtype<float>(scale, "scale");
  require_dtype<int32_t>(zp, "zero_point");
  require_c_contiguous(codes, "codes");
  require_c_contiguous(scale, "scale");
  require_c_contiguous(zp, "zero_point");
  if (codes.ndim() != 2 || codes.shape(0) != rows || codes.shape(1) != row_bytes)
    throw py::value_error("codes: expected shape (" + std::to_string(rows) + ", " + std::to_string(row_bytes) + ")");
  if (scale.ndim() != 1 || scale.shape(0) != rows || zp.ndim() != 1 || zp.shape(0) != rows)
    throw py::value_error("scale, zero_point: expected shape (" + std::to_string(rows) + ",)");
}

void quantize_rows_py(const py::array& x, int bits, bool sym, const py::array& codes, const py::array& scale,
                      const py::array& zp, int nthreads) {
  require_buffer<float>(x, "x");
  if (x.ndim() != 2) throw py::value_error("x: expected a 2-D array (rows, length)");
  check_quant_bits(bits);
  const int64_t rows = x.shape(0), length = x.shape(1);
  check_rows(codes, scale, zp, rows, quant_row_bytes(length, bits));
  for (auto* a : {&codes, &scale, &zp}) require_writeable(*a, "codes, scale and zero_point");
  py::gil_scoped_release nogil;
  quantize_rows(static_cast<const float*>(x.data()), rows, length, bits, sym, data_of<uint8_t>(codes),
                data_of<float>(scale), data_of<int32_t>(zp), nthreads);
}

void dequantize_rows_py(const py::array& codes, const py::array& scale, const py::array& zp, int bits, bool sym,
                        const py::array& out, int nthreads) {
  require_buffer<float>(out, "out", true);
  if (out.ndim() != 2) throw py::value_error("out: expected a 2-D array (rows, length)");
  check_quant_bits(bits);
  const int64_t rows = out.shape(0), length = out.shape(1);
  check_rows(codes, scale, zp, rows, quant_row_bytes(length, bits));
  py::gil_scoped_release nogil;
  dequantize_rows(static_cast<const uint8_t*>(codes.data()), static_cast<const float*>(scale.data()),
                  static_cast<const int32_t*>(zp.data()), rows, length, bits, sym, data_of<float>(out), nthreads);
}
}  // namespace

void bind_quant(py::module_& m) {
  m.def("quantize_rows", &quantize_rows_py, py::arg("x"), py::arg("bits"), py::arg("symmetric"), py::arg("codes"),
        py::arg("scale"), py::arg("zero_point"), py::arg("nthreads") = 1,
        "Per-row absmax (symmetric) or min/max (asymmetric) quantization of a 2-D float32 array to 8/4/2-bit "
        "codes, packed per byte below 8 bits; fills codes, scale and zero_point.");
  m.def("dequantize_rows", &dequantize_rows_py, py::arg("codes"), py::arg("scale"), py::arg("zero_point"),
        py::arg("bits"), py::arg("symmetric"), py::arg("out"), py::arg("nthreads") = 1,
        "out = (code - zero_point) * scale per row (inverse of quantize_rows).");
}
}  // namespace fd
