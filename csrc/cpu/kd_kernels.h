// Row kernels of the fused knowledge-distillation loss, written once as plain loops with `omp simd` reductions that
// the compiler vectorizes; compiled once per SIMD tier (kd_scalar.cpp, x86/kd_avx2.cpp, x86/kd_avx512.cpp,
// arm/kd_neon.cpp; see core.h), like the pruning kernels. (At the neon tier the loops below, fexp included, become
// 4-lane NEON code: GCC 12 vectorizes 63 of them in kd_neon.cpp.)
//
// Per row, with x = student logits, u = teacher logits, tau = temperature, q = softmax(x / tau), p = softmax(u / tau):
//   pass 1  one read of both rows: online (chunked) max and sum of exp for q, p (and softmax(x) when tau != 1 and a
//           cross-entropy term is wanted), so every log-probability below is one fused multiply-add away;
//   pass 2  the divergence; for KL it also writes the gradient (q - p), so KL reads each row twice in total;
//   pass 3  reverse KL and JSD only: their gradients need the row's divergence, known only after pass 2.
// A row (two inputs plus the gradient) is far smaller than L2 for vocabularies up to ~128k, so the later passes
// read L2, not memory. Work happens on chunks of kChunk elements converted to fp32 in L1-resident buffers; no
// other temporary exists. exp and log are polynomial (Cephes) so the loops vectorize at every ISA level.
//
// Expects, before inclusion: "kd_isa.h", then the tier header (FD_TIER, FD_TIER_NS, FD_TIER_SIMD).

// The selects below (`p != 0 ? p * (lp - ls) : 0`, the clamps in fexp) compute both sides; with trapping math on,
// GCC refuses to if-convert them and the loops stay scalar. Nothing here reads the FP exception flags.
// NaN policy: a zero probability contributes 0 (0 log 0 = 0) but a NaN one (from a NaN or +inf logit, or a teacher
// row of -inf logits, which has no softmax) contributes NaN, hence `!= 0`, not `> 0`: the row's loss is NaN
// exactly when its gradient is.
#pragma GCC optimize("no-trapping-math")

