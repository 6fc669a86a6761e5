// The CPU micro-kernels for avx512 (see tile_kernels.inc; target flags set in CMake).
#define SPATTN_ISA avx512
#define SPATTN_ISA_NAME "avx512"
#define SPATTN_VEC_BYTES 64
#include "tile_kernels.inc"
