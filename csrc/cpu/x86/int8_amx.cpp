// int8 GEMM on AMX tiles (tdpbusd: 16 x 64 u8 times 64 x 16 s8 into 16 x 16 int32 per instruction), used at the
// avx512 level where the CPU and OS offer AMX-INT8. Reads the same packed panels as the other kernels: 16 groups of
// 4 k of 16 columns are one B tile (rows 256 bytes apart), which is why k_groups() pads K to a multiple of 64.
// Callers pad A to whole 32-row tiles (zero rows) and its stride to a multiple of 64.
#include <sys/syscall.h>
#include <unistd.h>

#include <cpuid.h>
#include <cstdint>
#include <cstring>

#include "cpu/int8_isa.h"
#pragma GCC target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")
#include <immintrin.h>

namespace fd {
namespace amx {
namespace {
constexpr int64_t kTileRows = 32;  // 2 A tiles x 2 B tiles -> 4 C tiles (16 x 16 int32) per pass, 32 columns wide

struct alignas(64) TileConfig {
  uint8_t palette_id = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

TileConfig make_config() {
  TileConfig c;
  for (int t = 0; t < 8; ++t) {  // C: 0-3, A: 4-5, B: 6-7; all 16 rows of 64 bytes
    c.colsb[t] = 64;
    c.rows[t] = 16;
  }
  return c;
}

// Linux hands out AMX tile state only to processes that ask for it (arch_prctl ARCH_REQ_XCOMP_PERM, XTILEDATA).
bool request_amx() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !((d >> 24) & 1) || !((d >> 25) & 1)) return false;
  constexpr long kReqXcompPerm = 0x1023, kXtiledata = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXtiledata) == 0;
}
}  // namespace

bool available() {
  static const bool ok = request_amx();
  return ok;
}

static void gemm_panel(const uint8_t* a, int64_t lda, int64_t rows, const int8_t* panel, int64_t kgroups, int64_t row0,
                int64_t col0, int64_t ncols, const Int8Epilogue& e) {
  static const TileConfig config = make_config();
  static const auto store_tile = tier_leaves<Int8Leaves, Simd::Avx512>().store_tile;
  _tile_loadconfig(&config);
  alignas(64) int32_t tile[kTileRows * kPanel];
  const int64_t ktiles = kgroups / 16;
  for (int64_t r = 0; r < rows; r += kTileRows) {
    const uint8_t* a0 = a + r * lda;
    const uint8_t* a1 = a0 + 16 * lda;
    for (int64_t half = 0; half < 2; ++half) {
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      const int8_t* b = panel + 128 * half;
      for (int64_t kt = 0; kt < ktiles; ++kt) {
        _tile_loadd(4, a0 + 64 * kt, lda);
        _tile_loadd(5, a1 + 64 * kt, lda);
        _tile_loadd(6, b + kt * 16 * kGroupBytes, kGroupBytes);
        _tile_loadd(7, b + kt * 16 * kGroupBytes + 64, kGroupBytes);
        _tile_dpbusd(0, 4, 6);
        _tile_dpbusd(1, 4, 7);
        _tile_dpbusd(2, 5, 6);
        _tile_dpbusd(3, 5, 7);
      }
      int32_t* t = tile + 32 * half;
      _tile_stored(0, t, kPanel * 4);
      _tile_stored(1, t + 16, kPanel * 4);
      _tile_stored(2, t + 16 * kPanel, kPanel * 4);
      _tile_stored(3, t + 16 * kPanel + 16, kPanel * 4);
    }
    const int64_t mr = rows - r < kTileRows ? rows - r : kTileRows;
    store_tile(tile, mr, row0 + r, col0, ncols, e);
  }
  _tile_release();
}

const Int8Leaves& leaves() {
  static const Int8Leaves t{gemm_panel, tier_leaves<Int8Leaves, Simd::Avx512>().quantize_rows,
                            tier_leaves<Int8Leaves, Simd::Avx512>().store_tile};
  return t;
}
}  // namespace amx
}  // namespace fd
