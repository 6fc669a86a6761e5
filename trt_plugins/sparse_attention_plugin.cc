// TensorRT adapter of spattn::SparseAttention (docs/op-spec.md). See sparse_attention_plugin.h.
#include "sparse_attention_plugin.h"

#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include "spattn/cuda.h"
#include "spattn/params.h"
#include "spattn/validate.h"

namespace spattn {
namespace trt {
namespace {

using nvinfer1::DataType;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldType;

constexpr int kNumIntFields = 8;
// The INT attributes of the op, in the order of PatternAttrs.
constexpr const char* kIntFieldNames[kNumIntFields] = {"window_left", "window_right", "causal",
                                                       "num_global",  "stride",       "block_size",
                                                       "num_random",  "seed"};
constexpr const char* kInputNames[5] = {"query", "key", "value", "key_lengths", "block_indices"};

int32_t dtype_code(DataType t) {
  switch (t) {
    case DataType::kFLOAT:
      return int32_t(DType::kFloat32);
    case DataType::kHALF:
      return int32_t(DType::kFloat16);
    case DataType::kBF16:
      return int32_t(DType::kBFloat16);
    case DataType::kINT32:
      return kInt32Code;
    default:
      return -1;
  }
}

const char* type_name(DataType t) {
  switch (t) {
    case DataType::kFLOAT:
      return "float32";
    case DataType::kHALF:
      return "float16";
    case DataType::kBF16:
      return "bfloat16";
    case DataType::kINT32:
      return "int32";
    case DataType::kINT64:
      return "int64";
    case DataType::kINT8:
      return "int8";
    case DataType::kUINT8:
      return "uint8";
    case DataType::kBOOL:
      return "bool";
    case DataType::kFP8:
      return "float8";
    default:
      return "another TensorRT type";
  }
}

const char* field_type_name(PluginFieldType t) {
  switch (t) {
    case PluginFieldType::kFLOAT16:
      return "FLOAT16";
    case PluginFieldType::kFLOAT32:
      return "FLOAT32";
    case PluginFieldType::kFLOAT64:
      return "FLOAT64";
    case PluginFieldType::kINT8:
      return "INT8";
    case PluginFieldType::kINT16:
      return "INT16";
    case PluginFieldType::kINT32:
      return "INT32";
    case PluginFieldType::kINT64:
      return "INT64";
    case PluginFieldType::kCHAR:
      return "CHAR";
    case PluginFieldType::kDIMS:
      return "DIMS";
    case PluginFieldType::kBF16:
      return "BF16";
    default:
      return "another field type";
  }
}

// An absent optional input (TensorRT's ONNX parser passes it as a null tensor) has no rank.
TensorDesc describe(const nvinfer1::Dims& dims, DataType type) {
  TensorDesc d;
  if (dims.nbDims < 0) return d;
  d.present = true;
  d.dtype = dtype_code(type);
  d.dtype_text = type_name(type);
  d.rank = dims.nbDims;
  for (int i = 0; i < dims.nbDims && i < 8; ++i) d.dims[i] = dims.d[i];
  return d;
}

// The shared validation (validate.h) on concrete shapes, with the CUDA backend's head dims.
std::string validate(const PatternAttrs& attrs, int32_t nb_inputs, const nvinfer1::Dims* dims,
                     const DataType* types, Params* p) {
  TensorDesc d[5];
  for (int32_t i = 0; i < nb_inputs && i < 5; ++i) d[i] = describe(dims[i], types[i]);
  return validate_inputs(attrs, nb_inputs, d[0], d[1], d[2], d[3], d[4], cuda::head_dim_support(),
                         p);
}

template <typename Desc, typename Get>
std::string validate_descs(const PatternAttrs& attrs, const Desc* in, int32_t nb_inputs, Get get,
                           Params* p) {
  nvinfer1::Dims dims[5];
  DataType types[5] = {};
  for (int32_t i = 0; i < nb_inputs && i < 5; ++i) {
    dims[i] = get(in[i]);
    types[i] = in[i].desc.type;
  }
  return validate(attrs, nb_inputs, dims, types, p);
}

std::string describe_attrs(const PatternAttrs& a) {
  char buf[320];
  std::snprintf(buf, sizeof(buf),
                "SparseAttention_v1(scale=%.9g,window_left=%d,window_right=%d,causal=%d,"
                "num_global=%d,stride=%d,block_size=%d,num_random=%d,seed=%d)",
                double(a.scale), a.window_left, a.window_right, a.causal, a.num_global, a.stride,
                a.block_size, a.num_random, a.seed);
  return buf;
}

int32_t* int_field(PatternAttrs& a, int i) {
  int32_t* f[kNumIntFields] = {&a.window_left, &a.window_right, &a.causal,     &a.num_global,
                               &a.stride,      &a.block_size,   &a.num_random, &a.seed};
  return f[i];
}

int64_t* raw_int_field(RawAttrs& r, int i) {
  int64_t* f[kNumIntFields] = {&r.window_left, &r.window_right, &r.causal,     &r.num_global,
                               &r.stride,      &r.block_size,   &r.num_random, &r.seed};
  return f[i];
}

// Catches everything at the library boundary.
template <typename F, typename R>
R guarded(const char* where, R on_error, nvinfer1::IErrorRecorder* recorder, F&& f) noexcept {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    report_error(std::string("SparseAttention: ") + where + ": out of host memory", recorder);
  } catch (const std::exception& e) {
    report_error(std::string("SparseAttention: ") + where + ": " + e.what(), recorder);
  } catch (...) {
    report_error(std::string("SparseAttention: ") + where + ": unknown internal error", recorder);
  }
  return on_error;
}

}  // namespace

std::string parse_fields(const nvinfer1::PluginFieldCollection* fc, PatternAttrs* out) {
  RawAttrs r;
  if (fc && fc->nbFields > 0 && !fc->fields)
    return detail::err("plugin fields", "a field array",
                       "null with " + std::to_string(fc->nbFields) + " fields");
  const int32_t n = fc ? fc->nbFields : 0;
  for (int32_t i = 0; i < n; ++i) {
    const PluginField& f = fc->fields[i];
    if (!f.name) continue;
    const bool is_scale = std::strcmp(f.name, "scale") == 0;
    int int_index = -1;
    for (int k = 0; k < kNumIntFields; ++k)
      if (std::strcmp(f.name, kIntFieldNames[k]) == 0) int_index = k;
    if (!is_scale && int_index < 0) continue;  // not an attribute of the op: ignored (op spec)
    const std::string got = std::string(field_type_name(f.type)) + " field of length " +
                            std::to_string(f.length) + (f.data ? "" : " without data");
    if (is_scale) {
      if (f.length != 1 || !f.data ||
          (f.type != PluginFieldType::kFLOAT32 && f.type != PluginFieldType::kFLOAT64))
        return detail::err("scale", "a FLOAT32 field of length 1", got);
      r.scale = f.type == PluginFieldType::kFLOAT32 ? *static_cast<const float*>(f.data)
                                                    : float(*static_cast<const double*>(f.data));
      continue;
    }
    int64_t v = 0;
    bool ok = f.length == 1 && f.data;
    if (ok) {
      switch (f.type) {
        case PluginFieldType::kINT32:
          v = *static_cast<const int32_t*>(f.data);
          break;
        case PluginFieldType::kINT64:
          v = *static_cast<const int64_t*>(f.data);
          break;
        case PluginFieldType::kINT16:
          v = *static_cast<const int16_t*>(f.data);
          break;
        case PluginFieldType::kINT8:
          v = *static_cast<const int8_t*>(f.data);
          break;
        default:
          ok = false;
      }
    }
    if (!ok) return detail::err(kIntFieldNames[int_index], "an INT32 field of length 1", got);
    *raw_int_field(r, int_index) = v;
  }
  return validate_attrs(r, out);
}

// ---- SparseAttentionPlugin ----

SparseAttentionPlugin::SparseAttentionPlugin(const PatternAttrs& attrs)
    : attrs_(attrs), description_(describe_attrs(attrs)) {}

SparseAttentionPlugin::SparseAttentionPlugin(const SparseAttentionPlugin& other)
    : nvinfer1::IPluginV3(other),
      nvinfer1::IPluginV3OneCore(other),
      nvinfer1::IPluginV3OneBuild(other),
      nvinfer1::IPluginV3OneRuntime(other),
      attrs_(other.attrs_),
      description_(other.description_),
      num_inputs_(other.num_inputs_),
      recorder_(other.recorder_) {}

nvinfer1::IPluginCapability* SparseAttentionPlugin::getCapabilityInterface(
    nvinfer1::PluginCapabilityType type) noexcept {
  switch (type) {
    case nvinfer1::PluginCapabilityType::kCORE:
      return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD:
      return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME:
      return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
  }
  return nullptr;
}

nvinfer1::IPluginV3* SparseAttentionPlugin::clone() noexcept {
  return guarded("clone", static_cast<nvinfer1::IPluginV3*>(nullptr), recorder_,
                 [&]() -> nvinfer1::IPluginV3* { return new SparseAttentionPlugin(*this); });
}

int32_t SparseAttentionPlugin::getOutputDataTypes(nvinfer1::DataType* output_types,
                                                  int32_t nb_outputs,
                                                  const nvinfer1::DataType* input_types,
                                                  int32_t nb_inputs) const noexcept {
  return guarded("getOutputDataTypes", int32_t(-1), recorder_, [&]() -> int32_t {
    if (nb_outputs != 1 || nb_inputs < 1) return -1;
    const int32_t code = dtype_code(input_types[0]);
    if (code < 0 || code > 2) {
      report_error(detail::err("query", "float32, float16 or bfloat16", type_name(input_types[0])),
                   recorder_);
      return -1;
    }
    output_types[0] = input_types[0];
    return 0;
  });
}

int32_t SparseAttentionPlugin::getOutputShapes(const nvinfer1::DimsExprs* inputs, int32_t nb_inputs,
                                               const nvinfer1::DimsExprs*, int32_t,
                                               nvinfer1::DimsExprs* outputs, int32_t nb_outputs,
                                               nvinfer1::IExprBuilder&) noexcept {
  return guarded("getOutputShapes", int32_t(-1), recorder_, [&]() -> int32_t {
    // Only what the output shape needs is checked here; configurePlugin runs the full validation
    // (validate.h) on the profile's shapes.
    if (nb_outputs != 1) return -1;
    if (nb_inputs < 3 || nb_inputs > 5) {
      report_error(nb_inputs > 5
                       ? detail::err("input 5", "not used by SparseAttention version 1 (reserved)",
                                     std::to_string(nb_inputs) + " inputs")
                       : detail::err(kInputNames[nb_inputs < 0 ? 0 : nb_inputs], "a required input",
                                     "nothing"),
                   recorder_);
      return -1;
    }
    for (int i = 0; i < 3; ++i)
      if (inputs[i].nbDims != 4) {
        report_error(
            detail::err(kInputNames[i], "rank 4", "rank " + std::to_string(inputs[i].nbDims)),
            recorder_);
        return -1;
      }
    // [B, Hq, Lq] of query and Dv of value, as TensorRT's own expressions.
    outputs[0].nbDims = 4;
    outputs[0].d[0] = inputs[0].d[0];
    outputs[0].d[1] = inputs[0].d[1];
    outputs[0].d[2] = inputs[0].d[2];
    outputs[0].d[3] = inputs[2].d[3];
    return 0;
  });
}

bool SparseAttentionPlugin::supportsFormatCombination(int32_t pos,
                                                      const nvinfer1::DynamicPluginTensorDesc* io,
                                                      int32_t nb_inputs,
                                                      int32_t nb_outputs) noexcept {
  if (pos < 0 || pos >= nb_inputs + nb_outputs || nb_outputs != 1) return false;
  const nvinfer1::PluginTensorDesc& d = io[pos].desc;
  if (d.format != nvinfer1::TensorFormat::kLINEAR) return false;
  if (pos == 0)
    return d.type == DataType::kFLOAT || d.type == DataType::kHALF || d.type == DataType::kBF16;
  if (pos == 1 || pos == 2 || pos == nb_inputs) return d.type == io[0].desc.type;
  return d.type == DataType::kINT32;  // key_lengths, block_indices
}

int32_t SparseAttentionPlugin::configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in,
                                               int32_t nb_inputs,
                                               const nvinfer1::DynamicPluginTensorDesc*,
                                               int32_t) noexcept {
  return guarded("configurePlugin", int32_t(-1), recorder_, [&]() -> int32_t {
    num_inputs_ = nb_inputs;
    Params p;
    // The largest shapes of the profile: every relation between the dims holds there too.
    const std::string e = validate_descs(
        attrs_, in, nb_inputs, [](const nvinfer1::DynamicPluginTensorDesc& d) { return d.max; },
        &p);
    if (!e.empty()) {
      report_error(e + " (profile maximum shapes)", recorder_);
      return -1;
    }
    return 0;
  });
}

