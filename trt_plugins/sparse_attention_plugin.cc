// TensorRT adapter of spattn::SparseAttention (docs/op-spec.md). See sparse_attention_plugin.h.
#include "sparse_attention_plugin.h"

#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include "spattn/attributes.h"
#include "spattn/cuda.h"
#include "spattn/params.h"
#include "spattn/validate.h"

namespace spattn {
namespace trt {
namespace {

using nvinfer1::DataType;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldType;

// The plugin fields are the op's attributes (attributes.h): FLOAT as FLOAT32, INT as INT32.
constexpr PluginFieldType field_type(bool is_float) {
  return is_float ? PluginFieldType::kFLOAT32 : PluginFieldType::kINT32;
}
#define SPATTN_IS_FLOAT_FLOAT true
#define SPATTN_IS_FLOAT_INT false
struct FieldInfo {
  const char* name;
  bool is_float;
};
constexpr FieldInfo kFields[] = {
#define SPATTN_FIELD_INFO(TYPE, name, def, lo, hi, c_block, expect) {#name, SPATTN_IS_FLOAT_##TYPE},
    SPATTN_ATTRIBUTES(SPATTN_FIELD_INFO)
#undef SPATTN_FIELD_INFO
};
constexpr int kNumFields = int(sizeof(kFields) / sizeof(kFields[0]));
static_assert(kNumFields <= 32, "SparseAttentionPlugin::ser_values_ holds 32 attributes");

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
  TensorDesc d[kNumInputs];
  for (int32_t i = 0; i < nb_inputs && i < kNumInputs; ++i) d[i] = describe(dims[i], types[i]);
  return validate_inputs(attrs, nb_inputs, d, cuda::head_dim_support(), p);
}

template <typename Desc, typename Get>
std::string validate_descs(const PatternAttrs& attrs, const Desc* in, int32_t nb_inputs, Get get,
                           Params* p) {
  nvinfer1::Dims dims[kNumInputs];
  DataType types[kNumInputs] = {};
  for (int32_t i = 0; i < nb_inputs && i < kNumInputs; ++i) {
    dims[i] = get(in[i]);
    types[i] = in[i].desc.type;
  }
  return validate(attrs, nb_inputs, dims, types, p);
}

void append_value(std::string* s, float v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.9g", double(v));
  *s += buf;
}
void append_value(std::string* s, int32_t v) { *s += std::to_string(v); }

// "SparseAttention_v1(scale=...,window_left=...,...)": every attribute of the table.
std::string describe_attrs(const PatternAttrs& a) {
  std::string s = "SparseAttention_v1(";
  const char* sep = "";
#define SPATTN_DESCRIBE(TYPE, name, def, lo, hi, c_block, expect) \
  s += sep;                                                       \
  s += #name "=";                                                 \
  append_value(&s, a.name);                                       \
  sep = ",";
  SPATTN_ATTRIBUTES(SPATTN_DESCRIBE)
#undef SPATTN_DESCRIBE
  return s + ")";
}

// Reads a FLOAT field (FLOAT32 or FLOAT64, length 1) into *out; false for another type or length.
bool read_field(const PluginField& f, double* out) {
  if (f.length != 1 || !f.data) return false;
  if (f.type == PluginFieldType::kFLOAT32) {
    *out = *static_cast<const float*>(f.data);
    return true;
  }
  if (f.type == PluginFieldType::kFLOAT64) {
    *out = *static_cast<const double*>(f.data);
    return true;
  }
  return false;
}

// Reads an INT field (INT32, INT64, INT16 or INT8, length 1) into *out.
bool read_field(const PluginField& f, int64_t* out) {
  if (f.length != 1 || !f.data) return false;
  switch (f.type) {
    case PluginFieldType::kINT32:
      *out = *static_cast<const int32_t*>(f.data);
      return true;
    case PluginFieldType::kINT64:
      *out = *static_cast<const int64_t*>(f.data);
      return true;
    case PluginFieldType::kINT16:
      *out = *static_cast<const int16_t*>(f.data);
      return true;
    case PluginFieldType::kINT8:
      *out = *static_cast<const int8_t*>(f.data);
      return true;
    default:
      return false;
  }
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
    const std::string got = std::string(field_type_name(f.type)) + " field of length " +
                            std::to_string(f.length) + (f.data ? "" : " without data");
    // Names the op does not have are ignored (op spec).
#define SPATTN_PARSE_FIELD(TYPE, attr, def, lo, hi, c_block, expect)                           \
  if (std::strcmp(f.name, #attr) == 0 && !read_field(f, &r.attr))                              \
    return detail::err(                                                                        \
        #attr,                                                                                 \
        std::string(SPATTN_IS_FLOAT_##TYPE ? "a FLOAT32" : "an INT32") + " field of length 1", \
        got);
    SPATTN_ATTRIBUTES(SPATTN_PARSE_FIELD)
#undef SPATTN_PARSE_FIELD
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
    if (nb_inputs < 3 || nb_inputs > kNumInputs) {
      report_error(nb_inputs > kNumInputs
                       ? detail::err(("input " + std::to_string(kNumInputs)).c_str(),
                                     "not used by SparseAttention version 1 (reserved)",
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
  if (pos < nb_inputs && d.dims.nbDims < 0) return true;  // an omitted optional input
  if (pos == kSinks) return d.type == DataType::kFLOAT;
  return d.type == DataType::kINT32;  // key_lengths, block_indices, global_mask, key_starts
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
    // What the CUDA kernels of this build cannot compute (the pointers are not known yet: an
    // input counts as present when its descriptor has a rank).
    auto present = [&](int32_t i) { return nb_inputs > i && in[i].desc.dims.nbDims >= 0; };
    static const int32_t kDummy = 0;
    p.global_mask = present(kGlobalMask) ? &kDummy : nullptr;
    p.key_starts = present(kKeyStarts) ? &kDummy : nullptr;
    p.sinks = present(kSinks) ? reinterpret_cast<const float*>(&kDummy) : nullptr;
    const std::string u = cuda::unsupported(p);
    if (!u.empty()) {
      report_error(u, recorder_);
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
    nvinfer1::Dims dims[kNumInputs];
    DataType types[kNumInputs] = {};
    for (int32_t i = 0; i < nb_inputs && i < kNumInputs; ++i) {
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
    if (n < 3 || n > kNumInputs) {
      report_error("SparseAttention: enqueue before configurePlugin/onShapeChange", recorder_);
      return -1;
    }
    nvinfer1::Dims dims[kNumInputs];
    DataType types[kNumInputs] = {};
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
    // An omitted optional input arrives as a descriptor without rank (and a null pointer). A
    // present zero-size input (block_indices with K = 0, ...) may come without storage too, and
    // the kernels tell a present input from an absent one by its pointer: it must stay present
    // (block_indices with K = 0 lists no block, it is not absent). It has no element, so this
    // (host) pointer is never read. A present input with elements and no storage cannot be read:
    // an error naming it, never a pointer the kernels would dereference.
    static const int64_t kEmpty = 0;
    std::string missing;
    auto input = [&](int32_t i) -> const void* {
      if (n <= i || dims[i].nbDims < 0) return nullptr;
      if (inputs[i]) return inputs[i];
      int64_t elems = 1;
      for (int32_t d = 0; d < dims[i].nbDims; ++d) elems *= dims[i].d[d];
      if (elems != 0 && missing.empty())
        missing = detail::err(kInputNames[i],
                              "device memory for its " + std::to_string(elems) + " elements",
                              "a null pointer");
      return elems == 0 ? &kEmpty : nullptr;
    };
    p.key_lengths = static_cast<const int32_t*>(input(kKeyLengths));
    p.block_indices = static_cast<const int32_t*>(input(kBlockIndices));
    if (!p.block_indices) p.bi_heads = p.bi_k = 0;
    p.global_mask = static_cast<const int32_t*>(input(kGlobalMask));
    p.key_starts = static_cast<const int32_t*>(input(kKeyStarts));
    p.sinks = static_cast<const float*>(input(kSinks));
    if (!missing.empty()) {
      report_error(missing, recorder_);
      return -1;
    }
    const std::string u = cuda::unsupported(p);
    if (!u.empty()) {
      report_error(u, recorder_);
      return -1;
    }
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
  return guarded("getFieldsToSerialize",
                 static_cast<const nvinfer1::PluginFieldCollection*>(nullptr), recorder_,
                 [&]() -> const nvinfer1::PluginFieldCollection* {
                   // Every attribute, resolved as the creator reads it: createPlugin(kRUNTIME)
                   // on these fields gives an identical plugin.
                   ser_fields_.clear();
                   int x = 0;
#define SPATTN_SERIALIZE(TYPE, name, def, lo, hi, c_block, expect)                         \
  std::memcpy(&ser_values_[x], &attrs_.name, 4);                                           \
  ser_fields_.emplace_back(#name, &ser_values_[x], field_type(SPATTN_IS_FLOAT_##TYPE), 1); \
  ++x;
                   SPATTN_ATTRIBUTES(SPATTN_SERIALIZE)
#undef SPATTN_SERIALIZE
                   ser_collection_.nbFields = int32_t(ser_fields_.size());
                   ser_collection_.fields = ser_fields_.data();
                   return &ser_collection_;
                 });
}

// ---- SparseAttentionPluginCreator ----

SparseAttentionPluginCreator::SparseAttentionPluginCreator() {
  // The field names are the op's attributes: TensorRT's ONNX parser passes exactly the node
  // attributes named here (INT narrowed to INT32, FLOAT as FLOAT32).
  for (const FieldInfo& f : kFields)
    fields_.emplace_back(f.name, nullptr, field_type(f.is_float), 1);
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
