// CUDA pruning kernels: exact k-th smallest magnitude by three 11/10/10-bit radix-histogram passes over the fp32
// magnitude key (shared-memory histograms), one pass writing the keep-mask (and zeroing in place), and an in-order
// fix-up of the boundary ties. Same selection rule as the CPU kernels (csrc/cpu/prune_kernels.h).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "cuda_common.h"
#include "prune_plan.h"

namespace fd_cuda {
namespace {

constexpr int kBins = 2048;
constexpr int kThreads = 256;
constexpr int64_t kMaskChunk = 8192;  // elements per block in the mask pass (tie counts are kept per block)

__device__ __forceinline__ uint32_t magnitude_key(const void* p, int64_t i, int dt) {
  if (dt == 0) return reinterpret_cast<const uint32_t*>(p)[i] & 0x7fffffffu;
  const unsigned short h = reinterpret_cast<const unsigned short*>(p)[i];
  if (dt == 2) return static_cast<uint32_t>(h & 0x7fffu) << 16;
  return __float_as_uint(__half2float(__ushort_as_half(h))) & 0x7fffffffu;  // exact widening
}

// Histogram of digit (key >> shift) & (kBins - 1) over keys whose (key >> (shift + bits)) == prefix (level > 0).
__global__ void hist_kernel(const void* p, int64_t n, int dt, int shift, int prefix_shift, uint32_t prefix,
                            int use_prefix, unsigned long long* hist, unsigned long long* nan_count) {
  __shared__ unsigned int sh[kBins];
  for (int b = threadIdx.x; b < kBins; b += blockDim.x) sh[b] = 0;
  __syncthreads();
  unsigned int nans = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint32_t k = magnitude_key(p, i, dt);
    nans += k > 0x7f800000u;
    if (use_prefix && (k >> prefix_shift) != prefix) continue;
    atomicAdd(&sh[(k >> shift) & (kBins - 1)], 1u);
  }
  __syncthreads();
  for (int b = threadIdx.x; b < kBins; b += blockDim.x)
    if (sh[b]) atomicAdd(&hist[b], static_cast<unsigned long long>(sh[b]));
  if (nans) atomicAdd(nan_count, static_cast<unsigned long long>(nans));
}

// mask = key >= lo; zero where key < lo; per-block count of keys == lo.
__global__ void mask_kernel(void* p, int64_t n, int dt, uint32_t lo, unsigned char* mask, int zero_out,
                            unsigned long long* ties) {
  __shared__ unsigned int block_ties;
  if (threadIdx.x == 0) block_ties = 0;
  __syncthreads();
  const int64_t begin = blockIdx.x * kMaskChunk, end = min(n, begin + kMaskChunk);
  unsigned int t = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const uint32_t k = magnitude_key(p, i, dt);
    if (mask) mask[i] = k >= lo;
    t += k == lo;
    if (zero_out && k < lo) {
      if (dt == 0) reinterpret_cast<uint32_t*>(p)[i] = 0;
      else reinterpret_cast<unsigned short*>(p)[i] = 0;
    }
  }
  if (t) atomicAdd(&block_ties, t);
  __syncthreads();
  if (threadIdx.x == 0) ties[blockIdx.x] = block_ties;
}

// Prunes, in index order, the first take[b] keys == key of block b's chunk (the boundary ties; rare).
__global__ void tie_kernel(void* p, int64_t n, int dt, uint32_t key, unsigned char* mask, int zero_out,
                           const long long* take) {
  long long left = take[blockIdx.x];
  if (threadIdx.x != 0 || left == 0) return;
  const int64_t begin = blockIdx.x * kMaskChunk, end = min(n, begin + kMaskChunk);
  for (int64_t i = begin; i < end && left > 0; ++i) {
    if (magnitude_key(p, i, dt) != key) continue;
    if (mask) mask[i] = 0;
    if (zero_out) {
      if (dt == 0) reinterpret_cast<uint32_t*>(p)[i] = 0;
      else reinterpret_cast<unsigned short*>(p)[i] = 0;
    }
    --left;
  }
}

__global__ void nm_kernel(const void* p, int64_t groups, int m, int n, int dt, unsigned char* mask) {
  const int64_t g = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (g >= groups) return;
  uint32_t keys[64];
  for (int j = 0; j < m; ++j) keys[j] = magnitude_key(p, g * m + j, dt);
  for (int j = 0; j < m; ++j) {
    int rank = 0;
    for (int i = 0; i < m; ++i) rank += (keys[i] > keys[j]) | ((keys[i] == keys[j]) & (i < j));
    mask[g * m + j] = rank < n;
  }
}

__global__ void nan_kernel(const void* p, int64_t n, int dt, unsigned long long* count) {
  unsigned int c = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    c += magnitude_key(p, i, dt) > 0x7f800000u;
  if (c) atomicAdd(count, static_cast<unsigned long long>(c));
}

