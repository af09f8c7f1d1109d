// Shared helpers for fastdistill's CPU kernels: argument checks on numpy buffers, the SIMD level chosen at run
// time, and OpenMP thread-count plumbing. Kernels get raw pointers only after these checks pass.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace fd {
namespace py = pybind11;

enum class Simd : int { Scalar = 0, Avx2 = 1, Avx512 = 2 };

Simd simd_level();                 // level in use (detected, or forced by set_simd_level / FASTDISTILL_SIMD)
Simd detected_simd_level();        // best level this CPU supports
const char* simd_name(Simd s);

// Element types the kernels understand. bfloat16 travels as a numpy uint16 array holding the bit patterns.
enum class DType : int { F32 = 0, F16 = 1, BF16 = 2 };

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

inline int clamp_threads(int nthreads) { return nthreads < 1 ? 1 : nthreads; }

}  // namespace fd
