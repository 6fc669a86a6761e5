// ONNX Runtime adapter of spattn::SparseAttention (docs/op-spec.md): a thin layer that reads the
// attributes, validates inputs with the shared rules (kernels/include/spattn/validate.h), fills the
// params struct and calls the shared CPU or CUDA launch entry. Written on ONNX Runtime's C API so
// no exception can cross the library boundary: every failure becomes an OrtStatus.
#include "sparse_attention_op.h"

#include <cmath>
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

// Evaluates an OrtStatus-returning API call; on failure, returns it from the enclosing function.
#define SPATTN_ORT_RETURN_IF_ERROR(expr) \
  do {                                   \
    OrtStatus* _st = (expr);             \
    if (_st) return _st;                 \
  } while (0)

OrtStatus* make_error(const std::string& msg, OrtErrorCode code = ORT_INVALID_ARGUMENT) {
  return g_api->CreateStatus(code, msg.c_str());
}

// Reads an INT attribute into *out; absent leaves *out (the default). A FLOAT attribute of that
// name is a type error.
OrtStatus* read_attr(const OrtKernelInfo* info, const char* name, int64_t* out) {
  int64_t v = 0;
  OrtStatus* st = g_api->KernelInfoGetAttribute_int64(info, name, &v);
  if (!st) {
    *out = v;
    return nullptr;
  }
  g_api->ReleaseStatus(st);
  float f = 0.f;
  st = g_api->KernelInfoGetAttribute_float(info, name, &f);
  if (!st)
    return make_error(std::string("SparseAttention: ") + name + ": an INT attribute, got a FLOAT");
  g_api->ReleaseStatus(st);
  return nullptr;
}

// Reads a FLOAT attribute into *out; absent leaves *out (the default). An INT attribute of that
// name is a type error.
OrtStatus* read_attr(const OrtKernelInfo* info, const char* name, double* out) {
  float v = 0.f;
  OrtStatus* st = g_api->KernelInfoGetAttribute_float(info, name, &v);
  if (!st) {
    *out = v;
    return nullptr;
  }
  g_api->ReleaseStatus(st);
  int64_t i = 0;
  st = g_api->KernelInfoGetAttribute_int64(info, name, &i);
  if (!st)
    return make_error(std::string("SparseAttention: ") + name + ": a FLOAT attribute, got an INT");
  g_api->ReleaseStatus(st);
  return nullptr;
}

// The kernel object: validated attributes plus the backend it runs on.
struct Kernel {
  PatternAttrs attrs;
  bool cuda = false;
  // ONNX Runtime's CUDA allocator, looked up on the first call that needs a workspace and kept
  // (a lookup per call costs more than some kernels at 16K).
  std::mutex alloc_mu;
  OrtAllocator* cuda_alloc = nullptr;
  ~Kernel() {
    if (cuda_alloc) g_api->ReleaseAllocator(cuda_alloc);
  }
};

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
      ptrs[i] = data;
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
    OrtAllocator* alloc = nullptr;
    if (bytes) {
      {
        std::lock_guard<std::mutex> lock(kernel->alloc_mu);
        if (!kernel->cuda_alloc) {
          int device = 0;
          cudaGetDevice(&device);
          OrtMemoryInfo* mem = nullptr;
          SPATTN_ORT_RETURN_IF_ERROR(
              g_api->CreateMemoryInfo("Cuda", OrtDeviceAllocator, device, OrtMemTypeDefault, &mem));
          OrtStatus* st = g_api->KernelContext_GetAllocator(ctx, mem, &kernel->cuda_alloc);
          g_api->ReleaseMemoryInfo(mem);
          if (st) {
            kernel->cuda_alloc = nullptr;
            return st;
          }
        }
        alloc = kernel->cuda_alloc;
      }
      ws = alloc->Alloc(alloc, bytes);
      if (!ws)
        return make_error("SparseAttention: could not allocate " + std::to_string(bytes) +
                              " bytes of CUDA workspace",
                          ORT_FAIL);
    }
    const cudaError_t rc = cuda::launch(p, ws, bytes, static_cast<cudaStream_t>(stream));
    if (ws) {
      // The allocator is stream-ordered for ONNX Runtime's compute stream, so the buffer can go
      // back right after the enqueue.
      alloc->Free(alloc, ws);
    }
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

struct SparseAttentionOp : OrtCustomOp {
  bool cuda;
  explicit SparseAttentionOp(bool on_cuda);
};

OrtStatus* ORT_API_CALL create_kernel(const OrtCustomOp* op, const OrtApi*,
                                      const OrtKernelInfo* info, void** out) {
  *out = nullptr;
  try {
    RawAttrs r;  // the defaults of attributes.h; every attribute of the table is read
#define SPATTN_READ_ATTR(TYPE, name, def, lo, hi, c_block, expect) \
  SPATTN_ORT_RETURN_IF_ERROR(read_attr(info, #name, &r.name));
    SPATTN_ATTRIBUTES(SPATTN_READ_ATTR)
#undef SPATTN_READ_ATTR
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

SparseAttentionOp::SparseAttentionOp(bool on_cuda) : OrtCustomOp{}, cuda(on_cuda) {
  version = ORT_API_VERSION;  // the headers we build against (1.21): loads in ONNX Runtime >= 1.21
  GetName = [](const OrtCustomOp*) { return "SparseAttention"; };
  GetExecutionProviderType = [](const OrtCustomOp* op) -> const char* {
    return static_cast<const SparseAttentionOp*>(op)->cuda ? "CUDAExecutionProvider"
                                                           : "CPUExecutionProvider";
  };
  GetInputTypeCount = [](const OrtCustomOp*) -> size_t { return size_t(kNumInputs); };
  GetInputType = [](const OrtCustomOp*, size_t i) {
    // query/key/value: float32, float16 or bfloat16 (checked at compute); sinks: float32; the
    // integer inputs: int32. ONNX Runtime gives every input declared UNDEFINED (and the output)
    // one type constraint, so only query/key/value may be.
    return i < 3 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED
                 : (i == size_t(kSinks) ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT
                                        : ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32);
  };
  GetOutputTypeCount = [](const OrtCustomOp*) -> size_t { return 1; };
  GetOutputType = [](const OrtCustomOp*, size_t) {
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  };
  GetInputCharacteristic = [](const OrtCustomOp*, size_t i) {
    return i < 3 ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
  };
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

SparseAttentionOp g_cpu_op(false);
#if defined(SPATTN_WITH_CUDA)
SparseAttentionOp g_cuda_op(true);
#endif

}  // namespace

OrtStatus* register_ops(OrtSessionOptions* options, const OrtApi* api) {
  g_api = api;
  OrtCustomOpDomain* domain = nullptr;
  SPATTN_ORT_RETURN_IF_ERROR(api->CreateCustomOpDomain("spattn", &domain));
  OrtStatus* st = api->CustomOpDomain_Add(domain, &g_cpu_op);
#if defined(SPATTN_WITH_CUDA)
  if (!st) st = api->CustomOpDomain_Add(domain, &g_cuda_op);
#endif
  if (!st) st = api->AddCustomOpDomain(options, domain);
  // The domain must outlive every session that uses it: it is intentionally not released.
  return st;
}

}  // namespace ort
}  // namespace spattn