namespace fd {
namespace FD_TIER_NS {

#define FD_INLINE inline __attribute__((always_inline))

constexpr int64_t kChunk = 512;
constexpr float kNegInf = -__builtin_inff();

FD_INLINE float as_float(uint32_t u) { return __builtin_bit_cast(float, u); }
FD_INLINE uint32_t as_bits(float f) { return __builtin_bit_cast(uint32_t, f); }

// exp(x) to about 1 ulp: Cody-Waite reduction x = n ln2 + r, degree-6 polynomial on r, 2^n built in the exponent
// bits. Returns 0 below -87 (where exp(x) is under FLT_MIN; -inf included) and NaN for NaN. Callers pass x <= ~0.
FD_INLINE float fexp(float x) {
  float xc = x < -87.0f ? -87.0f : x;
  xc = xc > 88.0f ? 88.0f : xc;
  float k = xc * 1.44269504088896341f + 12582912.0f;  // 1.5 * 2^23: rounds x / ln2 into the low mantissa bits
  const int32_t n = static_cast<int32_t>(as_bits(k)) - 0x4B400000;
  k -= 12582912.0f;
  float r = xc - k * 0.693359375f;
  r = r - k * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const float y = p * as_float(static_cast<uint32_t>(n + 127) << 23);
  return x < -87.0f ? 0.0f : y;
}

// log(x) to about 1 ulp for positive normal x (the JSD mixture weight, in [min(beta, 1 - beta), 1]).
FD_INLINE float flog(float x) {
  const uint32_t bits = as_bits(x);
  int32_t e = static_cast<int32_t>((bits >> 23) & 0xffu) - 126;
  float m = as_float((bits & 0x007fffffu) | 0x3f000000u);  // x = m * 2^e, m in [0.5, 1)
  const bool low = m < 0.707106781186547524f;
  e = low ? e - 1 : e;
  m = low ? m + m - 1.0f : m - 1.0f;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  const float fe = static_cast<float>(e);
  y = y * m * z + fe * -2.12194440e-4f - 0.5f * z;
  return m + y + fe * 0.693359375f;
}

FD_INLINE float half_to_float(uint16_t bits) {
  const uint32_t h = bits & 0x7fffu;
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t normal = (h << 13) + 0x38000000u;
  // Subnormals through an exact int -> float conversion (never an fp32 denormal, which DAZ would flush).
  const uint32_t sub = as_bits(static_cast<float>(static_cast<int32_t>(h)) * 0x1p-24f);
  const uint32_t infnan = (h << 13) | 0x7f800000u;
  return as_float(sign | (h < 0x400u ? sub : (h >= 0x7c00u ? infnan : normal)));
}

// Round to nearest even, branch-free (F. Giesen's float_to_half_fast3_rtne).
FD_INLINE uint16_t float_to_half(float f) {
  uint32_t u = as_bits(f);
  const uint32_t sign = u & 0x80000000u;
  u ^= sign;
  const uint32_t big = u > 0x7f800000u ? 0x7e00u : 0x7c00u;                          // NaN : overflow to inf
  const uint32_t denorm_magic = 126u << 23;  // 0.5: adding it rounds |f| < 2^-14 to the 2^-24 grid in the low bits
  const uint32_t sub = as_bits(as_float(u) + as_float(denorm_magic)) - denorm_magic;
  const uint32_t norm = (u + ((15u - 127u) << 23) + 0xfffu + ((u >> 13) & 1u)) >> 13;
  const uint32_t h = u >= (143u << 23) ? big : (u < (113u << 23) ? sub : norm);  // 113 << 23: half's min normal
  return static_cast<uint16_t>(h | (sign >> 16));
}

FD_INLINE float bf16_to_float(uint16_t b) { return as_float(static_cast<uint32_t>(b) << 16); }

FD_INLINE uint16_t float_to_bf16(float f) {
  const uint32_t u = as_bits(f);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : rounded);
}

FD_INLINE int64_t elem_size(DType d) { return d == DType::F32 ? 4 : 2; }

// Elements [off, off + n) of a row as fp32: a pointer into the row itself for fp32, else converted into buf.
static const float* load_chunk(const void* row, DType d, int64_t off, int64_t n, float* buf) {
  if (d == DType::F32) return static_cast<const float*>(row) + off;
  const uint16_t* p = static_cast<const uint16_t*>(row) + off;
  if (d == DType::BF16) {
    for (int64_t i = 0; i < n; ++i) buf[i] = bf16_to_float(p[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) buf[i] = half_to_float(p[i]);
  }
  return buf;
}

// Where a gradient chunk is computed: in place for fp32, else in buf (store_chunk then converts it).
FD_INLINE float* grad_chunk(void* row, DType d, int64_t off, float* buf) {
  return d == DType::F32 ? static_cast<float*>(row) + off : buf;
}

static void store_chunk(void* row, DType d, int64_t off, int64_t n, const float* buf) {
  if (d == DType::F32) return;
  uint16_t* p = static_cast<uint16_t*>(row) + off;
  if (d == DType::BF16) {
    for (int64_t i = 0; i < n; ++i) p[i] = float_to_bf16(buf[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) p[i] = float_to_half(buf[i]);
  }
}

template <typename Body>
FD_INLINE void for_chunks(int64_t V, Body body) {
  for (int64_t off = 0; off < V; off += kChunk) body(off, V - off < kChunk ? V - off : kChunk);
}

// How the student's softmax at temperature 1 (for the cross-entropy term) is had from its softmax q at tau:
// kSame: it is q (tau = 1, or no CE term); kSquare: tau = 2, so exp(x - m) = exp((x - m) / 2)^2 and
// softmax(x)_j = q_j^2 * z^2 / z1 (one exp per element fewer in both passes); kExp: its own exp.
enum T1Mode : int { kSame = 0, kExp = 1, kSquare = 2 };

// Adds sum exp((x - m) * inv_t) to *z and, unless t1 is kSame, sum exp(x - m) to *z1 (a chunk is summed in fp32: a
// double accumulator keeps the loop from vectorizing).
FD_INLINE void add_exp_sums(const float* x, int64_t n, float m, float inv_t, int t1, double* z, double* z1) {
  float a = 0, b = 0;
  if (t1 == kSquare) {
#pragma omp simd reduction(+ : a, b)
    for (int64_t i = 0; i < n; ++i) {
      const float e = fexp((x[i] - m) * inv_t);
      a += e;
      b += e * e;
    }
    *z += a;
    *z1 += b;
    return;
  }
#pragma omp simd reduction(+ : a)
  for (int64_t i = 0; i < n; ++i) a += fexp((x[i] - m) * inv_t);
  *z += a;
  if (t1 == kExp) {
#pragma omp simd reduction(+ : b)
    for (int64_t i = 0; i < n; ++i) b += fexp(x[i] - m);
    *z1 += b;
  }
}

// Running max m and sum z of exp((x - m) * inv_t) (and z1 of exp(x - m)) over the chunks seen so far; a chunk that
// raises the max rescales the sums once, so the row is read once.
struct Online {
  float m = kNegInf;
  double z = 0, z1 = 0;

  void add(const float* x, int64_t n, float inv_t, int t1) {
    float cm = kNegInf;
#pragma omp simd reduction(max : cm)
    for (int64_t i = 0; i < n; ++i) cm = x[i] > cm ? x[i] : cm;
    if (cm > m) {
      z *= fexp((m - cm) * inv_t);
      z1 *= fexp(m - cm);
      m = cm;
    }
    add_exp_sums(x, n, m, inv_t, t1, &z, &z1);
  }
};

// log-softmax of one row as an affine map of the raw value: log p_j = (x_j - m) * k - lz.
struct LogSoftmax {
  float m, k, lz;
  FD_INLINE float operator()(float x) const { return (x - m) * k - lz; }
};

// The student's softmax at temperature 1 at x, given its softmax q at tau (see T1Mode).
template <int M>
FD_INLINE float softmax_t1(float q, float x, const LogSoftmax& S1, float sq_scale) {
  if constexpr (M == kSame) return q;
  else if constexpr (M == kSquare) return q * q * sq_scale;
  else return fexp(S1(x));
}

struct RowCtx {
  const void* s;
  const void* t;
  void* g;
  DType ds, dt;
  int64_t V, y;        // y: target column, or -1
  LogSoftmax ls, lp, ls1;  // student at tau, teacher, student at tau = 1 (for the cross-entropy term)
  double lzs;          // log of the student's normaliser at tau, unrounded (ls.lz is its fp32 rounding)
  double dz;           // lzt - lzs, unrounded: log q_j - log p_j = (x_j - m_s) k_s - (u_j - m_t) k_t + dz
  float ckd, cce;      // gradient weights of the divergence (w.r.t. x / tau, already times tau) and of the CE
  float sq_scale;      // kSquare: softmax(x)_j = q_j^2 * sq_scale
  float beta;
};

// The CE part of the gradient and the chunk's store: subtracts cce at the target column, converts to the output.
FD_INLINE void finish_grad_chunk(const RowCtx& c, int64_t off, int64_t n, float* g) {
  if (c.y >= off && c.y < off + n) g[c.y - off] -= c.cce;
  store_chunk(c.g, c.ds, off, n, g);
}

// log p - log q of one element from the two fp32 log-probabilities, plus the fp32 rounding of their normalisers'
// difference (computed once per row in double): left in, that rounding (~1e-7, the same for every element) shifts
// the divergence by as much, 1e-5 of it at tau = 8, where the divergence, a sum of such differences, gets small.
struct LogRatioPQ {
  float corr;
  explicit LogRatioPQ(const RowCtx& c)
      : corr(static_cast<float>((static_cast<double>(c.lp.lz) - static_cast<double>(c.ls.lz)) - c.dz)) {}
  FD_INLINE float operator()(float ls, float lp) const { return (lp - ls) + corr; }
};

// KL(p || q) = sum p (log p - log q), without the gradient.
static double kl_loss(const RowCtx& c, float* bs, float* bt) {
  double total = 0;
  const LogSoftmax S = c.ls, P = c.lp;
  const LogRatioPQ R(c);
  for_chunks(c.V, [=, &c, &total](int64_t off, int64_t n) {
    const float* xs = load_chunk(c.s, c.ds, off, n, bs);
    const float* xt = load_chunk(c.t, c.dt, off, n, bt);
    float acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = 0; i < n; ++i) {
      const float ls = S(xs[i]), lp = P(xt[i]);
      const float p = fexp(lp);
      acc += p != 0.0f ? p * R(ls, lp) : 0.0f;
    }
    total += acc;
  });
  return total;
}

// KL(p || q) and, in the same pass, its gradient q - p plus the CE gradient.
template <int M>
static double kl_loss_grad(const RowCtx& c, float* bs, float* bt, float* bg) {
  double total = 0;
  const LogSoftmax S = c.ls, P = c.lp, S1 = c.ls1;
  const LogRatioPQ R(c);
  const float ckd = c.ckd, cce = c.cce, sq = c.sq_scale;
  for_chunks(c.V, [=, &c, &total](int64_t off, int64_t n) {
    const float* xs = load_chunk(c.s, c.ds, off, n, bs);
    const float* xt = load_chunk(c.t, c.dt, off, n, bt);
    float* g = grad_chunk(c.g, c.ds, off, bg);
    float acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = 0; i < n; ++i) {
      const float ls = S(xs[i]), lp = P(xt[i]);
      const float p = fexp(lp), q = fexp(ls);
      acc += p != 0.0f ? p * R(ls, lp) : 0.0f;
      g[i] = ckd * (q - p) + cce * softmax_t1<M>(q, xs[i], S1, sq);
    }
    total += acc;
    finish_grad_chunk(c, off, n, g);
  });
  return total;
}

// log q - log p + shift, accurately, in double, then rounded once: in fp32 the difference of two log-probabilities
// of magnitude ~100 (logits of scale 30) loses ~1e-5 to cancellation, which the reverse-KL and JSD gradients,
// q (log q - log p - D), would inherit. As x k_s - u k_t + (constant), unless the maxima are so large (a logit of
// 1e30) that the constant would swallow the O(1) parts (Big: (x - m_s) k_s - (u - m_t) k_t + (dz + shift), two
// more subtractions per element, so a row picks the form once).
FD_INLINE bool big_logits(const RowCtx& c) {
  return std::fabs(c.ls.m * c.ls.k) + std::fabs(c.lp.m * c.lp.k) > 0x1p26f;  // (double keeps 2^-27 absolute)
}

template <bool Big>
struct LogRatioQP {
  double ms, ks, mt, kt, shift;
  LogRatioQP(const RowCtx& c, double extra)
      : ms(c.ls.m), ks(c.ls.k), mt(c.lp.m), kt(c.lp.k),
        shift(Big ? c.dz + extra : c.dz + extra - ms * ks + mt * kt) {}
  FD_INLINE double exact(float xs, float xt) const {
    if constexpr (Big) return (static_cast<double>(xs) - ms) * ks - (static_cast<double>(xt) - mt) * kt + shift;
    else return static_cast<double>(xs) * ks - static_cast<double>(xt) * kt + shift;
  }
  FD_INLINE float operator()(float xs, float xt) const { return static_cast<float>(exact(xs, xt)); }
};

// KL(q || p) = sum q (log q - log p) / sum q. Dividing by sum q (1 up to rounding) cancels the rounding of q's
// normaliser, common to every q_j, which would otherwise shift KL by ~1e-6 of log q - log p: the gradient
// subtracts KL from terms of that size.
template <bool Big>
static double reverse_kl_loss(const RowCtx& c, float* bs, float* bt) {
  double total = 0, mass = 0;
  const LogSoftmax S = c.ls;
  const LogRatioQP<Big> R(c, 0.0);
  for_chunks(c.V, [=, &c, &total, &mass](int64_t off, int64_t n) {
    const float* xs = load_chunk(c.s, c.ds, off, n, bs);
    const float* xt = load_chunk(c.t, c.dt, off, n, bt);
    double acc = 0, m = 0;
#pragma omp simd reduction(+ : acc, m)
    for (int64_t i = 0; i < n; ++i) {
      const float q = fexp(S(xs[i]));
      acc += q != 0.0f ? static_cast<double>(q) * R.exact(xs[i], xt[i]) : 0.0;
      m += q;
    }
    total += acc;
    mass += m;
  });
  return total / mass;
}

// d KL(q || p) / d(x / tau) = q * (log q - log p - KL).
template <int M, bool Big>
static void reverse_kl_grad(const RowCtx& c, double kl, float* bs, float* bt, float* bg) {
  const LogSoftmax S = c.ls, S1 = c.ls1;
  const LogRatioQP<Big> R(c, -kl);
  const float ckd = c.ckd, cce = c.cce, sq = c.sq_scale;
  for_chunks(c.V, [=, &c](int64_t off, int64_t n) {
    const float* xs = load_chunk(c.s, c.ds, off, n, bs);
    const float* xt = load_chunk(c.t, c.dt, off, n, bt);
    float* g = grad_chunk(c.g, c.ds, off, bg);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const float q = fexp(S(xs[i]));
      g[i] = (q != 0.0f ? ckd * q * R(xs[i], xt[i]) : 0.0f) + cce * softmax_t1<M>(q, xs[i], S1, sq);
    }
    finish_grad_chunk(c, off, n, g);
  });
}