size_t SparseAttentionPlugin::getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* inputs,
                                               int32_t nb_inputs,
                                               const nvinfer1::DynamicPluginTensorDesc*,
                                               int32_t) const noexcept {
  return guarded("getWorkspaceSize", size_t(0), recorder_, [&]() -> size_t {
    Params p;
    // workspace_size grows with every dim: the profile's maximum covers every smaller shape.
    const std::string e = validate_descs(
        attrs_, inputs, nb_inputs, [](const nvinfer1::DynamicPluginTensorDesc& d) { return d.max; },
        &p);
    return e.empty() ? cuda::workspace_size(p) : size_t(0);
  });
}

int32_t SparseAttentionPlugin::onShapeChange(const nvinfer1::PluginTensorDesc* in,
                                             int32_t nb_inputs, const nvinfer1::PluginTensorDesc*,
                                             int32_t) noexcept {
  return guarded("onShapeChange", int32_t(-1), recorder_, [&]() -> int32_t {
    num_inputs_ = nb_inputs;
    nvinfer1::Dims dims[5];
    DataType types[5] = {};
    for (int32_t i = 0; i < nb_inputs && i < 5; ++i) {
      dims[i] = in[i].dims;
      types[i] = in[i].type;
    }
    Params p;
    const std::string e = validate(attrs_, nb_inputs, dims, types, &p);
    if (!e.empty()) {
      report_error(e, recorder_);
      return -1;
    }
    return 0;
  });
}

