// Block-sparse forward for float16 / bfloat16 on Hopper (sm_90a): warp-specialized and
// persistent, built from the products of fwd_wgmma.cuh and the per-tile steps of TileOps.
//
// A CTA runs three warpgroups (four with three consumers, kParts) and stays on its SM for a
// series of work items (its first by index, the next ones by stride, or, in planned plans, from
// the workspace's item counter whenever it is ready for another: KParams::next_item):
//  * the producer (warpgroup 0): its warps 1..3 choose the items and build the visit lists of
//    their 128-row (or 192-row) query tiles ahead, window by window, into a ring of list
//    buffers; its thread 0 reads them and streams the Q tile and the K/V tiles into a ring of
//    kStages shared-memory stages with bulk tensor copies (TMA: one instruction per 64 x 64 box,
//    written in the tensor cores' swizzled layout, rows past the end filled with zeros); each
//    stage carries its key tile's index and, for each 64-row part, whether that part sees the
//    tile at all, partly or fully (for the long rows at tile widths 64 and 128, a stage holds two
//    key tiles: kPairs);
//  * two consumers (warpgroups 1 and 2; three at tile width 64 with kPairs) own 64 rows each and
//    run the software pipeline of the one-warpgroup kernel on the stages (S = Q K^T with Q in
//    registers, read once per work item, and K read by wgmma from shared memory; at D = 256, at
//    128 with kPairs and with three consumers, Q is read from shared memory too; P in registers
//    for O += P V), skipping the tiles their part does not see.
// Stages are handed over with mbarriers (full: the copies' bytes landed; empty: every consumer
// is done with it), so no CTA-wide barrier runs in the main loop; the producer is already
// loading the next work item while the consumers finish the current one. The consumers share
// every K/V load, which halves the traffic from L2 per product compared with 64-row tiles.
// setmaxnreg moves registers from the producer to the consumers.
#pragma once

#include <type_traits>

#include "fwd_wgmma.cuh"

namespace spattn {
namespace cuda {

// ---------------------------------------------------------------------------------------------
// mbarrier, cp.async arrive and register reallocation (PTX ISA 8.0, sm_90).
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return uint32_t(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count)
               : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile(
      "{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(smem_u32(bar))
      : "memory");
}
// Arrives on `bar` and adds `bytes` to the transaction count its current phase waits for.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)),
               "r"(bytes)
               : "memory");
}
// Bulk tensor copy of the box at (c0, c1, c2, c3) of a 4-D tensor map into shared memory; its
// bytes count against `bar`'s transaction count. `map` is the tensor map in parameter space.
__device__ __forceinline__ void tma_load_4d(void* dst, const CUtensorMap* map, uint64_t* bar,
                                            int32_t c0, int32_t c1, int32_t c2, int32_t c3) {
#ifdef SPATTN_WGMMA_DEVICE
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4, %5, %6}], [%2];\n" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
      : "memory");
#else
  (void)dst;
  (void)map;
  (void)bar;
  (void)c0;
  (void)c1;
  (void)c2;
  (void)c3;
#endif
}
// Waits until the phase of parity `parity` of `bar` has completed.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
#ifdef SPATTN_WGMMA_DEVICE
  const uint32_t a = smem_u32(bar);
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(a), "r"(parity)
        : "memory");
  } while (!done);
#else
  (void)bar;
  (void)parity;
#endif
}
template <int N>
__device__ __forceinline__ void regs_dealloc() {
#ifdef SPATTN_WGMMA_DEVICE
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}
template <int N>
__device__ __forceinline__ void regs_alloc() {
#ifdef SPATTN_WGMMA_DEVICE
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}

// The consumers' turns at the tensor cores (WsKernel::consume): consumer h waits on barrier
// kTurnBar + h for its turn and passes the turn by arriving on the next one's (h + 1, the last
// consumer's to consumer 0). Barrier IDs after those of WarpgroupSync (1..3) and BuilderSync (4),
// and before ConsumerSync3's 8; 256 threads: the 128 that wait and the 128 that arrive.
constexpr int kTurnBar = 5;
__device__ __forceinline__ void turn_wait(int half) {
  asm volatile("bar.sync %0, 256;\n" ::"r"(kTurnBar + half) : "memory");
}
template <int kParts>
__device__ __forceinline__ void turn_pass(int half) {
  const int next = kParts == 2 ? 1 - half : (half + 1 == kParts ? 0 : half + 1);
  asm volatile("bar.arrive %0, 256;\n" ::"r"(kTurnBar + next) : "memory");
}

// The warpgroup of the calling thread in a CTA of four (three consumers): WarpgroupSync's IDs,
// except 8 for the fourth warpgroup, since 4 is BuilderSync's.
struct ConsumerSync3 {
  static constexpr int kCount = kThreads;
  __device__ static void sync() {
    const int g = int(threadIdx.x) / kThreads;
    asm volatile("bar.sync %0, %1;\n" ::"r"(g == 3 ? 8 : g + 1), "n"(kThreads) : "memory");
  }
  __device__ static int tid() { return int(threadIdx.x) % kThreads; }
};

