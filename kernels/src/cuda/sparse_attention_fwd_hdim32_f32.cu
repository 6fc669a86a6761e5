// CUDA-core forward, float32, head dim 32.
#include "dispatch.cuh"
#include "fwd_fp32.cuh"

namespace spattn {
namespace cuda {

cudaError_t launch_attention_f32_d32(const KParams& kp, int32_t grid, cudaStream_t stream) {
  return launch_fp32<32>(kp, grid, stream);
}

}  // namespace cuda
}  // namespace spattn
