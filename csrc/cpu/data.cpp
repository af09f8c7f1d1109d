// Drivers of the data-compression kernels (see data.h): argument checks on sizes and values, packing, OpenMP over
// row tiles (or feature x row pieces), and the choice of the per-ISA leaves. Plain C++: no Python headers.
#include "cpu/data.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/data_isa.h"
#include "cpu/huge_pages.h"

namespace fd {
namespace data {
namespace {

// Waking a thread costs more than a few hundred thousand simple operations on a busy machine (a thread that has to
// wait for a core can cost a whole scheduler time slice, 4 ms at 250 Hz): small inputs stay on the calling thread.
// `work` counts roughly nanoseconds of single-thread work.
int threads_for(int64_t work, int nthreads) {
  constexpr int64_t kPerThread = 1 << 18;
  const int64_t want = std::min<int64_t>(nthreads < 1 ? 1 : nthreads, work / kPerThread);
  return static_cast<int>(std::max<int64_t>(1, want));
}

// Dynamic scheduling in ~16 grains per thread, so a thread preempted on a shared core does not hold up the rest.
int64_t grain(int64_t tasks, int nthreads) { return std::max<int64_t>(1, tasks / (16 * nthreads)); }

template <typename T>
struct Aligned {
  std::unique_ptr<T, decltype(&std::free)> p{nullptr, &std::free};
  explicit Aligned(int64_t n) {
    const size_t bytes = (static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(T) + 63) / 64 * 64;
    p.reset(static_cast<T*>(std::aligned_alloc(64, bytes)));
    if (!p) throw std::bad_alloc();
  }
  T* get() const { return p.get(); }
};

void require(bool ok, const std::string& msg) {
  if (!ok) throw std::invalid_argument(msg);
}

void check_scales(const float* scale, int64_t d, const char* name) {
  for (int64_t j = 0; j < d; ++j)
    require(std::isfinite(scale[j]) && scale[j] > 0.0f,
            std::string(name) + ": expected finite positive scales, column " + std::to_string(j) + " has " +
                std::to_string(scale[j]));
}

void check_offsets(const float* offset, int64_t d) {
  for (int64_t j = 0; j < d; ++j)
    require(std::isfinite(offset[j]), "offset: expected finite offsets, column " + std::to_string(j) + " has " +
                                          std::to_string(offset[j]));
}

std::string nonfinite_message(int64_t bad) {
  return "x: " + std::to_string(bad) + " value(s) are NaN or infinite; expected finite values";
}

// Parameters of a per-column op tiled to a period of `period` = d * max(1, 64 / d) elements, so rows of a few
// columns are processed as wide rows (the vector loop then runs on >= 64 elements instead of d).
struct Periodic {
  int64_t period, wide_rows, rest_rows;
};

Periodic periodic(int64_t n, int64_t d) {
  const int64_t rep = d < 64 ? 64 / d : 1;
  const int64_t period = d * rep;
  return {period, n / rep, n % rep};
}

template <typename T>
std::vector<T> tile_to(const T* v, int64_t d, int64_t period) {
  std::vector<T> out(static_cast<size_t>(period));
  for (int64_t i = 0; i < period; ++i) out[i] = v[i % d];
  return out;
}

}  // namespace

void kmeans_assign(const float* x, int64_t n, int64_t d, const float* c, int64_t k, int64_t* labels, float* dist2,
                   int nthreads) {
  require(k >= 1, "centroids: expected at least one centroid");
  require(n >= 0 && d >= 0, "x: expected non-negative sizes");
  if (n == 0) return;
  const DataLeaves& leaf = leaves<DataLeaves>();
  const int64_t nr = leaf.nr, kpad = (k + nr - 1) / nr * nr;
  Aligned<float> pack(kpad * std::max<int64_t>(d, 1)), cnorm(kpad);
  for (int64_t j = 0; j < kpad; ++j) {
    const int64_t p = j / nr, lane = j % nr;
    float s = 0.0f;
    for (int64_t q = 0; q < d; ++q) {
      const float v = j < k ? c[j * d + q] : 0.0f;
      pack.get()[(p * d + q) * nr + lane] = v;
      s += v * v;
    }
    require(std::isfinite(s), "centroids: centroid " + std::to_string(j) +
                                  " is not finite (or its squared norm overflows float32)");
    cnorm.get()[j] = j < k ? s : std::numeric_limits<float>::infinity();
  }
  const Packed packed{pack.get(), cnorm.get(), d, k, kpad};
  const int64_t tile_floats = leaf.mr * std::min(kpad, kCentroidBlock);
  const int64_t chunk = leaf.mr * 8;  // rows per task
  const int64_t tasks = (n + chunk - 1) / chunk;
  nthreads = threads_for(n * kpad * std::max<int64_t>(d, 1) / 32, nthreads);
  Aligned<float> tiles(tile_floats * nthreads);  // (scratch is allocated here: nothing may throw inside the region)
  int64_t bad = 0;
#pragma omp parallel num_threads(nthreads) reduction(+ : bad)
  {
    float* tile = tiles.get() + omp_get_thread_num() * tile_floats;
#pragma omp for schedule(dynamic, grain(tasks, nthreads))
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t r0 = t * chunk, rows = std::min(chunk, n - r0);
      bad += leaf.assign_rows(x + r0 * d, rows, packed, labels + r0, dist2 + r0, tile);
    }
  }
  require(bad == 0, "x: " + std::to_string(bad) +
                        " row(s) hold NaN or infinite values (or values whose squares overflow float32)");
}

void centroid_sums(const float* x, int64_t n, int64_t d, const int64_t* labels, int64_t k, double* sums,
                   int64_t* counts, int nthreads) {
  require(k >= 1, "k: expected at least one centroid, got " + std::to_string(k));
  std::fill(sums, sums + k * d, 0.0);
  std::fill(counts, counts + k, int64_t(0));
  if (n == 0) return;
  const DataLeaves& leaf = leaves<DataLeaves>();
  nthreads = threads_for(n * std::max<int64_t>(d, 1), nthreads);
  // Each thread adds its rows into private accumulators (cache-resident for the usual k x d); summed after.
  const int64_t cells = k * d + k;
  std::vector<double> priv(nthreads > 1 ? static_cast<size_t>(cells * nthreads) : 0);
  std::vector<int64_t> pcount(nthreads > 1 ? static_cast<size_t>(k * nthreads) : 0);
  int64_t bad = 0;
  if (nthreads == 1) {
    bad = leaf.accumulate_rows(x, n, d, labels, k, sums, counts);
  } else {
#pragma omp parallel num_threads(nthreads) reduction(+ : bad)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t r0 = n * t / nt, r1 = n * (t + 1) / nt;
      bad += leaf.accumulate_rows(x + r0 * d, r1 - r0, d, labels + r0, k, priv.data() + t * cells,
                                  pcount.data() + t * k);
    }
    for (int t = 0; t < nthreads; ++t) {
      const double* p = priv.data() + t * cells;
      for (int64_t c = 0; c < k * d; ++c) sums[c] += p[c];
      for (int64_t c = 0; c < k; ++c) counts[c] += pcount[t * k + c];
    }
  }
  require(bad == 0, "labels: " + std::to_string(bad) + " label(s) outside [0, " + std::to_string(k) + ")");
}

