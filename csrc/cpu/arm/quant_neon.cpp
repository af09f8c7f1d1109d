// Quant leaf kernels, neon tier (see quant_kernels.h); the neon_dot tier runs these too.
#include "cpu/quant_isa.h"
#include "cpu/arm/tier_neon.h"
#include "cpu/quant_kernels.h"
FD_NEON_LEAVES_AT_NEON_DOT(QuantLeaves)
