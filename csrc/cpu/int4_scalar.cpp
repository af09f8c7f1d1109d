// int4 linear leaf kernels, scalar tier (see int4_kernels.h).
#include "cpu/int4_isa.h"
#include "cpu/tier_scalar.h"
#include "cpu/int4_kernels.h"