void column_stats(const float* x, int64_t n, int64_t d, double* out, int nthreads) {
  const float inf = std::numeric_limits<float>::infinity();
  const DataLeaves& leaf = leaves<DataLeaves>();
  nthreads = threads_for(n * std::max<int64_t>(d, 1), nthreads);
  // Each thread folds a contiguous range of rows (its steps start at the row before its range), then the ranges
  // are combined: min/max of the running values, sums of the float64 |x| sums.
  std::vector<float> st(static_cast<size_t>(5 * d * nthreads));
  std::vector<double> sabs(static_cast<size_t>(d * nthreads), 0.0);
  for (int t = 0; t < nthreads; ++t)
    for (int64_t j = 0; j < d; ++j) {
      float* s = st.data() + t * 5 * d;
      s[j] = inf, s[d + j] = -inf, s[2 * d + j] = 0.0f, s[3 * d + j] = inf, s[4 * d + j] = 0.0f;
    }
  int64_t bad = 0;
#pragma omp parallel num_threads(nthreads) reduction(+ : bad)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t r0 = n * t / nt, r1 = n * (t + 1) / nt;
    if (r1 > r0)
      bad += leaf.column_stats_rows(x + r0 * d, r1 - r0, d, r0 ? x + (r0 - 1) * d : nullptr, st.data() + t * 5 * d,
                                    sabs.data() + t * d);
  }
  require(bad == 0, nonfinite_message(bad));
  for (int64_t j = 0; j < d; ++j) {
    double mn = inf, mx = -inf, sa = 0.0, am = 0.0, nz = inf, stp = 0.0;
    for (int t = 0; t < nthreads; ++t) {
      const float* s = st.data() + t * 5 * d;
      mn = std::min<double>(mn, s[j]), mx = std::max<double>(mx, s[d + j]), am = std::max<double>(am, s[2 * d + j]);
      nz = std::min<double>(nz, s[3 * d + j]), stp = std::max<double>(stp, s[4 * d + j]), sa += sabs[t * d + j];
    }
    out[j] = mn, out[d + j] = mx, out[2 * d + j] = sa, out[3 * d + j] = am, out[4 * d + j] = nz, out[5 * d + j] = stp;
  }
}

