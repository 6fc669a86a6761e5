// Block-sparse FlashAttention-2 style forward for float16 / bfloat16 on tensor cores
// (mma.sync m16n8k16, ldmatrix), float32 accumulation and online softmax.
//
// A CTA of 4 warps owns 64 * MT query rows (MT m16 tiles per warp; launch.cu picks MT = 1 for
// patterns with short rows, MT = 2 otherwise); K and V tiles of kBlockN = 64 keys are
// double-buffered in shared memory with cp.async. The scores stay in registers and are reused as
// the A operand of P.V (no shared-memory round trip).
//
// Partial tiles: with MT = 1 they are masked in registers from Pattern::row_bounds (the interval
// form of a row) when the pattern has no strided component and its random/listed blocks cover
// whole key tiles. Otherwise a token mask is built in shared memory with Pattern::row_mask (MT = 2
// keeps to it: the register path costs that kernel spills in its main loop).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common.cuh"

namespace spattn {
namespace cuda {

template <typename T>
struct MmaType;
template <>
struct MmaType<__half> {
  __device__ static uint32_t pack(float a, float b) {
    __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  }
  __device__ static void mma(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};
template <>
struct MmaType<__nv_bfloat16> {
  __device__ static uint32_t pack(float a, float b) {
    __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  }
  __device__ static void mma(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool pred) {
  const uint32_t s = uint32_t(__cvta_generic_to_shared(smem));
  const int size = pred ? 16 : 0;  // 0: zero-fill, the source is not read
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(size));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldsm_x4(uint32_t* r, const void* p) {
  const uint32_t s = uint32_t(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t* r, const void* p) {
  const uint32_t s = uint32_t(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}

// The per-tile steps both tensor-core kernels share (this one and the Hopper kernel of
// fwd_wgmma.cuh). Score and output fragments use the m16n8 accumulator layout: a warp owns rows
// wrow + 16 mt + (g, g + 8) and lane (g, c4) holds keys/columns 8 nt + 2 c4 + (0, 1) of them.
// kX: the feature set (pattern_of): false compiles the code of global_mask, key_starts, sinks and
// softcap out.
template <typename T, int D, int MT, bool kX = true>
struct TileOps {
  // Rows of D elements in 16-byte chunks. Head dims that are a multiple of 64 (8 chunks or more
  // per row) XOR-swizzle the chunks by row % 8 within each group of 8; the others (32, 96) pad
  // each row by one chunk instead: a row then starts 4 banks further than the previous one, so
  // that 8 consecutive rows read at one chunk column hit 8 different 4-bank groups either way.
  static constexpr bool kSwizzle = D % 64 == 0;
  static constexpr int kLd = kSwizzle ? D : D + 8;  // elements per row in shared memory
  __device__ static int off(int row, int chunk) {
    if constexpr (kSwizzle)
      return row * D + ((chunk ^ (row & 7)) << 3);
    else
      return row * kLd + (chunk << 3);
  }

  // Token mask of a partial tile in shared memory: a lane writes a row of the warp with
  // Pattern::row_mask (interval arithmetic, far cheaper than 64 calls of `allowed`), the warp
  // reads it back after __syncwarp.
  __device__ static void build_mask(const KParams& kp, const Work& w, int wrow, int32_t j0,
                                    uint8_t* sMask) {
    const Params& p = kp.p;
    const int lane = threadIdx.x & 31;
    if (lane < 16 * MT) {
      uint8_t* mrow = sMask + (wrow + lane) * kBlockN;
      const int32_t i = w.q.i0 + wrow + lane;
      const int32_t j1 = min(j0 + kBlockN, p.len_k);
      int32_t t0 = 0;
      if (i < p.len_q) {  // rows past Lq would read block_indices out of bounds
        pattern_of<kX>(kp).row_mask(w.q.b, w.q.h, pattern_row(kp, i), j0, j1, mrow);
        t0 = j1 - j0;  // keys past Lk are padding, whatever a (bad) key length says
      }
      for (int32_t t = t0; t < kBlockN; ++t) mrow[t] = 0;
    }
    __syncwarp();
  }

  // The family's score hook (common.cuh: softcap), on the raw scores of a tile before masking;
  // a uniform branch when softcap is off, nothing in the lean kernels.
  // NT: the tile's n8 fragments (8: 64 keys; 16: the two key tiles of a warp-specialized stage).
  template <int NT>
  __device__ static void apply_score_hook(const KParams& kp, float (&s)[MT][NT][4]) {
    if constexpr (kX) {
      if (!kp.softcap_on) return;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
          for (int x = 0; x < 4; ++x) s[mt][nt][x] = score_hook(kp, s[mt][nt][x]);
    }
  }

  // The masks below act on the 8 fragments [N0, N0 + 8) of an NT-fragment tile: one key tile.
  template <int NT = 8, int N0 = 0>
  __device__ static void apply_smem_mask(float (&s)[MT][NT][4], int wrow, const uint8_t* sMask) {
    static_assert(N0 + 8 <= NT, "one key tile of the scores");
    const int lane = threadIdx.x & 31, g = lane >> 2, c4 = lane & 3;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const uint8_t* mrow = sMask + (wrow + mt * 16 + g + r * 8) * kBlockN + c4 * 2;
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
          const uint16_t mm = *reinterpret_cast<const uint16_t*>(mrow + nt * 8);
          if (!(mm & 0x00ffu)) s[mt][N0 + nt][2 * r] = -INFINITY;
          if (!(mm & 0xff00u)) s[mt][N0 + nt][2 * r + 1] = -INFINITY;
        }
      }
  }

  // Register mask of a partial tile from Pattern::row_bounds: valid when the pattern has no
  // strided component and no global_mask (keys that intervals do not describe) and its
  // random/listed blocks cover whole key tiles (reg_mask_ok).
  __device__ static bool reg_mask_ok(const KParams& kp) {
    const Pattern& pat = kp.pat;
    const bool blocks = pat.a.num_random > 0 || pat.block_indices != nullptr;
    return pat.a.stride == 0 && (!kX || pat.global_mask == nullptr) &&
           (!blocks || pat.a.block_size % kBlockN == 0);
  }

  // kOncePerTile: blocks cover whole key tiles (a multiple of 64 keys), so the warp's 16 * MT
  // rows (aligned to 16 * MT) lie in one query block, and whether the tile is one of its
  // random/listed blocks can be decided once, from its first row, instead of per row. The
  // one-warpgroup kernel does (BigBird-like 5-6% faster); elsewhere the per-row form measured
  // faster on plain bands, where the test never runs.
  template <bool kOncePerTile = false, int NT = 8, int N0 = 0>
  __device__ static void apply_reg_mask(const KParams& kp, const Work& w, float (&s)[MT][NT][4],
                                        int wrow, int32_t j0) {
    static_assert(N0 + 8 <= NT, "one key tile of the scores");
    const Params& p = kp.p;
    const Pattern& pat = kp.pat;  // row_bounds: pattern_of, at the call
    const bool blocks = pat.a.num_random > 0 || pat.block_indices != nullptr;
    const int lane = threadIdx.x & 31, g = lane >> 2, c4 = lane & 3;
    bool tile_selected = false;
    if (kOncePerTile && blocks) {
      const int32_t i0 = w.q.i0 + wrow;  // rows past Lq read no block_indices
      if (i0 < p.len_q)
        tile_selected = pat.block_selected(w.q.h, pattern_row(kp, i0) / pat.a.block_size,
                                           j0 / pat.a.block_size);
    }
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int32_t i = w.q.i0 + wrow + mt * 16 + g + r * 8;
        RowBounds rb;
        rb.upper = rb.num_global = rb.lower = 0;
        rb.lo = 1;
        rb.hi = 0;
        rb.global_row = false;
        if (i < p.len_q) {  // rows past Lq: nothing (and no block_indices read)
          const int32_t pi = pattern_row(kp, i);
          rb = pattern_of<kX>(kp).row_bounds(w.q.b, pi);
          // A selected random/listed block covers the whole key tile: every valid key.
          if (kOncePerTile
                  ? tile_selected && !rb.global_row
                  : blocks && !rb.global_row &&
                        pat.block_selected(w.q.h, pi / pat.a.block_size, j0 / pat.a.block_size)) {
            rb.lo = rb.lower;
            rb.hi = rb.upper - 1;
          }
        }
        // Bounds relative to this lane's first key, so that each test is against a constant.
        const int32_t base = j0 + 2 * c4;
        RowBounds rel = rb;
        rel.lower = rb.lower - base;
        rel.num_global = rb.num_global - base;
        rel.lo = rb.lo - base;
        rel.hi = rb.hi - base;
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
          if (!rel.allows(nt * 8)) s[mt][N0 + nt][2 * r] = -INFINITY;
          if (!rel.allows(nt * 8 + 1)) s[mt][N0 + nt][2 * r + 1] = -INFINITY;
        }
      }
  }