// The mixture m = beta p + (1 - beta) q of the generalised JSD in terms of r = log q - log p, without forming m:
// the larger of the two terms is factored out, so the log's argument lies in [min(beta, 1 - beta), 1] (no
// underflow, no log 0). Gives log p - log m, log q - log m and e = exp(-|r|), the smaller probability over the
// larger.
struct Mixture {
  float lp_m, lq_m, e;
};

FD_INLINE Mixture mixture(float r, float beta) {
  const bool teacher_big = r <= 0.0f;
  const float e = fexp(teacher_big ? r : -r);
  const float lw = flog(teacher_big ? beta + (1.0f - beta) * e : beta * e + (1.0f - beta));
  return {(teacher_big ? 0.0f : -r) - lw, (r > 0.0f ? 0.0f : r) - lw, e};  // (NaN r: both NaN)
}

// Generalised JSD: beta KL(p || m) + (1 - beta) KL(q || m). Returns the two KLs (teacher's, student's).
template <bool Big>
static void jsd_loss(const RowCtx& c, float* bs, float* bt, double* kl_p, double* kl_q) {
  const LogSoftmax S = c.ls, P = c.lp;
  const LogRatioQP<Big> R(c, 0.0);
  const float beta = c.beta;
  double tp = 0, tq = 0;
  for_chunks(c.V, [=, &c, &tp, &tq](int64_t off, int64_t n) {
    const float* xs = load_chunk(c.s, c.ds, off, n, bs);
    const float* xt = load_chunk(c.t, c.dt, off, n, bt);
    float ap = 0, aq = 0;
#pragma omp simd reduction(+ : ap, aq)
    for (int64_t i = 0; i < n; ++i) {
      const float ls = S(xs[i]), lp = P(xt[i]);
      const float r = R(xs[i], xt[i]);
      const Mixture m = mixture(r, beta);
      const float big = fexp(r <= 0.0f ? lp : ls), small = big * m.e;
      const float p = r <= 0.0f ? big : small, q = r <= 0.0f ? small : big;
      ap += p != 0.0f ? p * m.lp_m : 0.0f;
      aq += q != 0.0f ? q * m.lq_m : 0.0f;
    }
    tp += ap;
    tq += aq;
  });
  *kl_p = tp;
  *kl_q = tq;
}