struct Src {
  void* data;
  int64_t n;
  int dt;
  unsigned char* mask;
};

int grid_for(int64_t n) { return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, 1024))); }

void raise_if_nan(unsigned long long nans) {
  if (nans) throw py::value_error(fd::nan_message(nans));
}

using fd::MaskPlan;
using fd::Selection;

// k-th smallest key (1 <= k <= total) over all sources: three radix levels of 11, 10, 10 bits.
Selection select_kth(const std::vector<Src>& srcs, int64_t k, cudaStream_t stream, DeviceBuffer& scratch) {
  auto* hist = static_cast<unsigned long long*>(scratch.get());
  auto* nan_count = hist + kBins;
  std::vector<unsigned long long> host(kBins + 1);
  const int shifts[3] = {20, 10, 0};
  uint32_t prefix = 0;
  int64_t below = 0;
  for (int level = 0; level < 3; ++level) {
    check(cudaMemsetAsync(hist, 0, (kBins + 1) * sizeof(unsigned long long), stream), "cudaMemsetAsync");
    const int shift = shifts[level];
    const int prefix_shift = level == 0 ? 31 : shifts[level - 1];
    for (const auto& s : srcs)
      if (s.n)
        hist_kernel<<<grid_for(s.n), kThreads, 0, stream>>>(s.data, s.n, s.dt, shift, prefix_shift, prefix,
                                                            level > 0, hist, nan_count);
    check(cudaGetLastError(), "hist_kernel launch");
    check(cudaMemcpyAsync(host.data(), hist, (kBins + 1) * sizeof(unsigned long long), cudaMemcpyDeviceToHost,
                          stream), "cudaMemcpyAsync");
    check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    if (level == 0) raise_if_nan(host[kBins]);
    int64_t cum = 0;
    int digit = -1;
    for (int b = 0; b < kBins; ++b) {
      if (below + cum + static_cast<int64_t>(host[b]) >= k) {
        digit = b;
        break;
      }
      cum += static_cast<int64_t>(host[b]);
    }
    if (digit < 0) throw std::logic_error("fastdistill: histogram holds fewer than k elements");
    below += cum;
    prefix = (prefix << (level == 0 ? 11 : 10)) | static_cast<uint32_t>(digit);
    if (level == 2) return {prefix, below, static_cast<int64_t>(host[digit])};
  }
  return {};
}