int32_t SparseAttentionPlugin::enqueue(const nvinfer1::PluginTensorDesc* input_desc,
                                       const nvinfer1::PluginTensorDesc* output_desc,
                                       const void* const* inputs, void* const* outputs,
                                       void* workspace, cudaStream_t stream) noexcept {
  return guarded("enqueue", int32_t(-1), recorder_, [&]() -> int32_t {
    // Reads only this call's descriptors and the immutable attributes: several contexts may
    // enqueue at once.
    const int32_t n = num_inputs_;
    if (n < 3 || n > 5) {
      report_error("SparseAttention: enqueue before configurePlugin/onShapeChange", recorder_);
      return -1;
    }
    nvinfer1::Dims dims[5];
    DataType types[5] = {};
    for (int32_t i = 0; i < n; ++i) {
      dims[i] = input_desc[i].dims;
      types[i] = input_desc[i].type;
    }
    Params p;
    const std::string e = validate(attrs_, n, dims, types, &p);
    if (!e.empty()) {
      report_error(e, recorder_);
      return -1;
    }
    if (output_desc[0].type != input_desc[0].type) {
      report_error(
          detail::err("output",
                      std::string("the type of query (") + type_name(input_desc[0].type) + ")",
                      type_name(output_desc[0].type)),
          recorder_);
      return -1;
    }
    p.q = inputs[0];
    p.k = inputs[1];
    p.v = inputs[2];
    p.key_lengths = n > 3 && dims[3].nbDims >= 0 ? static_cast<const int32_t*>(inputs[3]) : nullptr;
    p.block_indices =
        n > 4 && dims[4].nbDims >= 0 ? static_cast<const int32_t*>(inputs[4]) : nullptr;
    if (!p.block_indices) p.bi_heads = p.bi_k = 0;
    p.o = outputs[0];
    const cudaError_t rc = cuda::launch(p, workspace, cuda::workspace_size(p), stream);
    if (rc != cudaSuccess) {
      report_error(std::string("SparseAttention: CUDA launch failed: ") + cudaGetErrorString(rc),
                   recorder_);
      return -1;
    }
    return 0;
  });
}