void bin_codes(const float* x, int64_t n, int64_t d, const float* edges, int64_t m, uint8_t* codes, int nthreads) {
  require(m >= 0 && m <= 255, "edges: expected at most 255 edges per feature, got " + std::to_string(m));
  std::vector<float> e255(static_cast<size_t>(d * 255), std::numeric_limits<float>::infinity());
  for (int64_t j = 0; j < d; ++j) {
    for (int64_t b = 0; b < m; ++b) {
      const float v = edges[j * m + b];
      require(!std::isnan(v) && (b == 0 || edges[j * m + b - 1] <= v),
              "edges: feature " + std::to_string(j) + " has NaN or unsorted edges");
      e255[j * 255 + b] = v;
    }
  }
  if (n == 0 || d == 0) return;
  const DataLeaves& leaf = leaves<DataLeaves>();
  constexpr int64_t kRows = 256;  // a block of rows stays in L2 while every feature's codes are found
  const int64_t blocks = (n + kRows - 1) / kRows;
  nthreads = threads_for(n * d * 8, nthreads);
  const int64_t groups = blocks >= 4 * nthreads ? 1 : std::min<int64_t>(d, 4 * nthreads);
  const int64_t per_group = (d + groups - 1) / groups, tasks = blocks * groups;
  int64_t bad = 0;
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, grain(tasks, nthreads)) reduction(+ : bad)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t b = t / groups, g = t % groups, r0 = b * kRows;
    const int64_t j0 = g * per_group, j1 = std::min(d, j0 + per_group);
    if (j0 < j1) bad += leaf.bin_rows(x + r0 * d, std::min(kRows, n - r0), d, j0, j1, e255.data(), codes, n, r0);
  }
  require(bad == 0, nonfinite_message(bad));
}

