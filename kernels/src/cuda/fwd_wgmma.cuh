// Block-sparse forward for float16 / bfloat16 on Hopper (sm_90a): warpgroup MMA
// (wgmma.mma_async) with float32 accumulation and online softmax.
//
// A CTA is one warpgroup (4 warps) owning 64 query rows, the same tiles, visit list, split-KV
// work items and per-tile steps (masking, softmax, epilogue: TileOps) as the mma.sync kernel of
// fwd_mma.cuh. What changes is where the products run:
//  * S = Q K^T: one m64n64k16 wgmma per 16 head-dim columns, both operands read by the tensor
//    cores straight from shared memory (no ldmatrix, no per-warp copies of K);
//  * O += P V: P stays in registers (the score accumulator converted in place is the A fragment),
//    V is read from shared memory in its natural [key][dv] layout (the "transposed B" mode).
// Q, K and V tiles sit in shared memory in the canonical 128-byte-swizzle layout of the tensor
// cores: panels of 64 columns (128 bytes per row), 16-byte chunks XOR-swizzled by row % 8.
//
// The wgmma code is compiled for sm_90a only. fwd_ws.cuh builds the warp-specialized kernel
// (the default on Hopper) from the tile layout and products defined here.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common.cuh"
#include "fwd_mma.cuh"

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SPATTN_WGMMA_DEVICE 1
#endif

