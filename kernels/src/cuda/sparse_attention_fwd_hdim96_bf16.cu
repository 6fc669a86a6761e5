// Tensor-core forward, bf16, head dim 96.
#include "dispatch.cuh"
#include "fwd_ws.cuh"

namespace spattn {
namespace cuda {

cudaError_t launch_attention_bf16_d96(const KParams& kp, int32_t grid, cudaStream_t stream) {
  return launch_tensor_core<__nv_bfloat16, 96>(kp, grid, stream);
}

}  // namespace cuda
}  // namespace spattn
