// Pieces shared by every CUDA kernel of SparseAttention: the kernel parameters, the on-device visit
// list of key tiles, the work items of the split-KV schedule and the bad-value checks.
//
// Tiling: a CTA owns a tile of block_m query rows of one (batch, query head) and walks the key
// tiles (kBlockN keys each) that Pattern::classify does not call empty. Every kernel of one call
// uses the same block_m/kBlockN, so the counts of the planning pass and the walks of the attention
// kernels enumerate exactly the same list.
#pragma once

#include <cuda.h>  // CUtensorMap (the tensor maps of the warp-specialized kernel)
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "spattn/params.h"
#include "spattn/pattern.h"

namespace spattn {
namespace cuda {

// Query rows per CTA tile of the tensor-core kernel (16 or 32 per warp). launch.cu picks the
// narrow tile for patterns whose rows are short (see narrow_rows there).
constexpr int kBlockMMmaWide = 128;
constexpr int kBlockMMmaNarrow = 64;
constexpr int kBlockMF32 = 64;  // query rows per CTA tile, float32 kernel (2 threads per row)
constexpr int kBlockN = 64;     // keys per key tile
constexpr int kThreads = 128;   // every attention kernel runs 4 warps
// Key tiles classified per thread and window: a window of the visit list covers
// kThreads * kTilesPerThread key tiles (2048: L = 131072 in one window at kBlockN = 64).
constexpr int kTilesPerThread = 16;
constexpr int kWindow = kThreads * kTilesPerThread;
static_assert(kWindow <= 2048, "a visit-list entry holds its offset in the window in 11 bits");
// A split work item covers at least this many key tiles (smaller pieces cost more to combine).
constexpr int kMinTilesPerSplit = 8;
// Calls with few query tiles and long rows (decoding): fewer query tiles than half this bound
// take the few-tiles plan, whose pieces the workspace holds up to this many.
constexpr int kFewTilesSplitTarget = 512;
// The pieces that plan aims at: about one wave of the one-warpgroup kernel on a large GPU (two
// CTAs per SM on 132 SMs), so that each CTA pays a piece's start and its partial write once. A
// stacked decode step of 16 x 8 KV heads is 128 query tiles: 2 pieces each. Against 512 pieces
// (4 each, two waves) the causal window 4096 decode steps took 0.94x the time and full causal
// the same; 384 (1.5 waves) took 1.06-1.15x (benchmarks/results/cuda_h200_decode_split_ab.txt).
constexpr int kFewTilesSplitPieces = 256;
// Upper bound of split work items the scheduler aims at (about 8 waves on a large GPU).
constexpr int kSplitTarget = 1024;

// Programmatic dependent launch (compute capability 9.0 and up): after a Hopper kernel, the
// combine kernel is launched as a dependent of it (launch.cu, launch_combine_t), so that its
// launch and its CTAs' start overlap the attention kernel's last CTAs instead of following them.
// The one-warpgroup kernel lets it start once each of its CTAs has started (the persistent
// warp-specialized kernel holds its SMs to the end and lets it start as it finishes); the
// combine kernel waits, before its first read, until the attention grid has finished and its
// writes are visible. Both are no-ops without the launch attribute (and on older devices).
__device__ __forceinline__ void allow_dependent_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wait_for_primary_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// The kernels of the 16-bit types (launch.cu picks one per call).
enum KernelKind : int32_t {
  kKernelMma = 0,    // portable mma.sync kernel, fwd_mma.cuh
  kKernelWgmma = 1,  // Hopper, one warpgroup per 64-row tile, fwd_wgmma.cuh
  kKernelWs = 2,     // Hopper, warp-specialized and persistent, 128- or 192-row tiles, fwd_ws.cuh
};
// Query rows per tile of the warp-specialized kernel: two consumer warpgroups of kPartRows, or
// three (kBlockMWs3: tile width 64 with two-tile stages, launch.cu ws_parts_for).
constexpr int kPartRows = 64;  // one consumer's rows (one m64 tile)
constexpr int kBlockMWs = 2 * kPartRows;
constexpr int kBlockMWs3 = 3 * kPartRows;

// The head dims each kernel is built for (every one of kCudaHeadDims runs on the mma.sync kernel
// and the float32 kernel). The two Hopper kernels keep Q/K/V in 64-column panels of the tensor
// cores' 128-byte swizzle and take the same head dims (the warp-specialized kernel runs D = 256
// with one Q buffer, two K/V stages and Q read from shared memory). launch.cu picks a kernel that
// takes the call's head dim.
//
// Head dims 32 and 96 run the Hopper kernels of the next multiple of 64 (hopper_dim): the tiles
// hold zeros past column D (cp.async zero-fill, or the bulk copies' out-of-bounds fill), S = Q K^T
// takes only the D / 16 steps that hold data and O = P V only the D columns (wgmma n32 / n96).
__host__ __device__ constexpr int hopper_dim(int d) { return (d + 63) / 64 * 64; }
__host__ __device__ constexpr bool hopper_takes(int d) {
  return d == 32 || d == 64 || d == 96 || d == 128 || d == 256;
}
// The mma.sync kernel's 128-row tiles hold 2 x D / 2 output accumulators per thread: at D = 256
// more registers than a thread has, so D = 256 runs 64-row tiles.
__host__ __device__ constexpr bool mma_wide_takes(int d) { return d <= 128; }

// Barriers over the threads that run a piece of code together (kCount of them, numbered by
// tid()): the whole CTA, one warpgroup, or the list builders of the warp-specialized kernel, each
// with its own hardware barrier ID (1..15; 0 is __syncthreads).
struct CtaSync {
  static constexpr int kCount = kThreads;
  __device__ static void sync() { __syncthreads(); }
  __device__ static int tid() { return int(threadIdx.x); }
};
// The warpgroup of the calling thread (threads [128 g, 128 g + 128)), with barrier ID g + 1: the
// same code serves every warpgroup of a warp-specialized CTA.
struct WarpgroupSync {
  static constexpr int kCount = kThreads;
  __device__ static void sync() {
    asm volatile("bar.sync %0, %1;\n" ::"r"(int(threadIdx.x) / kThreads + 1), "n"(kThreads)
                 : "memory");
  }
  __device__ static int tid() { return int(threadIdx.x) % kThreads; }
};
// Warps 1..3 of the first warpgroup (the warp-specialized kernel's list builders), barrier ID 4.
struct BuilderSync {
  static constexpr int kCount = kThreads - 32;
  __device__ static void sync() { asm volatile("bar.sync 4, %0;\n" ::"n"(kCount) : "memory"); }
  __device__ static int tid() { return int(threadIdx.x) - 32; }
};

// How the work of a launch is laid out (launch.cu picks one from sizes and attributes):
//  * kDirect: one work item per query tile, no workspace;
//  * kCounted: a counting pass writes each query tile's visit-list length and a one-CTA
//    scheduler splits the long ones (strided patterns, or few query tiles with long rows);
//  * kBounded: without the strided component only query tiles holding global query rows can
//    have long visit lists, and which tiles those are follows from the attributes: they are
//    split into fixed pieces and no counting or scheduling pass runs.
enum PlanKind : int32_t { kDirect = 0, kCounted = 1, kBounded = 2 };

// One work item of the planned schedule.
struct WorkItem {
  int32_t qtile;   // global query tile: (b * Hq + h) * num_q_tiles + qt
  int32_t split;   // index of this split
  int32_t splits;  // number of splits of this query tile (1: writes the output directly)
  int32_t pad;
};

// Everything the kernels read, passed by value.
struct KParams {
  Params p;
  Pattern pat;
  int32_t block_m;          // query rows per tile (kBlockMMmaWide/Narrow, kBlockMWs or kBlockMF32)
  int32_t num_q_tiles;      // ceil(Lq / block_m)
  int32_t num_k_tiles;      // ceil(Lk / kBlockN)
  int32_t total_q_tiles;    // B * Hq * num_q_tiles
  int32_t planned;          // kDirect, kCounted or kBounded (PlanKind)
  int32_t kernel;           // which kernel runs the 16-bit types (KernelKind)
  int32_t ws_pairs;         // warp-specialized kernel: stages of two key tiles (launch.cu)
  int32_t ws_parts;         // warp-specialized kernel: consumers, 64 rows each (block_m / 64)
  int32_t split_target;     // the scheduler splits the total work into about this many items
  int32_t max_split_items;  // capacity of the partial buffers (2 * split_target)
  float scale_log2;         // scale * log2(e): the kernels use exp2; 1 with softcap (score_hook)
  // Logit softcapping (PatternAttrs::softcap > 0): score_hook turns a raw q.k into
  // softcap_out * tanh(q.k * softcap_in), the capped score already in log2 units.
  int32_t softcap_on;
  float softcap_in;   // scale / softcap
  float softcap_out;  // softcap * log2(e)
  // Whether the call uses any of global_mask, key_starts, sinks or softcap (launch.cu). The
  // 16-bit kernels are instantiated twice (kX, see pattern_of): calls without them run the
  // instantiation that has their code compiled out.
  int32_t extras;
  // Bounded plan (planned == kBounded): query tiles [heavy_qt0, heavy_qt0 + heavy_nqt) of every
  // (batch, head) hold global query rows; each is split into `pieces` pieces of `piece_tiles`
  // ranks of its visit list: slots [0, n_split) of the partial results in (b, h, tile, piece)
  // order (get_work: the order of the work items).
  int32_t heavy_qt0, heavy_nqt;
  int32_t pieces, piece_tiles;
  int32_t n_split;
  // Workspace (counted and bounded plans; counts, header and items: counted plan only).
  int32_t* counts;  // [total_q_tiles] visited key tiles per query tile
  int32_t* header;  // [0] number of items, [1] number of split items (they come first), [2]
                    // the longest visit list left whole
  WorkItem* items;  // [max_split_items] the split items
  float* part_o;    // [max_split_items, part_rows, Dv] unnormalized partial outputs
  float2* part_ml;  // [max_split_items, part_rows] (running max in log2 units, sum of exp2)
  // Rows of a partial result: block_m, or fewer when the call has a single query tile shorter
  // than that (decoding): Lq rounded up to 32, the rows of whole warps (a warp whose rows are all
  // past Lq writes none).
  int32_t part_rows;
  // With global_mask: key_tiles_global[b * num_k_tiles + t] != 0 when key tile t of batch b holds
  // a global token (written on the stream by global_tiles_kernel before the lists are built).
  const uint8_t* key_tiles_global;
  // The persistent warp-specialized kernel's item counter (planned plans; zeroed on the stream
  // before each launch): CTA c takes item c, then the next unclaimed one (gridDim.x + the
  // counter's old value) whenever it is ready for another. Null: CTA c takes c, c + gridDim.x, ...
  int32_t* next_item;
  // GQA row stacking (launch.cu, gqa_fold): with fold > 1 the `fold` query heads of a KV head
  // are the rows of one query tile, so that K and V are read once per KV head instead of once per
  // query head (decoding: short queries over a long cache). p then describes the folded view
  // [B, Hkv, fold * Lq, D] of query and output (rows of head h * fold + r / Lq, query index
  // r % Lq), while pat keeps the call's own sizes: pattern_row and row_head map a tile row back.
  // fold_lq is the call's Lq, fold_magic its fastmod_u32 multiplier.
  int32_t fold;
  int32_t fold_lq;
  uint64_t fold_magic;
  // Tensor maps of q, k and v as [B, H, L, D] (boxes of 64 rows x 64 columns, 128-byte
  // swizzle) for the bulk tensor copies of the warp-specialized kernel; set by launch.cu for it.
  CUtensorMap tma_q, tma_k, tma_v;
};

// The query index of the op (the pattern's row) of row i of the kernels' query view: i itself,
// or i mod Lq when GQA rows are stacked (KParams::fold).
__device__ __forceinline__ int32_t pattern_row(const KParams& kp, int32_t i) {
  return kp.fold > 1 ? int32_t(fastmod_u32(uint32_t(i), kp.fold_magic, uint32_t(kp.fold_lq))) : i;
}

// Decoded query tile of a CTA. With stacked GQA rows (KParams::fold), h is the KV head, rows
// [i0, i1) are rows of the folded view and the tile holds every query index of the call:
// [pi0, pi1) = [0, Lq), the rows the visit list is built for.
struct QTile {
  int32_t b, h, qt;  // batch, query head (KV head when folded), query tile within the head
  int32_t i0, i1;    // rows [i0, i1) of the kernels' query view
  int32_t pi0, pi1;  // the pattern's rows (query indices of the op) the tile holds
};

__device__ __forceinline__ QTile decode_qtile(const KParams& kp, int32_t g) {
  QTile t;
  t.qt = g % kp.num_q_tiles;
  const int32_t bh = g / kp.num_q_tiles;
  t.h = bh % kp.p.heads_q;
  t.b = bh / kp.p.heads_q;
  t.i0 = t.qt * kp.block_m;
  t.i1 = min(t.i0 + kp.block_m, kp.p.len_q);
  t.pi0 = kp.fold > 1 ? 0 : t.i0;  // folded: one tile per KV head (launch.cu)
  t.pi1 = kp.fold > 1 ? kp.fold_lq : t.i1;
  return t;
}

// The query head of row i of tile q (its own head unless GQA rows are stacked): the sink of the
// row. The masks take q.h: a stacked call's pattern is the same for every head (launch.cu).
__device__ __forceinline__ int32_t row_head(const KParams& kp, const QTile& q, int32_t i) {
  if (kp.fold <= 1) return q.h;
  // i / Lq from fastmod's multiplier (ceil(2^64 / Lq) * i) >> 64, exact for 32-bit i and Lq >= 2;
  // Lq = 1 has no 64-bit multiplier (2^64): row i is head i of the group.
  const int32_t r = kp.fold_lq == 1 ? i : int32_t(__umul64hi(kp.fold_magic, uint64_t(uint32_t(i))));
  return q.h * kp.fold + r;
}

// Query, key and value of the (batch, head) of a query tile; GQA: query head h reads KV head
// h / (Hq / Hkv).
template <typename T>
struct HeadInputs {
  const T* q;
  const T* k;
  const T* v;
};

template <typename T>
__device__ __forceinline__ HeadInputs<T> head_inputs(const Params& p, const QTile& t) {
  const int32_t hk = t.h / (p.heads_q / p.heads_kv);
  HeadInputs<T> in;
  in.q = static_cast<const T*>(p.q) + t.b * p.q_batch_stride + t.h * p.q_head_stride;
  in.k = static_cast<const T*>(p.k) + t.b * p.k_batch_stride + hk * p.k_head_stride;
  in.v = static_cast<const T*>(p.v) + t.b * p.v_batch_stride + hk * p.v_head_stride;
  return in;
}

// The work of one CTA: a query tile and the ranks [r0, r1) of its visit list. slot >= 0: write
// the unnormalized partial result into slot `slot` of the partial buffers instead of the output.
struct Work {
  QTile q;
  int64_t r0, r1;
  int32_t slot;
  bool valid;
};

// The number of work items of a launch (direct plan: the query tiles; bounded plan: the split
// pieces and the query tiles; counted plan: the scheduled items, known on the device only).
__device__ __forceinline__ int32_t num_work(const KParams& kp) {
  if (kp.planned == kCounted) return kp.header[0];
  if (kp.planned == kBounded) return kp.n_split + kp.total_q_tiles;
  return kp.total_q_tiles;
}

// Whether query tile qt of a head is one of the bounded plan's split tiles.
__device__ __forceinline__ bool is_heavy_qt(const KParams& kp, int32_t qt) {
  return unsigned(qt - kp.heavy_qt0) < unsigned(kp.heavy_nqt);
}

// The split query tile whose pieces are partial-result slots x .. x + splits - 1 (x: its first).
struct SplitTile {
  int32_t qtile;
  int32_t splits;
};

// Split tile number s of the bounded plan (s < n_split / pieces).
__device__ __forceinline__ SplitTile bounded_split_tile(const KParams& kp, int32_t s) {
  const int32_t bh = s / kp.heavy_nqt;
  return SplitTile{bh * kp.num_q_tiles + kp.heavy_qt0 + s % kp.heavy_nqt, kp.pieces};
}

// Work item x: the CTA's own (x = blockIdx.x), or the x-th of a persistent CTA's loop.
__device__ __forceinline__ Work get_work(const KParams& kp, int32_t x) {
  Work w;
  w.valid = true;
  w.slot = -1;
  w.r0 = 0;
  w.r1 = INT64_MAX;
  if (kp.planned == kDirect) {
    // Direct mode: the last query tiles first, so that causal rows (the longest) start early.
    const int32_t bh_count = kp.p.batch * kp.p.heads_q;
    const int32_t qt = kp.num_q_tiles - 1 - x / bh_count;
    w.q = decode_qtile(kp, (x % bh_count) * kp.num_q_tiles + qt);
    return w;
  }
  if (kp.planned == kBounded) {
    // The pieces of the split tiles (piece k: ranks [k * piece_tiles, (k + 1) * piece_tiles) of
    // the visit list; pieces past its end are empty) and the query tiles whole, unless split.
    // The persistent warp-specialized kernel takes them (batch, head) after (batch, head), each
    // (batch, head)'s pieces just before the previous one's whole tiles: P0, P1 W0, P2 W1, ...,
    // W(last). A head's global rows then run beside the tiles that read the same keys and values,
    // which come from L2 instead of memory twice, and the last pieces, the longest items, start
    // early enough to end with the rest. The other kernels start their CTAs in item order: all
    // pieces first, the longest work first.
    const int32_t heavy = kp.heavy_nqt * kp.pieces;  // pieces per (batch, head)
    int32_t slot = -1, t = 0;                        // a piece's slot, or a whole query tile
    if (kp.kernel == kKernelWs) {
      if (x < heavy) {
        slot = x;
      } else {
        const int32_t per_bh = heavy + kp.num_q_tiles;
        const int32_t y = x - heavy;
        const int32_t bh = y / per_bh, r = y % per_bh;
        const int32_t last_bh = kp.p.batch * kp.p.heads_q - 1;
        if (bh < last_bh && r < heavy)
          slot = (bh + 1) * heavy + r;
        else
          t = bh * kp.num_q_tiles + (bh < last_bh ? r - heavy : r);
      }
    } else if (x < kp.n_split) {
      slot = x;
    } else {
      t = x - kp.n_split;
    }
    if (slot >= 0) {  // slot = split tile * pieces + piece
      const SplitTile st = bounded_split_tile(kp, slot / kp.pieces);
      w.q = decode_qtile(kp, st.qtile);
      w.r0 = int64_t(slot % kp.pieces) * kp.piece_tiles;
      w.r1 = w.r0 + kp.piece_tiles;
      w.slot = slot;
      return w;
    }
    w.valid = x < num_work(kp) && !is_heavy_qt(kp, t % kp.num_q_tiles);
    if (w.valid) w.q = decode_qtile(kp, t);
    return w;
  }
  if (x >= kp.header[0]) {
    w.valid = false;
    return w;
  }
  // Items [0, header[1]) are the pieces of split query tiles; item header[1] + t is query tile t
  // whole, unless t was split (its visit list is longer than header[2] tiles): then it does
  // nothing, its pieces came first.
  const int32_t n_split = kp.header[1];
  if (x >= n_split) {
    const int32_t t = x - n_split;
    if (kp.counts[t] > kp.header[2]) {
      w.valid = false;
      return w;
    }
    w.q = decode_qtile(kp, t);
    return w;
  }
  const WorkItem it = kp.items[x];
  w.q = decode_qtile(kp, it.qtile);
  if (it.splits > 1) {
    const int64_t n = kp.counts[it.qtile];
    w.r0 = n * it.split / it.splits;
    w.r1 = n * (it.split + 1) / it.splits;
    w.slot = x;  // split items come first in the item list
  }
  return w;
}

__device__ __forceinline__ Work get_work(const KParams& kp) {
  return get_work(kp, int32_t(blockIdx.x));
}

// The pattern as the kernels of feature set kX see it. kX = false: the instantiation for calls
// without global_mask, key_starts, sinks and softcap (KParams::extras == 0). Its copy of the
// pattern holds null for the two per-batch inputs, which the compiler then folds away with every
// branch and loop on them (Pattern's members are all inline): without it the code of the optional
// inputs cost the kernels 20-40 registers and up to 39% of their time even when the inputs were
// absent.
template <bool kX>
__device__ __forceinline__ decltype(auto) pattern_of(const KParams& kp) {
  if constexpr (kX) {
    return (kp.pat);  // a reference: the members are read where they are used
  } else {
    Pattern pat = kp.pat;
    pat.global_mask = nullptr;
    pat.key_starts = nullptr;
    return pat;
  }
}

// The valid keys [lo, hi) of batch b (key_starts, key_lengths), clipped to [0, Lk] with lo <= hi.
// The kernels load the K and V rows outside it as zeros (never the tensors' values): a padding
// key contributes nothing whatever its K and V hold, NaN and Inf included (docs/op-spec.md).
template <bool kX>
__device__ __forceinline__ void valid_keys(const KParams& kp, int32_t b, int32_t* lo, int32_t* hi) {
  const int32_t len = kp.pat.key_len(b);
  const int32_t h = len < 0 ? 0 : (len > kp.p.len_k ? kp.p.len_k : len);
  const int32_t start = kX ? kp.pat.key_start(b) : 0;
  *lo = start < 0 ? 0 : (start > h ? h : start);
  *hi = h;
}

// Rows whose inputs hold values outside the spec's ranges (key_lengths, key_starts,
// block_indices): the kernels never read out of bounds for them and write NaN into these rows to
// make them loud.
template <bool kX = true>
__device__ __forceinline__ bool row_is_bad(const KParams& kp, int32_t b, int32_t h, int32_t i) {
  const Pattern& pat = kp.pat;
  const int32_t len = pat.key_len(b);
  if (len < 0 || len > pat.len_k) return true;
  if (kX && pat.key_starts) {
    const int32_t start = pat.key_starts[b];
    if (start < 0 || start > len) return true;  // key_starts[b] in [0, key_lengths[b]]
  }
  if (pat.block_indices) {
    const int32_t* row = pat.listed_row(h, i / pat.a.block_size);
    for (int32_t k = 0; k < pat.bi_k; ++k) {
      const int32_t v = row[k];
      if (v < -1 || v >= pat.num_key_blocks) return true;
    }
  }
  return false;
}

// Token-level mask inside a partial tile. The bounds checks come first: `allowed` would read
// block_indices for a query block past the end, and a bad key length could exceed Lk.
__device__ __forceinline__ bool pair_allowed(const KParams& kp, int32_t b, int32_t h, int32_t i,
                                             int32_t j) {
  return i < kp.p.len_q && j < kp.p.len_k && kp.pat.allowed(b, h, i, j);
}

// ---------------------------------------------------------------------------------------------
// The visit list of key tiles, built on the device window by window.
//
// Candidates are the key tiles of Pattern::candidate_tiles (the band, the global keys, the random
// and listed blocks, the tiles holding a global_mask token; every valid tile when the strided
// component or a global query row is in the tile); Pattern::classify then drops the empty ones and
// marks the full ones. The list of a window is kept in shared memory in increasing key order.
//
// Windows run over candidate indices u. Without random/listed blocks, global_mask and `all`, the
// candidates are two runs of key tiles, the global keys' [glob_lo, glob_hi) and the band's, so u
// counts just those (a band of 10 tiles in a row of 1024 is 10 indices, one per thread);
// otherwise u runs over the valid key tiles [first, last] (key_starts and key_lengths skip the
// others): tile first + u.
struct VisitSmem {
  uint16_t list[kWindow];  // offset in window | tag (see VisitIter::build)
  uint8_t flags[kWindow];  // random / listed block candidates, then each one's result
  int32_t warp_sums[kThreads / 32];
  int32_t total;
  int32_t item;  // the work item of the window (warp-specialized kernel; -1: no more items)
};

// kX: the feature set of the kernel (pattern_of); the builders and the streamer of one kernel
// use the same one, so they agree on the candidates.
template <bool kX = true>
struct VisitIter {
  // Candidate description of the query tile.
  int32_t band_lo, band_hi;  // key tiles of the local band (empty when lo > hi)
  int32_t glob_lo, glob_hi;  // key tiles [glob_lo, glob_hi) hold global keys j < num_global
  bool all;                  // every valid key tile is a candidate
  bool blocks;               // random or listed blocks are on
  bool global_keys;          // tiles holding a global_mask token are candidates
  int32_t nu;                // candidate indices [0, nu)
  int32_t u_band, u_shift;   // u >= u_band is key tile u + u_shift (the band run)
  int32_t u_base;            // u < u_band is key tile u + u_base
  // Walk state.
  int32_t w0;      // first candidate index of the next window to build
  int32_t n, e;    // entries in the current window, next entry
  int32_t wbase;   // first candidate index of the current window
  int64_t rank;    // rank of entry e in the whole list
  int64_t r0, r1;  // ranks this CTA processes