// ---------------------------------------------------------------------------------------------
// D: the tile width, DK: the call's head dim (WgmmaKernel). The bulk copies fill the columns
// from DK on with zeros (out of the tensor map's bounds). kX: the feature set (TileOps).
// kPairs: stages of two key tiles (launch.cu: KParams::ws_pairs says when), D = 64 and 128.
// kParts: consumer warpgroups of 64 rows each, so work items of 64 kParts rows: 2, or 3 at tile
// width 64 with pairs (KParams::ws_parts), the layout FlashAttention-3 and -4 run at head dims up
// to 64. With three, each consumer's softmax has two others' products to hide behind, where two
// consumers leave the tensor cores idle whenever both are in theirs, and each K/V stage serves
// 192 rows instead of 128.
template <typename T, int D, int DK = D, bool kX = true, bool kPairs = false, int kParts = 2>
struct WsKernel {
  static_assert(!kPairs || D <= 128, "two-tile stages: D <= 128");
  static_assert(hopper_takes(DK), "head dims of the Hopper kernels");
  static_assert(kParts == 2 || (kParts == 3 && D == 64 && kPairs),
                "three consumers: tile width 64 with two-tile stages");
  using Base = WgmmaKernel<T, D, DK, kX>;      // tile layout, loads and the two products
  static constexpr int kHalfRows = kPartRows;  // rows of one consumer (one m64 tile)
  static constexpr int kBlockRows = kParts * kPartRows;
  static constexpr int kCTAThreads = (kParts + 1) * kThreads;
  // The consumers' barrier (WarpgroupSync's IDs collide with BuilderSync's in a fourth group).
  using CSync = std::conditional_t<kParts == 3, ConsumerSync3, WarpgroupSync>;
  // D = 256: 64 KB per K/V stage, so two stages, one Q buffer (the next item's Q loads once the
  // current one is written out), and Q read by the tensor cores from shared memory (issue_qk):
  // its register fragments (64 per thread) do not fit beside 128 output accumulators.
  static constexpr bool kWide = D == 256;
  // kPairs: a stage holds two key tiles, so that S = Q K^T is one m64n128 product per
  // 16 head-dim columns and P V runs over 128 keys. The per-tile steps that do not grow with the
  // keys (the barriers, the running max's reductions and its compare, issuing the products) then
  // run once per 128 keys, and each consumer's products are twice as long beside its softmax, so
  // the two consumers' softmaxes leave the tensor cores idle less: dense 9% and the causal window
  // 4% faster at D = 64. Short rows keep one tile per stage: the two halves of a work item see
  // different tiles at a band's edges, and a half computes the whole pair when it sees either (the
  // band ran 14-21% slower with pairs). At D = 128 (head dims 96 and 128) two stages of 128 keys
  // fit, K and V handed back apart, with Q read from shared memory: Q's 32 register fragments
  // beside 64 scores, 32 of P and 64 accumulators spilled. With turns, dense takes 0.90x the time
  // and the causal window 0.89x at head dim 128 (0.95x and 0.93x at 96). D = 256 has no registers
  // for them.
  static constexpr int kSubs = kPairs ? 2 : 1;
  static constexpr int kStageKeys = kSubs * kBlockN;
  static constexpr int kNT = kStageKeys / 8;  // n8 fragments of a consumer's scores
  // (Three consumers: four stages of two tiles fit beside their Q buffers and mask.)
  static constexpr int kStages =
      kPairs ? (D == 64 ? (kParts == 3 ? 4 : 5) : 2) : (D == 64 ? 6 : (kWide ? 2 : 4));
  static constexpr int kQBufs = kWide ? 1 : 2;
  // Three consumers read Q from shared memory: at 160 registers each, the 16 of Q's fragments
  // beside 64 scores, 32 of P and 32 accumulators would spill.
  static constexpr bool kQRegs = kPairs ? D == 64 && kParts == 2 : !kWide;
  // K and V handed back apart (Smem::full_v): two-stage rings need it (D = 256, and D = 128 with
  // pairs). With one tile per stage at D <= 128 the deeper rings keep the producer ahead, and the
  // extra barrier operations per tile cost more than they bring (D = 64 dense and causal window
  // 3-4% slower with them).
  static constexpr bool kSplitKV = kStages == 2;
  static constexpr int kQElems = kHalfRows * D;    // one half's Q tile
  static constexpr int kKVElems = kStageKeys * D;  // [D / 64 panels][kStageKeys rows][64]
  // Registers per thread after setmaxnreg (multiples of 8): the CTA starts with 168 per thread
  // (65536 / 384, rounded down to 8); the producer gives back what the consumers take. The
  // producer keeps enough for the visit-list build; at D = 256 the consumers need more, and with
  // pairs more still: 64 scores and 32 registers of P spilled at 200 and serialized the products
  // (ptxas C7511); at D = 128 the consumers take 240 (the producer 24). The long rows that run
  // pairs build few list windows per item, so the producer's own spills cost little there.
  // Three consumers: 128 per thread at entry (65536 / 512), the producer at 32 and the
  // consumers at 160.
  static constexpr int kEntryRegs = kParts == 3 ? 128 : 168;
  static constexpr int kProducerRegs =
      kParts == 3 ? 32 : (kPairs ? (D == 64 ? 40 : 24) : (kWide ? 56 : 104));
  static constexpr int kConsumerRegs =
      ((kParts + 1) * kEntryRegs - kProducerRegs) / kParts;  // 160 ... 240
  static_assert(kConsumerRegs % 8 == 0, "setmaxnreg takes multiples of 8");
  // Turns at the tensor cores (consume): at tile width 64, where a tile's products are shortest
  // beside its softmax, and with pairs, where both halves see nearly every stage (at D = 128
  // dense 7% and the causal window 4% faster than pairs without turns). One tile per stage at
  // 128 measured even (the causal window 2.5% faster, ±256 + 64 global 4-5% slower: its global
  // rows' half walks every key tile while the other half waits its turn on each).
  static constexpr bool kTurns = D == 64 || kPairs;

