// CPU entry of the SparseAttention kernels. Host code; no ONNX Runtime, TensorRT or Torch header.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "spattn/params.h"

namespace spattn {
namespace cpu {

// Runs `fn(task)` for every task in [0, num_tasks), possibly in parallel, and returns when all are
// done. The ONNX Runtime adapter passes its intra-op thread pool; the C API a small thread pool.
using ParallelFor = std::function<void(int64_t num_tasks, const std::function<void(int64_t)>& fn)>;

// A ParallelFor on `num_threads` std::threads (0: hardware concurrency).
ParallelFor thread_parallel_for(int num_threads);

// Forward pass on host memory. `p` must have passed validate_inputs and the value checks.
// Visits only the allowed tiles (Pattern::classify), online softmax in float32, and masks token by
// token only in partial tiles. Returns an empty string or an error message; never throws.
std::string run(const Params& p, const ParallelFor& parallel_for);

}  // namespace cpu
}  // namespace spattn