namespace spattn {
namespace cuda {

// ---------------------------------------------------------------------------------------------
// wgmma wrappers. The descriptor of a shared-memory operand (PTX ISA, "matrix descriptor"):
// start address, leading and stride byte offsets (all >> 4), layout type 1 = 128-byte swizzle.
// The wrappers take its two 32-bit words: the low word holds the start address and the leading
// offset and is the only one that changes between the steps of a product (a step's offset stays
// inside the tile, so it adds to the address bits without a carry); the high word (stride offset,
// layout) is a constant. 32-bit arithmetic on the low word keeps the per-step work to one add.
__device__ __forceinline__ uint32_t desc_lo(const void* ptr, uint32_t lbo) {
  const uint32_t addr = uint32_t(__cvta_generic_to_shared(ptr));
  return ((addr & 0x3FFFFu) >> 4) | (((lbo >> 4) & 0x3FFFu) << 16);
}
__host__ __device__ constexpr uint32_t desc_hi(uint32_t sbo) {
  return ((sbo >> 4) & 0x3FFFu) | (1u << 30);
}

__device__ __forceinline__ void wgmma_fence() {
#ifdef SPATTN_WGMMA_DEVICE
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#ifdef SPATTN_WGMMA_DEVICE
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
// Waits until at most N committed groups of this warpgroup are still running.
template <int N>
__device__ __forceinline__ void wgmma_wait() {
#ifdef SPATTN_WGMMA_DEVICE
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
// Makes this thread's generic-proxy writes to shared memory (cp.async) visible to the tensor
// cores' async proxy.
__device__ __forceinline__ void fence_async_smem() {
#ifdef SPATTN_WGMMA_DEVICE
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
// Keeps the compiler from moving reads or writes of an accumulator across wgmma issue/wait.
__device__ __forceinline__ void reg_fence(float& r) { asm volatile("" : "+f"(r)::"memory"); }

#define SPATTN_ACC8(b)                                                                            \
  "+f"(d[b + 0]), "+f"(d[b + 1]), "+f"(d[b + 2]), "+f"(d[b + 3]), "+f"(d[b + 4]), "+f"(d[b + 5]), \
      "+f"(d[b + 6]), "+f"(d[b + 7])
#define SPATTN_ACC16 SPATTN_ACC8(0), SPATTN_ACC8(8)
#define SPATTN_ACC32 SPATTN_ACC16, SPATTN_ACC8(16), SPATTN_ACC8(24)
#define SPATTN_ACC48 SPATTN_ACC32, SPATTN_ACC8(32), SPATTN_ACC8(40)
#define SPATTN_ACC64 \
  SPATTN_ACC32, SPATTN_ACC8(32), SPATTN_ACC8(40), SPATTN_ACC8(48), SPATTN_ACC8(56)
#define SPATTN_REGS16 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}"
#define SPATTN_REGS48                                                                           \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, "  \
  "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47}"
#define SPATTN_REGS32                                                                           \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define SPATTN_REGS64                                                                           \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, "  \
  "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, "  \
  "%56, %57, %58, %59, %60, %61, %62, %63}"

// The products of this file, per element type (the PTX type suffix). A descriptor is passed as
// its (low, high) words and assembled in the instruction's own scope.
#define SPATTN_DEFINE_WGMMA(TYPE, SUFFIX)                                                        \
  /* d[32] (+)= A(smem, K-major) B(smem, K-major): m64n64k16. */                                 \
  __device__ __forceinline__ void wgmma_ss_n64(TYPE, float* d, uint32_t a_lo, uint32_t a_hi,     \
                                               uint32_t b_lo, uint32_t b_hi, int accumulate) {   \
    asm volatile(                                                                                \
        "{\n.reg .pred p;\n.reg .b64 da, db;\nmov.b64 da, {%32, %33};\n"                         \
        "mov.b64 db, {%34, %35};\nsetp.ne.b32 p, %36, 0;\n"                                      \
        "wgmma.mma_async.sync.aligned.m64n64k16.f32" SUFFIX " " SPATTN_REGS32                    \
        ", da, db, p, 1, 1, 0, 0;\n}\n"                                                          \
        : SPATTN_ACC32                                                                           \
        : "r"(a_lo), "r"(a_hi), "r"(b_lo), "r"(b_hi), "r"(accumulate));                          \
  }                                                                                              \
  /* d[32] (+)= A(registers) B(smem): m64n64k16; B is N-major (TB = 1) or K-major (TB = 0). */   \
  template <int TB>                                                                              \
  __device__ __forceinline__ void wgmma_rs_n64(TYPE, float* d, const uint32_t* a, uint32_t b_lo, \
                                               uint32_t b_hi, int accumulate) {                  \
    asm volatile(                                                                                \
        "{\n.reg .pred p;\n.reg .b64 db;\nmov.b64 db, {%36, %37};\n"                             \
        "setp.ne.b32 p, %38, 0;\n"                                                               \
        "wgmma.mma_async.sync.aligned.m64n64k16.f32" SUFFIX " " SPATTN_REGS32                    \
        ", {%32, %33, %34, %35}, db, p, 1, 1, %39;\n}\n"                                         \
        : SPATTN_ACC32                                                                           \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b_lo), "r"(b_hi), "r"(accumulate),     \
          "n"(TB));                                                                              \
  }                                                                                              \
  /* d[64] (+)= A(smem, K-major) B(smem, K-major): m64n128k16. */                                \
  __device__ __forceinline__ void wgmma_ss_n128(TYPE, float* d, uint32_t a_lo, uint32_t a_hi,    \
                                                uint32_t b_lo, uint32_t b_hi, int accumulate) {  \
    asm volatile(                                                                                \
        "{\n.reg .pred p;\n.reg .b64 da, db;\nmov.b64 da, {%64, %65};\n"                         \
        "mov.b64 db, {%66, %67};\nsetp.ne.b32 p, %68, 0;\n"                                      \
        "wgmma.mma_async.sync.aligned.m64n128k16.f32" SUFFIX " " SPATTN_REGS64                   \
        ", da, db, p, 1, 1, 0, 0;\n}\n"                                                          \
        : SPATTN_ACC64                                                                           \
        : "r"(a_lo), "r"(a_hi), "r"(b_lo), "r"(b_hi), "r"(accumulate));                          \
  }                                                                                              \
  /* d[64] (+)= A(registers) B(smem, K-major): m64n128k16, S = Q K^T over a 128-key stage. */    \
  __device__ __forceinline__ void wgmma_rs_kmajor_n128(                                          \
      TYPE, float* d, const uint32_t* a, uint32_t b_lo, uint32_t b_hi, int accumulate) {         \
    asm volatile(                                                                                \
        "{\n.reg .pred p;\n.reg .b64 db;\nmov.b64 db, {%68, %69};\n"                             \
        "setp.ne.b32 p, %70, 0;\n"                                                               \
        "wgmma.mma_async.sync.aligned.m64n128k16.f32" SUFFIX " " SPATTN_REGS64                   \
        ", {%64, %65, %66, %67}, db, p, 1, 1, 0;\n}\n"                                           \
        : SPATTN_ACC64                                                                           \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b_lo), "r"(b_hi), "r"(accumulate));    \
  }                                                                                              \
  SPATTN_DEFINE_RS_NMAJOR(TYPE, SUFFIX, 32, SPATTN_ACC16, SPATTN_REGS16, 16, 17, 18, 19, 20, 21) \
  SPATTN_DEFINE_RS_NMAJOR(TYPE, SUFFIX, 96, SPATTN_ACC48, SPATTN_REGS48, 48, 49, 50, 51, 52, 53) \
  SPATTN_DEFINE_RS_NMAJOR(TYPE, SUFFIX, 128, SPATTN_ACC64, SPATTN_REGS64, 64, 65, 66, 67, 68, 69)

// d[N / 2] += A(registers) B(smem, N-major): m64nNk16, the O += P V step. N is the call's head
// dim (32, 96) or the tile width (128): the padded columns of a tile are not multiplied. A0..A3,
// B0, B1: the operand numbers of the A fragment and the descriptor words after the N / 2
// accumulators.
#define SPATTN_DEFINE_RS_NMAJOR(TYPE, SUFFIX, N, ACC, REGS, A0, A1, A2, A3, B0, B1)               \
  __device__ __forceinline__ void wgmma_rs_n##N(TYPE, float* d, const uint32_t* a, uint32_t b_lo, \
                                                uint32_t b_hi) {                                  \
    asm volatile("{\n.reg .pred p;\n.reg .b64 db;\nmov.b64 db, {%" #B0 ", %" #B1                  \
                 "};\n"                                                                           \
                 "setp.ne.b32 p, 1, 0;\n"                                                         \
                 "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32" SUFFIX " " REGS ", {%" #A0      \
                 ", %" #A1 ", %" #A2 ", %" #A3 "}, db, p, 1, 1, 1;\n}\n"                          \
                 : ACC                                                                            \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b_lo), "r"(b_hi));             \
  }

#ifdef SPATTN_WGMMA_DEVICE
SPATTN_DEFINE_WGMMA(__half, ".f16.f16")
SPATTN_DEFINE_WGMMA(__nv_bfloat16, ".bf16.bf16")
#else
// Other targets never run the Hopper kernel (launch.cu checks the device); these keep it compiling.
template <typename TYPE>
__device__ __forceinline__ void wgmma_ss_n64(TYPE, float*, uint32_t, uint32_t, uint32_t, uint32_t,
                                             int) {
  __trap();
}
template <int TB, typename TYPE>
__device__ __forceinline__ void wgmma_rs_n64(TYPE, float*, const uint32_t*, uint32_t, uint32_t,
                                             int) {
  __trap();
}
#define SPATTN_DEFINE_RS_STUB(N)                                                         \
  template <typename TYPE>                                                               \
  __device__ __forceinline__ void wgmma_rs_n##N(TYPE, float*, const uint32_t*, uint32_t, \
                                                uint32_t) {                              \
    __trap();                                                                            \
  }
