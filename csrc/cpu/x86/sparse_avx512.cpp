// Sparse matmul leaf kernels, avx512 tier (see sparse_kernels.h).
#include "cpu/sparse_isa.h"
#include "cpu/x86/tier_avx512.h"
#include "cpu/sparse_kernels.h"
