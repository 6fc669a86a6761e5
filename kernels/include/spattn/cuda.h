// CUDA launch entry of the SparseAttention kernels. Host code; includes no ONNX Runtime, TensorRT
// or Torch header. The adapters validate with validate.h first (head dims: head_dim_support(),
// from kCudaHeadDims).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

#include "spattn/params.h"
#include "spattn/validate.h"

// The head dims D = Dv of the CUDA kernels (every dtype; the TensorRT plugin runs the same
// kernels), one X(d) per head dim: the kernel instantiations, the dispatch, the validation
// (head_dim_support) and the adapters' messages expand this one list.
#ifndef SPATTN_CUDA_HEAD_DIMS
#define SPATTN_CUDA_HEAD_DIMS(X) X(32) X(64) X(96) X(128) X(256)
namespace spattn {
#define SPATTN_HEAD_DIM_ENTRY(d) d,
constexpr int32_t kCudaHeadDims[] = {SPATTN_CUDA_HEAD_DIMS(SPATTN_HEAD_DIM_ENTRY)};
#undef SPATTN_HEAD_DIM_ENTRY
constexpr int32_t kNumCudaHeadDims = int32_t(sizeof(kCudaHeadDims) / sizeof(kCudaHeadDims[0]));
}  // namespace spattn
#endif

namespace spattn {
namespace cuda {

// Head dims and dtypes this backend accepts (for validate_inputs): D = Dv in kCudaHeadDims.
HeadDimSupport head_dim_support();

// Device workspace `launch` needs for these shapes and attributes, in bytes (may be 0). Depends
// only on sizes and attributes, never on tensor values, so a TensorRT plugin can report it at
// build.
size_t workspace_size(const Params& p);

// The workspace of the kernel `launch` picks on the current device (no larger than
// workspace_size): for callers that launch right away on that device.
size_t workspace_size_current_device(const Params& p);

// Runs the forward pass on `stream`: no allocation, no synchronization, no host-side planning that
// reads device memory. `workspace` holds at least workspace_size(p) bytes (may be null if 0).
// Returns cudaSuccess or the error of the failing launch; never throws.
cudaError_t launch(const Params& p, void* workspace, size_t workspace_bytes, cudaStream_t stream);

}  // namespace cuda
}  // namespace spattn
