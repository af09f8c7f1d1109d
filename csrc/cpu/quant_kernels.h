// Leaf kernels of linear quantization, written once as plain loops that the compiler vectorizes. Compiled once per
// SIMD tier (quant_scalar.cpp, x86/quant_avx2.cpp, x86/quant_avx512.cpp, arm/quant_neon.cpp; see core.h), so one
// binary carries every tier and picks one at run time.
//
// Codes must equal the pure-torch reference bit for bit, so the arithmetic is the reference's: the true fp32
// quotient x / scale (no reciprocal), clamped to the integer code range, then rounded half-to-even. Clamping before
// rounding gives the same integer as the reference's round-then-clamp (the bounds are integers, rounding is
// monotone), and bounds the value to |v| <= 255 where adding and subtracting 1.5 * 2^23 rounds half-to-even exactly
// in the default rounding mode, which every ISA level vectorizes (unlike nearbyintf on baseline x86-64).
// (A reciprocal multiply with an exact fix-up of near-tie tiles was measured: 20% slower. The fused loop is bound by
// memory and the narrowing stores, not by the divide.)
//
// Expects, before inclusion: "quant_isa.h", then the tier header (FD_TIER, FD_TIER_NS, FD_TIER_SIMD).

namespace fd {
namespace FD_TIER_NS {

constexpr int64_t kBlock = 256;          // elements per block of unpacked fields
constexpr float kRound = 12582912.0f;    // 1.5 * 2^23
constexpr int64_t kPrefetchRow = 1 << 14;  // rows up to 64 KiB prefetch their successor

static inline uint32_t float_bits(float f) { return __builtin_bit_cast(uint32_t, f); }

// Signed-integer key with the order of the floats (-NaN < -inf < ... < -0 < +0 < ... < +inf < +NaN).
static inline int32_t order_key(float f) {
  const int32_t b = static_cast<int32_t>(float_bits(f));
  return b ^ ((b >> 31) & 0x7fffffff);
}
static inline float from_order_key(int32_t k) {
  return __builtin_bit_cast(float, static_cast<uint32_t>(k ^ ((k >> 31) & 0x7fffffff)));
}

// Integer max/min over bit patterns vectorize at every level without relaxing IEEE semantics; a NaN or inf shows
// up as a key beyond the finite range, so finiteness is checked from the reduction itself.
int64_t reduce(const float* x, int64_t n, bool sym, float* a, float* b) {
  if (sym) {
    uint32_t m = 0;
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t k = float_bits(x[i]) & 0x7fffffffu;
      m = k > m ? k : m;
    }
    *a = __builtin_bit_cast(float, m);
    return m >= 0x7f800000u;
  }
  int32_t lo = 0x7fffffff, hi = static_cast<int32_t>(0x80000000u);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t k = order_key(x[i]);
    lo = k < lo ? k : lo;
    hi = k > hi ? k : hi;
  }
  if (n == 0) {
    *a = *b = 0.0f;
    return 0;
  }
  *a = from_order_key(lo);
  *b = from_order_key(hi);
  return hi >= order_key(__builtin_inff()) || lo <= order_key(-__builtin_inff());
}

// Unsigned fields (code + offset) of n <= kBlock elements: clamp(x / scale, lo, hi) rounded, plus `off`.
static inline void fields(const float* x, int64_t n, float scale, float lo, float hi, int32_t off, uint8_t* f) {
  for (int64_t i = 0; i < n; ++i) {
    float v = x[i] / scale;
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    v = (v + kRound) - kRound;
    f[i] = static_cast<uint8_t>(static_cast<int32_t>(v) + off);
  }
}

template <int Bits>
static inline void pack(const uint8_t* f, int64_t n, uint8_t* out) {
  constexpr int per = 8 / Bits;
  const int64_t full = n / per;
  for (int64_t j = 0; j < full; ++j) {
    uint32_t byte = 0;
    for (int k = 0; k < per; ++k) byte |= static_cast<uint32_t>(f[j * per + k]) << (k * Bits);
    out[j] = static_cast<uint8_t>(byte);
  }
  if (n % per) {  // a row's last, partial byte: zero fields pad it
    uint32_t byte = 0;
    for (int64_t k = 0; k < n % per; ++k) byte |= static_cast<uint32_t>(f[full * per + k]) << (k * Bits);
    out[full] = static_cast<uint8_t>(byte);
  }
}