// d JSD / d(x / tau) = (1 - beta) q (log q - log m - KL(q || m)); ckd already holds the (1 - beta).
template <int M, bool Big>
static void jsd_grad(const RowCtx& c, float kl_q, float* bs, float* bt, float* bg) {
  const LogSoftmax S = c.ls, S1 = c.ls1;
  const LogRatioQP<Big> R(c, 0.0);
  const float ckd = c.ckd, cce = c.cce, beta = c.beta, sq = c.sq_scale;
  for_chunks(c.V, [=, &c](int64_t off, int64_t n) {
    const float* xs = load_chunk(c.s, c.ds, off, n, bs);
    const float* xt = load_chunk(c.t, c.dt, off, n, bt);
    float* g = grad_chunk(c.g, c.ds, off, bg);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const Mixture m = mixture(R(xs[i], xt[i]), beta);
      const float q = fexp(S(xs[i]));
      g[i] = (q != 0.0f ? ckd * q * (m.lq_m - kl_q) : 0.0f) + cce * softmax_t1<M>(q, xs[i], S1, sq);
    }
    finish_grad_chunk(c, off, n, g);
  });
}

// Cross-entropy only (alpha = 0): the gradient softmax(x) - onehot.
static void ce_grad(const RowCtx& c, float* bs, float* bg) {
  const LogSoftmax S1 = c.ls1;
  const float cce = c.cce;
  for_chunks(c.V, [=, &c](int64_t off, int64_t n) {
    const float* xs = load_chunk(c.s, c.ds, off, n, bs);
    float* g = grad_chunk(c.g, c.ds, off, bg);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) g[i] = cce * fexp(S1(xs[i]));
    finish_grad_chunk(c, off, n, g);
  });
}

template <int M, bool Big>
static double divergence_and_grad(const KdProblem& P, const RowCtx& c, float* bs, float* bt, float* bg) {
  const bool grad = c.g != nullptr;
  switch (P.div) {
    case Divergence::KL:
      return grad ? kl_loss_grad<M>(c, bs, bt, bg) : kl_loss(c, bs, bt);
    case Divergence::ReverseKL: {
      const double kl = reverse_kl_loss<Big>(c, bs, bt);
      if (grad) reverse_kl_grad<M, Big>(c, kl, bs, bt, bg);
      return kl;
    }
    case Divergence::JSD: {
      double kl_p, kl_q;
      jsd_loss<Big>(c, bs, bt, &kl_p, &kl_q);
      if (grad) jsd_grad<M, Big>(c, static_cast<float>(kl_q), bs, bt, bg);
      return P.beta * kl_p + (1.0 - P.beta) * kl_q;
    }
    default:
      if (grad) ce_grad(c, bs, bg);
      return 0.0;
  }
}

template <int M>
static double divergence_and_grad(const KdProblem& P, const RowCtx& c, float* bs, float* bt, float* bg) {
  const bool big = P.div != Divergence::KL && P.div != Divergence::None && big_logits(c);
  return big ? divergence_and_grad<M, true>(P, c, bs, bt, bg) : divergence_and_grad<M, false>(P, c, bs, bt, bg);
}

// Sets *y to row r's target (-1 without targets); a row whose target is ignore_index gets loss 0 and a zero
// gradient, and true is returned.
template <typename Problem>
FD_INLINE bool ignored_row(const Problem& P, int64_t r, void* grow, int64_t* y) {
  *y = P.target ? P.target[r] : -1;
  if (!P.target || *y != P.ignore_index) return false;
  P.row_loss[r] = 0.0f;
  if (grow) std::memset(grow, 0, static_cast<size_t>(P.V * elem_size(P.ds)));
  return true;
}

// The T1Mode of a row: ce = it has a cross-entropy term, grad = it writes a gradient (tau = 2 squares q only there:
// the loss-only pass needs just z1, one exp per element either way).
FD_INLINE int t1_mode(bool ce, float temperature, bool grad) {
  if (!ce || temperature == 1.0f) return kSame;
  return temperature == 2.0f && grad ? kSquare : kExp;
}

// The fields of a row's context both losses share; the student's log-softmax at tau and at 1 from its row max m and
// its sums z of exp((x - m) * inv_t) and z1 of exp(x - m) (z1 unused for kSame).
template <typename Problem>
FD_INLINE RowCtx student_row_ctx(const Problem& P, const void* srow, void* grow, int64_t y, bool ce, int t1, float m,
                                 float inv_t, double z, double z1) {
  RowCtx c;
  c.s = srow;
  c.g = grow;
  c.ds = P.ds;
  c.V = P.V;
  c.y = ce ? y : -1;
  c.lzs = std::log(z);
  c.ls = {m, inv_t, static_cast<float>(c.lzs)};
  c.dz = -c.lzs;
  c.ls1 = t1 != kSame ? LogSoftmax{m, 1.0f, static_cast<float>(std::log(z1))} : c.ls;
  c.sq_scale = t1 == kSquare ? static_cast<float>(z * z / z1) : 0.0f;
  c.cce = ce ? P.scale * (1.0f - P.alpha) : 0.0f;
  return c;
}

// ---------------------------------------------------------------------------------------------------------------
// High temperatures (tau > kPreciseTemperature): the row in double, in a form without cancellation.
// As tau grows, p and q approach the same near-uniform distribution: log p_j and log q_j (each about -log V) differ
// by ~|u_j - x_j| / tau, and the divergence, a sum of such differences, shrinks like 1 / tau^2 (the loss,
// tau^2 D, tends to a finite limit). Summing fp32 log-probabilities leaves an error of ~1e-7 per term: the fp32 row
// is 1e-3 off at tau = 100 and useless at 1e4. Even in double, the rounding of the normalisers (~1e-16 of log V)
// shifts every log p_j - log q_j by a constant, and D by as much: 1e-4 off at tau = 1e6. So, per row:
//   r'_j = (u_j - m_t) / tau - (x_j - m_s) / tau - (log z_t - log z_s) = log p_j - log q_j up to a constant
//       error c (the normalisers' rounding); the maxima go first, so a logit of 1e30 does not swallow the rest;
//   sum_j q_j = 1 fixes it: c = log(sum_j p'_j e^{-r'_j} / P), P = sum_j p'_j, computed as log1p(B / P) with
//   B = sum_j p'_j expm1(-r'_j), a sum of terms each exact to its last digits (no 1 + tiny rounding);
//   KL = sum_j p_j (r'_j + c);  reverse KL = -sum_j q_j (r'_j + c);  JSD from rho_j = -(r'_j + c) with
//   log m_j - log p_j = log1p((1 - beta) expm1(rho_j)) and log m_j - log q_j = log1p(beta expm1(-rho_j)).
// Every sum is of first-order terms whose rounding is ~1e-16 of their own size, far below the second-order result.
// The gradients (first order) need no such care: q_j - p_j, q_j (log q_j - log p_j - KL(q || p)), ... in double.
// Scalar libm calls, about 5-10x the fp32 row's time: a cost paid only at temperatures where the fp32 row is wrong.
// A teacher given as log-probabilities (lp'_j = u_j, unnormalised) uses the same sums with p_j = p'_j.
// ---------------------------------------------------------------------------------------------------------------

