// The fastdistill._cuda module: each op family registers its functions here.
#include "cuda_common.h"

namespace fd_cuda {
void bind_prune(py::module_& m);
}  // namespace fd_cuda

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "fastdistill CUDA kernels";
  m.def("device_count", [] {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
  }, "CUDA devices visible to the runtime this module was built against.");
  fd_cuda::bind_prune(m);
}