template <typename TYPE>
__device__ __forceinline__ void wgmma_ss_n128(TYPE, float*, uint32_t, uint32_t, uint32_t, uint32_t,
                                              int) {
  __trap();
}
template <typename TYPE>
__device__ __forceinline__ void wgmma_rs_kmajor_n128(TYPE, float*, const uint32_t*, uint32_t,
                                                     uint32_t, int) {
  __trap();
}
SPATTN_DEFINE_RS_STUB(32)
SPATTN_DEFINE_RS_STUB(96)
SPATTN_DEFINE_RS_STUB(128)
#undef SPATTN_DEFINE_RS_STUB
#endif
#undef SPATTN_DEFINE_WGMMA
#undef SPATTN_DEFINE_RS_NMAJOR
#undef SPATTN_ACC8
#undef SPATTN_ACC16
#undef SPATTN_ACC32
#undef SPATTN_ACC48
#undef SPATTN_ACC64
#undef SPATTN_REGS16
#undef SPATTN_REGS32
#undef SPATTN_REGS48
#undef SPATTN_REGS64

// ---------------------------------------------------------------------------------------------
// D: the tile width (a multiple of 64); DK <= D: the call's head dim (D = DK, or the padded
// widths of hopper_dim: columns from DK on are loaded as zeros); kX: the feature set (TileOps);
// kMany: one K and one V buffer, so that more CTAs share an SM (launch_wgmma says when).
// The instantiations that have a kMany form: lean (no optional inputs), head dims 96 and 128.
template <int DK, bool kX>
constexpr bool kHasManyForm = !kX && (DK == 96 || DK == 128);

