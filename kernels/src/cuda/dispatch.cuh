// The kernel instantiations, one (dtype, head dim) per source file, and their launchers.
#pragma once

#include <cuda_runtime.h>

#include "common.cuh"
#include "spattn/cuda.h"

namespace spattn {
namespace cuda {

// launch_attention_<dtype>_d<D> for every head dim of SPATTN_CUDA_HEAD_DIMS (spattn/params.h); each
// is defined in sparse_attention_fwd_hdim<D>_<dtype>.cu.
#define SPATTN_DECLARE_LAUNCHERS(d)                                                             \
  cudaError_t launch_attention_f16_d##d(const KParams& kp, int32_t grid, cudaStream_t stream);  \
  cudaError_t launch_attention_bf16_d##d(const KParams& kp, int32_t grid, cudaStream_t stream); \
  cudaError_t launch_attention_f32_d##d(const KParams& kp, int32_t grid, cudaStream_t stream);
SPATTN_CUDA_HEAD_DIMS(SPATTN_DECLARE_LAUNCHERS)
#undef SPATTN_DECLARE_LAUNCHERS

}  // namespace cuda
}  // namespace spattn
