// KD leaf kernels, scalar tier (see kd_kernels.h).
#include "cpu/kd_isa.h"
#include "cpu/tier_scalar.h"
#include "cpu/kd_kernels.h"