  // A key tile none of the warp's rows sees (`unseen`), beside one they do in a two-tile stage:
  // its scores become -inf. Written as selects rather than a branch that stores constants: with
  // the stores, the join after the mask took new registers for the scores, and every full tile
  // paid 32 register moves per key tile to reach them (WsKernel::mask_sub).
  template <int NT, int N0>
  __device__ static void mask_tile(float (&s)[MT][NT][4], bool unseen) {
    static_assert(N0 + 8 <= NT, "one key tile of the scores");
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int nt = N0; nt < N0 + 8; ++nt)
#pragma unroll
        for (int x = 0; x < 4; ++x) s[mt][nt][x] = unseen ? -INFINITY : s[mt][nt][x];
  }

  // How far (log2 units) a row's scores may pass its running max before the max moves
  // (softmax_p).
  static constexpr float kMaxSlack = 8.f;

  // The max (kMax) or sum of t[0, 2 W) as a tree: levels of W, W / 2, ... independent steps.
  // (A loop over the levels, `w >>= 1`, was not unrolled at 16 fragments and put t in local
  // memory.)
  template <int W, bool kMax>
  __device__ static float tree(float* t) {
#pragma unroll
    for (int x = 0; x < W; ++x) t[x] = kMax ? fmaxf(t[x], t[x + W]) : t[x] + t[x + W];
    if constexpr (W > 1)
      return tree<W / 2, kMax>(t);
    else
      return t[0];
  }

