// The CPU micro-kernels for avx2 (see tile_kernels.inc; target flags set in CMake).
#define SPATTN_ISA avx2
#define SPATTN_ISA_NAME "avx2"
#define SPATTN_VEC_BYTES 32
#include "tile_kernels.inc"
