// Magnitude pruning by exact O(n) selection on the magnitude's bit pattern (two radix-histogram passes, then one
// pass that writes the mask and optionally zeroes in place), over one or many tensors, and N:M masks.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#include "cpu/prune.h"
#include "cpu/prune_isa.h"

namespace fd {
namespace {

constexpr int64_t kMinChunk = 1 << 15;   // below this a range is not worth a thread
constexpr int64_t kMaxChunk = 1LL << 30;  // keeps per-thread uint32 histogram counts far from overflow

using Source = PruneArray;

struct Chunk {
  int src;
  int64_t begin, end;
};

std::vector<Chunk> make_chunks(const std::vector<Source>& srcs, int nthreads) {
  std::vector<Chunk> chunks;
  for (int s = 0; s < static_cast<int>(srcs.size()); ++s) {
    const int64_t n = srcs[s].n;
    if (n == 0) continue;
    int64_t parts = std::min<int64_t>(nthreads, (n + kMinChunk - 1) / kMinChunk);
    parts = std::max<int64_t>(parts, (n + kMaxChunk - 1) / kMaxChunk);
    for (int64_t c = 0; c < parts; ++c) chunks.push_back({s, n * c / parts, n * (c + 1) / parts});
  }
  return chunks;
}

const void* chunk_ptr(const std::vector<Source>& srcs, const Chunk& c) {
  return srcs[c.src].data + c.begin * dtype_size(srcs[c.src].dtype);
}

// Per-thread histograms over all chunks, summed into 64-bit global counts.
template <typename Fill>
std::vector<int64_t> histogram(const std::vector<Chunk>& chunks, int bins, int nthreads, Fill fill) {
  std::vector<int64_t> total(bins, 0);
  const int64_t nchunks = static_cast<int64_t>(chunks.size());
#pragma omp parallel num_threads(nthreads)
  {
    std::vector<uint32_t> local(bins, 0);
    int64_t pending = 0;
    auto flush = [&] {
#pragma omp critical(fd_hist)
      for (int b = 0; b < bins; ++b) total[b] += local[b];
      std::fill(local.begin(), local.end(), 0u);
      pending = 0;
    };
#pragma omp for schedule(static)
    for (int64_t c = 0; c < nchunks; ++c) {
      const int64_t len = chunks[c].end - chunks[c].begin;
      if (pending + len > (1LL << 31)) flush();
      fill(chunks[c], local.data());
      pending += len;
    }
    flush();
  }
  return total;
}

// Index of the bin that holds the k-th smallest element (1-based k); *below = elements in earlier bins.
int find_bin(const std::vector<int64_t>& hist, int64_t k, int64_t* below) {
  int64_t cum = 0;
  for (int b = 0; b < static_cast<int>(hist.size()); ++b) {
    if (cum + hist[b] >= k) {
      *below = cum;
      return b;
    }
    cum += hist[b];
  }
  throw std::logic_error("fastdistill: histogram holds fewer than k elements");
}

int64_t count_nans(const std::vector<Source>& srcs, const std::vector<Chunk>& chunks, int nthreads,
                   const PruneLeaves& leaf) {
  int64_t nans = 0;
  const int64_t nchunks = static_cast<int64_t>(chunks.size());
#pragma omp parallel for num_threads(nthreads) reduction(+ : nans) schedule(static)
  for (int64_t c = 0; c < nchunks; ++c)
    nans += leaf.count_nan(chunk_ptr(srcs, chunks[c]), chunks[c].end - chunks[c].begin, srcs[chunks[c].src].dtype);
  return nans;
}

void raise_if_nan(int64_t nans) {
  if (nans) throw std::invalid_argument(nan_message(static_cast<uint64_t>(nans)));
}

// Exact k-th smallest magnitude key over all sources (1 <= k <= total). Raises ValueError on NaN.
Selection select_kth(const std::vector<Source>& srcs, const std::vector<Chunk>& chunks, int64_t k, int nthreads,
                     const PruneLeaves& leaf) {
  auto hi_hist = histogram(chunks, kHiBins, nthreads, [&](const Chunk& c, uint32_t* h) {
    leaf.hist_hi(chunk_ptr(srcs, c), c.end - c.begin, srcs[c.src].dtype, h);
  });
  // Bin 0x7f80 holds +inf and some NaNs, the bins above it only NaNs: count exactly only when needed.
  int64_t maybe_nan = 0;
  for (int b = 0x7f80; b < kHiBins; ++b) maybe_nan += hi_hist[b];
  if (maybe_nan) {
    raise_if_nan(count_nans(srcs, chunks, nthreads, leaf));
  }
  int64_t below_hi = 0;
  const uint32_t hi = static_cast<uint32_t>(find_bin(hi_hist, k, &below_hi));
  auto lo_hist = histogram(chunks, kLoBins, nthreads, [&](const Chunk& c, uint32_t* h) {
    leaf.hist_lo(chunk_ptr(srcs, c), c.end - c.begin, srcs[c.src].dtype, hi, h);
  });
  int64_t below_lo = 0;
  const uint32_t lo = static_cast<uint32_t>(find_bin(lo_hist, k - below_hi, &below_lo));
  return {(hi << 16) | lo, below_hi + below_lo, lo_hist[lo]};
}

// Sample-bracketed selection, for large inputs: the keys at kSample evenly spaced positions bracket the k-th key
// between two sample ranks (the expected rank +- 3 standard deviations of a sampled quantile, plus a margin); one
// SIMD read pass then counts the keys below the bracket and copies the keys inside it (about 2% of them), and the
// histogram selection runs on that small copy. This replaces two histogram passes over the data (the first of
// which is bound by scattered increments, not bandwidth) with one compare pass. Returns false - and the caller
// runs the plain histogram selection - when the bracket misses the k-th key, overflows its buffers (heavy ties),
// or meets a NaN; the result never depends on the sample, only the speed does.
constexpr int64_t kSample = 16384;
constexpr int64_t kSampleMin = 1 << 20;  // below this the histogram passes are cheap enough

bool select_by_sample(const std::vector<Source>& srcs, const std::vector<Chunk>& chunks, int64_t k, int64_t total,
                      int nthreads, const PruneLeaves& leaf, Selection* out) {
  const int64_t stride = total / kSample;
  std::vector<uint32_t> sample;
  sample.reserve(kSample + srcs.size());
  int64_t offset = 0;  // global index of the source's first element
  for (const auto& s : srcs) {
    const int64_t first = (offset + stride - 1) / stride * stride - offset;  // first sampled local index
    if (first < s.n) {
      const int64_t count = (s.n - 1 - first) / stride + 1;
      sample.resize(sample.size() + count);
      leaf.sample_keys(s.data + first * dtype_size(s.dtype), stride, count, s.dtype, sample.data() + sample.size() -
                       count);
    }
    offset += s.n;
  }
  const double m = static_cast<double>(sample.size());
  const double q = static_cast<double>(k) / static_cast<double>(total);
  const double spread = 3.0 * std::sqrt(m * q * (1.0 - q)) + 16.0;
  const int64_t r_lo = static_cast<int64_t>(std::floor(q * m - spread));
  const int64_t r_hi = static_cast<int64_t>(std::ceil(q * m + spread));
  auto sample_at = [&](int64_t r) {
    std::nth_element(sample.begin(), sample.begin() + r, sample.end());
    return sample[r];
  };
  const uint32_t lo = r_lo <= 0 ? 0u : sample_at(r_lo);
  const uint32_t hi = r_hi >= static_cast<int64_t>(sample.size()) - 1 ? 0x7fffffffu : sample_at(r_hi);
  if (hi > 0x7f800000u) return false;  // a NaN in the sample: the histogram path reports it
  const double window = static_cast<double>(std::min<int64_t>(r_hi, sample.size()) - std::max<int64_t>(r_lo, 0) +
                                            1) / m;
  const int64_t nchunks = static_cast<int64_t>(chunks.size());
  std::vector<std::vector<uint32_t>> bufs(nchunks);
  std::vector<int64_t> below(nchunks, 0), nans(nchunks, 0), got(nchunks, 0);
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t len = chunks[c].end - chunks[c].begin;
    const int64_t cap = static_cast<int64_t>(2.0 * window * static_cast<double>(len)) + 4096;
    bufs[c].resize(cap);
    got[c] = leaf.collect(chunk_ptr(srcs, chunks[c]), len, srcs[chunks[c].src].dtype, lo, hi, bufs[c].data(), cap,
                          &below[c], &nans[c]);
  }
  int64_t n_below = 0, n_in = 0;
  for (int64_t c = 0; c < nchunks; ++c) {
    if (got[c] < 0 || nans[c]) return false;
    n_below += below[c];
    n_in += got[c];
  }
  if (!(n_below < k && k <= n_below + n_in)) return false;
  std::vector<Source> cand;
  for (int64_t c = 0; c < nchunks; ++c)
    cand.push_back({reinterpret_cast<char*>(bufs[c].data()), got[c], DType::F32, nullptr});  // keys are fp32 bits
  const Selection inner = select_kth(cand, make_chunks(cand, nthreads), k - n_below, nthreads, leaf);
  *out = {inner.key, n_below + inner.less, inner.equal};
  return true;
}

// Exact k-th smallest magnitude key (1 <= k <= total), by sample bracketing where it pays, else by histograms.
Selection select(const std::vector<Source>& srcs, const std::vector<Chunk>& chunks, int64_t k, int64_t total,
                 int nthreads, const PruneLeaves& leaf) {
  Selection sel;
  if (total >= kSampleMin && select_by_sample(srcs, chunks, k, total, nthreads, leaf, &sel)) return sel;
  return select_kth(srcs, chunks, k, nthreads, leaf);
}

}  // namespace

