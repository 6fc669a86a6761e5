// Entry point ONNX Runtime calls when the library is registered
// (Python: SessionOptions.register_custom_ops_library; C++:
// Ort::SessionOptions::RegisterCustomOpsLibrary).
#include <onnxruntime_c_api.h>

#include "sparse_attention_op.h"

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  // Ask for the API version of the headers we were built with; newer runtimes still provide it.
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (!api) return nullptr;  // an older ONNX Runtime than 1.21: nothing we can report through
  return spattn::ort::register_ops(options, api);
}
