/* Direct C entry points of the SparseAttention kernels, for ctypes (tests, benchmarks) and for
 * programs that do not use ONNX Runtime or TensorRT. Pointers are raw host (CPU) or device (CUDA)
 * pointers to contiguous [B, H, L, D] tensors. */
#ifndef SPATTN_C_API_H_
#define SPATTN_C_API_H_

#include <stddef.h>
#include <stdint.h>

#include "spattn/attributes.h"

#if defined(_WIN32)
#define SPATTN_API __declspec(dllexport)
#else
#define SPATTN_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The attribute fields are expanded from attributes.h: those of c_block 1 where the original
 * layout had them, those of c_blocks 2 and 3 in the blocks appended at the end. */
#define SPATTN_C_ATTR_FIELD_1(TYPE, name, def, lo, hi, c_block, expect) \
  SPATTN_ATTR_IF_BLOCK_##c_block##_1(SPATTN_ATTR_CTYPE(TYPE) name;)
#define SPATTN_C_ATTR_FIELD_2(TYPE, name, def, lo, hi, c_block, expect) \
  SPATTN_ATTR_IF_BLOCK_##c_block##_2(SPATTN_ATTR_CTYPE(TYPE) name;)
#define SPATTN_C_ATTR_FIELD_3(TYPE, name, def, lo, hi, c_block, expect) \
  SPATTN_ATTR_IF_BLOCK_##c_block##_3(SPATTN_ATTR_CTYPE(TYPE) name;)

typedef struct spattn_args {
  const void* q;                /* [B, Hq, Lq, D] */
  const void* k;                /* [B, Hkv, Lk, D] */
  const void* v;                /* [B, Hkv, Lk, Dv] */
  void* o;                      /* [B, Hq, Lq, Dv] */
  const int32_t* key_lengths;   /* [B] or NULL */
  const int32_t* block_indices; /* [Hl, ceil(Lq / block_size), K] or NULL */
  int32_t dtype;                /* 0 float32, 1 float16, 2 bfloat16 */
  int32_t batch, heads_q, heads_kv, len_q, len_k, head_dim, head_dim_v;
  int32_t bi_heads, bi_k; /* block_indices dims 0 and 2 (ignored when NULL) */
  /* float scale (0: 1/sqrt(D)); int32_t window_left, window_right, causal, num_global, stride,
   * block_size, num_random, seed */
  SPATTN_ATTRIBUTES(SPATTN_C_ATTR_FIELD_1)
  void* stream;    /* cudaStream_t for the CUDA entry; ignored on CPU */
  void* workspace; /* device workspace for the CUDA entry */
  size_t workspace_bytes;
  int32_t num_threads; /* CPU entry: worker threads (0: hardware concurrency) */
  /* Appended in the second version of the struct (zero them to leave them off). */
  const int32_t* global_mask; /* [B, Lk] or NULL; nonzero marks a global token */
  const int32_t* key_starts;  /* [B] or NULL; keys j < key_starts[b] are padding */
  const float* sinks;         /* [Hq] float32 or NULL; a logit in each row's softmax denominator */
  /* float softcap (0: off) */
  SPATTN_ATTRIBUTES(SPATTN_C_ATTR_FIELD_2)
  /* The second version ended here, followed by 4 bytes of tail padding that a caller built
   * against it passes uninitialized within its args_size: never read, so that the third
   * version's fields start past it. */
  int32_t reserved_v2_padding;
  /* Appended in the third version: int32_t chunk_size (0: off) */
  SPATTN_ATTRIBUTES(SPATTN_C_ATTR_FIELD_3)
} spattn_args;

/* The struct grows only at its end. Each entry has a form that takes the caller's
 * sizeof(spattn_args) (the `_ex` entries): the fields past that size count as zero (off), so a
 * program built against an older header keeps working. The entries without a size read only the
 * first version of the struct (up to num_threads, SPATTN_ARGS_V1_SIZE bytes): their callers cannot
 * set the later fields. New code calls the `_ex` entries with sizeof(spattn_args). */
#define SPATTN_ARGS_V1_SIZE offsetof(spattn_args, global_mask)

/* All return 0 on success; otherwise write a message to err (if not NULL) and return non-zero. */
SPATTN_API int spattn_cpu_forward_ex(const spattn_args* args, size_t args_size, char* err,
                                     size_t err_len);
SPATTN_API int spattn_cuda_forward_ex(const spattn_args* args, size_t args_size, char* err,
                                      size_t err_len);
/* Workspace bytes spattn_cuda_forward_ex needs for these shapes (0 if the shapes are invalid). */
SPATTN_API size_t spattn_cuda_workspace_size_ex(const spattn_args* args, size_t args_size);
/* The same with args_size = SPATTN_ARGS_V1_SIZE. */
SPATTN_API int spattn_cpu_forward(const spattn_args* args, char* err, size_t err_len);
SPATTN_API int spattn_cuda_forward(const spattn_args* args, char* err, size_t err_len);
SPATTN_API size_t spattn_cuda_workspace_size(const spattn_args* args);
/* 1 if this build contains the CUDA kernels. */
SPATTN_API int spattn_has_cuda(void);
SPATTN_API const char* spattn_version(void);

#ifdef __cplusplus
}
#endif
#endif /* SPATTN_C_API_H_ */
