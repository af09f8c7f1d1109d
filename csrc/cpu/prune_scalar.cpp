// Pruning leaf kernels for the scalar level (see prune_kernels.h).
#include <cstdint>
#include <cstring>

#include "common.h"
#include "prune_isa.h"

#define FD_ISA_AVX512 0
#define FD_ISA_NAMESPACE scalar
#include "prune_kernels.h"
