// Argument checks of the binding units: dtype, shape, contiguity and writeability of numpy buffers, each failure a
// TypeError / ValueError naming the argument. Only csrc/bind/*.cpp include this (and with it pybind11); the kernels
// get raw pointers and sizes once these checks pass.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <string>

#include "core.h"

namespace fd {
namespace py = pybind11;

inline DType float_dtype_of(const py::array& a, const char* argname) {
  const auto kind = a.dtype().kind();
  const auto size = a.itemsize();
  if (kind == 'f' && size == 4) return DType::F32;
  if (kind == 'f' && size == 2) return DType::F16;
  if (kind == 'u' && size == 2) return DType::BF16;
  throw py::type_error(std::string(argname) + ": expected float32, float16 or bfloat16 (as uint16 bits), got " +
                       std::string(py::str(a.dtype())));
}

inline void require_c_contiguous(const py::array& a, const char* argname) {
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(argname) + ": expected a C-contiguous array");
}

inline void require_writeable(const py::array& a, const char* argname) {
  if (!a.writeable()) throw py::value_error(std::string(argname) + ": expected a writeable array");
}

template <typename T>
inline void require_dtype(const py::array& a, const char* argname) {
  if (!py::isinstance<py::array_t<T>>(a) || a.itemsize() != sizeof(T))
    throw py::type_error(std::string(argname) + ": expected dtype " + std::string(py::str(py::dtype::of<T>())) +
                         ", got " + std::string(py::str(a.dtype())));
}

// dtype T, C-contiguous (and writeable when `out`): the common checks of an input or output buffer.
template <typename T>
inline void require_buffer(const py::array& a, const char* argname, bool out = false) {
  require_dtype<T>(a, argname);
  require_c_contiguous(a, argname);
  if (out) require_writeable(a, argname);
}

inline std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

inline void require_shape(const py::array& a, const char* argname, std::initializer_list<int64_t> shape) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  int i = 0;
  for (int64_t d : shape) ok = ok && a.shape(i++) == d;
  if (!ok) {
    std::string want = "(";
    i = 0;
    for (int64_t d : shape) want += (i++ ? ", " : "") + std::to_string(d);
    throw py::value_error(std::string(argname) + ": expected shape " + want + (shape.size() == 1 ? ",)" : ")") +
                          ", got " + shape_str(a));
  }
}

inline void require_2d(const py::array& a, const char* argname) {
  if (a.ndim() != 2) throw py::value_error(std::string(argname) + ": expected a 2-D array, got shape " + shape_str(a));
}

template <typename T>
inline T* data_of(const py::array& a) {
  return static_cast<T*>(const_cast<void*>(a.data()));
}

}  // namespace fd