  // Online softmax in log2 units: turns the scores into probabilities and updates the running
  // max and sum; alpha[mt][r] rescales what the output accumulator holds (rescale).
  template <int NT>
  __device__ static void softmax_p(float (&s)[MT][NT][4], float (&m)[MT][2], float (&l)[MT][2],
                                   float sl2, float (&alpha)[MT * 2]) {
    static_assert(NT == 8 || NT == 16, "tree reductions over 8 or 16 fragments");
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        // Reductions as trees: short dependency chains, which matter at 2 warps per scheduler.
        float t[NT];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) t[nt] = fmaxf(s[mt][nt][2 * r], s[mt][nt][2 * r + 1]);
        float mx = tree<NT / 2, true>(t);
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        // The running max moves only when a score passes it by more than kMaxSlack (log2 units):
        // a smaller rise keeps it, so alpha is exactly 1 and the output's rescale is skipped
        // (rescale), and the probabilities stay below 2^kMaxSlack, far inside every type's range.
        // The result is the same softmax: numerator and sum share the max they were taken against.
        // A NaN tile max keeps the running max (the comparison is false), as fmaxf would.
        const float m_old = m[mt][r], x = mx * sl2;
        const bool moves = x > m_old + kMaxSlack;
        const float m_new = moves ? x : m_old;
        // The max the exps are taken against: 0 while no allowed key was seen (every exp2 is 0
        // then, and alpha = exp2(-inf - m) = 0 for the first finite max). A +inf max (an allowed
        // score of +inf, or a scaled score beyond float32) is used as is: a +inf score then gives
        // exp2(inf - inf) = NaN in the sum, and every later tile's alpha = exp2(inf - inf) is NaN;
        // a max that went +inf on the row's last tile with finite scores leaves l = 0 and
        // m = +inf, which row_normalizer turns into a NaN row (docs/op-spec.md). fmaxf drops NaN
        // scores, but their exp2 is NaN. The path from this tile's max to its exp2s is one
        // multiply, one compare and one select; the test of the old max depends only on the
        // previous tile. (A three-way conditional compiled to a branch with a convergence barrier
        // per row, which kept the two rows' reductions and exp2s from overlapping: the consumers
        // of the warp-specialized kernel measured 9-16% slower on long rows.)
        const float m_use = moves ? x : (m_old == -INFINITY ? 0.f : m_old);
        alpha[mt * 2 + r] = fast_exp2(m_old - m_use);
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          s[mt][nt][2 * r] = fast_exp2(fmaf(s[mt][nt][2 * r], sl2, -m_use));
          s[mt][nt][2 * r + 1] = fast_exp2(fmaf(s[mt][nt][2 * r + 1], sl2, -m_use));
          t[nt] = s[mt][nt][2 * r] + s[mt][nt][2 * r + 1];
        }
        l[mt][r] = l[mt][r] * alpha[mt * 2 + r] + tree<NT / 2, false>(t);
        m[mt][r] = m_new;
      }
  }

  // Skips the multiplications when no row of the warp changed its max (alpha == 1), which is
  // most tiles of a long row. DV: the columns that hold data (the padded tiles of the Hopper
  // kernels at D = 32, 96 leave the rest zero).
  template <int DV = D>
  __device__ static void rescale(float (&o)[MT][D / 8][4], const float (&alpha)[MT * 2]) {
    bool one = true;
#pragma unroll
    for (int x = 0; x < MT * 2; ++x) one = one && alpha[x] == 1.f;
    if (__all_sync(0xffffffffu, one)) return;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int r = 0; r < 2; ++r)
