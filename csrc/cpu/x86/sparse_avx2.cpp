// Sparse matmul leaf kernels, avx2 tier (see sparse_kernels.h).
#include "cpu/sparse_isa.h"
#include "cpu/x86/tier_avx2.h"
#include "cpu/sparse_kernels.h"
