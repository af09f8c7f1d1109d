// The families without NEON kernels yet (int4, Wanda, data): on aarch64 both arm tiers run the scalar tier's leaves,
// which GCC vectorizes with the baseline Advanced SIMD anyway. (int4's W4A8 still multiplies on the int8 GEMM's
// neon / neon_dot kernels: it takes them from the int8 family.)
#include "cpu/data_isa.h"
#include "cpu/int4_isa.h"
#include "cpu/wanda_isa.h"

namespace fd {
FD_ALIAS_TIER_LEAVES(DataLeaves, Simd::Neon, Simd::Scalar)
FD_ALIAS_TIER_LEAVES(DataLeaves, Simd::NeonDot, Simd::Scalar)
FD_ALIAS_TIER_LEAVES(Int4Leaves, Simd::Neon, Simd::Scalar)
FD_ALIAS_TIER_LEAVES(Int4Leaves, Simd::NeonDot, Simd::Scalar)
FD_ALIAS_TIER_LEAVES(WandaLeaves, Simd::Neon, Simd::Scalar)
FD_ALIAS_TIER_LEAVES(WandaLeaves, Simd::NeonDot, Simd::Scalar)
}  // namespace fd