void joint_histograms(const uint8_t* codes, int64_t d, int64_t n, const int32_t* target, int64_t n_target,
                      int64_t n_bins, int64_t* out, int nthreads) {
  require(n_bins >= 1 && n_bins <= 256, "n_bins: expected 1..256, got " + std::to_string(n_bins));
  require(n_target >= 1, "n_target: expected at least 1, got " + std::to_string(n_target));
  const int64_t cells = n_target * n_bins;
  std::fill(out, out + d * cells, int64_t(0));
  if (n == 0 || d == 0) return;
  nthreads = threads_for(n * d, nthreads);
  // Few features: split the rows too, each piece counting into its own histogram (summed after).
  const int64_t pieces = d >= 2 * nthreads ? 1 : (2 * nthreads + d - 1) / d;
  const int64_t per_piece = (n + pieces - 1) / pieces, tasks = d * pieces;
  std::vector<int64_t> partial(pieces > 1 ? static_cast<size_t>(tasks * cells) : 0);
  std::vector<uint32_t> counters(static_cast<size_t>(cells * nthreads));
  int64_t bad = 0;
#pragma omp parallel num_threads(nthreads) reduction(+ : bad)
  {
    uint32_t* h = counters.data() + omp_get_thread_num() * cells;
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t j = t / pieces, i0 = t % pieces * per_piece, i1 = std::min(n, i0 + per_piece);
      const uint8_t* cj = codes + j * n;
      int64_t* dst = pieces > 1 ? partial.data() + t * cells : out + j * cells;
      // uint32 counters, flushed before they could wrap.
      for (int64_t s = i0; s < i1; s += int64_t(1) << 31) {
        const int64_t e = std::min(i1, s + (int64_t(1) << 31));
        int64_t wrong = 0;
        for (int64_t i = s; i < e; ++i) {
          const int64_t tv = target[i], cv = cj[i];
          const bool ok = tv >= 0 && tv < n_target && cv < n_bins;
          wrong += !ok;
          h[ok ? tv * n_bins + cv : 0] += ok;
        }
        bad += wrong;
        for (int64_t b = 0; b < cells; ++b) dst[b] += h[b], h[b] = 0;
      }
    }
  }
  require(bad == 0, std::to_string(bad) + " code(s) >= n_bins or target value(s) outside [0, n_target)");
  if (pieces > 1)
    for (int64_t t = 0; t < tasks; ++t)
      for (int64_t b = 0; b < cells; ++b) out[t / pieces * cells + b] += partial[t * cells + b];
}

void quantize_columns(const float* x, int64_t n, int64_t d, const float* scale, const float* offset, int32_t qmin,
                      int32_t qmax, uint8_t* codes, int nthreads) {
  require(qmin < qmax && qmin >= -128 && qmax <= (qmin < 0 ? 127 : 255),
          "qmin, qmax: expected a range within int8 or uint8, got [" + std::to_string(qmin) + ", " +
              std::to_string(qmax) + "]");
  check_scales(scale, d, "scale");
  check_offsets(offset, d);
  if (n == 0 || d == 0) return;
  advise_huge_pages(codes, n * d);  // a fresh output: fewer first-touch page faults
  const DataLeaves& leaf = leaves<DataLeaves>();
  const Periodic p = periodic(n, d);
  const std::vector<float> sc = tile_to(scale, d, p.period), off = tile_to(offset, d, p.period);
  const float lo = static_cast<float>(qmin), hi = static_cast<float>(qmax);
  const int64_t chunk = std::max<int64_t>(1, (int64_t(1) << 14) / p.period);
  const int64_t tasks = (p.wide_rows + chunk - 1) / chunk;
  nthreads = threads_for(n * d, nthreads);
  int64_t bad = 0;
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, grain(tasks, nthreads)) reduction(+ : bad)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t r0 = t * chunk, rows = std::min(chunk, p.wide_rows - r0);
    bad += leaf.quantize_rows(x + r0 * p.period, rows, p.period, sc.data(), off.data(), lo, hi,
                              codes + r0 * p.period);
  }
  const int64_t done = p.wide_rows * p.period;
  bad += leaf.quantize_rows(x + done, p.rest_rows, d, sc.data(), off.data(), lo, hi, codes + done);
  require(bad == 0, nonfinite_message(bad));
}

void dequantize_columns(const uint8_t* codes, bool is_signed, int64_t n, int64_t d, const float* scale,
                        const float* offset, float* out, int nthreads) {
  if (n == 0 || d == 0) return;
  advise_huge_pages(out, n * d * static_cast<int64_t>(sizeof(float)));
  const DataLeaves& leaf = leaves<DataLeaves>();
  const Periodic p = periodic(n, d);
  const std::vector<float> sc = tile_to(scale, d, p.period), off = tile_to(offset, d, p.period);
  const int64_t chunk = std::max<int64_t>(1, (int64_t(1) << 14) / p.period);
  const int64_t tasks = (p.wide_rows + chunk - 1) / chunk;
  nthreads = threads_for(n * d, nthreads);
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, grain(tasks, nthreads))
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t r0 = t * chunk, rows = std::min(chunk, p.wide_rows - r0);
    leaf.dequantize_rows(codes + r0 * p.period, is_signed, rows, p.period, sc.data(), off.data(),
                         out + r0 * p.period);
  }
  const int64_t done = p.wide_rows * p.period;
  leaf.dequantize_rows(codes + done, is_signed, p.rest_rows, d, sc.data(), off.data(), out + done);
}

