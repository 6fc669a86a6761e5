// The direct C API (c_api.h) over the CPU and CUDA launch entries.
#include "spattn/c_api.h"

#include <cstddef>
#include <cstdio>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <string>

#include "spattn/cpu.h"
#include "spattn/params.h"
#include "spattn/validate.h"
#if defined(SPATTN_WITH_CUDA)
#include "spattn/cuda.h"
#endif

namespace {

int fail(const std::string& msg, char* err, size_t err_len) {
  if (err && err_len) std::snprintf(err, err_len, "%s", msg.c_str());
  return 1;
}

spattn::TensorDesc desc(int32_t dtype, std::initializer_list<int64_t> dims) {
  spattn::TensorDesc t;
  t.present = true;
  t.dtype = dtype;
  t.dtype_text = dtype == spattn::kInt32Code  ? "int32"
                 : (dtype >= 0 && dtype <= 2) ? spattn::dtype_name(spattn::DType(dtype))
                                              : std::string("dtype code ") + std::to_string(dtype);
  t.rank = int32_t(dims.size());
  int i = 0;
  for (int64_t d : dims) t.dims[i++] = d;
  return t;
}

// The caller's struct of `size` bytes as the whole current struct: the fields past `size` zero.
std::string read_args(const spattn_args* in, size_t size, spattn_args* out) {
  if (!in) return "SparseAttention: args: a non-null spattn_args, got NULL";
  if (size < SPATTN_ARGS_V1_SIZE)
    return "SparseAttention: args: args_size of at least " + std::to_string(SPATTN_ARGS_V1_SIZE) +
           " bytes (the first spattn_args), got " + std::to_string(size);
  std::memset(out, 0, sizeof(*out));
  std::memcpy(out, in, size < sizeof(*out) ? size : sizeof(*out));
  return {};
}

// Validates the arguments against the spec and fills the params struct.
std::string to_params(const spattn_args* a, const spattn::HeadDimSupport& support,
                      spattn::Params* p, bool need_pointers = true) {
  spattn::RawAttrs r;
#define SPATTN_FROM_ARGS(TYPE, name, def, lo, hi, c_block, expect) r.name = a->name;
  SPATTN_ATTRIBUTES(SPATTN_FROM_ARGS)
#undef SPATTN_FROM_ARGS
  spattn::PatternAttrs attrs;
  std::string e = spattn::validate_attrs(r, &attrs);
  if (!e.empty()) return e;
  spattn::TensorDesc in[spattn::kNumInputs];
  in[spattn::kQuery] = desc(a->dtype, {a->batch, a->heads_q, a->len_q, a->head_dim});
  in[spattn::kKey] = desc(a->dtype, {a->batch, a->heads_kv, a->len_k, a->head_dim});
  in[spattn::kValue] = desc(a->dtype, {a->batch, a->heads_kv, a->len_k, a->head_dim_v});
  if (a->key_lengths) in[spattn::kKeyLengths] = desc(spattn::kInt32Code, {a->batch});
  const int64_t bs = attrs.block_size;
  if (a->block_indices)
    in[spattn::kBlockIndices] =
        desc(spattn::kInt32Code, {a->bi_heads, (int64_t(a->len_q) + bs - 1) / bs, a->bi_k});
  if (a->global_mask) in[spattn::kGlobalMask] = desc(spattn::kInt32Code, {a->batch, a->len_k});
  if (a->key_starts) in[spattn::kKeyStarts] = desc(spattn::kInt32Code, {a->batch});
  if (a->sinks) in[spattn::kSinks] = desc(int32_t(spattn::DType::kFloat32), {a->heads_q});
  int num_inputs = 3;  // the last present input decides (absent optionals before it count)
  for (int i = 3; i < spattn::kNumInputs; ++i)
    if (in[i].present) num_inputs = i + 1;
  e = spattn::validate_inputs(attrs, num_inputs, in, support, p);
  if (!e.empty()) return e;
  if (need_pointers && (!a->q || !a->k || !a->v || !a->o))
    return "SparseAttention: query/key/value/output: non-null pointers";
  p->q = a->q;
  p->k = a->k;
  p->v = a->v;
  p->o = a->o;
  p->key_lengths = a->key_lengths;
  p->block_indices = a->block_indices;
  p->global_mask = a->global_mask;
  p->key_starts = a->key_starts;
  p->sinks = a->sinks;
  return {};
}

}  // namespace