  __device__ void init(const KParams& kp, const Work& w) {
    const CandidateTiles c = pattern_of<kX>(kp).candidate_tiles(w.q.b, w.q.pi0, w.q.pi1, kBlockN);
    all = c.all;
    band_lo = c.band_lo;
    band_hi = c.band_hi;
    glob_lo = c.glob_lo;
    glob_hi = c.glob_hi;
    blocks = c.blocks;
    global_keys = c.global_keys;
    if (kX && global_keys && !kp.key_tiles_global) all = true;  // no per-tile bits: every tile
    if (c.empty()) {
      nu = 0;
      u_band = 0;
      u_shift = u_base = 0;
    } else if (all || blocks || global_keys) {
      nu = c.last - c.first + 1;
      u_band = 0;
      u_shift = u_base = c.first;
    } else {
      const int32_t nglob = glob_hi > glob_lo ? glob_hi - glob_lo : 0;
      const int32_t lo = max(band_lo, glob_hi);  // band tiles not already global
      const int32_t len = band_hi >= lo ? band_hi - lo + 1 : 0;
      u_band = nglob;
      u_base = glob_lo;
      u_shift = lo - nglob;
      nu = nglob + len;
    }
    w0 = 0;
    n = 0;
    e = 0;
    wbase = 0;
    rank = 0;
    r0 = w.r0;
    r1 = w.r1;
  }