  // Tag of a stage: for key tile u of the stage, bits kClsBits u .. the parts' classes
  // (VisitIter::build: bits 2h..2h+1 for part h, 0 = not seen, 1 = partly) and bit kPad << u,
  // plus these. A second tile that is absent (the walk's last stage with an odd count) has
  // classes 0.
  static constexpr int kClsBits = kParts == 3 ? 8 : 4;  // a tile's classes: 2 kParts bits
  static constexpr int kFlag0 = 2 * kClsBits;
  static constexpr uint32_t kLast = 1u << kFlag0;        // the last stage of the work item
  static constexpr uint32_t kNone = 1u << (kFlag0 + 1);  // no key tile: nothing to load or compute
  static constexpr uint32_t kPair = 1u << (kFlag0 + 2);  // the stage holds kSubs tiles (else one)
  static constexpr uint32_t kPad = 1u << (kFlag0 + 3);   // << u: tile u crosses the valid keys

  struct Stage {
    int32_t tile[kSubs];
    uint32_t tag;
  };
  static constexpr int kLists = 2;  // visit-list window buffers (build_lists)

  // Shared memory after the 1024-byte alignment: kQBufs Q buffers of kParts parts each (with two,
  // the next work item's Q loads while the current one runs; a half's buffer then stages its
  // output tile), the K and V rings, the token mask (128 rows), then the producer's visit lists,
  // the stage tags and the barriers. Every tile is a multiple of 8 KB (swizzle atoms stay
  // aligned).
  static constexpr size_t kQBytes = size_t(kParts * kQBufs) * kQElems * sizeof(T);
  static constexpr size_t kKVBytes = size_t(kStages) * kKVElems * sizeof(T);
  static constexpr size_t kMaskBytes = size_t(kBlockRows) * kBlockN;
  static constexpr size_t kOffK = kQBytes;
  static constexpr size_t kOffV = kOffK + kKVBytes;
  static constexpr size_t kOffMask = kOffV + kKVBytes;
  static constexpr size_t kOffVisit = kOffMask + kMaskBytes;
  static constexpr size_t kOffStage = (kOffVisit + kLists * sizeof(VisitSmem) + 15) / 16 * 16;
  static constexpr size_t kOffItem = kOffStage + kStages * sizeof(Stage);
  static constexpr size_t kOffBar = (kOffItem + 3 * sizeof(int32_t) + 7) / 8 * 8;
  // Barriers: full[kStages], empty[kStages] (K, or K and V), full_v[kStages], empty_v[kStages]
  // (V, kSplitKV only), q_full[2], q_empty[2], list_full[kLists], list_empty[kLists].
  static constexpr int kBars = (kSplitKV ? 4 : 2) * kStages + 4 + 2 * kLists;
  static constexpr size_t kSmem = Base::kAlign + kOffBar + kBars * sizeof(uint64_t);
  static_assert(kSmem <= 227 * 1024, "shared memory of one CTA");

  struct Smem {
    T* q;  // [kQBufs buffers][kParts parts][kQElems]
    T* k;  // [kStages][kKVElems]
    T* v;
    uint8_t* mask;
    VisitSmem* visit;  // [kLists]
    Stage* stage;
    int32_t* q_item;  // [2] the work item of each Q buffer (-1: no more items)
    int32_t* claim;   // the builders' claimed item (next_item)
    // With kSplitKV a stage's K and V have their own barriers: a consumer hands K back as soon as
    // its S = Q K^T is done and V once its P V is, so the next K loads while P V still reads the
    // V before it. Without, full and empty cover both.
    uint64_t* full;  // K (and V) landed, and the stage's tag is written
    uint64_t* empty;
    uint64_t* full_v;
    uint64_t* empty_v;
    uint64_t* q_full;
    uint64_t* q_empty;
    uint64_t* list_full;
    uint64_t* list_empty;
  };

  __device__ static Smem carve() {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    unsigned char* base = smem_raw;
    const uint32_t a = smem_u32(smem_raw);
    base += (Base::kAlign - (a & (Base::kAlign - 1))) & (Base::kAlign - 1);
    Smem s;
    s.q = reinterpret_cast<T*>(base);
    s.k = reinterpret_cast<T*>(base + kOffK);
    s.v = reinterpret_cast<T*>(base + kOffV);
    s.mask = base + kOffMask;
    s.visit = reinterpret_cast<VisitSmem*>(base + kOffVisit);
    s.stage = reinterpret_cast<Stage*>(base + kOffStage);
    s.q_item = reinterpret_cast<int32_t*>(base + kOffItem);
    s.claim = s.q_item + 2;
    s.full = reinterpret_cast<uint64_t*>(base + kOffBar);
    s.empty = s.full + kStages;
    s.full_v = kSplitKV ? s.empty + kStages : nullptr;
    s.empty_v = kSplitKV ? s.full_v + kStages : nullptr;
    s.q_full = s.empty + (kSplitKV ? 3 : 1) * kStages;
    s.q_empty = s.q_full + 2;
    s.list_full = s.q_empty + 2;
    s.list_empty = s.list_full + kLists;
    return s;
  }

