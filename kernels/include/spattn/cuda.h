// CUDA launch entry of the SparseAttention kernels. Host code; includes no ONNX Runtime, TensorRT
// or Torch header. The adapters validate with validate.h first (head dims:
// cuda_head_dim_support()).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>

#include "spattn/params.h"
#include "spattn/validate.h"

namespace spattn {
namespace cuda {

// Head dims and dtypes this backend accepts (for validate_inputs): cuda_head_dim_support(), the
// head dims of params.h's SPATTN_CUDA_HEAD_DIMS table.
HeadDimSupport head_dim_support();

// What of a validated call the kernels of this build cannot compute yet: an error message naming
// the input or attribute ("SparseAttention: <name>: ..."), or an empty string. The adapters report
// it instead of launching; `launch` refuses such a call with cudaErrorNotSupported, never computing
// something else.
std::string unsupported(const Params& p);

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
