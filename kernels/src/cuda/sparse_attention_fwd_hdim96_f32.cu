// CUDA-core forward, float32, head dim 96.
#include "dispatch.cuh"
#include "fwd_fp32.cuh"

namespace spattn {
namespace cuda {

cudaError_t launch_attention_f32_d96(const KParams& kp, int32_t grid, cudaStream_t stream) {
  return launch_fp32<96>(kp, grid, stream);
}

}  // namespace cuda
}  // namespace spattn
