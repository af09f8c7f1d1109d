// Quant leaf kernels, scalar tier (see quant_kernels.h).
#include "cpu/quant_isa.h"
#include "cpu/tier_scalar.h"
#include "cpu/quant_kernels.h"
