// The families without NEON kernels yet (int4, Wanda, data): on aarch64 both arm tiers run the scalar tier's leaves,
// which GCC vectorizes with the baseline Advanced SIMD anyway. (int4's W4A8 still multiplies on the int8 GEMM's
// neon / neon_dot kernels: it takes them from the int8 family.)
#include "cpu/data_isa.h"
#include "cpu/int4_isa.h"
#include "cpu/wanda_isa.h"

namespace fd {
#define FD_SCALAR_LEAVES_AT(Table, S) \
  template <>                         \
  const Table& tier_leaves<Table, S>() { return tier_leaves<Table, Simd::Scalar>(); }
FD_SCALAR_LEAVES_AT(DataLeaves, Simd::Neon)
FD_SCALAR_LEAVES_AT(DataLeaves, Simd::NeonDot)
FD_SCALAR_LEAVES_AT(Int4Leaves, Simd::Neon)
FD_SCALAR_LEAVES_AT(Int4Leaves, Simd::NeonDot)
FD_SCALAR_LEAVES_AT(WandaLeaves, Simd::Neon)
FD_SCALAR_LEAVES_AT(WandaLeaves, Simd::NeonDot)
#undef FD_SCALAR_LEAVES_AT
}  // namespace fd