template <typename T, int D, int DK = D, bool kX = true, bool kMany = false>
struct WgmmaKernel {
  static_assert(DK <= D && DK % 16 == 0 && hopper_dim(DK) == D, "padded head dims");
  static_assert(!kMany || kHasManyForm<DK, kX>, "kMany: lean, head dims 96 and 128");
  static_assert(D == 64 || D == 128 || D == 256, "head dims of the Hopper kernel (kWgmmaDims)");
  static constexpr int kRows = kBlockMMmaNarrow;  // 64: one m64 warpgroup tile
  static constexpr int kChunks = D / 8;           // 16-byte chunks per row
  static constexpr int kPanelElems = 64;          // columns per 128-byte swizzle panel
  static constexpr int kQElems = kRows * D;
  static constexpr int kKVElems = kBlockN * D;
  // Every tile is a multiple of 8 KB, so each starts on the 1024-byte swizzle-atom boundary the
  // descriptors assume once the base is aligned.
  // D = 256: one K and one V buffer (run_single), so that two CTAs fit an SM (2 x 107 KB of
  // shared memory, at most 256 registers per thread): with double buffers (171 KB) one CTA ran
  // per SM and nothing covered its softmax and its waits for the loads.
  // kMany (head dims 96 and 128, lean): one K and one V buffer too, so that three CTAs share an
  // SM (about 55 KB of shared memory and at most 168 registers each; with double buffers the
  // 128-column tiles take 88 KB and two CTAs fit).
  static constexpr bool kSingle = D == 256 || kMany;
  static constexpr int kKVBufs = kSingle ? 1 : 2;
  static constexpr int kMinCtas = kMany ? 3 : kSingle ? 2 : 1;
  static constexpr size_t kSmemTiles = size_t(kQElems + 2 * kKVBufs * kKVElems) * sizeof(T);
  static constexpr size_t kMaskBytes = size_t(kRows) * kBlockN;
  static constexpr size_t kAlign = 1024;
  static constexpr size_t kSmem = kAlign + kSmemTiles + kMaskBytes + sizeof(VisitSmem);
  // Byte strides of the canonical layout: 8 rows of 128 bytes form a swizzle atom; a panel of
  // 64 columns holds all rows of the tile.
  static constexpr uint32_t kAtomBytes = 8 * 128;
  // Output accumulators per thread that P V writes (issue_pv): DK / 2; those of the padded
  // columns stay zero and are never fenced, rescaled or stored.
  static constexpr int kOAcc = DK / 2;

  // Element offset of (row, 16-byte chunk) in a tile of R rows.
  template <int R>
  __device__ static int off(int row, int chunk) {
    return (chunk >> 3) * (R * kPanelElems) + row * kPanelElems + (((chunk & 7) ^ (row & 7)) << 3);
  }

