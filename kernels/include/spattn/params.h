// The one parameter struct of the SparseAttention kernels (docs/op-spec.md).
//
// Plain C++17, usable from host code, CUDA device code, the ONNX Runtime adapter and the TensorRT
// adapter alike. It includes no ONNX Runtime, TensorRT or Torch header.
#pragma once

#include <cstdint>

#include "spattn/attributes.h"

namespace spattn {

// Element type of query, key, value and output (one type for all four).
enum class DType : int32_t { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat16:
      return "float16";
    case DType::kBFloat16:
      return "bfloat16";
  }
  return "unknown";
}

inline int dtype_size(DType t) { return t == DType::kFloat32 ? 4 : 2; }

// The op's attributes (attributes.h), already validated (validate.h) and resolved: scale is never
// 0 here (1/sqrt(D) when the attribute is 0 or absent). softcap > 0: scores become
// softcap * tanh(s / softcap) after scaling. chunk_size > 0: the local band stops at the query's
// chunk (Pattern::chunk_begin).
struct PatternAttrs {
#define SPATTN_ATTR_FIELD(TYPE, name, def, lo, hi, c_block, expect) \
  SPATTN_ATTR_CTYPE(TYPE) name = SPATTN_ATTR_CTYPE(TYPE)(def);
  SPATTN_ATTRIBUTES(SPATTN_ATTR_FIELD)
#undef SPATTN_ATTR_FIELD
};

// Head dims D = Dv the CUDA kernels (and so the TensorRT plugin) take: one row per head dim, so
// that the kernel instantiations, the dispatch and the validation expand the same list.
#define SPATTN_CUDA_HEAD_DIMS(X) X(32) X(64) X(96) X(128) X(256)
#define SPATTN_HEAD_DIM_ENTRY(d) d,
constexpr int32_t kCudaHeadDims[] = {SPATTN_CUDA_HEAD_DIMS(SPATTN_HEAD_DIM_ENTRY)};
#undef SPATTN_HEAD_DIM_ENTRY
constexpr int32_t kNumCudaHeadDims = int32_t(sizeof(kCudaHeadDims) / sizeof(kCudaHeadDims[0]));
// Largest Lq and Lk (docs/op-spec.md, "Inputs"): 2^30, so that index arithmetic of accepted
// sizes (i + window_right, the position i + Lk - Lq, block and tile counts) stays far from
// int32 overflow.
constexpr int64_t kMaxSeqLen = int64_t(1) << 30;
// Largest head dim (D and Dv each) of the CPU kernel.
constexpr int32_t kCpuMaxHeadDim = 512;

// Everything one forward call needs. Tensors are addressed with element strides; the last
// dimension (head dim) of query/key/value/output is contiguous.
struct Params {
  // Tensors (device pointers for the CUDA launch, host pointers for the CPU run).
  const void* q = nullptr;                 // [B, Hq, Lq, D]
  const void* k = nullptr;                 // [B, Hkv, Lk, D]
  const void* v = nullptr;                 // [B, Hkv, Lk, Dv]
  void* o = nullptr;                       // [B, Hq, Lq, Dv]
  const int32_t* key_lengths = nullptr;    // [B] or null (all Lk); validated to lie in [0, Lk]
  const int32_t* block_indices = nullptr;  // [Hl, ceil(Lq/block_size), K] or null; -1 padded
  const int32_t* global_mask = nullptr;    // [B, Lk] or null; nonzero marks a global token
  const int32_t* key_starts = nullptr;  // [B] or null (all 0); keys j < key_starts[b] are padding
  const float* sinks = nullptr;         // [Hq] float32 or null; a logit in each row's denominator

  DType dtype = DType::kFloat32;

  // Sizes.
  int32_t batch = 0;       // B
  int32_t heads_q = 0;     // Hq
  int32_t heads_kv = 0;    // Hkv; Hq % Hkv == 0, query head h reads kv head h / (Hq / Hkv)
  int32_t len_q = 0;       // Lq
  int32_t len_k = 0;       // Lk
  int32_t head_dim = 0;    // D
  int32_t head_dim_v = 0;  // Dv
  int32_t bi_heads = 0;    // Hl: 1 or Hq (0 when block_indices is null)
  int32_t bi_k = 0;        // K: entries per query block

  // Element strides (batch, head, sequence). Contiguous tensors: head stride = L * D, etc.
  int64_t q_batch_stride = 0, q_head_stride = 0, q_row_stride = 0;
  int64_t k_batch_stride = 0, k_head_stride = 0, k_row_stride = 0;
  int64_t v_batch_stride = 0, v_head_stride = 0, v_row_stride = 0;
  int64_t o_batch_stride = 0, o_head_stride = 0, o_row_stride = 0;

  PatternAttrs pattern;
};

// Fills the strides of contiguous [B, H, L, D] tensors.
inline void set_contiguous_strides(Params& p) {
  p.q_row_stride = p.head_dim;
  p.q_head_stride = int64_t(p.len_q) * p.head_dim;
  p.q_batch_stride = p.q_head_stride * p.heads_q;
  p.k_row_stride = p.head_dim;
  p.k_head_stride = int64_t(p.len_k) * p.head_dim;
  p.k_batch_stride = p.k_head_stride * p.heads_kv;
  p.v_row_stride = p.head_dim_v;
  p.v_head_stride = int64_t(p.len_k) * p.head_dim_v;
  p.v_batch_stride = p.v_head_stride * p.heads_kv;
  p.o_row_stride = p.head_dim_v;
  p.o_head_stride = int64_t(p.len_q) * p.head_dim_v;
  p.o_batch_stride = p.o_head_stride * p.heads_q;
}

}  // namespace spattn
