// Linear quantization of a (rows, length) float32 array, one absmax scale (symmetric) or min/max scale and zero
// point (asymmetric) per row, codes packed 8/bits per byte; and dequantization. Many rows: one fused pass per row
// (reduce -> scale -> round -> clamp -> pack, the row still in cache for the second read), OpenMP over rows. Few
// long rows (per-tensor): rows split into byte-aligned pieces, a parallel reduce, then a parallel quantize.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/huge_pages.h"
#include "cpu/quant.h"
#include "cpu/quant_isa.h"

namespace fd {
namespace {

constexpr int64_t kPieceAlign = 64;     // piece starts stay byte-aligned for every code width
constexpr int64_t kMinPiece = 1 << 14;  // smaller pieces cost more in scheduling than they gain

// Rounding and arithmetic exactly as the reference's scale_zero_point (fp32, half-to-even).
void scale_zero_point(float a, float b, int bits, bool sym, float* scale, int32_t* zp) {
  if (sym) {
    const float s = a / static_cast<float>((1 << (bits - 1)) - 1);
    *scale = s == 0.0f ? 1.0f : s;
    *zp = 0;
    return;
  }
  const int32_t qmax = (1 << bits) - 1;
  const float lo = std::min(a, 0.0f), hi = std::max(b, 0.0f);
  float s = (hi - lo) / static_cast<float>(qmax);
  s = s == 0.0f ? 1.0f : s;
  *scale = s;
  *zp = static_cast<int32_t>(std::min(std::max(std::nearbyint(-lo / s), 0.0f), static_cast<float>(qmax)));
}

struct Pieces {
  int64_t per_row, len;  // pieces per row and elements per piece (the last piece of a row may be shorter)
};

Pieces split_rows(int64_t rows, int64_t length, int nthreads) {
  if (rows >= 8 * static_cast<int64_t>(nthreads) || length <= kMinPiece) return {1, std::max<int64_t>(length, 1)};
  const int64_t want = std::max<int64_t>(1, (4 * nthreads + rows - 1) / rows);
  int64_t len = std::max<int64_t>(kMinPiece, (length + want - 1) / want);
  len = (len + kPieceAlign - 1) / kPieceAlign * kPieceAlign;
  return {(length + len - 1) / len, len};
}

// Dynamic scheduling in ~16 grains per thread: on shared cores a statically assigned thread that gets preempted
// would hold up the whole op for a scheduler time slice.
int64_t dynamic_grain(int64_t tasks, int nthreads) { return std::max<int64_t>(1, tasks / (16 * nthreads)); }

// Waking a thread costs more than quantizing a few thousand elements, and on a busy machine it can cost a whole
// scheduler time slice: small inputs stay on the calling thread.
int threads_for(int64_t elements, int nthreads) {
  constexpr int64_t kPerThread = 1 << 16;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(clamp_threads(nthreads), elements / kPerThread)));
}

int64_t count_nonfinite(const float* x, int64_t n) {
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) bad += !std::isfinite(x[i]);
  return bad;
}

}  // namespace

void check_quant_bits(int bits) {
  if (bits != 8 && bits != 4 && bits != 2)
    throw std::invalid_argument("bits: the native kernels handle 8, 4 or 2 bits, got " + std::to_string(bits));
}

void quantize_rows(const float* src, int64_t rows, int64_t length, int bits, bool sym, uint8_t* out, float* sc,
                   int32_t* z, int nthreads) {
  check_quant_bits(bits);
  const int64_t rb = quant_row_bytes(length, bits);
  advise_huge_pages(out, rows * rb);
  nthreads = threads_for(rows * length, nthreads);
  const QuantLeaves& leaf = leaves<QuantLeaves>();
  int64_t bad = 0, overflow = 0;  // rows with NaN/inf; asymmetric rows whose max - min overflows
  {
    const Pieces p = split_rows(rows, length, nthreads);
    const int64_t grain = dynamic_grain(rows * p.per_row, nthreads);
    if (p.per_row == 1) {
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, grain) reduction(+ : bad, overflow)
      for (int64_t r = 0; r < rows; ++r) {
        const float* row = src + r * length;
        float a = 0.0f, b = 0.0f;
        if (leaf.reduce(row, length, sym, &a, &b)) {
          ++bad;
          continue;
        }
        scale_zero_point(a, b, bits, sym, &sc[r], &z[r]);
        if (std::isinf(sc[r])) {
          ++overflow;
          continue;
        }
        leaf.quantize(row, length, sc[r], z[r], bits, sym, out + r * rb);
      }
    } else {
      const int64_t tasks = rows * p.per_row;
      std::vector<float> pa(tasks), pb(tasks);
      std::vector<uint8_t> pbad(tasks);
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, grain)
      for (int64_t t = 0; t < tasks; ++t) {
        const int64_t r = t / p.per_row, begin = t % p.per_row * p.len;
        pbad[t] = leaf.reduce(src + r * length + begin, std::min(p.len, length - begin), sym, &pa[t], &pb[t]) != 0;
      }
      for (int64_t r = 0; r < rows; ++r) {
        float a = pa[r * p.per_row], b = pb[r * p.per_row];
        for (int64_t t = r * p.per_row; t < (r + 1) * p.per_row; ++t) {
          bad += pbad[t];
          a = sym ? std::max(a, pa[t]) : std::min(a, pa[t]);
          b = std::max(b, pb[t]);
        }
        scale_zero_point(a, b, bits, sym, &sc[r], &z[r]);
        overflow += std::isinf(sc[r]);
      }
      if (!bad && !overflow) {
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, grain)
        for (int64_t t = 0; t < tasks; ++t) {
          const int64_t r = t / p.per_row, begin = t % p.per_row * p.len;
          leaf.quantize(src + r * length + begin, std::min(p.len, length - begin), sc[r], z[r], bits, sym,
                        out + r * rb + begin * bits / 8);
        }
      }
    }
    if (bad) bad = count_nonfinite(src, rows * length);
  }
  if (bad)
    throw std::invalid_argument("x contains " + std::to_string(bad) +
                          " NaN or infinite value(s); quantization needs finite values");
  if (overflow) throw std::invalid_argument("x: the asymmetric range max - min overflows float32; rescale x first");
}

void dequantize_rows(const uint8_t* in, const float* sc, const int32_t* z, int64_t rows, int64_t length, int bits,
                     bool sym, float* dst, int nthreads) {
  check_quant_bits(bits);
  const int64_t rb = quant_row_bytes(length, bits);
  advise_huge_pages(dst, rows * length * static_cast<int64_t>(sizeof(float)));
  nthreads = threads_for(rows * length, nthreads);
  const QuantLeaves& leaf = leaves<QuantLeaves>();
  const Pieces p = split_rows(rows, length, nthreads);
  const int64_t tasks = rows * p.per_row, grain = dynamic_grain(tasks, nthreads);
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, grain)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t r = t / p.per_row, begin = t % p.per_row * p.len;
    leaf.dequantize(in + r * rb + begin * bits / 8, std::min(p.len, length - begin), sc[r], z[r], bits, sym,
                    dst + r * length + begin);
  }
}
}  // namespace fd