constexpr float kPreciseTemperature = 10.0f;  // up to here the fp32 row is within ~1e-5 of the exact divergence

// Running max and sum of exp((x - m) * k) in double over a whole row (one read).
struct OnlineD {
  double m = -HUGE_VAL, z = 0.0;
  void add(double v, double k) {
    if (v > m) {
      z = m == -HUGE_VAL ? 0.0 : z * std::exp((m - v) * k);
      m = v;
    }
    // -inf adds nothing (a row of them keeps z = 0: log z = -inf, then NaN); NaN, and +inf (inf - inf), give NaN
    z += v == -HUGE_VAL ? 0.0 : std::exp((v - m) * k);
  }
};

// log(beta + (1 - beta) e^rho) for rho = log q - log p: log m - log p, with the larger term factored out (no
// overflow), through log1p/expm1 near rho = 0 (no cancellation).
FD_INLINE double log_mix(double rho, double beta) {
  return rho > 0.5 ? rho + std::log1p(beta * std::expm1(-rho)) : std::log1p((1.0 - beta) * std::expm1(rho));
}

static void kd_row_precise(const KdProblem& P, int64_t r, const void* srow, const void* trow, void* grow, int64_t y,
                           bool ce, float* bs, float* bt, float* bg) {
  const int64_t V = P.V;
  const double tau = P.temperature, k = 1.0 / tau, beta = P.beta;
  OnlineD os, ot, o1;
  for_chunks(V, [&](int64_t off, int64_t n) {
    const float* xs = load_chunk(srow, P.ds, off, n, bs);
    const float* xt = P.t_logp ? nullptr : load_chunk(trow, P.dt, off, n, bt);
    for (int64_t i = 0; i < n; ++i) {
      os.add(xs[i], k);
      if (ce) o1.add(xs[i], 1.0);
      if (xt) ot.add(xt[i], k);
    }
  });
  const double lzs = std::log(os.z), lz1 = std::log(o1.z);
  const double lzt = P.t_logp ? 0.0 : std::log(ot.z), mt = P.t_logp ? 0.0 : ot.m, kt = P.t_logp ? 1.0 : k;
  auto ls_of = [&](double x) { return (x - os.m) * k - lzs; };
  auto lp_of = [&](double u) { return (u - mt) * kt - lzt; };
  // r'_j = log p_j - log q_j up to a constant: the shifted, scaled logits' difference, then the normalisers'
  auto r_of = [&](double x, double u) { return (u - mt) * kt - (x - os.m) * k - (lzt - lzs); };

  double sum_p = 0, sum_pr = 0, B = 0;
  for_chunks(V, [&](int64_t off, int64_t n) {
    const float* xs = load_chunk(srow, P.ds, off, n, bs);
    const float* xt = load_chunk(trow, P.dt, off, n, bt);
    for (int64_t i = 0; i < n; ++i) {
      const double p = std::exp(lp_of(xt[i])), rr = r_of(xs[i], xt[i]);
      sum_p += p;
      sum_pr += p != 0.0 ? p * rr : 0.0;
      B += -rr > 0.5 ? std::exp(ls_of(xs[i])) - p : p * std::expm1(-rr);  // q'_j - p'_j
    }
  });
  // p_j = w p'_j; r_j = r'_j + c; q_j = exp(ls'_j - cs) (cs: the student normaliser's rounding)
  const double w = P.t_logp ? 1.0 : 1.0 / sum_p;
  const double c = P.t_logp ? std::log(sum_p + B) : std::log1p(B / sum_p);
  const double cs = std::log(sum_p + B);
  const double d_kl = w * sum_pr + c * (w * sum_p);
  double d = d_kl, kl_qm = 0.0;
  if (P.div != Divergence::KL) {
    double sum_qr = 0, kl_pm = 0;
    for_chunks(V, [&](int64_t off, int64_t n) {
      const float* xs = load_chunk(srow, P.ds, off, n, bs);
      const float* xt = load_chunk(trow, P.dt, off, n, bt);
      for (int64_t i = 0; i < n; ++i) {
        const double q = std::exp(ls_of(xs[i]) - cs), rho = -(r_of(xs[i], xt[i]) + c);
        if (P.div == Divergence::ReverseKL) {
          sum_qr += q != 0.0 ? q * rho : 0.0;
        } else {
          const double p = w * std::exp(lp_of(xt[i]));
          kl_pm -= p != 0.0 ? p * log_mix(rho, beta) : 0.0;
          kl_qm -= q != 0.0 ? q * log_mix(-rho, 1.0 - beta) : 0.0;
        }
      }
    });
    d = P.div == Divergence::ReverseKL ? sum_qr : beta * kl_pm + (1.0 - beta) * kl_qm;
  }
  const double wr = P.kd_weight ? P.kd_weight[r] : 1.0;  // the row's divergence weight
  double loss = static_cast<double>(P.alpha) * tau * tau * wr * d;
  if (ce) {
    float buf;
    loss += (1.0 - P.alpha) * (lz1 - (static_cast<double>(*load_chunk(srow, P.ds, y, 1, &buf)) - o1.m));
  }
  P.row_loss[r] = static_cast<float>(loss);
  if (!grow) return;
  const double jsd_factor = P.div == Divergence::JSD ? 1.0 - beta : 1.0;
  const double ckd = static_cast<double>(P.scale) * P.alpha * tau * jsd_factor * wr;
  const double cce = ce ? static_cast<double>(P.scale) * (1.0 - P.alpha) : 0.0;
  for_chunks(V, [&](int64_t off, int64_t n) {
    const float* xs = load_chunk(srow, P.ds, off, n, bs);
    const float* xt = load_chunk(trow, P.dt, off, n, bt);
    float* g = grad_chunk(grow, P.ds, off, bg);
    for (int64_t i = 0; i < n; ++i) {
      const double q = std::exp(ls_of(xs[i]) - cs);
      double dd;
      if (P.div == Divergence::KL) {
        dd = q - w * std::exp(lp_of(xt[i]));
      } else {
        const double rho = -(r_of(xs[i], xt[i]) + c);
        dd = q == 0.0 ? 0.0
             : P.div == Divergence::ReverseKL ? q * (rho - d)
                                              : q * (-log_mix(-rho, 1.0 - beta) - kl_qm);
      }
      const double g1 = ce ? std::exp((xs[i] - o1.m) - lz1) : 0.0;
      g[i] = static_cast<float>(ckd * dd + cce * g1);
    }
    if (y >= off && y < off + n && ce) g[y - off] -= static_cast<float>(cce);
    store_chunk(grow, P.ds, off, n, g);
  });
}

