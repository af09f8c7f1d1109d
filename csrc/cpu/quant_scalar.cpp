// Quantization leaf kernels for the scalar level (see quant_kernels.h).
#include <cstdint>

#include "common.h"
#include "quant_isa.h"

#define FD_ISA_NAMESPACE scalar
#include "quant_kernels.h"