#pragma unroll
        for (int x = 0; x < DV / 8; ++x) {
          o[mt][x][2 * r] *= alpha[mt * 2 + r];
          o[mt][x][2 * r + 1] *= alpha[mt * 2 + r];
        }
  }

  __device__ static void softmax(float (&s)[MT][8][4], float (&m)[MT][2], float (&l)[MT][2],
                                 float (&o)[MT][D / 8][4], float sl2) {
    float alpha[MT * 2];
    softmax_p(s, m, l, sl2, alpha);
    rescale(o, alpha);
  }

  // The probabilities of keys [16 kk, 16 kk + 16) as the A fragment of an m16k16 product.
  template <int NT>
  __device__ static void pack_p(const float (&s)[MT][NT][4], int mt, int kk, uint32_t* pa) {
    pa[0] = MmaType<T>::pack(s[mt][2 * kk][0], s[mt][2 * kk][1]);
    pa[1] = MmaType<T>::pack(s[mt][2 * kk][2], s[mt][2 * kk][3]);
    pa[2] = MmaType<T>::pack(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
    pa[3] = MmaType<T>::pack(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
  }

  // Finishes the rows: the normalized output, or (split work item) the unnormalized partial
  // result and its (max, sum) for combine_kernel. Called by the threads of Sync (the CTA, or a
  // warpgroup), which own rows [row0, row0 + kRows) of the tile; `stage`: a shared buffer of
  // kRows x kLd elements that none of them reads any more.
  // DV: the head dim of the output when the tile is padded (the Hopper kernels at D = 32, 96):
  // columns from DV on are zeros and are not written.
  template <int kRows, typename Sync = CtaSync, int DV = D>
  __device__ static void write_out(const KParams& kp, const Work& w, float (&o)[MT][D / 8][4],
                                   const float (&m)[MT][2], float (&l)[MT][2], int wrow, T* stage,
                                   int row0 = 0) {
    const Params& p = kp.p;
    const int lane = threadIdx.x & 31, g = lane >> 2, c4 = lane & 3;
    // Row sums over the quad of lanes that share a row.
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        l[mt][r] += __shfl_xor_sync(0xffffffffu, l[mt][r], 1);
        l[mt][r] += __shfl_xor_sync(0xffffffffu, l[mt][r], 2);
      }
    const int32_t dv = p.head_dim_v;
    if (w.slot >= 0) {
      // A warp whose rows are all padding writes nothing (combine_tile reads no padding row):
      // a stacked decode step fills a few rows of the tile. (A per-row test cost the 128-row
      // mma.sync kernel spills.)
      if (w.q.i0 + wrow >= p.len_q) return;
      float* po = kp.part_o + int64_t(w.slot) * kp.part_rows * dv;
      float2* pml = kp.part_ml + int64_t(w.slot) * kp.part_rows;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int rl = wrow + mt * 16 + g + r * 8;
#pragma unroll
          for (int nt = 0; nt < DV / 8; ++nt)
            *reinterpret_cast<float2*>(po + rl * dv + nt * 8 + c4 * 2) =
                make_float2(o[mt][nt][2 * r], o[mt][nt][2 * r + 1]);
          if (c4 == 0) pml[rl] = make_float2(m[mt][r], l[mt][r]);
        }
      return;
    }
    // The normalized tile goes through `stage` (the Q buffer, kRows x kLd, free once the last
    // product is done) so that the global stores are whole 16-byte chunks. Chunks are laid out as
    // off() says: the 4-byte writes of a warp then hit 32 distinct banks.
    Sync::sync();
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int rl = wrow + mt * 16 + g + r * 8;
        const int sr = rl - row0;  // row0 is a multiple of 8: the same swizzle phase
        const int32_t i = w.q.i0 + rl;
        const int32_t h = row_head(kp, w.q, i);
        float inv = row_normalizer<kX>(kp, h, m[mt][r], l[mt][r]);  // no allowed key: zeros
        if (i < p.len_q && row_is_bad<kX>(kp, w.q.b, h, pattern_row(kp, i)))
          inv = __int_as_float(0x7fc00000);
#pragma unroll
        for (int nt = 0; nt < DV / 8; ++nt)
          *reinterpret_cast<uint32_t*>(stage + off(sr, nt) + c4 * 2) =
              MmaType<T>::pack(o[mt][nt][2 * r] * inv, o[mt][nt][2 * r + 1] * inv);
      }
    Sync::sync();
    T* gO = static_cast<T*>(p.o) + w.q.b * p.o_batch_stride + w.q.h * p.o_head_stride;
    constexpr int kChunks = DV / 8;
    for (int x = Sync::tid(); x < kRows * kChunks; x += kThreads) {
      const int sr = x / kChunks, ch = x % kChunks;
      const int32_t i = w.q.i0 + row0 + sr;
      if (i < p.len_q)
        *reinterpret_cast<uint4*>(gO + int64_t(i) * p.o_row_stride + ch * 8) =
            *reinterpret_cast<const uint4*>(stage + off(sr, ch));
    }
  }
};

