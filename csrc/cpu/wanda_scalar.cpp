// Wanda leaf kernel, scalar tier (see wanda_kernels.h).
#include "cpu/wanda_isa.h"
#include "cpu/tier_scalar.h"
#include "cpu/wanda_kernels.h"