py::tuple magnitude_prune(const py::list& ptrs, const std::vector<int64_t>& sizes, const std::vector<int>& dtypes,
                          int64_t k, const py::object& mask_ptrs, bool inplace, uintptr_t stream_handle) {
  if (ptrs.size() != sizes.size() || sizes.size() != dtypes.size())
    throw py::value_error("ptrs, sizes, dtypes: expected equal lengths");
  std::vector<Src> srcs;
  py::list masks = mask_ptrs.is_none() ? py::list() : mask_ptrs.cast<py::list>();
  if (!mask_ptrs.is_none() && masks.size() != ptrs.size())
    throw py::value_error("mask_ptrs: expected one mask pointer per tensor");
  int64_t total = 0;
  for (size_t i = 0; i < ptrs.size(); ++i) {
    if (sizes[i] < 0) throw py::value_error("sizes: expected non-negative sizes");
    if (dtypes[i] < 0 || dtypes[i] > 2) throw py::value_error("dtypes: expected codes 0 (f32), 1 (f16), 2 (bf16)");
    const auto data = ptrs[i].cast<uintptr_t>();
    const uintptr_t m = mask_ptrs.is_none() ? 0 : masks[i].cast<uintptr_t>();
    if (sizes[i] > 0 && (!data || (!mask_ptrs.is_none() && !m)))
      throw py::value_error("ptrs: null device pointer for a non-empty tensor");
    srcs.push_back({reinterpret_cast<void*>(data), sizes[i], dtypes[i], reinterpret_cast<unsigned char*>(m)});
    total += sizes[i];
  }
  if (k < 0 || k > total) throw py::value_error("k: expected 0 <= k <= " + std::to_string(total));
  auto stream = reinterpret_cast<cudaStream_t>(stream_handle);
  Selection sel;
  {
    py::gil_scoped_release nogil;
    DeviceBuffer scratch((kBins + 1) * sizeof(unsigned long long));
    if (k == 0 || k == total) {
      auto* count = static_cast<unsigned long long*>(scratch.get());
      check(cudaMemsetAsync(count, 0, sizeof(unsigned long long), stream), "cudaMemsetAsync");
      for (const auto& s : srcs)
        if (s.n) nan_kernel<<<grid_for(s.n), kThreads, 0, stream>>>(s.data, s.n, s.dt, count);
      unsigned long long nans = 0;
      check(cudaMemcpyAsync(&nans, count, sizeof(nans), cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
      check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
      raise_if_nan(nans);
      if (k == total && total > 0) sel = select_kth(srcs, k, stream, scratch);
    } else {
      sel = select_kth(srcs, k, stream, scratch);
    }
    const MaskPlan plan = fd::plan_mask(k, total, sel);
    const uint32_t lo = plan.lo;
    int64_t tie_prune = plan.tie_prune;
    if (inplace || !mask_ptrs.is_none()) {
      for (auto& s : srcs) {
        if (!s.n) continue;
        const int64_t blocks = (s.n + kMaskChunk - 1) / kMaskChunk;
        DeviceBuffer ties(blocks * sizeof(unsigned long long));
        mask_kernel<<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(
            s.data, s.n, s.dt, lo, s.mask, inplace, static_cast<unsigned long long*>(ties.get()));
        check(cudaGetLastError(), "mask_kernel launch");
        if (tie_prune == 0) continue;
        std::vector<unsigned long long> host(blocks);
        check(cudaMemcpyAsync(host.data(), ties.get(), blocks * sizeof(unsigned long long), cudaMemcpyDeviceToHost,
                              stream), "cudaMemcpyAsync");
        check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
        std::vector<long long> take(blocks, 0);
        for (int64_t b = 0; b < blocks && tie_prune > 0; ++b) {
          take[b] = std::min<long long>(static_cast<long long>(host[b]), tie_prune);
          tie_prune -= take[b];
        }
        DeviceBuffer take_dev(blocks * sizeof(long long));
        check(cudaMemcpyAsync(take_dev.get(), take.data(), blocks * sizeof(long long), cudaMemcpyHostToDevice,
                              stream), "cudaMemcpyAsync");
        tie_kernel<<<static_cast<unsigned int>(blocks), 32, 0, stream>>>(
            s.data, s.n, s.dt, lo, s.mask, inplace, static_cast<const long long*>(take_dev.get()));
        check(cudaGetLastError(), "tie_kernel launch");
        check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");  // before take_dev is freed
      }
    }
  }
  return py::make_tuple(sel.key, sel.less, sel.equal);
}

void nm_mask(uintptr_t x, int64_t size, int dt, int64_t n, int64_t m, uintptr_t mask, uintptr_t stream_handle) {
  if (m < 1 || m > 64) throw py::value_error("m: expected 1 <= m <= 64, got " + std::to_string(m));
  if (n < 0 || n > m) throw py::value_error("n: expected 0 <= n <= m");
  if (size < 0 || size % m) throw py::value_error("size: expected a non-negative multiple of m");
  if (dt < 0 || dt > 2) throw py::value_error("dt: expected 0 (f32), 1 (f16), 2 (bf16)");
  if (size && (!x || !mask)) throw py::value_error("x, mask: null device pointer");
  if (!size) return;
  auto stream = reinterpret_cast<cudaStream_t>(stream_handle);
  py::gil_scoped_release nogil;
  DeviceBuffer count(sizeof(unsigned long long));
  check(cudaMemsetAsync(count.get(), 0, sizeof(unsigned long long), stream), "cudaMemsetAsync");
  nan_kernel<<<grid_for(size), kThreads, 0, stream>>>(reinterpret_cast<const void*>(x), size, dt,
                                                        static_cast<unsigned long long*>(count.get()));
  unsigned long long nans = 0;
  check(cudaMemcpyAsync(&nans, count.get(), sizeof(nans), cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  raise_if_nan(nans);
  const int64_t groups = size / m;
  nm_kernel<<<static_cast<unsigned int>((groups + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      reinterpret_cast<const void*>(x), groups, static_cast<int>(m), static_cast<int>(n), dt,
      reinterpret_cast<unsigned char*>(mask));
  check(cudaGetLastError(), "nm_kernel launch");
}
}  // namespace

void bind_prune(py::module_& m) {
  m.def("magnitude_prune", &magnitude_prune, py::arg("ptrs"), py::arg("sizes"), py::arg("dtypes"), py::arg("k"),
        py::arg("mask_ptrs"), py::arg("inplace"), py::arg("stream"),
        "Exact k smallest magnitudes over contiguous device tensors (data pointers, sizes, dtype codes 0 f32 / 1 f16 "
        "/ 2 bf16); writes bool masks and/or zeroes in place. Returns (key, less, equal).");
  m.def("nm_mask", &nm_mask, py::arg("x"), py::arg("size"), py::arg("dtype"), py::arg("n"), py::arg("m"),
        py::arg("mask"), py::arg("stream"), "N:M keep-mask over contiguous groups of m elements on the device.");
}
}  // namespace fd_cuda