  // Loads a 64-row tile of a [B, H, L, D] tensor map at row r0: D / 64 boxes of 64 columns,
  // each into a 128-byte-swizzled panel of R rows (64: a Q half; kStageKeys: a K/V stage, whose
  // tile u lands at row 64 u of each panel).
  template <int R>
  __device__ static void load_box_rows(T* dst, const CUtensorMap* map, uint64_t* bar, int32_t r0,
                                       int32_t h, int32_t b) {
#pragma unroll
    for (int c = 0; c < D / 64; ++c) tma_load_4d(dst + c * R * 64, map, bar, c * 64, r0, h, b);
  }

  // The walk of a work item reads another window of its visit list while candidates are left
  // and the item's rank range [r0, r1) is not covered yet (`kept`: entries of its windows so
  // far). The builders and the streamer apply this one rule, so they agree on the windows.
  __device__ static bool more_windows(const VisitIter<kX>& it, const Work& w, int64_t kept) {
    return it.w0 < it.nu && kept < w.r1;
  }

  // The next work item of the CTA after item x: x + gridDim.x, or, with the item counter, the
  // next unclaimed one. Called by every builder; one claims it.
  __device__ static int32_t next_item(const KParams& kp, int32_t x, int32_t* slot) {
    if (!kp.next_item) return x + int32_t(gridDim.x);
    if (BuilderSync::tid() == 0) *slot = int32_t(gridDim.x) + atomicAdd(kp.next_item, 1);
    BuilderSync::sync();
    const int32_t y = *slot;
    BuilderSync::sync();  // every builder read it before the next claim
    return y;
  }

  // Warps 1..3 of the producer warpgroup choose the CTA's work items and build their visit lists
  // ahead, window by window, into the ring of kLists list buffers: the build (classification,
  // scans and barriers, issued between the consumers' math) runs while thread 0 streams the
  // stages of the items before. Every item gets at least one window (an empty one when it has no
  // candidates), which names the item; a window naming item -1 ends the CTA's work.
  __device__ static void build_lists(const KParams& kp, const Smem& sm) {
    const int32_t items = num_work(kp);
    uint32_t wc = 0;  // windows built so far
    int32_t x = int32_t(blockIdx.x);
    while (true) {
      Work w;
      w.valid = false;
      while (x < items) {
        w = get_work(kp, x);
        if (w.valid) break;  // else a split tile's whole-tile slot (get_work)
        x = next_item(kp, x, sm.claim);
      }
      if (x >= items) {
        const uint32_t b = wc % kLists;
        mbar_wait(sm.list_empty + b, ((wc / kLists) & 1u) ^ 1u);
        if (BuilderSync::tid() == 0) sm.visit[b].item = -1;
        mbar_arrive(sm.list_full + b);
        return;
      }
      VisitIter<kX> it;
      it.init(kp, w);
      int64_t kept = 0;
      do {
        const uint32_t b = wc % kLists;
        mbar_wait(sm.list_empty + b, ((wc / kLists) & 1u) ^ 1u);
        if (it.w0 < it.nu) {
          it.template build<BuilderSync, kParts>(kp, w, sm.visit[b]);
        } else {
          it.n = 0;
        }
        if (BuilderSync::tid() == 0) {
          sm.visit[b].total = it.n;
          sm.visit[b].item = x;
        }
        mbar_arrive(sm.list_full + b);  // every builder: its entries of the list are written
        kept += it.n;
        ++wc;
      } while (more_windows(it, w, kept));
      x = next_item(kp, x, sm.claim);
    }
  }

  // Fill number n of the ring: the stage's tag, then the K and V copies of its tiles (or, for
  // an item without key tiles, the arrival alone).
  __device__ static void fill_stage(const KParams& kp, const Smem& sm, uint32_t n,
                                    const Stage& stage, int32_t hk, int32_t b) {
    constexpr uint32_t kTileBytes = kBlockN * D * sizeof(T);
    const uint32_t s = n % kStages, ph = ((n / kStages) & 1u) ^ 1u;
    mbar_wait(sm.empty + s, ph);
    sm.stage[s] = stage;
    if (stage.tag & kNone) {
      mbar_arrive(sm.full + s);
      if constexpr (kSplitKV) {
        mbar_wait(sm.empty_v + s, ph);
        mbar_arrive(sm.full_v + s);
      }
      return;
    }
    T* k_s = sm.k + s * kKVElems;
    T* v_s = sm.v + s * kKVElems;
    uint64_t* v_bar = kSplitKV ? sm.full_v + s : sm.full + s;
    // A stage without a second tile loads zeros in its place (a box wholly outside the tensor:
    // rows -64..-1), so that the consumers run the same two-tile products on every stage: its
    // scores are masked, and zero P times these zero rows of V adds nothing (an earlier stage's
    // values there could be NaN).
    int32_t r[kSubs];
#pragma unroll
    for (int u = 0; u < kSubs; ++u)
      r[u] = u == 0 || (stage.tag & kPair) ? stage.tile[u] * kBlockN : -kBlockN;
    mbar_arrive_expect_tx(sm.full + s, (kSplitKV ? 1u : 2u) * kSubs * kTileBytes);
#pragma unroll
    for (int u = 0; u < kSubs; ++u)
      load_box_rows<kStageKeys>(k_s + u * kBlockN * 64, &kp.tma_k, sm.full + s, r[u], hk, b);
    if constexpr (kSplitKV) {
      mbar_wait(sm.empty_v + s, ph);
      mbar_arrive_expect_tx(v_bar, kSubs * kTileBytes);
    }
#pragma unroll
    for (int u = 0; u < kSubs; ++u)
      load_box_rows<kStageKeys>(v_s + u * kBlockN * 64, &kp.tma_v, v_bar, r[u], hk, b);
  }