static void kd_row(const KdProblem& P, int64_t r, float* bs, float* bt, float* bg) {
  const int64_t V = P.V;
  const void* srow = static_cast<const char*>(P.s) + r * V * elem_size(P.ds);
  const void* trow = P.div == Divergence::None ? nullptr : static_cast<const char*>(P.t) + r * V * elem_size(P.dt);
  void* grow = P.grad ? static_cast<char*>(P.grad) + r * V * elem_size(P.ds) : nullptr;
  int64_t y;
  if (ignored_row(P, r, grow, &y)) return;
  if (P.temperature > kPreciseTemperature && P.div != Divergence::None)
    return kd_row_precise(P, r, srow, trow, grow, y, y >= 0 && P.alpha < 1.0f, bs, bt, bg);
  const bool ce = y >= 0 && P.alpha < 1.0f;
  const bool kd = P.div != Divergence::None;
  const int t1 = t1_mode(ce, P.temperature, grow != nullptr);
  const float inv_t = 1.0f / P.temperature;

  const bool t_online = kd && !P.t_logp && !P.t_norm;  // else the teacher's normaliser is given, or not needed
  Online os, ot;
  for_chunks(V, [&](int64_t off, int64_t n) {
    os.add(load_chunk(srow, P.ds, off, n, bs), n, inv_t, t1);
    if (t_online) ot.add(load_chunk(trow, P.dt, off, n, bt), n, inv_t, kSame);
  });
  RowCtx c = student_row_ctx(P, srow, grow, y, ce, t1, os.m, inv_t, os.z, os.z1);
  c.t = trow;
  c.dt = P.dt;
  const bool t_normalised = kd && !P.t_logp;  // the teacher is normalised at the student's temperature
  const double lzt = !t_normalised ? 0.0 : t_online ? std::log(ot.z) : P.t_norm[2 * r + 1];
  const float mt = !t_normalised ? 0.0f : t_online ? ot.m : static_cast<float>(P.t_norm[2 * r]);
  c.lp = t_normalised ? LogSoftmax{mt, inv_t, static_cast<float>(lzt)} : LogSoftmax{0.0f, 1.0f, 0.0f};
  const float jsd_factor = P.div == Divergence::JSD ? 1.0f - P.beta : 1.0f;
  const float w = P.kd_weight ? P.kd_weight[r] : 1.0f;
  c.ckd = P.scale * P.alpha * P.temperature * jsd_factor * w;
  c.beta = P.beta;
  c.dz = lzt - c.lzs;

  const double d = t1 == kSquare ? divergence_and_grad<kSquare>(P, c, bs, bt, bg)
                   : t1 == kExp  ? divergence_and_grad<kExp>(P, c, bs, bt, bg)
                                 : divergence_and_grad<kSame>(P, c, bs, bt, bg);
  double loss = static_cast<double>(P.alpha) * P.temperature * P.temperature * w * d;
  if (ce) {
    float buf;
    const float sy = *load_chunk(srow, P.ds, y, 1, &buf);
    loss += (1.0 - P.alpha) * (static_cast<double>(c.ls1.lz) - (static_cast<double>(sy) - c.ls1.m) * c.ls1.k);
  }
  P.row_loss[r] = static_cast<float>(loss);
}

void kd_rows(const KdProblem& P, int64_t r0, int64_t r1) {
  alignas(64) float bs[kChunk], bt[kChunk], bg[kChunk];
  for (int64_t r = r0; r < r1; ++r) kd_row(P, r, bs, bt, bg);
}

