// CSR sparse matmul: out = x @ W^T (+ bias) for a CSR weight W (rows = output features), x given sample-major
// (M, cols) or feature-major (cols, M), out written (M, rows) or (rows, M). Row-parallel with rows split so each
// thread gets about the same number of nonzeros; small batches use gather dot products, larger ones pack x into
// feature-major tiles first (see sparse_kernels.h).
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "common.h"
#include "sparse_isa.h"

namespace fd {
namespace {

// Up to this batch size gather dot products (one per sample, sharing nothing) beat the tiled AXPY; measured on
// AVX-512, 4096x4096 at 0.9 sparsity, one thread: M = 1 0.68 vs 1.6 ms, M = 2 1.07 vs 1.65, M = 4 2.3 vs 1.65.
constexpr int64_t kGatherMaxBatch = 3;

struct FloatBuffer {
  std::unique_ptr<float, decltype(&std::free)> p{nullptr, &std::free};
  explicit FloatBuffer(int64_t n) {
    const size_t bytes = (static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(float) + 63) / 64 * 64;
    p.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
    if (!p) throw std::bad_alloc();
  }
  float* get() const { return p.get(); }
};

// Row boundaries giving each of `parts` ranges about the same cost (nonzeros plus a per-row overhead).
std::vector<int64_t> balanced_rows(const int64_t* indptr, int64_t rows, int parts) {
  std::vector<int64_t> bounds(parts + 1, rows);
  bounds[0] = 0;
  const int64_t total = indptr[rows] + rows;
  for (int p = 1; p < parts; ++p) {
    const int64_t target = total * p / parts;
    int64_t lo = 0, hi = rows;  // first row r with indptr[r] + r >= target
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (indptr[mid] + mid < target) lo = mid + 1;
      else hi = mid;
    }
    bounds[p] = lo;
  }
  return bounds;
}

void check_indptr(const int64_t* indptr, int64_t rows, int64_t nnz) {
  if (indptr[0] != 0) throw py::value_error("indptr: expected indptr[0] == 0, got " + std::to_string(indptr[0]));
  for (int64_t r = 0; r < rows; ++r)
    if (indptr[r + 1] < indptr[r])
      throw py::value_error("indptr: expected a non-decreasing array, decreases at row " + std::to_string(r));
  if (indptr[rows] != nnz)
    throw py::value_error("indptr: last entry " + std::to_string(indptr[rows]) + " != number of stored values " +
                          std::to_string(nnz));
}

// A C-contiguous float32 vector of n entries, or nullptr for None.
const float* optional_f32_vector(const py::object& obj, const char* name, int64_t n, py::array* keep) {
  if (obj.is_none()) return nullptr;
  *keep = py::array::ensure(obj);
  if (!*keep) throw py::type_error(std::string(name) + ": expected a numpy array or None");
  require_dtype<float>(*keep, name);
  require_c_contiguous(*keep, name);
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
  require_dtype<float>(a, name);
  require_c_contiguous(a, name);
  if (a.ndim() != 2) throw py::value_error(std::string(name) + ": expected a 2-D array, got " +
                                           std::to_string(a.ndim()) + "-D");
  return a;
}

void sparse_matmul(const py::array& indptr, const py::array& indices, const py::array& values, int64_t cols,
                   const py::object& x_obj, bool x_feature_major, const py::object& out_obj, bool out_feature_major,
                   const py::object& bias_obj, const py::object& scale_obj, int nthreads) {
  require_dtype<int64_t>(indptr, "indptr");
  require_c_contiguous(indptr, "indptr");
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
  const int64_t nnz = values.size();
  const auto* ip = static_cast<const int64_t*>(indptr.data());
  check_indptr(ip, rows, nnz);
  if (nnz > 0 && cols == 0) throw py::value_error("indices: column index out of range [0, 0)");

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

  const Csr w{ip, indices.data(), values.data(), scale, rows, cols, idx16, vt};
  const float* xd = static_cast<const float*>(x.data());
  float* od = static_cast<float*>(out.mutable_data());
  const int64_t om = out_feature_major ? 1 : rows, on = out_feature_major ? M : 1;
  if (M == 0 || rows == 0) return;
  const SparseLeaves& leaf = sparse_leaves();
  nthreads = clamp_threads(nthreads);
  bool bad = false;
  {
    py::gil_scoped_release nogil;
    const int parts = static_cast<int>(std::min<int64_t>(nthreads, rows));
    const auto bounds = balanced_rows(ip, rows, parts);
    if (M <= kGatherMaxBatch) {
      // gather wants sample-major x; a feature-major x of a few samples is transposed (M * cols floats).
      std::unique_ptr<FloatBuffer> packed;
      if (x_feature_major && M > 1) {
        packed = std::make_unique<FloatBuffer>(M * cols);
        for (int64_t k = 0; k < cols; ++k)
          for (int64_t m = 0; m < M; ++m) packed->get()[m * cols + k] = xd[k * M + m];
      }
      const float* xs = packed ? packed->get() : xd;
#pragma omp parallel for num_threads(parts) schedule(static, 1) reduction(|| : bad)
      for (int p = 0; p < parts; ++p)
        bad = leaf.gather_rows(w, xs, M, bias, OutView{od, om, on}, bounds[p], bounds[p + 1]) || bad;
    } else {
      // Batch tiles of kMaxVectors registers, the last one as narrow as the remaining samples allow.
      const int64_t full = int64_t(kMaxVectors) * leaf.lanes;
      std::vector<int64_t> m0s, widths;
      for (int64_t m0 = 0; m0 < M; m0 += full) {
        m0s.push_back(m0);
        const int64_t rest = std::min(full, M - m0);
        widths.push_back((rest + leaf.lanes - 1) / leaf.lanes * leaf.lanes);
      }
      const int64_t ntiles = static_cast<int64_t>(m0s.size());
      std::vector<int64_t> offsets(ntiles + 1, 0);
      for (int64_t t = 0; t < ntiles; ++t) offsets[t + 1] = offsets[t] + cols * widths[t];
      FloatBuffer xp(offsets[ntiles]);
      constexpr int64_t kPackBlock = 64;  // features per packing task: the tile rows written stay in L1
      const int64_t kblocks = (cols + kPackBlock - 1) / kPackBlock;
      const int64_t sm = x_feature_major ? 1 : cols, sk = x_feature_major ? M : 1;
#pragma omp parallel num_threads(nthreads)
      {
#pragma omp for schedule(static) collapse(2)
        for (int64_t t = 0; t < ntiles; ++t)
          for (int64_t kb = 0; kb < kblocks; ++kb) {
            const int64_t mt = widths[t], mc = std::min(mt, M - m0s[t]);
            float* dst = xp.get() + offsets[t];
            const int64_t k1 = std::min(cols, (kb + 1) * kPackBlock);
            for (int64_t j = 0; j < mt; ++j) {
              const float* src = xd + (m0s[t] + j) * sm;
              for (int64_t k = kb * kPackBlock; k < k1; ++k) dst[k * mt + j] = j < mc ? src[k * sk] : 0.0f;
            }
          }
        bool local_bad = false;
#pragma omp for schedule(static, 1)
        for (int p = 0; p < parts; ++p)
          for (int64_t t = 0; t < ntiles; ++t)
            local_bad = leaf.tile_rows(w, xp.get() + offsets[t], static_cast<int>(widths[t] / leaf.lanes),
                                       std::min(widths[t], M - m0s[t]), bias,
                                       OutView{od + m0s[t] * om, om, on}, bounds[p], bounds[p + 1]) || local_bad;
        if (local_bad) {
#pragma omp atomic write
          bad = true;
        }
      }
    }
  }
  if (bad) throw py::value_error("indices: a column index is out of range [0, " + std::to_string(cols) + ")");
}
}  // namespace

void bind_sparse(py::module_& m) {
  m.def("sparse_matmul", &sparse_matmul, py::arg("indptr"), py::arg("indices"), py::arg("values"), py::arg("cols"),
        py::arg("x"), py::arg("x_feature_major"), py::arg("out"), py::arg("out_feature_major"),
        py::arg("bias") = py::none(), py::arg("scale") = py::none(), py::arg("nthreads") = 1,
        "out = x @ W^T (+ bias) for a CSR weight W (indptr int64; indices int16 = unsigned 16-bit or int32; values "
        "float32, uint16 bfloat16 bits, or int8 codes with a float32 scale per row: W[n, c] = scale[n] * code). x "
        "is float32 (M, cols), or (cols, M) when x_feature_major; out is float32 (M, rows), or (rows, M) when "
        "out_feature_major.");
}
}  // namespace fd
