// TensorRT adapter of spattn::SparseAttention (docs/op-spec.md): an IPluginV3 plugin and its
// IPluginCreatorV3One. Like the ONNX Runtime adapter it only reads the fields, validates with the
// shared rules (kernels/include/spattn/validate.h), fills the params struct and calls the shared
// CUDA launch entry. Every method is noexcept and catches: no exception leaves the library.
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "spattn/params.h"
#include "spattn/validate.h"

namespace spattn {
namespace trt {

// The ONNX op_type, the version TensorRT's ONNX parser reads from `plugin_version` and the
// namespace it reads from `plugin_namespace` (the exporter writes "spattn").
constexpr const char* kPluginName = "SparseAttention";
constexpr const char* kPluginVersion = "1";
constexpr const char* kPluginNamespace = "spattn";

// Reports an error through TensorRT: the logger of setLoggerFinder, and the error recorder of the
// execution context (if attached) or of the plugin registry. Defined in plugin_library.cc.
void report_error(const std::string& message,
                  nvinfer1::IErrorRecorder* recorder = nullptr) noexcept;

class SparseAttentionPlugin final : public nvinfer1::IPluginV3,
                                    public nvinfer1::IPluginV3OneCore,
                                    public nvinfer1::IPluginV3OneBuild,
                                    public nvinfer1::IPluginV3OneRuntime {
 public:
  // `attrs` passed validate_attrs (scale not resolved: 0 means 1/sqrt(D)).
  explicit SparseAttentionPlugin(const PatternAttrs& attrs);
  SparseAttentionPlugin(const SparseAttentionPlugin& other);
  SparseAttentionPlugin& operator=(const SparseAttentionPlugin&) = delete;
  ~SparseAttentionPlugin() override = default;

  // IPluginV3
  nvinfer1::IPluginCapability* getCapabilityInterface(
      nvinfer1::PluginCapabilityType type) noexcept override;
  nvinfer1::IPluginV3* clone() noexcept override;

  // IPluginV3OneCore
  const char* getPluginName() const noexcept override { return kPluginName; }
  const char* getPluginVersion() const noexcept override { return kPluginVersion; }
  const char* getPluginNamespace() const noexcept override { return kPluginNamespace; }

  // IPluginV3OneBuild
  int32_t getNbOutputs() const noexcept override { return 1; }
  int32_t getOutputDataTypes(nvinfer1::DataType* output_types, int32_t nb_outputs,
                             const nvinfer1::DataType* input_types,
                             int32_t nb_inputs) const noexcept override;
  int32_t getOutputShapes(const nvinfer1::DimsExprs* inputs, int32_t nb_inputs,
                          const nvinfer1::DimsExprs* shape_inputs, int32_t nb_shape_inputs,
                          nvinfer1::DimsExprs* outputs, int32_t nb_outputs,
                          nvinfer1::IExprBuilder& expr_builder) noexcept override;
  bool supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* in_out,
                                 int32_t nb_inputs, int32_t nb_outputs) noexcept override;
  int32_t configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nb_inputs,
                          const nvinfer1::DynamicPluginTensorDesc* out,
                          int32_t nb_outputs) noexcept override;
  size_t getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* inputs, int32_t nb_inputs,
                          const nvinfer1::DynamicPluginTensorDesc* outputs,
                          int32_t nb_outputs) const noexcept override;
  const char* getTimingCacheID() noexcept override { return description_.c_str(); }
  const char* getMetadataString() noexcept override { return description_.c_str(); }

  // IPluginV3OneRuntime
  int32_t onShapeChange(const nvinfer1::PluginTensorDesc* in, int32_t nb_inputs,
                        const nvinfer1::PluginTensorDesc* out,
                        int32_t nb_outputs) noexcept override;
  int32_t enqueue(const nvinfer1::PluginTensorDesc* input_desc,
                  const nvinfer1::PluginTensorDesc* output_desc, const void* const* inputs,
                  void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
  nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
  const nvinfer1::PluginFieldCollection* getFieldsToSerialize() noexcept override;

  const PatternAttrs& attrs() const { return attrs_; }

 private:
  PatternAttrs attrs_;
  std::string description_;  // "SparseAttention(scale=...,...)": timing cache id and metadata
  // Inputs of the node (3 to kNumInputs), known from configurePlugin (build) or onShapeChange
  // (runtime); enqueue is not told.
  int32_t num_inputs_ = 0;
  nvinfer1::IErrorRecorder* recorder_ = nullptr;  // the execution context's, after attachToContext
  // Storage of getFieldsToSerialize.
  // Storage of getFieldsToSerialize: one 4-byte value (float or int32) per attribute.
  uint32_t ser_values_[32] = {};
  std::vector<nvinfer1::PluginField> ser_fields_;
  nvinfer1::PluginFieldCollection ser_collection_{};
};

class SparseAttentionPluginCreator final : public nvinfer1::IPluginCreatorV3One {
 public:
  SparseAttentionPluginCreator();
  ~SparseAttentionPluginCreator() override = default;

  nvinfer1::IPluginV3* createPlugin(const char* name, const nvinfer1::PluginFieldCollection* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override;
  const nvinfer1::PluginFieldCollection* getFieldNames() noexcept override { return &collection_; }
  const char* getPluginName() const noexcept override { return kPluginName; }
  const char* getPluginVersion() const noexcept override { return kPluginVersion; }
  const char* getPluginNamespace() const noexcept override { return kPluginNamespace; }

 private:
  std::vector<nvinfer1::PluginField> fields_;
  nvinfer1::PluginFieldCollection collection_{};
};

// Reads a field collection into attributes (the op's attribute names; absent fields keep their
// defaults; names the op does not have are ignored) and validates them. Returns an empty string
// or the message naming the field.
std::string parse_fields(const nvinfer1::PluginFieldCollection* fc, PatternAttrs* out);

}  // namespace trt
}  // namespace spattn
