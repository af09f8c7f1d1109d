// Python glue of the data-compression drivers (csrc/cpu/data.cpp): numpy dtype / shape / contiguity checks, then
// the plain C++ driver with the GIL released. Outputs are preallocated by fastdistill/backends/native/data.py.
#include <string>
#include <utility>

#include "bind/checks.h"
#include "cpu/data.h"

namespace fd {
namespace {

template <typename T>
T* ptr(const py::array& a) {
  return data_of<T>(a);
}

void check(const py::array& a, const char* name, int ndim) {
  require_c_contiguous(a, name);
  if (a.ndim() != ndim)
    throw py::value_error(std::string(name) + ": expected a " + std::to_string(ndim) + "-D array, got shape " +
                          shape_str(a));
}

template <typename T>
void check_typed(const py::array& a, const char* name, int ndim) {
  require_dtype<T>(a, name);
  check(a, name, ndim);
}

void check_out(const py::array& a, const char* name, int ndim) {
  check(a, name, ndim);
  require_writeable(a, name);
}

void check_shape(const py::array& a, const char* name, std::initializer_list<int64_t> shape) {
  require_shape(a, name, shape);
}

bool is_byte_array(const py::array& a) {
  return a.itemsize() == 1 && (a.dtype().kind() == 'i' || a.dtype().kind() == 'u');
}

void kmeans_assign(const py::array& x, const py::array& c, const py::array& labels, const py::array& dist2,
                   int nthreads) {
  check_typed<float>(x, "x", 2);
  check_typed<float>(c, "centroids", 2);
  const int64_t n = x.shape(0), d = x.shape(1), k = c.shape(0);
  if (c.shape(1) != d) throw py::value_error("centroids: expected " + std::to_string(d) + " columns like x");
  check_typed<int64_t>(labels, "labels", 1);
  check_typed<float>(dist2, "dist2", 1);
  check_out(labels, "labels", 1);
  check_out(dist2, "dist2", 1);
  check_shape(labels, "labels", {n});
  check_shape(dist2, "dist2", {n});
  py::gil_scoped_release nogil;
  data::kmeans_assign(ptr<float>(x), n, d, ptr<float>(c), k, ptr<int64_t>(labels), ptr<float>(dist2), nthreads);
}

void centroid_sums(const py::array& x, const py::array& labels, int64_t k, const py::array& sums,
                   const py::array& counts, int nthreads) {
  check_typed<float>(x, "x", 2);
  const int64_t n = x.shape(0), d = x.shape(1);
  check_typed<int64_t>(labels, "labels", 1);
  check_shape(labels, "labels", {n});
  check_typed<double>(sums, "sums", 2);
  check_out(sums, "sums", 2);
  check_shape(sums, "sums", {k, d});
  check_typed<int64_t>(counts, "counts", 1);
  check_out(counts, "counts", 1);
  check_shape(counts, "counts", {k});
  py::gil_scoped_release nogil;
  data::centroid_sums(ptr<float>(x), n, d, ptr<int64_t>(labels), k, ptr<double>(sums), ptr<int64_t>(counts),
                      nthreads);
}

void column_stats(const py::array& x, const py::array& out, int nthreads) {
  check_typed<float>(x, "x", 2);
  check_typed<double>(out, "out", 2);
  check_out(out, "out", 2);
  check_shape(out, "out", {6, x.shape(1)});
  py::gil_scoped_release nogil;
  data::column_stats(ptr<float>(x), x.shape(0), x.shape(1), ptr<double>(out), nthreads);
}

void bin_codes(const py::array& x, const py::array& edges, const py::array& codes, int nthreads) {
  check_typed<float>(x, "x", 2);
  check_typed<float>(edges, "edges", 2);
  const int64_t n = x.shape(0), d = x.shape(1);
  if (edges.shape(0) != d) throw py::value_error("edges: expected one row per feature (" + std::to_string(d) + ")");
  check_typed<uint8_t>(codes, "codes", 2);
  check_out(codes, "codes", 2);
  check_shape(codes, "codes", {d, n});
  py::gil_scoped_release nogil;
  data::bin_codes(ptr<float>(x), n, d, ptr<float>(edges), edges.shape(1), ptr<uint8_t>(codes), nthreads);
}

void joint_histograms(const py::array& codes, const py::array& target, int64_t n_target, int64_t n_bins,
                      const py::array& out, int nthreads) {
  check_typed<uint8_t>(codes, "codes", 2);
  check_typed<int32_t>(target, "target", 1);
  const int64_t d = codes.shape(0), n = codes.shape(1);
  check_shape(target, "target", {n});
  check_typed<int64_t>(out, "out", 3);
  check_out(out, "out", 3);
  check_shape(out, "out", {d, n_target, n_bins});
  py::gil_scoped_release nogil;
  data::joint_histograms(ptr<uint8_t>(codes), d, n, ptr<int32_t>(target), n_target, n_bins, ptr<int64_t>(out),
                         nthreads);
}

// Two float32 vectors of one value per column (scale and offset, or the delta codes' two scales).
void check_column_pair(const py::array& a, const char* name_a, const py::array& b, const char* name_b, int64_t d) {
  for (const auto& [arr, name] : {std::pair<const py::array&, const char*>{a, name_a}, {b, name_b}}) {
    check_typed<float>(arr, name, 1);
    check_shape(arr, name, {d});
  }
}

void quantize_columns(const py::array& x, const py::array& scale, const py::array& offset, int32_t qmin,
                      int32_t qmax, const py::array& codes, int nthreads) {
  check_typed<float>(x, "x", 2);
  const int64_t n = x.shape(0), d = x.shape(1);
  check_column_pair(scale, "scale", offset, "offset", d);
  if (!is_byte_array(codes)) throw py::type_error("codes: expected an int8 or uint8 array");
  check_out(codes, "codes", 2);
  check_shape(codes, "codes", {n, d});
  py::gil_scoped_release nogil;
  data::quantize_columns(ptr<float>(x), n, d, ptr<float>(scale), ptr<float>(offset), qmin, qmax,
                         ptr<uint8_t>(codes), nthreads);
}

void dequantize_columns(const py::array& codes, const py::array& scale, const py::array& offset,
                        const py::array& out, int nthreads) {
  if (!is_byte_array(codes)) throw py::type_error("codes: expected an int8 or uint8 array");
  check(codes, "codes", 2);
  const int64_t n = codes.shape(0), d = codes.shape(1);
  check_column_pair(scale, "scale", offset, "offset", d);
  check_typed<float>(out, "out", 2);
  check_out(out, "out", 2);
  check_shape(out, "out", {n, d});
  const bool is_signed = codes.dtype().kind() == 'i';
  py::gil_scoped_release nogil;
  data::dequantize_columns(ptr<uint8_t>(codes), is_signed, n, d, ptr<float>(scale), ptr<float>(offset),
                           ptr<float>(out), nthreads);
}

void delta_encode(const py::array& x, const py::array& anchor_scale, const py::array& step_scale, int64_t block,
                  int32_t qmax, const py::array& codes, int nthreads) {
  check_typed<float>(x, "x", 2);
  const int64_t n = x.shape(0), d = x.shape(1);
  check_column_pair(anchor_scale, "anchor_scale", step_scale, "step_scale", d);
  check_typed<int8_t>(codes, "codes", 2);
  check_out(codes, "codes", 2);
  check_shape(codes, "codes", {n, d});
  py::gil_scoped_release nogil;
  data::delta_encode(ptr<float>(x), n, d, ptr<float>(anchor_scale), ptr<float>(step_scale), block, qmax,
                     ptr<int8_t>(codes), nthreads);
}

void delta_decode(const py::array& codes, const py::array& anchor_scale, const py::array& step_scale, int64_t block,
                  const py::array& out, int nthreads) {
  check_typed<int8_t>(codes, "codes", 2);
  const int64_t n = codes.shape(0), d = codes.shape(1);
  check_column_pair(anchor_scale, "anchor_scale", step_scale, "step_scale", d);
  check_typed<float>(out, "out", 2);
  check_out(out, "out", 2);
  check_shape(out, "out", {n, d});
  py::gil_scoped_release nogil;
  data::delta_decode(ptr<int8_t>(codes), n, d, ptr<float>(anchor_scale), ptr<float>(step_scale), block,
                     ptr<float>(out), nthreads);
}

}  // namespace

void bind_data(py::module_& m) {
  using py::arg;
  m.def("kmeans_assign", &kmeans_assign, arg("x"), arg("centroids"), arg("labels"), arg("dist2"),
        arg("nthreads") = 1, "Nearest centroid (labels int64) and squared distance (float32) of each row of x.");
  m.def("centroid_sums", &centroid_sums, arg("x"), arg("labels"), arg("k"), arg("sums"), arg("counts"),
        arg("nthreads") = 1, "Per-centroid float64 sums (k, d) and member counts (k,) of the labelled rows of x.");
  m.def("column_stats", &column_stats, arg("x"), arg("out"), arg("nthreads") = 1,
        "out (6, d) float64: per-column min, max, sum|x|, max|x|, min nonzero |x|, max |step| down the rows.");
  m.def("bin_codes", &bin_codes, arg("x"), arg("edges"), arg("codes"), arg("nthreads") = 1,
        "codes (d, n) uint8 = searchsorted(edges[j], x[:, j], side='right') per feature.");
  m.def("joint_histograms", &joint_histograms, arg("codes"), arg("target"), arg("n_target"), arg("n_bins"),
        arg("out"), arg("nthreads") = 1, "out (d, n_target, n_bins) int64 joint counts of codes (d, n) and target.");
  m.def("quantize_columns", &quantize_columns, arg("x"), arg("scale"), arg("offset"), arg("qmin"), arg("qmax"),
        arg("codes"), arg("nthreads") = 1,
        "codes = clamp(round((x - offset) / scale), qmin, qmax) per column (int8 or uint8 codes).");
  m.def("dequantize_columns", &dequantize_columns, arg("codes"), arg("scale"), arg("offset"), arg("out"),
        arg("nthreads") = 1, "out = codes * scale + offset per column.");
  m.def("delta_encode", &delta_encode, arg("x"), arg("anchor_scale"), arg("step_scale"), arg("block"), arg("qmax"),
        arg("codes"), arg("nthreads") = 1, "Closed-loop delta codes along rows, re-anchored every `block` rows.");
  m.def("delta_decode", &delta_decode, arg("codes"), arg("anchor_scale"), arg("step_scale"), arg("block"),
        arg("out"), arg("nthreads") = 1, "Inverse of delta_encode.");
}

}  // namespace fd