// info_entropy's pass over the teacher (the pass kd_row would make anyway, done first for every row so the
// weights can be normalised over the batch before any gradient is written): the online max m and sums
// z = sum e, za = sum e a with a = (u - m) / tau, e = exp(a); lz = log z and the entropy H = lz - za / z. A chunk
// that raises the max by d rescales both: z' = z e^-d, za' = (za - d z) e^-d. Log-probability teachers:
// H = -sum exp(u) u.
void teacher_entropy_rows(const KdProblem& P, int64_t r0, int64_t r1, double* t_norm, float* conf) {
  alignas(64) float bt[kChunk];
  const float inv_t = 1.0f / P.temperature;
  const double log_v = std::log(static_cast<double>(P.V));
  for (int64_t r = r0; r < r1; ++r) {
    if (P.target && P.target[r] == P.ignore_index) {
      conf[r] = 0.0f;
      continue;
    }
    const void* trow = static_cast<const char*>(P.t) + r * P.V * elem_size(P.dt);
    double h = 0.0;
    if (P.t_logp) {
      for_chunks(P.V, [&](int64_t off, int64_t n) {
        const float* x = load_chunk(trow, P.dt, off, n, bt);
        float acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int64_t i = 0; i < n; ++i) {
          const float p = fexp(x[i]);
          acc += p > 0.0f ? p * x[i] : 0.0f;
        }
        h -= acc;
      });
    } else {
      float m = kNegInf;
      double z = 0.0, za = 0.0;
      for_chunks(P.V, [&](int64_t off, int64_t n) {
        const float* x = load_chunk(trow, P.dt, off, n, bt);
        float cm = kNegInf;
#pragma omp simd reduction(max : cm)
        for (int64_t i = 0; i < n; ++i) cm = x[i] > cm ? x[i] : cm;
        if (cm > m) {
          const double d = (static_cast<double>(cm) - m) * inv_t;  // inf on the first chunk: z = za = 0 then
          const double f = m == kNegInf ? 0.0 : std::exp(-d);
          za = m == kNegInf ? 0.0 : (za - d * z) * f;
          z *= f;
          m = cm;
        }
        float a_sum = 0, e_sum = 0;
#pragma omp simd reduction(+ : a_sum, e_sum)
        for (int64_t i = 0; i < n; ++i) {
          const float a = (x[i] - m) * inv_t;
          const float e = fexp(a);
          e_sum += e;
          a_sum += e > 0.0f ? e * a : 0.0f;
        }
        z += e_sum;
        za += a_sum;
      });
      const double lz = std::log(z);
      t_norm[2 * r] = m;
      t_norm[2 * r + 1] = lz;
      h = lz - za / z;
    }
    const double u = P.V > 1 ? 1.0 - h / log_v : 1.0;
    conf[r] = static_cast<float>(u < 0.0 ? 0.0 : (u > 1.0 ? 1.0 : u));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Sparse teacher (fastdistill.sparse_kd_loss): per row K entries (i_k, p_k). Per row, with the student's row x:
//   the teacher's K entries, in double (K is small): p_k, log p_k, and the sorted indices of the entries with p > 0;
//   pass 1  max of x outside the entries (the whole row unless tail = bucket);
//   pass 2  sum of exp over the same elements, relative to that max: with the entries' own terms
//           this gives the normaliser, and for the bucket the student's tail mass q_b without cancellation or
//           underflow (q_b is summed, not taken as 1 - sum_k q_k);
//   pass 3  the gradient, the same expression at every element (q_j times a constant, minus the bucket's share
//           p_b q_j / q_b), then the entries' own values patched in per chunk, before the store.
// ---------------------------------------------------------------------------------------------------------------

struct SparseEntry {
  int64_t j;
  double lp, p;  // teacher log-probability and probability
};

struct GradFix {
  int64_t j;
  float v;  // the entry's gradient (set), or what it adds (importance sampling, where an index may repeat)
};

template <typename T, typename Less>
static void shell_sort(T* a, int64_t n, Less less) {
  for (int64_t gap = n / 2; gap > 0; gap = gap == 2 ? 1 : gap * 5 / 11) {
    for (int64_t i = gap; i < n; ++i) {
      const T v = a[i];
      int64_t k = i;
      for (; k >= gap && less(v, a[k - gap]); k -= gap) a[k] = a[k - gap];
      a[k] = v;
    }
  }
}

// body(off, n) over the chunks of [0, V) minus the sorted, distinct holes.
template <typename Body>
FD_INLINE void for_gap_chunks(const int64_t* holes, int64_t nh, int64_t V, Body body) {
  int64_t a = 0;
  for (int64_t h = 0; h <= nh; ++h) {
    const int64_t b = h < nh ? holes[h] : V;
    for (int64_t off = a; off < b; off += kChunk) body(off, b - off < kChunk ? b - off : kChunk);
    a = b + 1;
  }
}

struct SparseScratch {
  SparseEntry* e;
  int64_t* holes;
  GradFix* fix;
};

// The gradient row: g_j = cq q_j - cb exp(B(x_j)) + cce q1_j (cb: the bucket's p_b / q_b share; q_j / q_b is
// computed directly so it survives q_b underflowing in fp32), the entries patched in, then the CE's one-hot.
template <bool Tail, int M>
static void sparse_grad(const RowCtx& c, LogSoftmax B, float cq, float cb, const GradFix* fix, int64_t nfix,
                        bool add, float* bs, float* bg) {
  const LogSoftmax S = c.ls, S1 = c.ls1;
  const float cce = c.cce, sq = c.sq_scale;
  int64_t f = 0;
  for_chunks(c.V, [=, &c, &f](int64_t off, int64_t n) {
    const float* xs = load_chunk(c.s, c.ds, off, n, bs);
    float* g = grad_chunk(c.g, c.ds, off, bg);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const float q = fexp(S(xs[i]));
      float v = cq * q;
      if (Tail) {
        const float lb = B(xs[i]);
        v -= cb * fexp(lb < 0.0f ? lb : 0.0f);  // > 0 only at entries, which are overwritten below
      }
      g[i] = v + cce * softmax_t1<M>(q, xs[i], S1, sq);
    }
    for (; f < nfix && fix[f].j < off + n; ++f) {
      if (add) {
        g[fix[f].j - off] += fix[f].v;
      } else {
        g[fix[f].j - off] = fix[f].v;
      }
    }
    finish_grad_chunk(c, off, n, g);
  });
}