  __device__ int32_t tile_of(int32_t u) const { return u >= u_band ? u + u_shift : u + u_base; }

  // Builds the list of the window starting at candidate index w0. Called by every thread of the CTA
  // (Sync = CtaSync) or of one warpgroup (WarpgroupSync). An entry is the tile's offset in the
  // window (11 bits) and either its full flag (bit 15) or, with kParts 64-row parts of the query
  // tile (the warp-specialized kernel's consumers), the class of the tile for each part (2 bits
  // each: 0 empty, 1 partial, 2 full): two parts' classes sit in the entry from bit 11; three
  // parts' do not fit the 5 bits left, so they stay in the window's flags byte of the entry's
  // offset (bits 0-5), which the window keeps until its list is read. Either way the list holds
  // the tiles Pattern::classify does not call empty for the whole tile, the list count_kernel
  // counts.
  template <typename Sync = CtaSync, int kParts = 0>
  __device__ void build(const KParams& kp, const Work& w, VisitSmem& sm) {
    const Pattern& pat = kp.pat;  // classify: pattern_of, at each call
    const int tid = Sync::tid();
    const int32_t wend = min(w0 + kWindow, nu);
    Sync::sync();  // the previous window's list is no longer read
    if (blocks && !all) {
      for (int x = tid; x < kWindow; x += Sync::kCount) sm.flags[x] = 0;
      Sync::sync();
      const int32_t bs = pat.a.block_size;
      const int32_t qb0 = w.q.pi0 / bs, qb1 = (w.q.pi1 - 1) / bs;
      const int32_t per_qb = pat.a.num_random + (pat.block_indices ? pat.bi_k : 0);
      const int64_t total = int64_t(qb1 - qb0 + 1) * per_qb;
      for (int64_t x = tid; x < total; x += Sync::kCount) {
        const int32_t qb = qb0 + int32_t(x / per_qb);
        const int32_t r = int32_t(x % per_qb);
        int32_t kb;
        if (r < pat.a.num_random)
          kb = pat.random_kb(w.q.h, qb, r);
        else
          kb = pat.listed_row(w.q.h, qb)[r - pat.a.num_random];
        if (kb < 0 || kb >= pat.num_key_blocks) continue;  // padding, or a bad value (ignored)
        const int64_t j0 = int64_t(kb) * bs;
        int64_t j1 = j0 + bs - 1;
        if (j1 > kp.p.len_k - 1) j1 = kp.p.len_k - 1;
        // Candidate indices u = tile - u_shift of the block's key tiles, within the window.
        const int32_t t0 = max(int32_t(j0 / kBlockN) - u_shift, w0);
        const int32_t t1 = min(int32_t(j1 / kBlockN) - u_shift, wend - 1);
        for (int32_t u = t0; u <= t1; ++u) sm.flags[u - w0] = 1;
      }
      Sync::sync();
    }
    // Pass 1: classify, candidate u by thread u % Sync::kCount, so that a run of expensive
    // candidates (a band, with random blocks to test) is spread over the threads. The result
    // replaces the candidate's byte in sm.flags (each byte has one owner): 0 dropped, else
    // kKept | the full flag (bit 0) or, with kParts, the parts' classes (bits 0 .. 2 kParts - 1).
    constexpr uint32_t kKept = 0x80u;
#pragma unroll 1
    for (int32_t u = w0 + tid; u < wend; u += Sync::kCount) {
      const int32_t t = tile_of(u);
      bool cand = all || (t >= band_lo && t <= band_hi) || (t >= glob_lo && t < glob_hi);
      if (!cand && blocks) cand = sm.flags[u - w0] != 0;
      if (kX && !cand && global_keys)
        cand = kp.key_tiles_global[int64_t(w.q.b) * kp.num_k_tiles + t] != 0;
      uint32_t code = 0;
      if (cand) {
        Tile tile;
        tile.i0 = w.q.pi0;
        tile.i1 = w.q.pi1;
        tile.j0 = t * kBlockN;
        tile.j1 = min(tile.j0 + kBlockN, kp.p.len_k);
        const TileClass c = pattern_of<kX>(kp).classify(w.q.b, w.q.h, tile);
        if (c != TileClass::kEmpty) {
          // A tile reaching past Lk holds padding columns that must be masked.
          const bool in_bounds = tile.j0 + kBlockN <= kp.p.len_k;
          code = kKept;
          if constexpr (kParts > 0) {
            static_assert(kParts == 2 || kParts == 3, "two or three 64-row parts");
#pragma unroll 1
            for (int hh = 0; hh < kParts; ++hh) {
              Tile ht = tile;
              ht.i0 = w.q.i0 + hh * kPartRows;
              ht.i1 = min(ht.i0 + kPartRows, w.q.i1);
              if (ht.i0 >= ht.i1) continue;  // rows past Lq
              if (kp.fold > 1) {  // the part's rows may hold any query index: all of them
                ht.i0 = w.q.pi0;
                ht.i1 = w.q.pi1;
              }
              const TileClass hc = pattern_of<kX>(kp).classify(w.q.b, w.q.h, ht);
              const uint32_t v = hc == TileClass::kEmpty                 ? 0u
                                 : (hc == TileClass::kFull && in_bounds) ? 2u
                                                                         : 1u;
              code |= v << (2 * hh);
            }
          } else if (c == TileClass::kFull && in_bounds) {
            code |= 1u;
          }
        }
      }
      sm.flags[u - w0] = uint8_t(code);
    }
    Sync::sync();
    // Pass 2: contiguous runs of the results (the list stays in key order) over all threads.
    const int32_t per = (wend - w0 + Sync::kCount - 1) / Sync::kCount;
    const int32_t base = w0 + tid * per;
    const int32_t stop = min(base + per, wend);
    int32_t cnt = 0;
#pragma unroll 1
    for (int32_t u = base; u < stop; ++u) cnt += (sm.flags[u - w0] & kKept) ? 1 : 0;
    // Exclusive scan of the counts over the CTA, in thread order (= key order).
    const int lane = tid & 31, warp = tid >> 5;
    int32_t incl = cnt;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int32_t y = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += y;
    }
    if (lane == 31) sm.warp_sums[warp] = incl;
    Sync::sync();
    int32_t off = incl - cnt;
    int32_t tot = 0;
#pragma unroll
    for (int x = 0; x < Sync::kCount / 32; ++x) {
      const int32_t s = sm.warp_sums[x];
      if (x < warp) off += s;
      tot += s;
    }
#pragma unroll 1
    for (int32_t u = base; u < stop; ++u) {
      const uint32_t code = sm.flags[u - w0];
      if (code & kKept) {
        const uint32_t tag = kParts == 2   ? (code & 15u) << 11
                             : kParts == 3 ? 0u
                                           : (code & 1u) << 15;
        sm.list[off++] = uint16_t(uint32_t(u - w0) | tag);
      }
    }
    Sync::sync();
    n = tot;
    e = 0;
    wbase = w0;
    w0 = wend;
  }