  // Loads rows [r0, r0 + ROWS) of a [L, D] matrix (row stride `ld`) into a tile; rows outside
  // [lo, L) are 0.
  // A thread moves one 16-byte chunk column of every kStep-th row: its swizzled chunk is the
  // same in every pass, so the shared address takes a constant offset per pass and the global one
  // a constant step (rows past L read `g` with a zero source size: nothing is read).
  // D = 256 (32 chunks per row: a pass moves 4 rows) takes the general form, with the swizzled
  // offset computed per pass.
  template <int ROWS>
  __device__ static void load_tile(T* s, const T* g, int64_t ld, int32_t r0, int32_t L,
                                   int32_t lo = 0) {
    constexpr int kStep = kThreads / kChunks;
    static_assert(ROWS % kStep == 0, "whole passes");
    const int ch = threadIdx.x % kChunks, row0 = threadIdx.x / kChunks;
    const bool col_ok = ch < DK / 8;  // padded columns are zero-filled, never read
    if constexpr (kStep % 8 != 0) {
#pragma unroll
      for (int x = 0; x < ROWS / kStep; ++x) {
        const int row = row0 + x * kStep;
        const bool ok = r0 + row < L && r0 + row >= lo && col_ok;
        const T* src = ok ? g + int64_t(r0 + row) * ld + ch * 8 : g;
        cp_async16(s + off<ROWS>(row, ch), src, ok);
      }
      return;
    }
    const uint32_t dst = uint32_t(__cvta_generic_to_shared(s + off<ROWS>(row0, ch)));
    const char* src = reinterpret_cast<const char*>(g + int64_t(r0 + row0) * ld + ch * 8);
    const int64_t step = int64_t(kStep) * ld * int64_t(sizeof(T));
    // Passes x with rows_skip <= x * kStep < rows_left are inside.
    const int32_t rows_left = L - (r0 + row0), rows_skip = lo - (r0 + row0);
#pragma unroll
    for (int x = 0; x < ROWS / kStep; ++x) {
      const bool ok = x * kStep < rows_left && x * kStep >= rows_skip && col_ok;
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(
                       dst + uint32_t(x * kStep * kPanelElems * sizeof(T))),
                   "l"(ok ? src : reinterpret_cast<const char*>(g)), "r"(ok ? 16 : 0));
      src += step;
    }
  }

  // S = Q K^T for 64 rows x 64 keys: D / 16 steps of 16 head-dim columns (32 bytes of a panel).
  // The descriptors are built once: the start address is bits 0-13 (bytes >> 4), and a step's
  // offset stays inside the tile, so it is added to the low word without a carry.
  // NK: the keys of the K buffer (64, or 128: the m64n128 product of the warp-specialized
  // kernel's two-tile stages).
  template <int NK = kBlockN>
  __device__ static void issue_qk(float* sd, const T* sQ, const T* k_s) {
    static_assert(NK == 64 || NK == 128, "keys of one S = Q K^T");
    const uint32_t dq = desc_lo(sQ, 16), dk = desc_lo(k_s, 16);
    constexpr uint32_t hi = desc_hi(kAtomBytes);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < DK / 16; ++kk) {
      // Element offsets of the step in the two tiles, in the descriptor's 16-byte units.
      const uint32_t eq = ((kk >> 2) * (kRows * kPanelElems) + (kk & 3) * 16) * sizeof(T) / 16;
      const uint32_t ek = ((kk >> 2) * (NK * kPanelElems) + (kk & 3) * 16) * sizeof(T) / 16;
      if constexpr (NK == 128)
        wgmma_ss_n128(T(), sd, dq + eq, hi, dk + ek, hi, kk > 0);
      else
        wgmma_ss_n64(T(), sd, dq + eq, hi, dk + ek, hi, kk > 0);
    }
    wgmma_commit();
  }

  // Q of this warp's rows [wrow, wrow + 16) of a 64-row tile as the register A fragments of the
  // D / 16 steps of S = Q K^T (ldmatrix from the swizzled tile: lanes 0-15 address rows
  // wrow + 0..15 of the step's first 8 columns, lanes 16-31 those of its last 8).
  __device__ static void load_q_frags(uint32_t (&qa)[DK / 16][4], const T* sQ, int wrow) {
    const int lane = threadIdx.x & 31;
    const int r = wrow + (lane & 15);
#pragma unroll
    for (int kk = 0; kk < DK / 16; ++kk) ldsm_x4(qa[kk], sQ + off<kRows>(r, 2 * kk + (lane >> 4)));
  }

  // S = Q K^T with Q in registers (load_q_frags): the tensor cores read only K from shared
  // memory, half the shared-memory traffic of issue_qk. The warp-specialized kernel uses it
  // (its consumers have the registers); the one-warpgroup kernel keeps issue_qk, since 32 more
  // registers per thread cost it a CTA per SM.
  // NK: the keys of the product (64, or 128 for a stage of two key tiles: m64n128, 64
  // accumulators); R: the rows of each 64-column panel of the K buffer (kBlockN, or 128 for the
  // warp-specialized kernel's two-tile stages).
  template <int NK = kBlockN, int R = kBlockN>
  __device__ static void issue_qk_rs(float* sd, const uint32_t (&qa)[DK / 16][4], const T* k_s) {
    static_assert(NK == 64 || NK == 128, "keys of one S = Q K^T");
    const uint32_t dk = desc_lo(k_s, 16);
    constexpr uint32_t hi = desc_hi(kAtomBytes);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < DK / 16; ++kk) {
      const uint32_t ek = ((kk >> 2) * (R * kPanelElems) + (kk & 3) * 16) * sizeof(T) / 16;
      if constexpr (NK == 128)
        wgmma_rs_kmajor_n128(T(), sd, qa[kk], dk + ek, hi, kk > 0);
      else
        wgmma_rs_n64<0>(T(), sd, qa[kk], dk + ek, hi, kk > 0);
    }
    wgmma_commit();
  }

  // O += P V: NK / 16 steps of 16 keys, each two 8-row swizzle atoms of V. Only the DK columns
  // that hold data are multiplied (head dims 32 and 96: n32, n96); the accumulators past them
  // stay zero. (The instruction's N need not fill the last 64-column panel: it reads the first
  // N / 8 core matrices of the swizzled layout.) R: the rows of each 64-column panel of the V
  // buffer (issue_qk_rs); pa: the NK / 16 A fragments of P.
  template <int NK = kBlockN, int R = kBlockN>
  __device__ static void issue_pv(float* od, const uint32_t (*pa)[4], const T* v_s) {
    constexpr uint32_t kPanel = R * 128;  // bytes of one 64-column panel of the buffer
    const uint32_t dv0 = desc_lo(v_s, kPanel);
    constexpr uint32_t hi = desc_hi(kAtomBytes);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < NK / 16; ++kk) {
      const uint32_t dv = dv0 + uint32_t(kk * 16 * kPanelElems * sizeof(T) / 16);
      if constexpr (DK == 32) {
        wgmma_rs_n32(T(), od, pa[kk], dv, hi);
      } else if constexpr (DK == 64) {
        wgmma_rs_n64<1>(T(), od, pa[kk], dv, hi, 1);
      } else if constexpr (DK == 96) {
        wgmma_rs_n96(T(), od, pa[kk], dv, hi);
      } else {
        // Columns [128 c, 128 c + 128): two panels further, accumulators 64 c onwards.
#pragma unroll
        for (int c = 0; c < D / 128; ++c)
          wgmma_rs_n128(T(), od + 64 * c, pa[kk], dv + uint32_t(c * 2 * kPanel / 16), hi);
      }
    }
    wgmma_commit();
  }

  template <int N>
  __device__ static void fence_regs(float* r) {
#pragma unroll
    for (int x = 0; x < N; ++x) reg_fence(r[x]);
  }

  // O += P V issued and waited for at once: the last product of a walk, or one that cannot wait
  // for the next tile's S = Q K^T to overlap it.
  template <int NK = kBlockN, int R = kBlockN>
  __device__ static void pv_now(float* od, const uint32_t (*pa)[4], const T* v_s) {
    fence_regs<kOAcc>(od);
    issue_pv<NK, R>(od, pa, v_s);
    wgmma_wait<0>();
    fence_regs<kOAcc>(od);
  }

  using Ops = TileOps<T, D, 1, kX>;

  // One tile's step once S = Q K^T is in registers and the previous tile's P V is issued: the
  // score hook, the mask of a partial tile (`full`: none), the online softmax; then, once that
  // P V is done, O's rescale and the tile's P packed as the A operand of its own P V.
  __device__ static void scores_to_p(const KParams& kp, const Work& w, float (&s)[1][8][4],
                                     float (&m)[1][2], float (&l)[1][2], float (&o)[1][D / 8][4],
                                     uint32_t (&pa)[4][4], bool full, bool reg_mask, int wrow,
                                     int32_t j0, const uint8_t* mask, float sl2) {
    Ops::apply_score_hook(kp, s);
    if (!full) {
      if (reg_mask)
        Ops::template apply_reg_mask<true>(kp, w, s, wrow, j0);
      else
        Ops::apply_smem_mask(s, wrow, mask);
    }
    float alpha[2];
    Ops::softmax_p(s, m, l, sl2, alpha);
    wgmma_wait<0>();
    fence_regs<kOAcc>(&o[0][0][0]);
    Ops::template rescale<DK>(o, alpha);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) Ops::pack_p(s, 0, kk, pa[kk]);
  }

  // Software pipeline over the visit list (one warpgroup): step t issues S_t = Q K_t and then
  // O += P_{t-1} V_{t-1}, so that the tensor cores run the second product while the warps turn
  // S_t into P_t; O is rescaled once that product is done. K_{t+1} and V_t are loaded during
  // step t: their buffers held K_{t-1} and V_{t-2}, both consumed by the end of step t-1.
  __device__ static void run(const KParams& kp) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    unsigned char* base = smem_raw;
    {
      const uint32_t a = uint32_t(__cvta_generic_to_shared(smem_raw));
      base += (kAlign - (a & (kAlign - 1))) & (kAlign - 1);
    }
    const TileSmem<T> sm(base, kQElems, kKVElems, kMaskBytes, kKVBufs);
    T* sQ = sm.q;
    T* sK = sm.k;
    T* sV = sm.v;
    uint8_t* sMask = sm.mask;
    VisitSmem& vs = *sm.visit;

    allow_dependent_launch();
    const Work w = get_work(kp);
    if (!w.valid) return;
    const Params& p = kp.p;
    const HeadInputs<T> in = head_inputs<T>(p, w.q);
    const int warp = threadIdx.x >> 5;
    const int wrow = warp * 16;  // wgmma m64: warp w of the warpgroup owns rows 16 w .. 16 w + 15

    // Q's loads go out before the visit list is built: they need nothing from it, and short
    // rows (a decode step's piece, random and listed blocks) spend a visible part of their time
    // waiting for their first loads.
    load_tile<kRows>(sQ, in.q, p.q_row_stride, w.q.i0, p.len_q);
    VisitIter<kX> it;
    it.init(kp, w);
    int32_t cur = -1;
    bool cur_full = false;
    bool have = it.next(kp, w, vs, &cur, &cur_full);
    int32_t klo, khi;  // the valid keys: rows outside are loaded as zeros
    valid_keys<kX>(kp, w.q.b, &klo, &khi);
    if (have) load_tile<kBlockN>(sK, in.k, p.k_row_stride, cur * kBlockN, khi, klo);
    cp_async_commit();

    float o[1][D / 8][4];
    float s[1][8][4];
