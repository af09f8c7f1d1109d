// Sparse matmul leaf kernels, scalar tier (see sparse_kernels.h).
#include "cpu/sparse_isa.h"
#include "cpu/tier_scalar.h"
#include "cpu/sparse_kernels.h"
