// Sparse matmul leaf kernels, neon tier (see sparse_kernels.h); the neon_dot tier runs these too.
#include "cpu/sparse_isa.h"
#include "cpu/arm/tier_neon.h"
#include "cpu/sparse_kernels.h"
FD_NEON_LEAVES_AT_NEON_DOT(SparseLeaves)
