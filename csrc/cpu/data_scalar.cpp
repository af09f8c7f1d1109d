// Data-compression leaf kernels, scalar tier (see data_kernels.h).
#include "cpu/data_isa.h"
#include "cpu/tier_scalar.h"
#include "cpu/data_kernels.h"
