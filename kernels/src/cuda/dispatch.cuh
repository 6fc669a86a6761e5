// The kernel instantiations, one (dtype, head dim) per source file, and their launchers.
#pragma once

#include <cuda_runtime.h>

#include "common.cuh"

namespace spattn {
namespace cuda {

cudaError_t launch_attention_f16_d64(const KParams& kp, int32_t grid, cudaStream_t stream);
cudaError_t launch_attention_f16_d128(const KParams& kp, int32_t grid, cudaStream_t stream);
cudaError_t launch_attention_bf16_d64(const KParams& kp, int32_t grid, cudaStream_t stream);
cudaError_t launch_attention_bf16_d128(const KParams& kp, int32_t grid, cudaStream_t stream);
cudaError_t launch_attention_f32_d64(const KParams& kp, int32_t grid, cudaStream_t stream);
cudaError_t launch_attention_f32_d128(const KParams& kp, int32_t grid, cudaStream_t stream);

}  // namespace cuda
}  // namespace spattn