Selection magnitude_prune(const std::vector<PruneArray>& srcs, int64_t k, bool write_masks, bool inplace,
                          int nthreads) {
  int64_t total = 0;
  for (const auto& s : srcs) total += s.n;
  if (k < 0 || k > total)
    throw std::invalid_argument("k: expected 0 <= k <= " + std::to_string(total) + " (number of elements), got " +
                                std::to_string(k));
  nthreads = clamp_threads(nthreads);
  const PruneLeaves& leaf = leaves<PruneLeaves>();
  Selection sel;
  const auto chunks = make_chunks(srcs, nthreads);
  if (k == 0 || k == total) {
    raise_if_nan(count_nans(srcs, chunks, nthreads, leaf));
    if (k == total && total > 0) sel = select(srcs, chunks, k, total, nthreads, leaf);  // threshold: largest key
  } else {
    sel = select(srcs, chunks, k, total, nthreads, leaf);
  }
  const MaskPlan plan = plan_mask(k, total, sel);
  const uint32_t lo = plan.lo;
  int64_t tie_prune = plan.tie_prune;
  if (inplace || write_masks) {
    const int64_t nchunks = static_cast<int64_t>(chunks.size());
    std::vector<int64_t> ties(nchunks, 0);
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t c = 0; c < nchunks; ++c) {
      const Chunk& ch = chunks[c];
      const Source& s = srcs[ch.src];
      ties[c] = leaf.write_mask(s.data + ch.begin * dtype_size(s.dtype), ch.end - ch.begin, s.dtype, lo,
                                s.mask ? s.mask + ch.begin : nullptr, inplace);
    }
    if (tie_prune > 0) {
      std::vector<int64_t> take(nchunks, 0);
      int64_t remaining = tie_prune;
      for (int64_t c = 0; c < nchunks && remaining > 0; ++c) {
        take[c] = std::min(ties[c], remaining);
        remaining -= take[c];
      }
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1)
      for (int64_t c = 0; c < nchunks; ++c)
        if (take[c] > 0) {
          const Chunk& ch = chunks[c];
          const Source& s = srcs[ch.src];
          leaf.prune_ties(s.data + ch.begin * dtype_size(s.dtype), ch.end - ch.begin, s.dtype, lo, take[c],
                          s.mask ? s.mask + ch.begin : nullptr, inplace);
        }
    }
  }
  return sel;
}