#pragma unroll
    for (int x = 0; x < D / 8; ++x) o[0][x][0] = o[0][x][1] = o[0][x][2] = o[0][x][3] = 0.f;
#pragma unroll
    for (int x = 0; x < 8; ++x) s[0][x][0] = s[0][x][1] = s[0][x][2] = s[0][x][3] = 0.f;
    float m[1][2] = {{-INFINITY, -INFINITY}}, l[1][2] = {{0.f, 0.f}};
    const float sl2 = kp.scale_log2;
    const bool reg_mask = Ops::reg_mask_ok(kp);
    float* sd = &s[0][0][0];
    float* od = &o[0][0][0];
    uint32_t pa[4][4];  // P of the previous tile, the A operand of its P V product
    bool have_prev = false;

    if constexpr (kSingle) {
      // One K and one V buffer: step t issues S_t = Q K_t and O += P_{t-1} V_{t-1}; K_{t+1} is
      // loaded once S_t is done (during the softmax), V_t once P_{t-1} V_{t-1} is done (at the
      // end of the step). The other CTA of the SM covers what this one waits for.
      while (have) {
        int32_t nxt = -1;
        bool nxt_full = false;
        const bool have_next = it.next(kp, w, vs, &nxt, &nxt_full);
        const int32_t j0 = cur * kBlockN;
        if (!cur_full && !reg_mask) Ops::build_mask(kp, w, wrow, j0, sMask);
        cp_async_wait<0>();  // K_t and V_{t-1}
        fence_async_smem();
        __syncthreads();

        fence_regs<32>(sd);
        issue_qk(sd, sQ, sK);
        if (have_prev) {
          fence_regs<kOAcc>(od);
          issue_pv(od, pa, sV);
          wgmma_wait<1>();
        } else {
          wgmma_wait<0>();
        }
        fence_regs<32>(sd);
        __syncthreads();  // every warp's S_t is done: K_t is consumed
        if (have_next) load_tile<kBlockN>(sK, in.k, p.k_row_stride, nxt * kBlockN, khi, klo);
        cp_async_commit();

        scores_to_p(kp, w, s, m, l, o, pa, cur_full, reg_mask, wrow, j0, sMask, sl2);
        have_prev = true;

        __syncthreads();  // V_{t-1} is consumed
        load_tile<kBlockN>(sV, in.v, p.v_row_stride, cur * kBlockN, khi, klo);
        cp_async_commit();
        cur = nxt;
        cur_full = nxt_full;
        have = have_next;
      }
      if (have_prev) {
        cp_async_wait<0>();
        fence_async_smem();
        __syncthreads();
        pv_now(od, pa, sV);
      }
      cp_async_wait<0>();
      Ops::template write_out<kRows, CtaSync, DK>(kp, w, o, m, l, wrow, sQ);
      return;
    }

    int buf = 0;  // K_t sits in sK[buf], V_t goes to sV[buf]
    while (have) {
      int32_t nxt = -1;
      bool nxt_full = false;
      const bool have_next = it.next(kp, w, vs, &nxt, &nxt_full);
      if (have_next)
        load_tile<kBlockN>(sK + (buf ^ 1) * kKVElems, in.k, p.k_row_stride, nxt * kBlockN, khi,
                           klo);
      load_tile<kBlockN>(sV + buf * kKVElems, in.v, p.v_row_stride, cur * kBlockN, khi, klo);
      cp_async_commit();

      const int32_t j0 = cur * kBlockN;
      if (!cur_full && !reg_mask) Ops::build_mask(kp, w, wrow, j0, sMask);
      cp_async_wait<1>();  // K_t and V_{t-1}
      fence_async_smem();
      __syncthreads();

      fence_regs<32>(sd);
      issue_qk(sd, sQ, sK + buf * kKVElems);
      if (have_prev) {
        fence_regs<kOAcc>(od);
        issue_pv(od, pa, sV + (buf ^ 1) * kKVElems);
        wgmma_wait<1>();
      } else {
        wgmma_wait<0>();
      }
      fence_regs<32>(sd);

      scores_to_p(kp, w, s, m, l, o, pa, cur_full, reg_mask, wrow, j0, sMask, sl2);
      have_prev = true;

      __syncthreads();  // K_t and V_{t-1} are consumed: the next step refills their buffers
      buf ^= 1;
      cur = nxt;
      cur_full = nxt_full;
      have = have_next;
    }
    if (have_prev) {
      cp_async_wait<0>();
      fence_async_smem();
      __syncthreads();
      pv_now(od, pa, sV + (buf ^ 1) * kKVElems);
    }
    cp_async_wait<0>();
    Ops::template write_out<kRows, CtaSync, DK>(kp, w, o, m, l, wrow, sQ);
  }
};