  // Thread 0 of the producer warpgroup: for each work item the builders chose (its first list
  // window names it), the Q tile, then one stage per key tile of the built lists (one tile of
  // look-ahead: a stage is filled once the walk knows whether it is the item's last). A stage's
  // full barrier takes one arrival (after the tag is written) plus the bytes of the copies; a Q
  // buffer's, one arrival (after its item is written) plus the bytes of the Q tile.
  __device__ static void stream(const KParams& kp, const Smem& sm) {
    const Params& p = kp.p;
    constexpr uint32_t kQTileBytes = kParts * kQElems * sizeof(T);
    uint32_t n = 0;   // stage fills so far
    uint32_t k = 0;   // work items run so far
    uint32_t wc = 0;  // list windows read so far
    while (true) {
      uint32_t b = wc % kLists;
      mbar_wait(sm.list_full + b, (wc / kLists) & 1u);
      const int32_t x = sm.visit[b].item;
      // Q of this item into buffer k % kQBufs, once both consumers wrote out item k - kQBufs
      // from it.
      const uint32_t qb = k % kQBufs;
      mbar_wait(sm.q_empty + qb, ((k / kQBufs) & 1u) ^ 1u);
      sm.q_item[qb] = x;
      if (x < 0) {  // no more items: the consumers stop
        mbar_arrive(sm.q_full + qb);
        return;
      }
      const Work w = get_work(kp, x);
      const int32_t hk = w.q.h / (p.heads_q / p.heads_kv);
      T* q_s = sm.q + qb * kParts * kQElems;
      mbar_arrive_expect_tx(sm.q_full + qb, kQTileBytes);
#pragma unroll
      for (int h = 0; h < kParts; ++h)
        load_box_rows<kHalfRows>(q_s + h * kQElems, &kp.tma_q, sm.q_full + qb,
                                 w.q.i0 + h * kHalfRows, w.q.h, w.q.b);

      int32_t klo, khi;  // the valid keys: the tiles crossing their bounds are tagged kPad
      valid_keys<kX>(kp, w.q.b, &klo, &khi);
      const auto pad = [&](int32_t t) -> bool {
        const int32_t j0 = t * kBlockN;
        return j0 < klo || (j0 + kBlockN > khi && khi < p.len_k);
      };
      VisitIter<kX> it;
      it.init(kp, w);
      int64_t kept = 0, rank = 0;
      // The stage being gathered: `have` tiles so far. A full one is filled once the walk
      // knows whether another tile follows (the last stage carries kLast).
      Stage cur{};
      uint32_t have = 0;
      bool first = true;
      do {
        if (!first) {
          b = wc % kLists;
          mbar_wait(sm.list_full + b, (wc / kLists) & 1u);
        }
        first = false;
        const VisitSmem& vs = sm.visit[b];
        const int32_t cnt = vs.total;
        const int32_t wbase = it.w0;
        it.w0 = min(it.w0 + kWindow, it.nu);
        int32_t e = 0;
        if (rank < w.r0) {  // skip the entries below this item's rank range
          const int32_t skip = int32_t(min(int64_t(cnt), w.r0 - rank));
          e = skip;
          rank += skip;
        }
        for (; e < cnt && rank < w.r1; ++e, ++rank) {
          const uint32_t v = vs.list[e];
          if (have == uint32_t(kSubs)) {
            cur.tag |= kPair;
            fill_stage(kp, sm, n++, cur, hk, w.q.b);
            have = 0;
            cur.tag = 0;
          }
          const int32_t t = it.tile_of(wbase + int32_t(v & 0x7ffu));
          // (Constant indices: an indexed write would put the stage in local memory.)
          if (have == 0)
            cur.tile[0] = t;
          else
            cur.tile[kSubs - 1] = t;
          // The parts' classes: in the entry (two), or in the window's flags (three: build).
          const uint32_t cls = kParts == 2 ? (v >> 11) & 15u : uint32_t(vs.flags[v & 0x7ffu]) & 63u;
          cur.tag |= (cls << (kClsBits * have)) | (pad(t) ? kPad << have : 0u);
          ++have;
        }
        mbar_arrive(sm.list_empty + b);  // the window is read
        kept += cnt;
        ++wc;
      } while (more_windows(it, w, kept));
      // The item's last stage; an empty visit list gets one stage that says so.
      cur.tag |= kLast | (have == 0 ? kNone : have == uint32_t(kSubs) ? kPair : 0u);
      fill_stage(kp, sm, n++, cur, hk, w.q.b);
      ++k;
    }
  }