template <typename T, int D, int MT, bool kX>
struct MmaKernel {
  static_assert(D % 32 == 0, "head dims of the mma.sync kernel: multiples of 32");
  static_assert(MT == 1 || MT == 2, "m16 tiles per warp");
  // 2 m16 tiles of D = 256 would hold 256 output accumulators per thread: more than a thread has.
  static_assert(MT == 1 || mma_wide_takes(D), "D = 256 runs 64-row tiles");
  static constexpr int kRows = 64 * MT;  // 4 warps x 16 * MT rows = KParams::block_m
  static constexpr int kWarpRows = 16 * MT;
  static constexpr int kChunks = D / 8;  // 16-byte chunks per row
  using Ops = TileOps<T, D, MT, kX>;
  static constexpr int kLd = Ops::kLd;
  static constexpr int kQElems = kRows * kLd;
  static constexpr int kKVElems = kBlockN * kLd;
  // Shared memory: Q, K[2], V[2] tiles, the token mask of a partial tile, then the visit list.
  static constexpr size_t kSmemTiles = size_t(kQElems + 4 * kKVElems) * sizeof(T);
  static constexpr size_t kMaskBytes = size_t(kRows) * kBlockN;
  static constexpr size_t kSmem = kSmemTiles + kMaskBytes + sizeof(VisitSmem);

