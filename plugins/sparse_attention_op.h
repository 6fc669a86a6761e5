// ONNX Runtime adapter of spattn::SparseAttention.
#pragma once

#include <onnxruntime_c_api.h>

namespace spattn {
namespace ort {

// Adds the `spattn` custom-op domain (SparseAttention for the CPU and, when built, the CUDA
// execution provider) to the session options.
OrtStatus* register_ops(OrtSessionOptions* options, const OrtApi* api);

}  // namespace ort
}  // namespace spattn