  // Zeroes the rows of a V stage whose keys j0 + r lie outside the valid keys [lo, hi): the bulk
  // copies bring the tensor's values, and a padding key must contribute nothing even when they
  // are NaN or Inf (its zero weight times them would not be zero). Only the key tiles that cross
  // key_starts or key_lengths take this. Both consumers may zero the same rows: they write the
  // same zeros, each before its own product reads them (the generic-proxy writes are fenced for
  // the tensor cores' async proxy), and the stage is refilled only once both handed it back.
  // v: the stage's V buffer, whose tile u holds keys [j0, j0 + kBlockN).
  __device__ static void zero_padding(const KParams& kp, int32_t b, T* v, int u, int32_t j0) {
    int32_t lo, hi;
    valid_keys<kX>(kp, b, &lo, &hi);
    constexpr int kChunks = D / 8;
    // The thread index is read here, through a volatile asm, and the loop is not unrolled: the
    // compiler otherwise hoisted the unrolled loop's per-thread offsets out of the consumer's tile
    // loop, which kept about ten registers of this rare path live through every tile.
    uint32_t tid;
    asm volatile("mov.u32 %0, %%tid.x;" : "=r"(tid));
#pragma unroll 1
    for (int x = int(tid % kThreads); x < kBlockN * kChunks; x += kThreads) {
      const int r = x / kChunks, ch = x % kChunks;
      const int32_t j = j0 + r;
      if (j < lo || j >= hi)
        *reinterpret_cast<uint4*>(v + (ch >> 3) * (kStageKeys * 64) + (u * kBlockN + r) * 64 +
                                  (ch & 7) * 8) = make_uint4(0u, 0u, 0u, 0u);
    }
    fence_async_smem();
    CSync::sync();
  }

  // The mask of key tile U of a stage for a warp's rows: all of it when they do not see the tile
  // (`partial` false), the token mask of a partial tile otherwise. The unseen case is a select
  // after the partial one, not an early return: that form made the compiler copy the 64 scores
  // into new registers on every stage, full tiles included (about 80 instructions per stage and
  // warp; dense and the causal window at D = 64 ran 7-8% slower, docs/kernels.md).
  template <int U>
  __device__ static void mask_sub(const KParams& kp, const Work& w, float (&s)[1][kNT][4],
                                  bool partial, bool reg_mask, int wrow, int32_t tile,
                                  uint8_t* mask) {
    using Ops = TileOps<T, D, 1, kX>;
    if (partial) {
      const int32_t j0 = tile * kBlockN;
      if (reg_mask) {
        Ops::template apply_reg_mask<false, kNT, 8 * U>(kp, w, s, wrow, j0);
      } else {
        Ops::build_mask(kp, w, wrow, j0, mask);
        Ops::template apply_smem_mask<kNT, 8 * U>(s, wrow, mask);
        __syncwarp();  // the warp's mask rows are rewritten by its next partial tile
      }
    }
    Ops::template mask_tile<kNT, 8 * U>(s, !partial);
  }