  // Rows of D elements (TileOps::off): ldmatrix's 8 row reads of one chunk column land in 8
  // different bank groups.
  __device__ static int off(int row, int chunk) { return Ops::off(row, chunk); }

  // Loads rows [r0, r0 + ROWS) of a [L, D] matrix (row stride `ld`) into a tile; rows outside
  // [lo, L) are 0.
  template <int ROWS>
  __device__ static void load_tile(T* s, const T* g, int64_t ld, int32_t r0, int32_t L,
                                   int32_t lo = 0) {
#pragma unroll
    for (int x = threadIdx.x; x < ROWS * kChunks; x += kThreads) {
      const int row = x / kChunks, ch = x % kChunks;
      const bool ok = r0 + row < L && r0 + row >= lo;
      const T* src = ok ? g + int64_t(r0 + row) * ld + ch * 8 : g;
      cp_async16(s + off(row, ch), src, ok);
    }
  }

  __device__ static void run(const KParams& kp) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    const TileSmem<T> sm(smem_raw, kQElems, kKVElems, kMaskBytes);
    T* sQ = sm.q;
    T* sK = sm.k;
    T* sV = sm.v;
    uint8_t* sMask = sm.mask;
    VisitSmem& vs = *sm.visit;

    const Work w = get_work(kp);
    if (!w.valid) return;
    const Params& p = kp.p;
    const HeadInputs<T> in = head_inputs<T>(p, w.q);

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int lm = lane >> 3, lr = lane & 7;  // ldmatrix: which 8x8 matrix, which row of it

    load_tile<kRows>(sQ, in.q, p.q_row_stride, w.q.i0, p.len_q);
    cp_async_commit();

    VisitIter<kX> it;
    it.init(kp, w);
    int32_t cur = -1;
    bool cur_full = false;
    bool have = it.next(kp, w, vs, &cur, &cur_full);
    int32_t klo, khi;  // the valid keys: rows outside are loaded as zeros
    valid_keys<kX>(kp, w.q.b, &klo, &khi);
    if (have) {
      load_tile<kBlockN>(sK, in.k, p.k_row_stride, cur * kBlockN, khi, klo);
      load_tile<kBlockN>(sV, in.v, p.v_row_stride, cur * kBlockN, khi, klo);
    }
    cp_async_commit();

    // This warp owns rows [wrow, wrow + 16 * MT) of the tile: MT m16 tiles. Q fragments are
    // re-read from shared memory at each tile (registers hold O and S instead); with MT = 2 each
    // K and V fragment feeds both m16 tiles, which halves shared-memory reads per MMA.
    float o[MT][D / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int x = 0; x < D / 8; ++x) o[mt][x][0] = o[mt][x][1] = o[mt][x][2] = o[mt][x][3] = 0.f;
    float m[MT][2], l[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      m[mt][0] = m[mt][1] = -INFINITY;
      l[mt][0] = l[mt][1] = 0.f;
    }
    const float sl2 = kp.scale_log2;
    const int wrow = warp * kWarpRows;  // first tile row of this warp

    // Register masking (see the file comment): a key tile of kBlockN keys then lies in one block.
    const bool reg_mask = MT == 1 && Ops::reg_mask_ok(kp);