template <int Bits>
static void quantize_t(const float* x, int64_t n, float scale, int32_t zp, bool sym, uint8_t* out) {
  const int32_t qmax = sym ? (1 << (Bits - 1)) - 1 : (1 << Bits) - 1;
  const float lo = sym ? static_cast<float>(-qmax) : static_cast<float>(-zp);
  const float hi = sym ? static_cast<float>(qmax) : static_cast<float>(qmax - zp);
  const int32_t off = sym ? (Bits == 8 ? 0 : 1 << (Bits - 1)) : zp;
  alignas(64) uint8_t f[kBlock];
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t m = n - b < kBlock ? n - b : kBlock;
    // The caller's next row starts at x + n: fetch it while this one computes from cache, so the fused reduce of
    // that row finds it there instead of stalling on memory. Only for short rows (long ones stream through the
    // hardware prefetcher, and a row ahead would be evicted before use). Prefetches never fault.
    if (n <= kPrefetchRow)
      for (int64_t k = 0; k < m; k += 64 / static_cast<int64_t>(sizeof(float))) __builtin_prefetch(x + n + b + k);
    if constexpr (Bits == 8) {
      fields(x + b, m, scale, lo, hi, off, out + b);  // int8 codes are their own two's-complement bytes
    } else {
      fields(x + b, m, scale, lo, hi, off, f);
      pack<Bits>(f, m, out + b * Bits / 8);
    }
  }
}

template <int Bits>
static void dequantize_t(const uint8_t* in, int64_t n, float scale, int32_t zp, bool sym, float* out) {
  if constexpr (Bits == 8) {
    if (sym) {
      const auto* c = reinterpret_cast<const int8_t*>(in);
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(c[i]) * scale;
    } else {
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(static_cast<int32_t>(in[i]) - zp) * scale;
    }
  } else {
    constexpr int per = 8 / Bits;
    constexpr uint32_t mask = (1u << Bits) - 1;
    const int32_t sub = sym ? 1 << (Bits - 1) : zp;
    alignas(64) uint8_t f[kBlock];
    for (int64_t b = 0; b < n; b += kBlock) {
      const int64_t m = n - b < kBlock ? n - b : kBlock;
      const uint8_t* src = in + b / per;
      for (int64_t j = 0; j < (m + per - 1) / per; ++j)
        for (int k = 0; k < per; ++k) f[j * per + k] = static_cast<uint8_t>((src[j] >> (k * Bits)) & mask);
      for (int64_t i = 0; i < m; ++i) out[b + i] = static_cast<float>(static_cast<int32_t>(f[i]) - sub) * scale;
    }
  }
}

void quantize(const float* x, int64_t n, float scale, int32_t zp, int bits, bool sym, uint8_t* out) {
  switch (bits) {
    case 8: quantize_t<8>(x, n, scale, zp, sym, out); break;
    case 4: quantize_t<4>(x, n, scale, zp, sym, out); break;
    default: quantize_t<2>(x, n, scale, zp, sym, out); break;
  }
}

void dequantize(const uint8_t* in, int64_t n, float scale, int32_t zp, int bits, bool sym, float* out) {
  switch (bits) {
    case 8: dequantize_t<8>(in, n, scale, zp, sym, out); break;
    case 4: dequantize_t<4>(in, n, scale, zp, sym, out); break;
    default: dequantize_t<2>(in, n, scale, zp, sym, out); break;
  }
}

}  // namespace FD_TIER_NS

template <>
const QuantLeaves& tier_leaves<QuantLeaves, FD_TIER_SIMD>() {
  static constexpr QuantLeaves t{FD_TIER_NS::reduce, FD_TIER_NS::quantize, FD_TIER_NS::dequantize};
  return t;
}
}  // namespace fd
