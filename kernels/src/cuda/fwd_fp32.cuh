// Block-sparse forward for float32 on CUDA cores: the same visit list, schedule and online softmax
// as the tensor-core kernel, with float32 products (the spec asks for them; TF32 would not meet
// the float32 tolerance). Two threads share a query row: each scores half of the key tile and
// accumulates half of the output columns.
#pragma once

#include "common.cuh"

namespace spattn {
namespace cuda {

template <int D>
struct Fp32Kernel {
  static constexpr int kRows = kBlockMF32;  // launch() sets KParams::block_m to this
  static constexpr int kLd = D + 1;  // padded rows: the 16 rows a warp reads hit distinct banks
  static constexpr int kHalfN = kBlockN / 2;
  static constexpr int kHalfD = D / 2;
  static constexpr size_t kSmemTiles =
      sizeof(float) * (size_t(kRows) * kLd + size_t(kBlockN) * kLd + size_t(kBlockN) * D +
                       size_t(kRows) * (kBlockN + 1));
  static constexpr size_t kSmem = kSmemTiles + sizeof(VisitSmem);

  __device__ static void run(const KParams& kp) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    float* sQ = reinterpret_cast<float*>(smem_raw);
    float* sK = sQ + kRows * kLd;
    float* sV = sK + kBlockN * kLd;
    float* sP = sV + kBlockN * D;
    VisitSmem& vs = *reinterpret_cast<VisitSmem*>(smem_raw + kSmemTiles);

    const Work w = get_work(kp);
    if (!w.valid) return;
    const Params& p = kp.p;
    const int32_t b = w.q.b, h = w.q.h;
    const HeadInputs<float> in = head_inputs<float>(p, w.q);
    const int tid = threadIdx.x;
    const int row = tid >> 1, half = tid & 1;
    const int32_t i = w.q.i0 + row;

    for (int x = tid; x < kRows * D; x += kThreads) {
      const int r = x / D, c = x % D;
      sQ[r * kLd + c] =
          (w.q.i0 + r < p.len_q) ? in.q[int64_t(w.q.i0 + r) * p.q_row_stride + c] : 0.f;
    }

    VisitIter<> it;
    it.init(kp, w);
    int32_t klo, khi;  // the valid keys: rows outside are loaded as zeros
    valid_keys<true>(kp, b, &klo, &khi);
    float o[kHalfD];
#pragma unroll
    for (int c = 0; c < kHalfD; ++c) o[c] = 0.f;
    float m = -INFINITY, l = 0.f;
    const float sl2 = kp.scale_log2;
    int32_t tile;
    bool full;
    while (it.next(kp, w, vs, &tile, &full)) {
      const int32_t j0 = tile * kBlockN;
      for (int x = tid; x < kBlockN * D; x += kThreads) {
        const int r = x / D, c = x % D;
        const bool ok = j0 + r < khi && j0 + r >= klo;
        sK[r * kLd + c] = ok ? in.k[int64_t(j0 + r) * p.k_row_stride + c] : 0.f;
        sV[r * D + c] = ok ? in.v[int64_t(j0 + r) * p.v_row_stride + c] : 0.f;
      }
      __syncthreads();
      float s[kHalfN];
#pragma unroll
      for (int n = 0; n < kHalfN; ++n) s[n] = 0.f;
      for (int d = 0; d < D; ++d) {
        const float q = sQ[row * kLd + d];
#pragma unroll
        for (int n = 0; n < kHalfN; ++n) s[n] = fmaf(q, sK[(half * kHalfN + n) * kLd + d], s[n]);
      }
      if (kp.softcap_on) {  // the score hook (common.cuh), before masking
#pragma unroll
        for (int n = 0; n < kHalfN; ++n) s[n] = score_hook(kp, s[n]);
      }
      float mx = -INFINITY;
#pragma unroll
      for (int n = 0; n < kHalfN; ++n) {
        if (!full && !pair_allowed(kp, b, h, i, j0 + half * kHalfN + n)) s[n] = -INFINITY;
        mx = fmaxf(mx, s[n]);
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      const float m_new = fmaxf(m, mx * sl2);
      // +inf: NaN, so that the row is NaN (TileOps::softmax_p).
      const float m_use = m_new == -INFINITY  ? 0.f
                          : m_new == INFINITY ? __int_as_float(0x7fc00000)
                                              : m_new;
      const float alpha = exp2f(m - m_use);
      float sum = 0.f;
#pragma unroll
      for (int n = 0; n < kHalfN; ++n) {
        const float e = exp2f(fmaf(s[n], sl2, -m_use));
        sum += e;
        sP[row * (kBlockN + 1) + half * kHalfN + n] = e;
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      l = l * alpha + sum;
      m = m_new;
#pragma unroll
      for (int c = 0; c < kHalfD; ++c) o[c] *= alpha;
      __syncwarp();  // the partner lane's half of P
      for (int n = 0; n < kBlockN; ++n) {
        const float pn = sP[row * (kBlockN + 1) + n];
#pragma unroll
        for (int c = 0; c < kHalfD; ++c) o[c] = fmaf(pn, sV[n * D + half * kHalfD + c], o[c]);
      }
      __syncthreads();  // K, V and P are overwritten by the next tile
    }

    const int32_t dv = p.head_dim_v;
    if (w.slot >= 0) {
      if (i >= p.len_q) return;  // padding rows have no place in a short partial result
      float* po = kp.part_o + (int64_t(w.slot) * kp.part_rows + row) * dv + half * kHalfD;
#pragma unroll
      for (int c = 0; c < kHalfD; ++c) po[c] = o[c];
      if (half == 0) kp.part_ml[int64_t(w.slot) * kp.part_rows + row] = make_float2(m, l);
      return;
    }
    if (i >= p.len_q) return;
    float inv = row_normalizer(kp, h, m, l);  // no allowed key: zeros
    if (row_is_bad(kp, b, h, i)) inv = __int_as_float(0x7fc00000);
    float* orow = static_cast<float*>(p.o) + b * p.o_batch_stride + h * p.o_head_stride +
                  int64_t(i) * p.o_row_stride + half * kHalfD;
#pragma unroll
    for (int c = 0; c < kHalfD; ++c) orow[c] = o[c] * inv;
  }
};

template <int D>
__global__ void __launch_bounds__(kThreads)
    fp32_attention_kernel(const __grid_constant__ KParams kp) {
  Fp32Kernel<D>::run(kp);
}

template <int D>
cudaError_t launch_fp32(const KParams& kp, int32_t grid, cudaStream_t stream) {
  constexpr size_t smem = Fp32Kernel<D>::kSmem;
  cudaError_t e = allow_dynamic_smem<fp32_attention_kernel<D>>(smem);
  if (e != cudaSuccess) return e;
  fp32_attention_kernel<D><<<grid, kThreads, smem, stream>>>(kp);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace spattn
