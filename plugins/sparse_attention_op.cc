// ONNX Runtime adapter of spattn::SparseAttention (docs/op-spec.md): a thin layer that reads the
// attributes, validates inputs with the shared rules (kernels/include/spattn/validate.h), fills the
// params struct and calls the shared CPU or CUDA launch entry. Written on ONNX Runtime's C API so
// no exception can cross the library boundary: every failure becomes an OrtStatus.
#include "sparse_attention_op.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <vector>

#include "spattn/cpu.h"
#include "spattn/params.h"
#include "spattn/pattern.h"
#include "spattn/validate.h"
#include "tsan_handoff.h"
#if defined(SPATTN_WITH_CUDA)
#include "spattn/cuda.h"
#endif

namespace spattn {
namespace ort {
namespace {

const OrtApi* g_api = nullptr;

// Inputs declared to ONNX Runtime: the op's kNumInputs and many more, which validate_inputs
// rejects by name ("input 8: not used by SparseAttention version 1"); only a node with more than
// kDeclaredInputs inputs meets ONNX Runtime's own count check.
constexpr size_t kDeclaredInputs = 64;

// Evaluates an OrtStatus-returning API call; on failure, returns it from the enclosing function.
#define SPATTN_ORT_RETURN_IF_ERROR(expr) \
  do {                                   \
    OrtStatus* _st = (expr);             \
    if (_st) return _st;                 \
  } while (0)

OrtStatus* make_error(const std::string& msg, OrtErrorCode code = ORT_INVALID_ARGUMENT) {
  return g_api->CreateStatus(code, msg.c_str());
}

// The ONNX type of attribute `name` when it is one that the C API can read (INT, FLOAT, STRING,
// INTS, FLOATS, TENSOR); null when absent (or of a type the C API has no reader for).
const char* attribute_type(const OrtKernelInfo* info, const char* name) {
  auto ok = [](OrtStatus* st) {
    if (!st) return true;
    g_api->ReleaseStatus(st);
    return false;
  };
  int64_t i = 0;
  float f = 0.f;
  size_t size = 0;
  if (ok(g_api->KernelInfoGetAttribute_int64(info, name, &i))) return "INT";
  if (ok(g_api->KernelInfoGetAttribute_float(info, name, &f))) return "FLOAT";
  if (ok(g_api->KernelInfoGetAttribute_string(info, name, nullptr, &size))) return "STRING";
  // Before the arrays: their readers also accept a TENSOR attribute.
  OrtAllocator* alloc = nullptr;
  if (ok(g_api->GetAllocatorWithDefaultOptions(&alloc))) {
    OrtValue* t = nullptr;
    if (ok(g_api->KernelInfoGetAttribute_tensor(info, name, alloc, &t))) {
      g_api->ReleaseValue(t);
      return "TENSOR";
    }
  }
  // Each array reader also succeeds, with no elements, on the other kind of list.
  size_t ints = 0, floats = 0;
  const bool is_list = ok(g_api->KernelInfoGetAttributeArray_int64(info, name, nullptr, &ints)) |
                       ok(g_api->KernelInfoGetAttributeArray_float(info, name, nullptr, &floats));
  if (ints > 0) return "INTS";
  if (floats > 0) return "FLOATS";
  if (is_list) return "INTS or FLOATS (empty)";
  return nullptr;
}

// Reads attribute `name` of ONNX type INT (is_int) or FLOAT; absent leaves the default. Any other
// type is an error naming the attribute and the expected type, never the default in silence.
template <typename T>
OrtStatus* read_attr(const OrtKernelInfo* info, const char* name, bool is_int, T* out) {
  if (is_int) {
    int64_t v = 0;
    OrtStatus* st = g_api->KernelInfoGetAttribute_int64(info, name, &v);
    if (!st) {
      *out = T(v);
      return nullptr;
    }
    g_api->ReleaseStatus(st);
  } else {
    float v = 0.f;
    OrtStatus* st = g_api->KernelInfoGetAttribute_float(info, name, &v);
    if (!st) {
      *out = T(v);
      return nullptr;
    }
    g_api->ReleaseStatus(st);
  }
  const char* got = attribute_type(info, name);
  if (!got) return nullptr;  // absent: the default
  return make_error(std::string("SparseAttention: ") + name + ": " +
                    (is_int ? "an INT attribute (one integer)" : "a FLOAT attribute (one float)") +
                    ", got an attribute of type " + got);
}

// The kernel object: validated attributes plus the backend it runs on.
struct Kernel {
  PatternAttrs attrs;
  bool cuda = false;
};

#if defined(SPATTN_WITH_CUDA)
// The CUDA workspace comes from a private stream-ordered memory pool, not from ONNX Runtime's
// arena. Concurrent Run() calls on one session run on different streams, and the arena hands a
// block freed right after the enqueue to the next caller at once: another run could then write
// it while this kernel still reads it (seen as wrong answers with 8 threads on one session).
// A stream-ordered free (cudaFreeAsync) lets the block be reused only once the work queued before
// it has finished, or behind an ordering dependency the driver inserts. The pool keeps its memory
// (unlimited release threshold), so a call costs no allocation from the driver once warm, and it
// is private, so the process's default pool keeps its own settings.
cudaError_t workspace_pool(int device, cudaMemPool_t* out) {
  constexpr int kMaxDevices = 64;
  static std::mutex mu;
  static cudaMemPool_t pools[kMaxDevices] = {};
  if (device < 0 || device >= kMaxDevices) return cudaErrorInvalidDevice;
  std::lock_guard<std::mutex> lock(mu);
  if (!pools[device]) {
    cudaMemPoolProps props = {};
    props.allocType = cudaMemAllocationTypePinned;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = device;
    cudaMemPool_t pool = nullptr;
    cudaError_t rc = cudaMemPoolCreate(&pool, &props);
    if (rc != cudaSuccess) return rc;
    uint64_t keep = UINT64_MAX;
    rc = cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
    if (rc != cudaSuccess) {
      cudaMemPoolDestroy(pool);
      return rc;
    }
    pools[device] = pool;
  }
  *out = pools[device];
  return cudaSuccess;
}
#endif

int32_t dtype_code(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
      return int32_t(DType::kFloat32);
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
      return int32_t(DType::kFloat16);
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16:
      return int32_t(DType::kBFloat16);
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32:
      return kInt32Code;
    default:
      return -1;
  }
}

const char* onnx_type_name(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
      return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
      return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16:
      return "bfloat16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE:
      return "float64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32:
      return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
      return "int64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8:
      return "int8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8:
      return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL:
      return "bool";
    default:
      return "another element type";
  }
}

// Describes input `index` of the context (absent optional inputs are null).
OrtStatus* describe(const OrtKernelContext* ctx, size_t index, size_t count, TensorDesc* d,
                    const OrtValue** value) {
  *value = nullptr;
  d->present = false;
  if (index >= count) return nullptr;
  SPATTN_ORT_RETURN_IF_ERROR(g_api->KernelContext_GetInput(ctx, index, value));
  if (!*value) return nullptr;
  OrtTensorTypeAndShapeInfo* info = nullptr;
  SPATTN_ORT_RETURN_IF_ERROR(g_api->GetTensorTypeAndShape(*value, &info));
  ONNXTensorElementDataType t = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  size_t rank = 0;
  OrtStatus* st = g_api->GetTensorElementType(info, &t);
  if (!st) st = g_api->GetDimensionsCount(info, &rank);
  int64_t dims[8] = {0};
  if (!st && rank <= 8) st = g_api->GetDimensions(info, dims, rank);
  g_api->ReleaseTensorTypeAndShapeInfo(info);
  if (st) return st;
  d->present = true;
  d->dtype = dtype_code(t);
  d->dtype_text = onnx_type_name(t);
  d->rank = int32_t(rank);
  for (size_t i = 0; i < rank && i < 8; ++i) d->dims[i] = dims[i];
  return nullptr;
}

struct ParallelForContext {
  const std::function<void(int64_t)>* fn;
};

void parallel_for_thunk(void* data, size_t index) {
  auto* pc = static_cast<ParallelForContext*>(data);
  SPATTN_TSAN_ACQUIRE(pc);
  (*pc->fn)(int64_t(index));
  SPATTN_TSAN_RELEASE(pc);
}

OrtStatus* compute(Kernel* kernel, OrtKernelContext* ctx) {
  size_t count = 0;
  SPATTN_ORT_RETURN_IF_ERROR(g_api->KernelContext_GetInputCount(ctx, &count));
  TensorDesc d[kNumInputs];
  const OrtValue* values[kNumInputs] = {};
  for (size_t i = 0; i < size_t(kNumInputs); ++i)
    SPATTN_ORT_RETURN_IF_ERROR(describe(ctx, i, count, &d[i], &values[i]));

  HeadDimSupport support = cpu_head_dim_support("the ONNX Runtime CPU execution provider");
#if defined(SPATTN_WITH_CUDA)
  if (kernel->cuda) support = cuda::head_dim_support();
#endif
  Params p;
  std::string e = validate_inputs(kernel->attrs, int(count), d, support, &p);
  if (!e.empty()) return make_error(e);

  const void* ptrs[kNumInputs] = {};
  for (int i = 0; i < kNumInputs; ++i)
    if (values[i]) {
      void* data = nullptr;  // GetTensorMutableData: the const variant is newer than 1.21
      SPATTN_ORT_RETURN_IF_ERROR(
          g_api->GetTensorMutableData(const_cast<OrtValue*>(values[i]), &data));
      // The CUDA EP hands a zero-size tensor (block_indices with K = 0, ...) a null pointer, and
      // the kernels tell a present input from an absent one by its pointer: a present empty
      // input must stay present (block_indices with K = 0 lists no block, it is not absent). It
      // has no element, so this pointer is never read.
      static const int64_t kEmpty = 0;
      ptrs[i] = data ? data : &kEmpty;
    }
  p.q = ptrs[kQuery];
  p.k = ptrs[kKey];
  p.v = ptrs[kValue];
  p.key_lengths = static_cast<const int32_t*>(ptrs[kKeyLengths]);
  p.block_indices = static_cast<const int32_t*>(ptrs[kBlockIndices]);
  p.global_mask = static_cast<const int32_t*>(ptrs[kGlobalMask]);
  p.key_starts = static_cast<const int32_t*>(ptrs[kKeyStarts]);
  p.sinks = static_cast<const float*>(ptrs[kSinks]);
#if defined(SPATTN_WITH_CUDA)
  if (kernel->cuda) {
    e = cuda::unsupported(p);
    if (!e.empty()) return make_error(e, ORT_NOT_IMPLEMENTED);
  }
#endif

  const int64_t out_dims[4] = {p.batch, p.heads_q, p.len_q, p.head_dim_v};
  OrtValue* out = nullptr;
  SPATTN_ORT_RETURN_IF_ERROR(g_api->KernelContext_GetOutput(ctx, 0, out_dims, 4, &out));
  SPATTN_ORT_RETURN_IF_ERROR(g_api->GetTensorMutableData(out, &p.o));

  if (kernel->cuda) {
#if defined(SPATTN_WITH_CUDA)
    void* stream = nullptr;
    SPATTN_ORT_RETURN_IF_ERROR(g_api->KernelContext_GetGPUComputeStream(ctx, &stream));
    const size_t bytes = cuda::workspace_size_current_device(p);
    void* ws = nullptr;
    if (bytes) {
      int device = 0;
      cudaMemPool_t pool = nullptr;
      cudaError_t arc = cudaGetDevice(&device);
      if (arc == cudaSuccess) arc = workspace_pool(device, &pool);
      if (arc == cudaSuccess)
        arc = cudaMallocFromPoolAsync(&ws, bytes, pool, static_cast<cudaStream_t>(stream));
      if (arc != cudaSuccess)
        return make_error("SparseAttention: could not allocate " + std::to_string(bytes) +
                              " bytes of CUDA workspace: " + cudaGetErrorString(arc),
                          ORT_FAIL);
    }
    const cudaError_t rc = cuda::launch(p, ws, bytes, static_cast<cudaStream_t>(stream));
    if (ws) cudaFreeAsync(ws, static_cast<cudaStream_t>(stream));
    if (rc != cudaSuccess)
      return make_error(
          std::string("SparseAttention: CUDA launch failed: ") + cudaGetErrorString(rc), ORT_FAIL);
    return nullptr;
#else
    return make_error("SparseAttention: this library was built without CUDA kernels", ORT_FAIL);
#endif
  }

  // CPU: value checks on host memory, then the kernel on ONNX Runtime's intra-op thread pool.
  e = validate_values(p);
  if (!e.empty()) return make_error(e);
  cpu::ParallelFor pf = [ctx](int64_t n, const std::function<void(int64_t)>& fn) {
    ParallelForContext pc{&fn};
    SPATTN_TSAN_RELEASE(&pc);
    OrtStatus* st = g_api->KernelContext_ParallelFor(ctx, parallel_for_thunk, size_t(n), 0, &pc);
    SPATTN_TSAN_ACQUIRE(&pc);
    if (st) {  // no thread pool available: run inline
      g_api->ReleaseStatus(st);
      for (int64_t i = 0; i < n; ++i) fn(i);
    }
  };
  e = cpu::run(p, pf);
  if (!e.empty()) return make_error(e, ORT_FAIL);
  return nullptr;
}

// ---- OrtCustomOp callbacks ----

// One registration per query type: query and output declared of that type (so ONNX Runtime
// infers the output type from it, whatever the other inputs are), every other input of any type;
// and a last one with query of any type, so that a query of another type reaches
// check_input_types instead of failing ONNX Runtime's kernel match.
struct SparseAttentionOp : OrtCustomOp {
  bool cuda;
  ONNXTensorElementDataType query_type;
  SparseAttentionOp(bool on_cuda, ONNXTensorElementDataType query_type);
};

// The input count and element types of the node, checked when the session loads the model: the
// op declares its inputs permissively (see GetInputType), so that these messages, which name the
// op's inputs, are the ones a user sees instead of ONNX Runtime's graph checks.
OrtStatus* check_input_types(const OrtKernelInfo* info) {
  size_t count = 0;
  SPATTN_ORT_RETURN_IF_ERROR(g_api->KernelInfo_GetInputCount(info, &count));
  TensorDesc d[kNumInputs];
  for (size_t i = 0; i < count && i < size_t(kNumInputs); ++i) {
    size_t len = 0;  // an omitted optional input has the empty name
    SPATTN_ORT_RETURN_IF_ERROR(g_api->KernelInfo_GetInputName(info, i, nullptr, &len));
    if (len <= 1) continue;
    OrtTypeInfo* type = nullptr;
    SPATTN_ORT_RETURN_IF_ERROR(g_api->KernelInfo_GetInputTypeInfo(info, i, &type));
    const OrtTensorTypeAndShapeInfo* tensor = nullptr;  // owned by `type`
    ONNXTensorElementDataType t = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    OrtStatus* st = g_api->CastTypeInfoToTensorInfo(type, &tensor);
    if (!st && tensor) st = g_api->GetTensorElementType(tensor, &t);
    g_api->ReleaseTypeInfo(type);
    if (st) return st;
    d[i].present = true;
    d[i].dtype = dtype_code(t);
    d[i].dtype_text = tensor ? onnx_type_name(t) : "a value that is not a tensor";
  }
  const std::string e = validate_input_types(int(count), d);
  return e.empty() ? nullptr : make_error(e);
}

OrtStatus* ORT_API_CALL create_kernel(const OrtCustomOp* op, const OrtApi*,
                                      const OrtKernelInfo* info, void** out) {
  *out = nullptr;
  try {
    RawAttrs r;  // the defaults of attributes.h; every attribute of the table is read
#define SPATTN_ATTR_IS_INT_INT true
#define SPATTN_ATTR_IS_INT_FLOAT false
#define SPATTN_READ_ATTR(TYPE, name, def, lo, hi, c_block, expect) \
  SPATTN_ORT_RETURN_IF_ERROR(read_attr(info, #name, SPATTN_ATTR_IS_INT_##TYPE, &r.name));
    SPATTN_ATTRIBUTES(SPATTN_READ_ATTR)
#undef SPATTN_READ_ATTR
#undef SPATTN_ATTR_IS_INT_INT
#undef SPATTN_ATTR_IS_INT_FLOAT
    SPATTN_ORT_RETURN_IF_ERROR(check_input_types(info));
    auto* k = new Kernel();
    const std::string e = validate_attrs(r, &k->attrs);
    if (!e.empty()) {
      delete k;
      return make_error(e);
    }
    k->cuda = static_cast<const SparseAttentionOp*>(op)->cuda;
    *out = k;
    return nullptr;
  } catch (const std::exception& ex) {
    return make_error(std::string("SparseAttention: ") + ex.what(), ORT_FAIL);
  }
}

OrtStatus* ORT_API_CALL kernel_compute(void* kernel, OrtKernelContext* ctx) {
  try {
    return compute(static_cast<Kernel*>(kernel), ctx);
  } catch (const std::exception& ex) {
    return make_error(std::string("SparseAttention: ") + ex.what(), ORT_FAIL);
  } catch (...) {
    return make_error("SparseAttention: unknown internal error", ORT_FAIL);
  }
}

void ORT_API_CALL kernel_destroy(void* kernel) { delete static_cast<Kernel*>(kernel); }

// Output shape [B, Hq, Lq, Dv] and type of query. ONNX Runtime ignores a failing status here, so
// this only infers; compute() validates. The input infos belong to ONNX Runtime.
OrtStatus* ORT_API_CALL infer_shape(const OrtCustomOp*, OrtShapeInferContext* ctx) {
  size_t n = 0;
  SPATTN_ORT_RETURN_IF_ERROR(g_api->ShapeInferContext_GetInputCount(ctx, &n));
  if (n < 3) return make_error("SparseAttention: query, key and value are required");
  OrtTensorTypeAndShapeInfo *q = nullptr, *v = nullptr;
  SPATTN_ORT_RETURN_IF_ERROR(g_api->ShapeInferContext_GetInputTypeShape(ctx, 0, &q));
  SPATTN_ORT_RETURN_IF_ERROR(g_api->ShapeInferContext_GetInputTypeShape(ctx, 2, &v));
  size_t qr = 0, vr = 0;
  SPATTN_ORT_RETURN_IF_ERROR(g_api->GetDimensionsCount(q, &qr));
  SPATTN_ORT_RETURN_IF_ERROR(g_api->GetDimensionsCount(v, &vr));
  if (qr != 4 || vr != 4) return make_error("SparseAttention: query and value must have rank 4");
  int64_t qd[4], vd[4];
  const char* qs[4] = {"", "", "", ""};
  const char* vs[4] = {"", "", "", ""};
  ONNXTensorElementDataType t = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  SPATTN_ORT_RETURN_IF_ERROR(g_api->GetTensorElementType(q, &t));
  SPATTN_ORT_RETURN_IF_ERROR(g_api->GetDimensions(q, qd, 4));
  SPATTN_ORT_RETURN_IF_ERROR(g_api->GetDimensions(v, vd, 4));
  SPATTN_ORT_RETURN_IF_ERROR(g_api->GetSymbolicDimensions(q, qs, 4));
  SPATTN_ORT_RETURN_IF_ERROR(g_api->GetSymbolicDimensions(v, vs, 4));
  const int64_t od[4] = {qd[0], qd[1], qd[2], vd[3]};
  const char* os[4] = {qs[0] ? qs[0] : "", qs[1] ? qs[1] : "", qs[2] ? qs[2] : "",
                       vs[3] ? vs[3] : ""};
  OrtTensorTypeAndShapeInfo* out = nullptr;
  SPATTN_ORT_RETURN_IF_ERROR(g_api->CreateTensorTypeAndShapeInfo(&out));
  OrtStatus* st = g_api->SetTensorElementType(out, t);
  if (!st) st = g_api->SetDimensions(out, od, 4);
  if (!st) st = g_api->SetSymbolicDimensions(out, os, 4);
  if (!st) st = g_api->ShapeInferContext_SetOutputTypeShape(ctx, 0, out);
  g_api->ReleaseTensorTypeAndShapeInfo(out);
  return st;
}

SparseAttentionOp::SparseAttentionOp(bool on_cuda, ONNXTensorElementDataType qt)
    : OrtCustomOp{}, cuda(on_cuda), query_type(qt) {
  version = ORT_API_VERSION;  // the headers we build against (1.21): loads in ONNX Runtime >= 1.21
  GetName = [](const OrtCustomOp*) { return "SparseAttention"; };
  GetExecutionProviderType = [](const OrtCustomOp* op) -> const char* {
    return static_cast<const SparseAttentionOp*>(op)->cuda ? "CUDAExecutionProvider"
                                                           : "CPUExecutionProvider";
  };
  // Every input is declared optional and of any type, and more inputs are declared than the op
  // has: ONNX Runtime's own checks of types and input counts would name graph tensors and schema
  // positions; ours (check_input_types at load, validate_inputs at run) name the op's inputs (op
  // spec). (A variadic last input would not do: ONNX counts the optional inputs before it as
  // required.)
  GetInputTypeCount = [](const OrtCustomOp*) -> size_t { return kDeclaredInputs; };
  GetInputType = [](const OrtCustomOp* op, size_t i) {
    const ONNXTensorElementDataType qt = static_cast<const SparseAttentionOp*>(op)->query_type;
    if (i == 0) return qt;
    // The registration for a query of another type: ONNX Runtime gives an output of any type the
    // type of the last input of any type, so the optional inputs are declared with their own
    // types here; the output then follows value, and the node reaches check_input_types, whose
    // message names query, instead of failing type inference against key_starts or sinks.
    if (qt == ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED && i >= size_t(kKeyLengths) &&
        i < size_t(kNumInputs))
      return i == size_t(kSinks) ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT
                                 : ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  };
  GetOutputTypeCount = [](const OrtCustomOp*) -> size_t { return 1; };
  GetOutputType = [](const OrtCustomOp* op, size_t) {
    return static_cast<const SparseAttentionOp*>(op)->query_type;
  };
  GetInputCharacteristic = [](const OrtCustomOp*, size_t) { return INPUT_OUTPUT_OPTIONAL; };
  GetOutputCharacteristic = [](const OrtCustomOp*, size_t) { return INPUT_OUTPUT_REQUIRED; };
  GetInputMemoryType = [](const OrtCustomOp*, size_t) { return OrtMemTypeDefault; };
  GetVariadicInputMinArity = [](const OrtCustomOp*) { return 1; };
  GetVariadicInputHomogeneity = [](const OrtCustomOp*) { return 1; };
  GetVariadicOutputMinArity = [](const OrtCustomOp*) { return 1; };
  GetVariadicOutputHomogeneity = [](const OrtCustomOp*) { return 1; };
  CreateKernel = nullptr;
  KernelCompute = nullptr;
  KernelDestroy = kernel_destroy;
  CreateKernelV2 = create_kernel;
  KernelComputeV2 = kernel_compute;
  InferOutputShapeFn = infer_shape;
  GetStartVersion = [](const OrtCustomOp*) { return 1; };
  GetEndVersion = [](const OrtCustomOp*) { return 1; };
  GetMayInplace = nullptr;
  ReleaseMayInplace = nullptr;
  GetAliasMap = nullptr;
  ReleaseAliasMap = nullptr;
}

constexpr ONNXTensorElementDataType kQueryTypes[] = {
    ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16,
    ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16, ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED};
SparseAttentionOp g_cpu_ops[] = {{false, kQueryTypes[0]},
                                 {false, kQueryTypes[1]},
                                 {false, kQueryTypes[2]},
                                 {false, kQueryTypes[3]}};
#if defined(SPATTN_WITH_CUDA)
SparseAttentionOp g_cuda_ops[] = {
    {true, kQueryTypes[0]}, {true, kQueryTypes[1]}, {true, kQueryTypes[2]}, {true, kQueryTypes[3]}};
#endif

}  // namespace

OrtStatus* register_ops(OrtSessionOptions* options, const OrtApi* api) {
  g_api = api;
  OrtCustomOpDomain* domain = nullptr;
  SPATTN_ORT_RETURN_IF_ERROR(api->CreateCustomOpDomain("spattn", &domain));
  OrtStatus* st = nullptr;
  for (SparseAttentionOp& op : g_cpu_ops)
    if (!st) st = api->CustomOpDomain_Add(domain, &op);
#if defined(SPATTN_WITH_CUDA)
  for (SparseAttentionOp& op : g_cuda_ops)
    if (!st) st = api->CustomOpDomain_Add(domain, &op);
#endif
  if (!st) st = api->AddCustomOpDomain(options, domain);
  // The domain must outlive every session that uses it: it is intentionally not released.
  return st;
}

}  // namespace ort
}  // namespace spattn
