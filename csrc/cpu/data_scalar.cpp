// Data-compression leaf kernels for the scalar level (see data_kernels.h).
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "data_isa.h"

#define FD_ISA_LEVEL 0
#define FD_ISA_NAMESPACE scalar
#include "data_kernels.h"
