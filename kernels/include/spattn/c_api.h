/* Direct C entry points of the SparseAttention kernels, for ctypes (tests, benchmarks) and for
 * programs that do not use ONNX Runtime or TensorRT. Pointers are raw host (CPU) or device (CUDA)
 * pointers to contiguous [B, H, L, D] tensors. */
#ifndef SPATTN_C_API_H_
#define SPATTN_C_API_H_

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define SPATTN_API __declspec(dllexport)
#else
#define SPATTN_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

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
  float scale;            /* 0: 1/sqrt(D) */
  int32_t window_left, window_right, causal, num_global, stride, block_size, num_random, seed;
  void* stream;    /* cudaStream_t for the CUDA entry; ignored on CPU */
  void* workspace; /* device workspace for the CUDA entry */
  size_t workspace_bytes;
  int32_t num_threads; /* CPU entry: worker threads (0: hardware concurrency) */
} spattn_args;

/* All return 0 on success; otherwise write a message to err (if not NULL) and return non-zero. */
SPATTN_API int spattn_cpu_forward(const spattn_args* args, char* err, size_t err_len);
SPATTN_API int spattn_cuda_forward(const spattn_args* args, char* err, size_t err_len);
/* Workspace bytes spattn_cuda_forward needs for these shapes (0 if the shapes are invalid). */
SPATTN_API size_t spattn_cuda_workspace_size(const spattn_args* args);
/* 1 if this build contains the CUDA kernels. */
SPATTN_API int spattn_has_cuda(void);
SPATTN_API const char* spattn_version(void);

#ifdef __cplusplus
}
#endif
#endif /* SPATTN_C_API_H_ */
