// Python glue of the CSR matmul driver (csrc/cpu/sparse.cpp): numpy argument checks, GIL release, registration.
#include "bind/checks.h"
#include "cpu/sparse.h"

namespace fd {
namespace {

// A C-contiguous float32 vector of n entries, or nullptr for None.
const float* optional_f32_vector(const py::object& obj, const char* name, int64_t n, py::array* keep) {
  if (obj.is_none()) return nullptr;
  *keep = py::array::ensure(obj);
  if (!*keep) throw py::type_error(std::string(name) + ": expected a numpy array or None");
  require_buffer<float>(*keep, name);
  if (keep->ndim() != 1 || keep->size() != n)
    throw py::value_error(std::string(name) + ": expected a 1-D array of " + std::to_string(n) + " values");
  return static_cast<const float*>(keep->data());
}

Val value_type_of(const py::array& values) {
  const auto kind = values.dtype().kind();
  const auto size = values.itemsize();
  if (kind == 'f' && size == 4) return Val::F32;
  if (kind == 'u' && size == 2) return Val::BF16;
  if (kind == 'i' && size == 1) return Val::I8;
  throw py::type_error("values: expected float32, bfloat16 (as uint16 bits) or int8, got " +
                       std::string(py::str(values.dtype())));
}

py::array expect_2d_f32(const py::object& obj, const char* name) {
  auto a = py::array::ensure(obj);
  if (!a) throw py::type_error(std::string(name) + ": expected a numpy array");
  require_buffer<float>(a, name);
  if (a.ndim() != 2)
    throw py::value_error(std::string(name) + ": expected a 2-D array, got " + std::to_string(a.ndim()) + "-D");
  return a;
}

void sparse_matmul_py(const py::array& indptr, const py::array& indices, const py::array& values, int64_t cols,
                      const py::object& x_obj, bool x_feature_major, const py::object& out_obj,
                      bool out_feature_major, const py::object& bias_obj, const py::object& scale_obj, int nthreads) {
  require_buffer<int64_t>(indptr, "indptr");
  require_c_contiguous(indices, "indices");
  require_c_contiguous(values, "values");
  if (indptr.ndim() != 1 || indptr.size() < 1) throw py::value_error("indptr: expected a 1-D array of rows + 1");
  const int64_t rows = indptr.size() - 1;
  const bool idx16 = indices.itemsize() == 2;
  if (indices.dtype().kind() != 'i' || (indices.itemsize() != 2 && indices.itemsize() != 4))
    throw py::type_error("indices: expected int16 (unsigned 16-bit column indices) or int32, got " +
                         std::string(py::str(indices.dtype())));
  if (idx16 && cols > 65536) throw py::value_error("indices: 16-bit indices need cols <= 65536");
  if (cols < 0 || cols > (int64_t(1) << 31)) throw py::value_error("cols: expected 0 <= cols <= 2^31");
  const Val vt = value_type_of(values);
  if (indices.ndim() != 1 || values.ndim() != 1 || indices.size() != values.size())
    throw py::value_error("indices, values: expected 1-D arrays of the same length");

  const py::array x = expect_2d_f32(x_obj, "x");
  const int64_t M = x_feature_major ? x.shape(1) : x.shape(0);
  if ((x_feature_major ? x.shape(0) : x.shape(1)) != cols)
    throw py::value_error("x: expected " + std::to_string(cols) + " features, got shape (" +
                          std::to_string(x.shape(0)) + ", " + std::to_string(x.shape(1)) + ")");
  py::array out = expect_2d_f32(out_obj, "out");
  require_writeable(out, "out");
  const int64_t want0 = out_feature_major ? rows : M, want1 = out_feature_major ? M : rows;
  if (out.shape(0) != want0 || out.shape(1) != want1)
    throw py::value_error("out: expected shape (" + std::to_string(want0) + ", " + std::to_string(want1) + ")");
  py::array bias_arr, scale_arr;
  const float* bias = optional_f32_vector(bias_obj, "bias", rows, &bias_arr);
  const float* scale = optional_f32_vector(scale_obj, "scale", rows, &scale_arr);
  if ((vt == Val::I8) != (scale != nullptr))
    throw py::value_error(vt == Val::I8 ? "scale: int8 values need a float32 scale per row"
                                        : "scale: only int8 values take a scale");
  const Csr w{static_cast<const int64_t*>(indptr.data()), indices.data(), values.data(), scale, rows, cols,
              static_cast<int64_t>(values.size()), idx16, vt};
  py::gil_scoped_release nogil;
  sparse_matmul(w, static_cast<const float*>(x.data()), M, x_feature_major, data_of<float>(out), out_feature_major,
                bias, nthreads);
}
}  // namespace

void bind_sparse(py::module_& m) {
  m.def("sparse_matmul", &sparse_matmul_py, py::arg("indptr"), py::arg("indices"), py::arg("values"),
        py::arg("cols"), py::arg("x"), py::arg("x_feature_major"), py::arg("out"), py::arg("out_feature_major"),
        py::arg("bias") = py::none(), py::arg("scale") = py::none(), py::arg("nthreads") = 1,
        "out = x @ W^T (+ bias) for a CSR weight W (indptr int64; indices int16 = unsigned 16-bit or int32; values "
        "float32, uint16 bfloat16 bits, or int8 codes with a float32 scale per row: W[n, c] = scale[n] * code). x "
        "is float32 (M, cols), or (cols, M) when x_feature_major; out is float32 (M, rows), or (rows, M) when "
        "out_feature_major.");
}
}  // namespace fd