  // A consumer warpgroup: rows [64 half, 64 half + 64) of each work item. Both consumers run
  // this one copy of the code (half is a run-time value), which halves the instructions they
  // fetch.
  //
  // Turns (kTurns): the consumers issue their products of each stage in turn, consumer 0 first
  // (turn_wait before S = Q K^T, turn_pass once P V is issued), so that one's products run on the
  // tensor cores while the other computes its softmax, instead of both contending for the tensor
  // cores and then both waiting on the exp2 unit. Both walk the same stages, and a consumer that
  // skips a stage still takes and passes its turn, so the waits and passes stay paired. (Taking
  // turns only on the stages both compute, which both can tell from the tag, measured slower on
  // dense: the predicated barriers cost more than the lockstep they avoid.)
  __device__ static void consume(const KParams& kp, const Smem& sm, const int half) {
    using Sync = CSync;
    using Ops = TileOps<T, D, 1, kX>;
    const int warp = Sync::tid() >> 5;
    const int row0 = half * kHalfRows;
    const int wrow = row0 + warp * 16;  // wgmma m64: warp w owns rows 16 w .. 16 w + 15
    const float sl2 = kp.scale_log2;
    const bool reg_mask = Ops::reg_mask_ok(kp);
    uint32_t n = 0, k = 0;
    if (kTurns && half == kParts - 1) turn_pass<kParts>(half);  // consumer 0 takes the first turn
    while (true) {
      const uint32_t qb = k % kQBufs;
      mbar_wait(sm.q_full + qb, (k / kQBufs) & 1u);
      const int32_t x = sm.q_item[qb];
      if (x < 0) break;  // no more items
      const Work w = get_work(kp, x);
      float o[1][D / 8][4];
      float s[1][kNT][4];
#pragma unroll
      for (int c = 0; c < D / 8; ++c) o[0][c][0] = o[0][c][1] = o[0][c][2] = o[0][c][3] = 0.f;
#pragma unroll
      for (int c = 0; c < kNT; ++c) s[0][c][0] = s[0][c][1] = s[0][c][2] = s[0][c][3] = 0.f;
      float m[1][2] = {{-INFINITY, -INFINITY}}, l[1][2] = {{0.f, 0.f}};
      float* sd = &s[0][0][0];
      float* od = &o[0][0][0];
      uint32_t pa[kNT / 2][4];  // P of the previous computed stage, the A operand of its P V
      int32_t prev = -1;        // its stage, -1: none pending
      uint32_t prev_n = 0;      // the fill index of that stage

      T* sQ = sm.q + (qb * kParts + half) * kQElems;  // this part's Q, then its output staging
      // This warp's Q rows, the A operand of every S = Q K^T (D = 256: read from sQ instead).
      uint32_t qa[kQRegs ? DK / 16 : 1][4];
      if constexpr (kQRegs) Base::load_q_frags(qa, sQ, warp * 16);
      // P V of the held stage, once its V landed; then V goes back to the producer.
      const auto held_pv = [&]() {
        if constexpr (kSplitKV) mbar_wait(sm.full_v + prev, (prev_n / kStages) & 1u);
        Base::template pv_now<kStageKeys, kStageKeys>(od, pa, sm.v + prev * kKVElems);
        mbar_arrive((kSplitKV ? sm.empty_v : sm.empty) + prev);
        prev = -1;
      };
      while (true) {
        // Skipped tiles have brought the ring round to the stage still held for its P V
        // product: the producer refills a V buffer only once both consumers handed it back.
        if (prev >= 0 && n - prev_n >= uint32_t(kStages)) held_pv();
        const uint32_t st = n % kStages, par = (n / kStages) & 1u;
        mbar_wait(sm.full + st, par);
        ++n;
        const Stage stage = sm.stage[st];
        // Classes of this part: tile 0 in bits 0-1, tile 1 in bits kClsBits.. (0 when absent).
        const uint32_t cls = (stage.tag >> (2 * half)) & (3u | (3u << kClsBits));
        const bool last = (stage.tag & kLast) != 0;
        if ((stage.tag & kNone) || cls == 0) {
          // Nothing of this stage for these rows. V is handed back once it landed: its buffer's
          // next fill must not start under this one's copy (and the barrier's phases stay paired).
          if constexpr (kTurns) {
            turn_wait(half);
            turn_pass<kParts>(half);
          }
          mbar_arrive(sm.empty + st);
          if constexpr (kSplitKV) {
            mbar_wait(sm.full_v + st, par);
            mbar_arrive(sm.empty_v + st);
          }
        } else {
          // The classes, decided before the products and kept through them: the compiler
          // otherwise recomputed them from the thread index after them, 5 instructions per tile
          // (ncu, dense D = 64). The asm makes the value opaque, so it is kept rather than
          // rematerialized. Bits 0 and 1: tile 0 is partial, tile 0 is not seen; bits 4 and 5:
          // the same for tile 1.
          const uint32_t c0 = cls & 3u, c1 = cls >> kClsBits;
          uint32_t kinds;
          asm volatile("mov.b32 %0, %1;"
                       : "=r"(kinds)
                       : "r"((c0 == 1u ? 1u : 0u) | (c0 == 0u ? 2u : 0u) | (c1 == 1u ? 0x10u : 0u) |
                             (c1 == 0u ? 0x20u : 0u)));
          if (stage.tag & (kPad | (kPad << 1))) {
            if constexpr (kSplitKV) mbar_wait(sm.full_v + st, par);
#pragma unroll
            for (int u = 0; u < kSubs; ++u)
              if (stage.tag & (kPad << u))
                zero_padding(kp, w.q.b, sm.v + st * kKVElems, u, stage.tile[u] * kBlockN);
          }
          Base::template fence_regs<kNT * 4>(sd);
          if constexpr (kTurns) turn_wait(half);
          if constexpr (kQRegs)
            Base::template issue_qk_rs<kStageKeys, kStageKeys>(sd, qa, sm.k + st * kKVElems);
          else
            Base::template issue_qk<kStageKeys>(sd, sQ, sm.k + st * kKVElems);
          if (prev >= 0) {
            if constexpr (kSplitKV) mbar_wait(sm.full_v + prev, (prev_n / kStages) & 1u);
            Base::template fence_regs<Base::kOAcc>(od);
            Base::template issue_pv<kStageKeys, kStageKeys>(od, pa, sm.v + prev * kKVElems);
            if constexpr (kTurns) turn_pass<kParts>(half);
            wgmma_wait<1>();
          } else {
            if constexpr (kTurns) turn_pass<kParts>(half);
            wgmma_wait<0>();
          }
          // S = Q K^T is done: K goes back to the producer (or, K and V together, after P V).
          if constexpr (kSplitKV) mbar_arrive(sm.empty + st);
          Base::template fence_regs<kNT * 4>(sd);
          Ops::apply_score_hook(kp, s);
          // One tile per stage: a computed tile is seen, partly (kinds bit 0) or fully. (Testing
          // for the unseen case here too cost the band 5%: the compiler predicated the whole-tile
          // mask into every partial tile.)
          if constexpr (kSubs == 1) {
            if (kinds & 1u) mask_sub<0>(kp, w, s, true, reg_mask, wrow, stage.tile[0], sm.mask);
          } else if (kinds & 3u) {
            mask_sub<0>(kp, w, s, (kinds & 2u) == 0, reg_mask, wrow, stage.tile[0], sm.mask);
          }
          // An absent second tile (zeros) has classes 0.
          if constexpr (kSubs > 1) {
            if (kinds & 0x30u)
              mask_sub<1>(kp, w, s, (kinds & 0x20u) == 0, reg_mask, wrow, stage.tile[1], sm.mask);
          }
          float alpha[2];
          Ops::softmax_p(s, m, l, sl2, alpha);
          wgmma_wait<0>();
          Base::template fence_regs<Base::kOAcc>(od);
          if (prev >= 0) mbar_arrive((kSplitKV ? sm.empty_v : sm.empty) + prev);  // its P V is done
          Ops::template rescale<DK>(o, alpha);
#pragma unroll
          for (int kk = 0; kk < kNT / 2; ++kk) Ops::pack_p(s, 0, kk, pa[kk]);
          prev = int32_t(st);
          prev_n = n - 1;
          if (last) break;
          continue;
        }
        if (last) break;
      }
      if (prev >= 0) held_pv();
      Ops::template write_out<kHalfRows, Sync, DK>(kp, w, o, m, l, wrow, sQ, row0);
      // The staged output was written and read through the generic proxy; the next Q lands
      // there through the async proxy.
      fence_async_smem();
      mbar_arrive(sm.q_empty + qb);  // Q and the staged output are read
      ++k;
    }
    if (kTurns && half == 0) turn_wait(half);  // the last consumer's pass: no arrival left over
  }

