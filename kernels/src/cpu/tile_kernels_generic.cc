// The CPU micro-kernels for generic (see tile_kernels.inc; target flags set in CMake).
#define SPATTN_ISA generic
#define SPATTN_ISA_NAME "generic"
#define SPATTN_VEC_BYTES 16
#include "tile_kernels.inc"