static void sparse_kd_row(const SparseKdProblem& P, int64_t r, const SparseScratch& w, float* bs, float* bg) {
  const int64_t V = P.V, K = P.K;
  const void* srow = static_cast<const char*>(P.s) + r * V * elem_size(P.ds);
  void* grow = P.grad ? static_cast<char*>(P.grad) + r * V * elem_size(P.ds) : nullptr;
  int64_t y;
  if (ignored_row(P, r, grow, &y)) return;
  const bool ce = y >= 0 && P.alpha < 1.0f;
  const int t1 = t1_mode(ce, P.temperature, grow != nullptr);
  const bool kd = P.alpha > 0.0f;
  const bool bucket = P.bucket && !P.sprobs;
  const float inv_t = 1.0f / P.temperature;
  auto x_at = [&](int64_t j) {
    float buf;
    return *load_chunk(srow, P.ds, j, 1, &buf);
  };

  // The teacher's entries.
  const int64_t* idx = P.idx + r * K;
  const float* val = P.val + r * K;
  double lse = 0.0;  // logits: log sum exp of the entries / T
  if (P.kind == SparseValues::Logits) {
    double m = -HUGE_VAL, z = 0.0;
    for (int64_t k = 0; k < K; ++k) m = std::max(m, static_cast<double>(val[k]) * inv_t);
    for (int64_t k = 0; k < K; ++k) z += m == -HUGE_VAL ? 0.0 : std::exp(static_cast<double>(val[k]) * inv_t - m);
    lse = m + std::log(z);
  }
  int64_t n = 0;  // entries with p > 0
  double mass = 0.0;
  for (int64_t k = 0; k < K; ++k) {
    const double v = val[k];
    double lp;
    if (P.kind == SparseValues::Logits) {
      lp = lse == -HUGE_VAL ? -HUGE_VAL : v * inv_t - lse;
    } else {
      lp = P.kind == SparseValues::LogProbs ? v : std::log(v);
    }
    const double p = std::exp(lp);
    if (!(p > 0.0)) continue;
    const double wk = P.sprobs ? 1.0 / (static_cast<double>(K) * P.sprobs[r * K + k]) : 1.0;
    w.e[n++] = {idx[k], lp, p * wk};  // p holds the importance weight p / (K r) when sampled
    mass += p * wk;
  }
  shell_sort(w.e, n, [](const SparseEntry& a, const SparseEntry& b) { return a.j < b.j; });
  int64_t nh = 0;
  if (bucket) {
    for (int64_t k = 0; k < n; ++k)
      if (nh == 0 || w.holes[nh - 1] != w.e[k].j) w.holes[nh++] = w.e[k].j;
  }

  // Passes 1 and 2: the student outside the holes (everything unless bucket).
  float mb = kNegInf;
  for_gap_chunks(w.holes, nh, V, [&](int64_t off, int64_t cn) {
    const float* xs = load_chunk(srow, P.ds, off, cn, bs);
    float cm = mb;
#pragma omp simd reduction(max : cm)
    for (int64_t i = 0; i < cn; ++i) cm = xs[i] > cm ? xs[i] : cm;
    mb = cm;
  });
  double zb = 0.0, zb1 = 0.0;
  // Above kPreciseTemperature the normaliser is summed in double: with tempered teacher logits, p and q both near
  // uniform, the divergence is a second-order sum that the fp32 rounding of log z (~1e-7) would swamp (T = 1e3:
  // 4e-3 off); log q at the entries is already formed in double.
  const bool precise = P.temperature > kPreciseTemperature;
  if (nh < V) {
    for_gap_chunks(w.holes, nh, V, [&](int64_t off, int64_t cn) {
      const float* xs = load_chunk(srow, P.ds, off, cn, bs);
      if (!precise) return add_exp_sums(xs, cn, mb, inv_t, t1, &zb, &zb1);
      for (int64_t i = 0; i < cn; ++i) {
        zb += std::exp((static_cast<double>(xs[i]) - mb) * inv_t);
        if (t1 != kSame) zb1 += std::exp(static_cast<double>(xs[i]) - mb);
      }
    });
  }
  float m = mb;
  for (int64_t h = 0; h < nh; ++h) m = std::max(m, x_at(w.holes[h]));
  double z = nh < V ? zb * std::exp((static_cast<double>(mb) - m) * inv_t) : 0.0;
  double z1 = nh < V ? zb1 * std::exp(static_cast<double>(mb) - m) : 0.0;
  for (int64_t h = 0; h < nh; ++h) {
    const double d = static_cast<double>(x_at(w.holes[h])) - m;
    z += std::exp(d * inv_t);
    z1 += std::exp(d);
  }
  const bool sep1 = t1 != kSame;
  const double lz = std::log(z), lz1 = sep1 ? std::log(z1) : lz;

  RowCtx c = student_row_ctx(P, srow, grow, y, ce, t1, m, inv_t, z, z1);
  c.t = nullptr;
  c.dt = P.ds;
  const double ckd = kd ? static_cast<double>(P.scale) * P.alpha * P.temperature : 0.0;
  auto lq_at = [&](int64_t j) { return (static_cast<double>(x_at(j)) - m) * inv_t - lz; };

  // The divergence, and the gradient's constants: g = cq q - cb q / q_b (outside the entries) + fixes.
  double d = 0.0, cq = 1.0, cb = 0.0, lzb = 0.0, lqb = 0.0;
  const bool add = P.sprobs != nullptr;
  if (add) {  // importance-sampled: D = sum w (log p - log q), dD = (sum w) q - scatter_add(w)
    for (int64_t k = 0; k < n; ++k) d += w.e[k].p * (w.e[k].lp - lq_at(w.e[k].j));
    cq = mass;
  } else if (!bucket) {  // renormalised over the entries
    const double lmass = std::log(mass);
    for (int64_t k = 0; k < n; ++k) {
      w.e[k].p /= mass;
      d += w.e[k].p * (w.e[k].lp - lmass - lq_at(w.e[k].j));
    }
    if (n == 0) cq = 0.0;  // no teacher mass: no distillation term
  } else {
    double pb = nh < V ? std::max(0.0, 1.0 - mass) : 0.0;  // no bin left: what 1 - mass holds is rounding
    for (int64_t k = 0; k < n; ++k) d += w.e[k].p * (w.e[k].lp - lq_at(w.e[k].j));
    if (pb > 0.0) {
      lzb = std::log(zb);
      lqb = lzb + (static_cast<double>(mb) - m) * inv_t - lz;
      d += pb * (std::log(pb) - lqb);
      cb = pb;
    }
  }
  double loss = kd ? static_cast<double>(P.alpha) * P.temperature * P.temperature * d : 0.0;
  if (ce) loss += (1.0 - P.alpha) * (lz1 - (static_cast<double>(x_at(y)) - m));
  P.row_loss[r] = static_cast<float>(loss);
  if (!grow) return;

  for (int64_t k = 0; k < n; ++k) {
    const int64_t j = w.e[k].j;
    double v;
    if (add) {
      v = -ckd * w.e[k].p;
    } else {
      const double q1 = std::exp(sep1 ? static_cast<double>(x_at(j)) - m - lz1 : lq_at(j));
      v = ckd * (std::exp(lq_at(j)) - w.e[k].p) + c.cce * q1;
    }
    w.fix[k] = {j, static_cast<float>(v)};
  }
  const LogSoftmax B{mb, inv_t, static_cast<float>(lzb)};
  // Outside the entries the bucket's share is q_j p_b / q_b: folded into q's factor (one exp fewer per element,
  // and no fp32 cancellation between the two terms) unless q_b is so small that p_b / q_b would overflow fp32.
  const bool fold = cb > 0.0 && lqb > -60.0;
  const float fq = static_cast<float>(ckd * (fold ? cq - cb * std::exp(-lqb) : cq));
  const float fb = static_cast<float>(ckd * cb);
  const int64_t nfix = kd ? n : 0;
  auto run = [&](auto tail, auto mode) {
    sparse_grad<decltype(tail)::value, decltype(mode)::value>(c, B, fq, fb, w.fix, nfix, add, bs, bg);
  };
  using Yes = std::true_type;
  using No = std::false_type;
  using Same = std::integral_constant<int, kSame>;
  using Exp = std::integral_constant<int, kExp>;
  using Square = std::integral_constant<int, kSquare>;
  const bool tail = cb > 0.0 && !fold;
  if (t1 == kSquare) tail ? run(Yes(), Square()) : run(No(), Square());
  else if (t1 == kExp) tail ? run(Yes(), Exp()) : run(No(), Exp());
  else tail ? run(Yes(), Same()) : run(No(), Same());
}

void sparse_kd_rows(const SparseKdProblem& P, int64_t r0, int64_t r1) {
  alignas(64) float bs[kChunk], bg[kChunk];
  const int64_t K = P.K;
  SparseEntry* e = new SparseEntry[K];
  int64_t* holes = new int64_t[K];
  GradFix* fix = new GradFix[K];
  const SparseScratch w{e, holes, fix};
  for (int64_t r = r0; r < r1; ++r) sparse_kd_row(P, r, w, bs, bg);
  delete[] e;
  delete[] holes;
  delete[] fix;
}

#undef FD_INLINE
}  // namespace FD_TIER_NS

template <>
const KdLeaves& tier_leaves<KdLeaves, FD_TIER_SIMD>() {
  static constexpr KdLeaves t{FD_TIER_NS::kd_rows, FD_TIER_NS::sparse_kd_rows, FD_TIER_NS::teacher_entropy_rows};
  return t;
}
}  // namespace fd