  __device__ static void run(const KParams& kp) {
#ifdef SPATTN_WGMMA_DEVICE
    const Smem sm = carve();
    if (threadIdx.x == 0) {
      for (int s = 0; s < kStages; ++s) {
        mbar_init(sm.full + s, 1);
        mbar_init(sm.empty + s, kParts * kThreads);
        if constexpr (kSplitKV) {
          mbar_init(sm.full_v + s, 1);
          mbar_init(sm.empty_v + s, kParts * kThreads);
        }
      }
      for (int b = 0; b < 2; ++b) {
        mbar_init(sm.q_full + b, 1);
        mbar_init(sm.q_empty + b, kParts * kThreads);
      }
      for (int b = 0; b < kLists; ++b) {
        mbar_init(sm.list_full + b, BuilderSync::kCount);
        mbar_init(sm.list_empty + b, 1);
      }
      // The initialized barriers become visible to the copy engine (async proxy).
      asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    const int group = threadIdx.x / kThreads;
    if (group == 0) {
      regs_dealloc<kProducerRegs>();
      if (threadIdx.x >= 32)
        build_lists(kp, sm);
      else if (threadIdx.x == 0)
        stream(kp, sm);
    } else {
      regs_alloc<kConsumerRegs>();
      consume(kp, sm, group - 1);
    }
#else
    (void)kp;
    __trap();
#endif
  }
};

template <typename T, int D, int DK, bool kX, bool kPairs, int kParts>
__global__ void __launch_bounds__(WsKernel<T, D, DK, kX, kPairs, kParts>::kCTAThreads, 1)
    ws_attention_kernel(const __grid_constant__ KParams kp) {
  WsKernel<T, D, DK, kX, kPairs, kParts>::run(kp);
}

// `grid`: the number of work items (direct and bounded plans) or its upper bound (counted
// plan); the persistent CTAs, one per SM, take them as build_lists says.
template <typename T, int D, int DK, bool kX, bool kPairs, int kParts = 2>
cudaError_t launch_ws_form(const KParams& kp, int32_t grid, cudaStream_t stream) {
  using K = WsKernel<T, D, DK, kX, kPairs, kParts>;
  constexpr size_t smem = K::kSmem;
  cudaError_t e = allow_dynamic_smem<ws_attention_kernel<T, D, DK, kX, kPairs, kParts>>(smem);
  if (e != cudaSuccess) return e;
  DeviceFacts dev;
  e = device_facts(&dev);
  if (e != cudaSuccess) return e;
  if (grid > dev.sms) grid = dev.sms;
  ws_attention_kernel<T, D, DK, kX, kPairs, kParts><<<grid, K::kCTAThreads, smem, stream>>>(kp);
  return cudaGetLastError();
}

template <typename T, int DK, bool kX>
cudaError_t launch_ws(const KParams& kp, int32_t grid, cudaStream_t stream) {
  constexpr int D = hopper_dim(DK);
  if constexpr (D == 64) {
    if (kp.ws_parts == 3) {
      if (kp.block_m != kBlockMWs3 || !kp.ws_pairs) return cudaErrorInvalidValue;
      return launch_ws_form<T, D, DK, kX, true, 3>(kp, grid, stream);
    }
  }
  if (kp.block_m != kBlockMWs || kp.ws_parts != 2) return cudaErrorInvalidValue;
  if constexpr (D <= 128) {
    if (kp.ws_pairs) return launch_ws_form<T, D, DK, kX, true>(kp, grid, stream);
  }
  return launch_ws_form<T, D, DK, kX, false>(kp, grid, stream);
}

// The tensor-core kernel of one (dtype, head dim, feature set) that launch() chose.
// Only the kernels that take head dim D are built for it (launch.cu never picks another).
template <typename T, int D, bool kX>
cudaError_t launch_tensor_core_x(const KParams& kp, int32_t grid, cudaStream_t stream) {
  if constexpr (hopper_takes(D)) {
    if (kp.kernel == kKernelWs) return launch_ws<T, D, kX>(kp, grid, stream);
    if (kp.kernel == kKernelWgmma) return launch_wgmma<T, D, kX>(kp, grid, stream);
  }
  if (kp.kernel != kKernelMma) return cudaErrorInvalidValue;
  return launch_mma<T, D, kX>(kp, grid, stream);
}

// Calls without global_mask, key_starts, sinks and softcap run the instantiation that has their
// code compiled out (pattern_of).
template <typename T, int D>
cudaError_t launch_tensor_core(const KParams& kp, int32_t grid, cudaStream_t stream) {
  if (kp.extras) return launch_tensor_core_x<T, D, true>(kp, grid, stream);
  return launch_tensor_core_x<T, D, false>(kp, grid, stream);
}

}  // namespace cuda
}  // namespace spattn