void nm_mask(const void* src, DType dt, int64_t size, int64_t n, int64_t m, uint8_t* out, int nthreads) {
  if (m < 1 || m > 64) throw std::invalid_argument("m: expected 1 <= m <= 64, got " + std::to_string(m));
  if (n < 0 || n > m) throw std::invalid_argument("n: expected 0 <= n <= m, got " + std::to_string(n));
  if (size % m) throw std::invalid_argument("x: size " + std::to_string(size) + " is not a multiple of m");
  const int64_t groups = size / m;
  const PruneLeaves& leaf = leaves<PruneLeaves>();
  nthreads = clamp_threads(nthreads);
  const int64_t per = std::max<int64_t>(1, kMinChunk / m);
  const int64_t nblocks = (groups + per - 1) / per;
  const int64_t esz = dtype_size(dt);
  const std::vector<Source> whole{{static_cast<char*>(const_cast<void*>(src)), size, dt, nullptr}};
  raise_if_nan(count_nans(whole, make_chunks(whole, nthreads), nthreads, leaf));
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t g0 = b * per, g1 = std::min(groups, g0 + per);
    leaf.nm_mask(static_cast<const char*>(src) + g0 * m * esz, g1 - g0, m, n, dt, out + g0 * m);
  }
}
}  // namespace fd
