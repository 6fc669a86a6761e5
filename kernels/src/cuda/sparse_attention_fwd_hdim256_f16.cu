// Tensor-core forward, f16, head dim 256.
#include "dispatch.cuh"
#include "fwd_ws.cuh"

namespace spattn {
namespace cuda {

cudaError_t launch_attention_f16_d256(const KParams& kp, int32_t grid, cudaStream_t stream) {
  return launch_tensor_core<__half, 256>(kp, grid, stream);
}

}  // namespace cuda
}  // namespace spattn