nvinfer1::IPluginV3* SparseAttentionPlugin::attachToContext(
    nvinfer1::IPluginResourceContext* context) noexcept {
  return guarded("attachToContext", static_cast<nvinfer1::IPluginV3*>(nullptr), recorder_,
                 [&]() -> nvinfer1::IPluginV3* {
                   auto* p = new SparseAttentionPlugin(*this);
                   p->recorder_ = context ? context->getErrorRecorder() : nullptr;
                   return p;
                 });
}

const nvinfer1::PluginFieldCollection* SparseAttentionPlugin::getFieldsToSerialize() noexcept {
  return guarded(
      "getFieldsToSerialize", static_cast<const nvinfer1::PluginFieldCollection*>(nullptr),
      recorder_, [&]() -> const nvinfer1::PluginFieldCollection* {
        // Every attribute, resolved as the creator reads it: createPlugin(kRUNTIME)
        // on these fields gives an identical plugin.
        ser_fields_.clear();
        ser_scale_ = attrs_.scale;
        ser_fields_.emplace_back("scale", &ser_scale_, PluginFieldType::kFLOAT32, 1);
        for (int i = 0; i < kNumIntFields; ++i) {
          ser_ints_[i] = *int_field(attrs_, i);
          ser_fields_.emplace_back(kIntFieldNames[i], &ser_ints_[i], PluginFieldType::kINT32, 1);
        }
        ser_collection_.nbFields = int32_t(ser_fields_.size());
        ser_collection_.fields = ser_fields_.data();
        return &ser_collection_;
      });
}

