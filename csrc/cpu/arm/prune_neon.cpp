// Prune leaf kernels, neon tier (see prune_kernels.h); the neon_dot tier runs these too.
#include "cpu/prune_isa.h"
#include "cpu/arm/tier_neon.h"
#include "cpu/prune_kernels.h"
FD_NEON_LEAVES_AT_NEON_DOT(PruneLeaves)
