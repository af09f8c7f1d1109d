// Python glue of the pruning drivers (csrc/cpu/prune.cpp): numpy argument checks, GIL release, registration.
#include <vector>

#include "bind/checks.h"
#include "cpu/prune.h"

namespace fd {
namespace {

py::tuple magnitude_prune_py(const py::list& arrays, int64_t k, const py::object& masks, bool inplace,
                             int nthreads) {
  std::vector<py::array> keep;  // holds the converted arrays alive while the kernel runs
  std::vector<PruneArray> srcs;
  const bool with_masks = !masks.is_none();
  py::list mask_list = with_masks ? masks.cast<py::list>() : py::list();
  if (with_masks && mask_list.size() != arrays.size())
    throw py::value_error("masks: expected one mask per array (" + std::to_string(arrays.size()) + "), got " +
                          std::to_string(mask_list.size()));
  for (size_t i = 0; i < arrays.size(); ++i) {
    auto a = py::array::ensure(arrays[i]);
    if (!a) throw py::type_error("arrays[" + std::to_string(i) + "]: expected a numpy array");
    const std::string name = "arrays[" + std::to_string(i) + "]";
    const DType dt = float_dtype_of(a, name.c_str());
    require_c_contiguous(a, name.c_str());
    if (inplace) require_writeable(a, name.c_str());
    PruneArray s{data_of<char>(a), static_cast<int64_t>(a.size()), dt, nullptr};
    keep.push_back(a);
    if (with_masks) {
      auto m = py::array::ensure(mask_list[i]);
      const std::string mname = "masks[" + std::to_string(i) + "]";
      if (!m || m.itemsize() != 1 || (m.dtype().kind() != 'b' && m.dtype().kind() != 'u'))
        throw py::type_error(mname + ": expected a bool or uint8 array");
      require_c_contiguous(m, mname.c_str());
      require_writeable(m, mname.c_str());
      if (m.size() != a.size())
        throw py::value_error(mname + ": expected " + std::to_string(a.size()) + " elements, got " +
                              std::to_string(m.size()));
      s.mask = data_of<uint8_t>(m);
      keep.push_back(m);
    }
    srcs.push_back(s);
  }
  Selection sel;
  {
    py::gil_scoped_release nogil;
    sel = magnitude_prune(srcs, k, with_masks, inplace, nthreads);
  }
  return py::make_tuple(sel.key, sel.less, sel.equal);
}

void nm_mask_py(const py::array& x, int64_t n, int64_t m, const py::array& mask, int nthreads) {
  const DType dt = float_dtype_of(x, "x");
  require_c_contiguous(x, "x");
  require_c_contiguous(mask, "mask");
  require_writeable(mask, "mask");
  if (mask.itemsize() != 1 || mask.size() != x.size())
    throw py::value_error("mask: expected a 1-byte array with as many elements as x");
  py::gil_scoped_release nogil;
  nm_mask(x.data(), dt, x.size(), n, m, data_of<uint8_t>(mask), nthreads);
}
}  // namespace

void bind_prune(py::module_& m) {
  m.def("magnitude_prune", &magnitude_prune_py, py::arg("arrays"), py::arg("k"), py::arg("masks") = py::none(),
        py::arg("inplace") = false, py::arg("nthreads") = 1,
        "Exact selection of the k smallest magnitudes over a list of float arrays (float32, float16, or uint16 "
        "holding bfloat16 bits); writes keep-masks and/or zeroes in place. Returns (key, less, equal) of the k-th "
        "smallest magnitude's fp32 bit pattern.");
  m.def("nm_mask", &nm_mask_py, py::arg("x"), py::arg("n"), py::arg("m"), py::arg("mask"), py::arg("nthreads") = 1,
        "N:M keep-mask over contiguous groups of m elements (ties keep the lower index).");
}
}  // namespace fd