template <typename T, int D, int DK, bool kX, bool kMany>
__global__ void __launch_bounds__(kThreads, (WgmmaKernel<T, D, DK, kX, kMany>::kMinCtas))
    wgmma_attention_kernel(const __grid_constant__ KParams kp) {
  WgmmaKernel<T, D, DK, kX, kMany>::run(kp);
}

template <typename T, int DK, bool kX, bool kMany>
cudaError_t launch_wgmma_as(const KParams& kp, int32_t grid, cudaStream_t stream) {
  constexpr int D = hopper_dim(DK);
  using K = WgmmaKernel<T, D, DK, kX, kMany>;
  if (kp.block_m != K::kRows) return cudaErrorInvalidValue;
  constexpr size_t smem = K::kSmem;
  cudaError_t e = allow_dynamic_smem<wgmma_attention_kernel<T, D, DK, kX, kMany>>(smem);
  if (e != cudaSuccess) return e;
  wgmma_attention_kernel<T, D, DK, kX, kMany><<<grid, kThreads, smem, stream>>>(kp);
  return cudaGetLastError();
}

// The one-warpgroup kernel of head dim DK (tiles of hopper_dim(DK) columns). At head dims 96 and
// 128 without the optional inputs, rows that are not stacked GQA rows (the short rows of random
// and listed blocks that kernel_for gives this kernel) run the kMany form: three CTAs per SM
// with one K/V buffer each were 12-13% faster than two with double buffers on BigBird-like at
// 16K, while decode steps (stacked rows streaming a long cache) were 5-18% slower with it and
// keep the double buffers (benchmarks/results/cuda_h200_L16K_many_ctas_ab.txt,
// cuda_h200_decode_many_ctas_ab*.txt). At head dim 64 (146 registers) three CTAs already fit
// with double buffers.
template <typename T, int DK, bool kX>
cudaError_t launch_wgmma(const KParams& kp, int32_t grid, cudaStream_t stream) {
  if constexpr (kHasManyForm<DK, kX>)
    if (kp.fold == 1) return launch_wgmma_as<T, DK, kX, true>(kp, grid, stream);
  return launch_wgmma_as<T, DK, kX, false>(kp, grid, stream);
}

}  // namespace cuda
}  // namespace spattn
