// Prune leaf kernels, avx512 tier (see prune_kernels.h).
#include "cpu/prune_isa.h"
#include "cpu/x86/tier_avx512.h"
#include "cpu/prune_kernels.h"
