// CUDA-core forward, float32, head dim 128.
#include "dispatch.cuh"
#include "fwd_fp32.cuh"

namespace spattn {
namespace cuda {

cudaError_t launch_attention_f32_d128(const KParams& kp, int32_t grid, cudaStream_t stream) {
  return launch_fp32<128>(kp, grid, stream);
}

}  // namespace cuda
}  // namespace spattn