  // Next key tile of this CTA's rank range: returns false at the end. `is_full` says whether the
  // tile needs no token-level mask. CTA-uniform.
  __device__ bool next(const KParams& kp, const Work& w, VisitSmem& sm, int32_t* tile,
                       bool* is_full) {
    uint32_t tag = 0;
    const bool ok = next_tagged<CtaSync, false>(kp, w, sm, tile, &tag);
    *is_full = tag != 0;
    return ok;
  }

  // The same walk with the tag of the entry: the full flag, or (kHalves) the 4 bits of the two
  // halves' classes. Uniform over the threads that build.
  template <typename Sync, bool kHalves>
  __device__ bool next_tagged(const KParams& kp, const Work& w, VisitSmem& sm, int32_t* tile,
                              uint32_t* tag) {
    while (true) {
      if (rank >= r1) return false;
      if (e < n) {
        if (rank < r0) {  // skip whole stretches below this CTA's range
          const int64_t skip = min(int64_t(n - e), r0 - rank);
          e += int32_t(skip);
          rank += skip;
          continue;
        }
        const uint32_t v = sm.list[e];
        ++e;
        ++rank;
        *tile = tile_of(wbase + int32_t(v & 0x7ffu));
        *tag = kHalves ? (v >> 11) & 15u : v >> 15;
        return true;
      }
      if (w0 >= nu) return false;
      build<Sync, kHalves ? 2 : 0>(kp, w, sm);
    }
  }
};

// Shared memory of the tensor-core kernels: the Q tile, two K and two V tiles, the token mask of
// a partial tile, then the visit list. q_elems / kv_elems: elements of the Q / one K or V tile.
template <typename T>
struct TileSmem {
  T* q;
  T* k;  // kv_bufs buffers
  T* v;  // kv_bufs buffers
  uint8_t* mask;
  VisitSmem* visit;