    int buf = 0;
    while (have) {
      int32_t nxt = -1;
      bool nxt_full = false;
      const bool have_next = it.next(kp, w, vs, &nxt, &nxt_full);
      if (have_next) {
        load_tile<kBlockN>(sK + (buf ^ 1) * kKVElems, in.k, p.k_row_stride, nxt * kBlockN, khi,
                           klo);
        load_tile<kBlockN>(sV + (buf ^ 1) * kKVElems, in.v, p.v_row_stride, nxt * kBlockN, khi,
                           klo);
      }
      cp_async_commit();

      const int32_t j0 = cur * kBlockN;
      if (!cur_full && !reg_mask) Ops::build_mask(kp, w, wrow, j0, sMask);
      cp_async_wait<1>();
      __syncthreads();

      const T* k_s = sK + buf * kKVElems;
      const T* v_s = sV + buf * kKVElems;
      // S = Q K^T for 16 * MT rows x 64 keys per warp.
      float s[MT][8][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int x = 0; x < 8; ++x) s[mt][x][0] = s[mt][x][1] = s[mt][x][2] = s[mt][x][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t qa[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
          ldsm_x4(qa[mt], sQ + off(wrow + mt * 16 + (lm & 1) * 8 + lr, kk * 2 + (lm >> 1)));
#pragma unroll
        for (int np = 0; np < 4; ++np) {
          uint32_t bf[4];
          ldsm_x4(bf, k_s + off(np * 16 + (lm >> 1) * 8 + lr, kk * 2 + (lm & 1)));
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            MmaType<T>::mma(s[mt][2 * np], qa[mt], bf[0], bf[1]);
            MmaType<T>::mma(s[mt][2 * np + 1], qa[mt], bf[2], bf[3]);
          }
        }
      }
      Ops::apply_score_hook(kp, s);
      if (!cur_full) {
        if (reg_mask)
          Ops::apply_reg_mask(kp, w, s, wrow, j0);
        else
          Ops::apply_smem_mask(s, wrow, sMask);
      }
      Ops::softmax(s, m, l, o, sl2);
      // O += P V.
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk) {
        uint32_t pa[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) Ops::pack_p(s, mt, kk, pa[mt]);
#pragma unroll
        for (int nd = 0; nd < D / 16; ++nd) {
          uint32_t bf[4];
          ldsm_x4_t(bf, v_s + off(kk * 16 + (lm & 1) * 8 + lr, nd * 2 + (lm >> 1)));
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            MmaType<T>::mma(o[mt][2 * nd], pa[mt], bf[0], bf[1]);
            MmaType<T>::mma(o[mt][2 * nd + 1], pa[mt], bf[2], bf[3]);
          }
        }
      }
      __syncthreads();  // this buffer is refilled two tiles later
      buf ^= 1;
      cur = nxt;
      cur_full = nxt_full;
      have = have_next;
    }
    cp_async_wait<0>();
    Ops::template write_out<kRows>(kp, w, o, m, l, wrow, sQ);
  }
};

template <typename T, int D, int MT, bool kX>
__global__ void __launch_bounds__(kThreads)
    mma_attention_kernel(const __grid_constant__ KParams kp) {
  MmaKernel<T, D, MT, kX>::run(kp);
}

template <typename T, int D, int MT, bool kX>
cudaError_t launch_mma_rows(const KParams& kp, int32_t grid, cudaStream_t stream) {
  constexpr size_t smem = MmaKernel<T, D, MT, kX>::kSmem;
  cudaError_t e = allow_dynamic_smem<mma_attention_kernel<T, D, MT, kX>>(smem);
  if (e != cudaSuccess) return e;
  mma_attention_kernel<T, D, MT, kX><<<grid, kThreads, smem, stream>>>(kp);
  return cudaGetLastError();
}

// Launches the attention kernel of one (dtype, head dim) on `grid` CTAs, for kp.block_m rows
// (D = 256: 64 rows only, mma_wide_takes).
template <typename T, int D, bool kX>
cudaError_t launch_mma(const KParams& kp, int32_t grid, cudaStream_t stream) {
  if (kp.block_m == kBlockMMmaNarrow) return launch_mma_rows<T, D, 1, kX>(kp, grid, stream);
  if constexpr (mma_wide_takes(D))
    if (kp.block_m == kBlockMMmaWide) return launch_mma_rows<T, D, 2, kX>(kp, grid, stream);
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace spattn