extern "C" {

int spattn_cpu_forward_ex(const spattn_args* in, size_t args_size, char* err, size_t err_len) {
  try {
    spattn_args args;
    const std::string r = read_args(in, args_size, &args);
    if (!r.empty()) return fail(r, err, err_len);
    const spattn_args* a = &args;
    spattn::Params p;
    std::string e = to_params(a, spattn::cpu_head_dim_support(), &p);
    if (e.empty()) e = spattn::validate_values(p);
    if (e.empty()) e = spattn::cpu::run(p, spattn::cpu::thread_parallel_for(a->num_threads));
    return e.empty() ? 0 : fail(e, err, err_len);
  } catch (const std::exception& ex) {
    return fail(std::string("SparseAttention: internal error: ") + ex.what(), err, err_len);
  } catch (...) {
    return fail("SparseAttention: internal error", err, err_len);
  }
}

int spattn_cuda_forward_ex(const spattn_args* in, size_t args_size, char* err, size_t err_len) {
#if defined(SPATTN_WITH_CUDA)
  try {
    spattn_args args;
    const std::string r = read_args(in, args_size, &args);
    if (!r.empty()) return fail(r, err, err_len);
    const spattn_args* a = &args;
    spattn::Params p;
    std::string e = to_params(a, spattn::cuda::head_dim_support(), &p);
    if (e.empty()) e = spattn::cuda::unsupported(p);
    if (!e.empty()) return fail(e, err, err_len);
    const size_t need = spattn::cuda::workspace_size(p);
    if (a->workspace_bytes < need || (need && !a->workspace))
      return fail("SparseAttention: workspace: at least " + std::to_string(need) + " bytes, got " +
                      std::to_string(a->workspace_bytes),
                  err, err_len);
    cudaError_t rc = spattn::cuda::launch(p, a->workspace, a->workspace_bytes,
                                          static_cast<cudaStream_t>(a->stream));
    if (rc != cudaSuccess)
      return fail(std::string("SparseAttention: CUDA launch failed: ") + cudaGetErrorString(rc),
                  err, err_len);
    return 0;
  } catch (const std::exception& ex) {
    return fail(std::string("SparseAttention: internal error: ") + ex.what(), err, err_len);
  } catch (...) {
    return fail("SparseAttention: internal error", err, err_len);
  }
#else
  (void)in;
  (void)args_size;
  return fail(
      "SparseAttention: this build of libspattn_kernels has no CUDA kernels (nvcc was not found at "
      "build time)",
      err, err_len);
#endif
}

size_t spattn_cuda_workspace_size_ex(const spattn_args* in, size_t args_size) {
#if defined(SPATTN_WITH_CUDA)
  try {
    spattn_args args;
    if (!read_args(in, args_size, &args).empty()) return 0;
    const spattn_args* a = &args;
    spattn::Params p;
    // Sizes only: the tensors need not exist yet.
    if (!to_params(a, spattn::cuda::head_dim_support(), &p, false).empty()) return 0;
    return spattn::cuda::workspace_size(p);
  } catch (...) {
    return 0;
  }
#else
  (void)in;
  (void)args_size;
  return 0;
#endif
}

int spattn_cpu_forward(const spattn_args* a, char* err, size_t err_len) {
  return spattn_cpu_forward_ex(a, SPATTN_ARGS_V1_SIZE, err, err_len);
}

int spattn_cuda_forward(const spattn_args* a, char* err, size_t err_len) {
  return spattn_cuda_forward_ex(a, SPATTN_ARGS_V1_SIZE, err, err_len);
}

size_t spattn_cuda_workspace_size(const spattn_args* a) {
  return spattn_cuda_workspace_size_ex(a, SPATTN_ARGS_V1_SIZE);
}

int spattn_has_cuda(void) {
#if defined(SPATTN_WITH_CUDA)
  return 1;
#else
  return 0;
#endif
}

const char* spattn_version(void) { return "0.1.0"; }

}  // extern "C"