  // kv_bufs: K and V buffers each (2, or 1 for the single-buffered pipeline).
  __device__ TileSmem(unsigned char* base, int q_elems, int kv_elems, size_t mask_bytes,
                      int kv_bufs = 2) {
    q = reinterpret_cast<T*>(base);
    k = q + q_elems;
    v = k + kv_bufs * kv_elems;
    mask = reinterpret_cast<uint8_t*>(v + kv_bufs * kv_elems);
    visit = reinterpret_cast<VisitSmem*>(mask + mask_bytes);
  }
};

// ---------------------------------------------------------------------------------------------
// Host side of a launch: facts of the current device and kernel attributes, each asked of the
// runtime once per device (every query costs host time, and a call's host time delays its
// kernels when the GPU is waiting for them).
constexpr int kMaxCachedDevices = 64;

struct DeviceFacts {
  int32_t sms;  // multiprocessors
  int32_t cc;   // compute capability, 10 * major + minor
};

inline cudaError_t device_facts(DeviceFacts* f) {
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  static std::atomic<int64_t> cache[kMaxCachedDevices];  // (sms << 16) | cc; 0: not read yet
  int64_t v = dev < kMaxCachedDevices ? cache[dev].load(std::memory_order_relaxed) : 0;
  if (v == 0) {
    int sms = 0, major = 0, minor = 0;
    e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    if (e == cudaSuccess)
      e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    if (e == cudaSuccess)
      e = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    if (e != cudaSuccess) return e;
    v = (int64_t(sms) << 16) | int64_t(10 * major + minor);
    if (dev < kMaxCachedDevices) cache[dev].store(v, std::memory_order_relaxed);
  }
  f->sms = int32_t(v >> 16);
  f->cc = int32_t(v & 0xffff);
  return cudaSuccess;
}

// Raises kernel K's dynamic shared memory limit to `smem` bytes on the current device; the
// attribute stays set, so each device is asked once (after a cudaDeviceReset, which clears it,
// the launch fails and returns the runtime's error).
template <auto K>
cudaError_t allow_dynamic_smem(size_t smem) {
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  static std::atomic<uint64_t> done{0};  // bit d: set on device d
  const uint64_t bit = dev < kMaxCachedDevices ? uint64_t(1) << dev : 0;
  if (bit && (done.load(std::memory_order_acquire) & bit)) return cudaSuccess;
  e = cudaFuncSetAttribute(K, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (e == cudaSuccess && bit) done.fetch_or(bit, std::memory_order_release);
  return e;
}

// Fast exp2 (ex2.approx, relative error ~2^-22); exp2(-inf) = 0.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// 1 / x (rcp.approx, within 1 ulp); 1 / inf = 0.
__device__ __forceinline__ float fast_rcp(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// tanh(x) = sign(x) (1 - 2 / (e^(2|x|) + 1)), from ex2.approx and rcp.approx: absolute error
// about 2e-7 everywhere (tanh.approx's 2^-11 relative error would move a capped logit of 50 by
// 0.02, beyond the float32 tolerance); saturates to +-1, NaN stays NaN.
__device__ __forceinline__ float tanh_accurate(float x) {
  const float e = fast_exp2(fabsf(x) * 2.8853900817779268f);  // e^(2|x|)
  return copysignf(1.f - 2.f * fast_rcp(e + 1.f), x);
}

// The score hook of every kernel family: applied to each raw score q.k right after the product,
// before masking (a masked -inf must stay -inf). Without softcap the kernels fold the scale into
// exp2 (scale_log2) and call nothing; with it, the capped score softcap * tanh(scale q.k / softcap)
// comes out in log2 units and scale_log2 is 1 (launch.cu), so the softmax is unchanged.
__device__ __forceinline__ float score_hook(const KParams& kp, float s) {
  return kp.softcap_out * tanh_accurate(s * kp.softcap_in);
}

// 1 / the softmax denominator of a row whose running max is m (log2 units) and sum of
// exp2(score - m) is l, with the attention sink of query head h when sinks are given:
// 1 / (l + e^sink 2^-m), computed against max(m, sink) so that neither term overflows. A row with
// no allowed key (l = 0) gets 0: zeros, sink or not. A NaN sink makes the row NaN.
// A NaN sum (a NaN or +inf score among the allowed keys, docs/op-spec.md) gives NaN, and so does a
// +inf max with l = 0: finite scores whose scaled value passed float32's range on the row's last
// tile, against which every exp2 was 0 (TileOps::softmax_p).
template <bool kX = true>
__device__ __forceinline__ float row_normalizer(const KParams& kp, int32_t h, float m, float l) {
  if (l == 0.f) return m == INFINITY ? __int_as_float(0x7fc00000) : 0.f;
  if (!kX || !kp.p.sinks) return 1.f / l;
  const float sink = kp.p.sinks[h] * 1.4426950408889634f;
  const float top = fmaxf(m, sink);
  const float a = exp2f(m - top);
  return a / (l * a + exp2f(sink - top));
}

}  // namespace cuda
}  // namespace spattn
