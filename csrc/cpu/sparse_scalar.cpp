// Sparse matmul leaf kernels for the scalar level (see sparse_kernels.h).
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "common.h"
#include "sparse_isa.h"

#define FD_ISA_AVX512 0
#define FD_ISA_AVX2 0
#define FD_ISA_NAMESPACE scalar
#include "sparse_kernels.h"
