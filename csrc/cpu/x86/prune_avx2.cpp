// Prune leaf kernels, avx2 tier (see prune_kernels.h).
#include "cpu/prune_isa.h"
#include "cpu/x86/tier_avx2.h"
#include "cpu/prune_kernels.h"
