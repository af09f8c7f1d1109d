// KD leaf kernels, neon tier (see kd_kernels.h); the neon_dot tier runs these too.
#include "cpu/kd_isa.h"
#include "cpu/arm/tier_neon.h"
#include "cpu/kd_kernels.h"
FD_NEON_LEAVES_AT_NEON_DOT(KdLeaves)
