// int8 GEMM leaf kernels for the scalar level (see int8_kernels.h).
#include <cmath>
#include <cstdint>

#include "common.h"
#include "int8_isa.h"

#define FD_ISA_LEVEL 0
#define FD_ISA_NAMESPACE scalar
#include "int8_kernels.h"
