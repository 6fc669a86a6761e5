// The direct C API (c_api.h) over the CPU and CUDA launch entries.
#include "spattn/c_api.h"

#include <cstdio>
#include <cstring>
#include <exception>
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

spattn::TensorDesc desc(const char* what, int32_t dtype, std::initializer_list<int64_t> dims) {
  spattn::TensorDesc t;
  t.present = true;
  t.dtype = dtype;
  t.dtype_text = dtype == spattn::kInt32Code  ? "int32"
                 : (dtype >= 0 && dtype <= 2) ? spattn::dtype_name(spattn::DType(dtype))
                                              : std::string("dtype code ") + std::to_string(dtype);
  (void)what;
  t.rank = int32_t(dims.size());
  int i = 0;
  for (int64_t d : dims) t.dims[i++] = d;
  return t;
}

// Validates the arguments against the spec and fills the params struct.
std::string to_params(const spattn_args* a, const spattn::HeadDimSupport& support,
                      spattn::Params* p, bool need_pointers = true) {
  if (!a) return "SparseAttention: args: a non-null spattn_args, got NULL";
  spattn::RawAttrs r;
  r.scale = a->scale;
  r.window_left = a->window_left;
  r.window_right = a->window_right;
  r.causal = a->causal;
  r.num_global = a->num_global;
  r.stride = a->stride;
  r.block_size = a->block_size;
  r.num_random = a->num_random;
  r.seed = a->seed;
  spattn::PatternAttrs attrs;
  std::string e = spattn::validate_attrs(r, &attrs);
  if (!e.empty()) return e;
  const auto q = desc("query", a->dtype, {a->batch, a->heads_q, a->len_q, a->head_dim});
  const auto k = desc("key", a->dtype, {a->batch, a->heads_kv, a->len_k, a->head_dim});
  const auto v = desc("value", a->dtype, {a->batch, a->heads_kv, a->len_k, a->head_dim_v});
  spattn::TensorDesc kl, bi;
  if (a->key_lengths) kl = desc("key_lengths", spattn::kInt32Code, {a->batch});
  const int64_t bs = attrs.block_size;
  if (a->block_indices)
    bi =
        desc("block_indices", spattn::kInt32Code, {a->bi_heads, (a->len_q + bs - 1) / bs, a->bi_k});
  e = spattn::validate_inputs(attrs, a->block_indices ? 5 : (a->key_lengths ? 4 : 3), q, k, v, kl,
                              bi, support, p);
  if (!e.empty()) return e;
  if (need_pointers && (!a->q || !a->k || !a->v || !a->o))
    return "SparseAttention: query/key/value/output: non-null pointers";
  p->q = a->q;
  p->k = a->k;
  p->v = a->v;
  p->o = a->o;
  p->key_lengths = a->key_lengths;
  p->block_indices = a->block_indices;
  return {};
}

}  // namespace

extern "C" {

int spattn_cpu_forward(const spattn_args* a, char* err, size_t err_len) {
  try {
    spattn::Params p;
    spattn::HeadDimSupport support;
    support.backend = "CPU";
    std::string e = to_params(a, support, &p);
    if (e.empty() && p.key_lengths)
      e = spattn::validate_key_lengths_values(p.key_lengths, p.batch, p.len_k);
    if (e.empty() && p.block_indices)
      e = spattn::validate_block_indices_values(
          p.block_indices,
          int64_t(p.bi_heads) * spattn::ceil_div(p.len_q, p.pattern.block_size) * p.bi_k, p.len_k,
          p.pattern.block_size);
    if (e.empty()) e = spattn::cpu::run(p, spattn::cpu::thread_parallel_for(a->num_threads));
    return e.empty() ? 0 : fail(e, err, err_len);
  } catch (const std::exception& ex) {
    return fail(std::string("SparseAttention: internal error: ") + ex.what(), err, err_len);
  } catch (...) {
    return fail("SparseAttention: internal error", err, err_len);
  }
}

int spattn_cuda_forward(const spattn_args* a, char* err, size_t err_len) {
#if defined(SPATTN_WITH_CUDA)
  try {
    spattn::Params p;
    std::string e = to_params(a, spattn::cuda::head_dim_support(), &p);
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
  (void)a;
  return fail(
      "SparseAttention: this build of libspattn_kernels has no CUDA kernels (nvcc was not found at "
      "build time)",
      err, err_len);
#endif
}

size_t spattn_cuda_workspace_size(const spattn_args* a) {
#if defined(SPATTN_WITH_CUDA)
  try {
    spattn::Params p;
    // Sizes only: the tensors need not exist yet.
    if (!to_params(a, spattn::cuda::head_dim_support(), &p, false).empty()) return 0;
    return spattn::cuda::workspace_size(p);
  } catch (...) {
    return 0;
  }
#else
  (void)a;
  return 0;
#endif
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