// ---- SparseAttentionPluginCreator ----

SparseAttentionPluginCreator::SparseAttentionPluginCreator() {
  // The field names are the op's attributes: TensorRT's ONNX parser passes exactly the node
  // attributes named here (INT narrowed to INT32, FLOAT as FLOAT32).
  fields_.emplace_back("scale", nullptr, PluginFieldType::kFLOAT32, 1);
  for (int i = 0; i < kNumIntFields; ++i)
    fields_.emplace_back(kIntFieldNames[i], nullptr, PluginFieldType::kINT32, 1);
  collection_.nbFields = int32_t(fields_.size());
  collection_.fields = fields_.data();
}

nvinfer1::IPluginV3* SparseAttentionPluginCreator::createPlugin(
    const char* name, const nvinfer1::PluginFieldCollection* fc, nvinfer1::TensorRTPhase) noexcept {
  return guarded("createPlugin", static_cast<nvinfer1::IPluginV3*>(nullptr), nullptr,
                 [&]() -> nvinfer1::IPluginV3* {
                   PatternAttrs attrs;
                   const std::string e = parse_fields(fc, &attrs);
                   if (!e.empty()) {
                     report_error(e + (name && *name ? std::string(" (node ") + name + ")" : ""));
                     return nullptr;
                   }
                   return new SparseAttentionPlugin(attrs);
                 });
}

}  // namespace trt
}  // namespace spattn