namespace {
// Tasks of the delta codes: blocks of rows (independent: each starts at an anchor), and column pieces when there
// are too few blocks to keep the threads busy.
struct DeltaTasks {
  int64_t blocks, pieces, per_piece;
};

DeltaTasks delta_tasks(int64_t n, int64_t d, int64_t block, int nthreads) {
  const int64_t blocks = (n + block - 1) / block;
  int64_t pieces = 1;
  if (blocks < 4 * nthreads) pieces = std::max<int64_t>(1, std::min<int64_t>(d / 16, 4 * nthreads));
  return {blocks, pieces, (d + pieces - 1) / pieces};
}

void check_delta(int64_t d, const float* anchor_scale, const float* step_scale, int64_t block) {
  require(block >= 1, "block: expected at least 1, got " + std::to_string(block));
  check_scales(anchor_scale, d, "anchor_scale");
  check_scales(step_scale, d, "step_scale");
}
}  // namespace

void delta_encode(const float* x, int64_t n, int64_t d, const float* anchor_scale, const float* step_scale,
                  int64_t block, int32_t qmax, int8_t* codes, int nthreads) {
  check_delta(d, anchor_scale, step_scale, block);
  require(qmax >= 1 && qmax <= 127, "qmax: expected 1..127, got " + std::to_string(qmax));
  if (n == 0 || d == 0) return;
  advise_huge_pages(codes, n * d);
  const DataLeaves& leaf = leaves<DataLeaves>();
  nthreads = threads_for(n * d, nthreads);
  const DeltaTasks dt = delta_tasks(n, d, block, nthreads);
  const int64_t tasks = dt.blocks * dt.pieces;
  std::vector<float> scratch(static_cast<size_t>(dt.per_piece * nthreads));
  int64_t bad = 0;
#pragma omp parallel num_threads(nthreads) reduction(+ : bad)
  {
    float* running = scratch.data() + omp_get_thread_num() * dt.per_piece;
#pragma omp for schedule(dynamic, grain(tasks, nthreads))
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t r0 = t / dt.pieces * block, j0 = t % dt.pieces * dt.per_piece;
      const int64_t width = std::min(dt.per_piece, d - j0);
      if (width > 0)
        bad += leaf.delta_encode_block(x + r0 * d + j0, std::min(block, n - r0), width, d, anchor_scale + j0,
                                       step_scale + j0, static_cast<float>(qmax), codes + r0 * d + j0,
                                       running);
    }
  }
  require(bad == 0, nonfinite_message(bad));
}

void delta_decode(const int8_t* codes, int64_t n, int64_t d, const float* anchor_scale, const float* step_scale,
                  int64_t block, float* out, int nthreads) {
  check_delta(d, anchor_scale, step_scale, block);
  if (n == 0 || d == 0) return;
  advise_huge_pages(out, n * d * static_cast<int64_t>(sizeof(float)));
  const DataLeaves& leaf = leaves<DataLeaves>();
  nthreads = threads_for(n * d, nthreads);
  const DeltaTasks dt = delta_tasks(n, d, block, nthreads);
  const int64_t tasks = dt.blocks * dt.pieces;
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, grain(tasks, nthreads))
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t r0 = t / dt.pieces * block, j0 = t % dt.pieces * dt.per_piece;
    const int64_t width = std::min(dt.per_piece, d - j0);
    if (width > 0)
      leaf.delta_decode_block(codes + r0 * d + j0, std::min(block, n - r0), width, d, anchor_scale + j0,
                              step_scale + j0, out + r0 * d + j0);
  }
}

}  // namespace data
}  // namespace fd
