// Prune leaf kernels, scalar tier (see prune_kernels.h).
#include "cpu/prune_isa.h"
#include "cpu/tier_scalar.h"
#include "cpu/prune_kernels.h"
