// The CUDA launch entry (spattn/cuda.h): planning on the device, the dtype x head-dim dispatch,
// and the combine step of split query tiles.
//
// Three plans (PlanKind), chosen on the host from sizes and attributes only (never from tensor
// values):
//  * direct: one CTA per query tile, when every query tile has about the same work (local band,
//    causal or dense patterns on a grid that fills the GPU);
//  * bounded: global query rows make their query tiles visit every key tile while the others
//    visit a bounded number (band, global keys, random and listed blocks). Which tiles are long
//    follows from the attributes, so they are split into fixed pieces of their visit lists
//    (split-KV) with no pass before the attention kernel; a combine step merges the pieces. Few
//    query tiles with long rows (decoding) take it too, every tile split alike;
//  * counted: the strided component or global_mask, whose long lists only the device knows. A
//    counting pass writes the number of key tiles each query tile visits, a one-CTA scheduler
//    splits the long ones into pieces of about equal work, the attention kernel runs one CTA per
//    piece and the combine step merges them.
// Everything stays on the stream: no host synchronization, no allocation, capturable in a CUDA
// graph.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "dispatch.cuh"
#include "spattn/cuda.h"

namespace spattn {
namespace cuda {
namespace {

constexpr int kScheduleThreads = 1024;

// With global_mask: one warp per (batch, key tile) sets key_tiles_global to whether the tile holds
// a global token (nonzero entry), so that the list builders test one byte per candidate tile
// instead of its 64 mask entries. Runs on the stream before the lists are built.
__global__ void __launch_bounds__(kThreads)
    global_tiles_kernel(const __grid_constant__ KParams kp, uint8_t* tiles) {
  const int64_t x = int64_t(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
  if (x >= int64_t(kp.p.batch) * kp.num_k_tiles) return;
  const int32_t b = int32_t(x / kp.num_k_tiles), t = int32_t(x % kp.num_k_tiles);
  const int lane = threadIdx.x % 32;
  const int32_t* g = kp.p.global_mask + int64_t(b) * kp.p.len_k;
  bool on = false;
#pragma unroll
  for (int r = 0; r < kBlockN / 32; ++r) {
    const int32_t j = t * kBlockN + r * 32 + lane;
    on = on || (j < kp.p.len_k && g[j] != 0);
  }
  const unsigned any = __ballot_sync(0xffffffffu, on);
  if (lane == 0) tiles[x] = any != 0u;
}

// Counts the key tiles each query tile visits.
__global__ void __launch_bounds__(kThreads) count_kernel(const __grid_constant__ KParams kp) {
  __shared__ VisitSmem vs;
  Work w;
  w.q = decode_qtile(kp, int32_t(blockIdx.x));
  w.r0 = 0;
  w.r1 = INT64_MAX;
  w.slot = -1;
  w.valid = true;
  VisitIter<> it;
  it.init(kp, w);
  int32_t total = 0;
  while (it.w0 < it.nu) {
    it.build(kp, w, vs);
    total += it.n;
  }
  if (threadIdx.x == 0) kp.counts[blockIdx.x] = total;
}

// Exclusive scan of one counter over the block; *total gets the sum.
__device__ int64_t block_scan(int64_t v, int64_t* total) {
  __shared__ int64_t warp_sums[kScheduleThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int64_t incl = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int64_t y = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += y;
  }
  if (lane == 31) warp_sums[warp] = incl;
  __syncthreads();
  int64_t off = incl - v, sum = 0;
  for (int x = 0; x < kScheduleThreads / 32; ++x) {
    if (x < warp) off += warp_sums[x];
    sum += warp_sums[x];
  }
  __syncthreads();
  *total = sum;
  return off;
}

__device__ __forceinline__ int32_t splits_of(int32_t count, int64_t per) {
  return count > per ? int32_t((count + per - 1) / per) : 1;
}

// One CTA: splits the query tiles whose visit lists are longer than total / split_target and
// writes their pieces as the first work items; the whole query tiles follow implicitly (see
// get_work), so only the few split items are written.
__global__ void __launch_bounds__(kScheduleThreads)
    schedule_kernel(const __grid_constant__ KParams kp) {
  const int32_t n = kp.total_q_tiles;
  const int32_t per_thread = (n + kScheduleThreads - 1) / kScheduleThreads;
  const int32_t beg = min(int32_t(threadIdx.x) * per_thread, n);
  const int32_t end = min(beg + per_thread, n);
  int64_t work = 0;
  for (int32_t x = beg; x < end; ++x) work += kp.counts[x];
  int64_t total_work = 0;
  block_scan(work, &total_work);
  int64_t per = (total_work + kp.split_target - 1) / kp.split_target;
  if (per < kMinTilesPerSplit) per = kMinTilesPerSplit;

  int64_t heavy = 0;
  for (int32_t x = beg; x < end; ++x) {
    const int32_t s = splits_of(kp.counts[x], per);
    if (s > 1) heavy += s;
  }
  int64_t heavy_total = 0;
  int64_t heavy_off = block_scan(heavy, &heavy_total);
  for (int32_t x = beg; x < end; ++x) {
    const int32_t s = splits_of(kp.counts[x], per);
    if (s > 1)
      for (int32_t k = 0; k < s; ++k) kp.items[heavy_off++] = WorkItem{x, k, s, 0};
  }
  if (threadIdx.x == 0) {
    kp.header[0] = int32_t(heavy_total + n);
    kp.header[1] = int32_t(heavy_total);
    kp.header[2] = int32_t(per < INT32_MAX ? per : INT32_MAX);  // counts are int32
  }
}

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

constexpr int kCombineRows = 16;

// Rows [16 blockIdx.y, +16) of a split tile whose pieces are items x .. x + splits - 1: one pass
// over the pieces that merges each one's running max, sum and partial output into the row's
// (the loads of a piece do not wait for the previous piece's arithmetic, so many are in flight).
template <typename T, int kGroups>
__device__ void combine_tile(const KParams& kp, int32_t x, const SplitTile& st) {
  const QTile q = decode_qtile(kp, st.qtile);
  const Params& p = kp.p;
  const int32_t dv = p.head_dim_v, bm = kp.part_rows;
  const int32_t rl = int32_t(blockIdx.y) * kCombineRows + int32_t(threadIdx.x) / 8;
  const int32_t i = q.i0 + rl;
  if (rl >= bm || i >= p.len_q) return;
  const int sub = threadIdx.x % 8;
  // kGroups 4-column groups per thread: 8 threads x kGroups x 4 columns (128 or 256).
  float4 acc[kGroups];
#pragma unroll
  for (int g = 0; g < kGroups; ++g) acc[g] = make_float4(0.f, 0.f, 0.f, 0.f);
  float mx = -INFINITY, sum = 0.f;
#pragma unroll 4
  for (int32_t s = 0; s < st.splits; ++s) {
    const int64_t r = int64_t(x + s) * bm + rl;
    const float2 ml = kp.part_ml[r];
    float4 v[kGroups];
#pragma unroll
    for (int g = 0; g < kGroups; ++g) {
      const int32_t c = (g * 8 + sub) * 4;
      v[g] = c < dv ? *reinterpret_cast<const float4*>(kp.part_o + r * dv + c)
                    : make_float4(0.f, 0.f, 0.f, 0.f);
    }
    const float mn = fmaxf(mx, ml.x);
    if (mn == -INFINITY) {
      // No allowed key with a finite score so far: the piece's sum and output are 0, or NaN
      // when it met a NaN score (which its max left out): that NaN must reach the row.
      sum += ml.y;
#pragma unroll
      for (int g = 0; g < kGroups; ++g) {
        acc[g].x += v[g].x;
        acc[g].y += v[g].y;
        acc[g].z += v[g].z;
        acc[g].w += v[g].w;
      }
      continue;
    }
    const float a = exp2f(mx - mn), b = exp2f(ml.x - mn);
    sum = sum * a + ml.y * b;
#pragma unroll
    for (int g = 0; g < kGroups; ++g) {
      acc[g].x = acc[g].x * a + v[g].x * b;
      acc[g].y = acc[g].y * a + v[g].y * b;
      acc[g].z = acc[g].z * a + v[g].z * b;
      acc[g].w = acc[g].w * a + v[g].w * b;
    }
    mx = mn;
  }
  // No allowed key: zeros. The sink enters here, once per row, not in the pieces.
  const int32_t h = row_head(kp, q, i);
  float inv = row_normalizer(kp, h, mx, sum);
  if (row_is_bad(kp, q.b, h, pattern_row(kp, i))) inv = __int_as_float(0x7fc00000);
  T* orow = static_cast<T*>(p.o) + q.b * p.o_batch_stride + q.h * p.o_head_stride +
            int64_t(i) * p.o_row_stride;
#pragma unroll
  for (int g = 0; g < kGroups; ++g) {
    const int32_t c = (g * 8 + sub) * 4;
    if (c >= dv) continue;
    orow[c] = from_float<T>(acc[g].x * inv);
    orow[c + 1] = from_float<T>(acc[g].y * inv);
    orow[c + 2] = from_float<T>(acc[g].z * inv);
    orow[c + 3] = from_float<T>(acc[g].w * inv);
  }
}

// Merges the partial results of the split query tiles. CTA (x, row group y) handles rows
// [16 y, 16 y + 16) of split tiles x, x + gridDim.x, ...: the counted plan's (the tiles whose
// first piece is an item with split 0; their number is known on the device only, so the grid is
// fixed and strides over the items) or the bounded plan's. 8 threads share a row, each owning
// 4-column groups of it, so the partial reads are 16-byte and many are in flight.
constexpr int kCombineCtasX = 512;

template <typename T, int kGroups>
__global__ void __launch_bounds__(kThreads) combine_kernel(const __grid_constant__ KParams kp) {
  wait_for_primary_grid();
  if (kp.planned == kBounded) {
    const int32_t tiles = kp.n_split / kp.pieces;
    for (int32_t s = int32_t(blockIdx.x); s < tiles; s += int32_t(gridDim.x))
      combine_tile<T, kGroups>(kp, s * kp.pieces, bounded_split_tile(kp, s));
    return;
  }
  const int32_t n_split = kp.header[1];
  for (int32_t x = int32_t(blockIdx.x); x < n_split; x += int32_t(gridDim.x)) {
    const WorkItem item = kp.items[x];
    if (item.split == 0) combine_tile<T, kGroups>(kp, x, SplitTile{item.qtile, item.splits});
  }
}

// Head dims up to 128 keep 4 groups per thread (the registers of the loads in flight); 256 takes 8.
// After a Hopper kernel, a programmatic dependent of it (allow_dependent_launch); elsewhere an
// ordinary launch. The Hopper kernels run only where the library's sm_90a image runs, so the
// combine kernel's code then holds its wait for the attention grid (wait_for_primary_grid); an
// image for an older architecture, JIT-compiled for a newer device, would not.
template <typename T>
cudaError_t launch_combine_t(const KParams& kp, dim3 grid, cudaStream_t stream) {
  void (*fn)(KParams) = kp.p.head_dim_v <= 128 ? combine_kernel<T, 4> : combine_kernel<T, 8>;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = 0;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = kp.kernel != kKernelMma ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, fn, kp);
}

// Workspace layout (planned mode), each piece 256-byte aligned.
struct Layout {
  size_t counts = 0, header = 0, next_item = 0, items = 0, part_o = 0, part_ml = 0;
  size_t key_tiles_global = 0, total = 0;
  int32_t split_target = 0, max_split_items = 0, block_m = 0, part_rows = 0;
  int64_t total_q_tiles = 0;
};

// Short rows (a band of at most 1024 keys, or only global tokens and blocks): 64-row query tiles,
// which halve the partial tiles of a band, align with blocks of 64 and mask in registers. Long rows
// (dense, causal, wide bands, strided): 128-row tiles, which load each K/V tile half as often.
bool narrow_rows(const Params& p) {
  const PatternAttrs& a = p.pattern;
  if (a.stride > 0) return false;
  const bool other = a.num_global > 0 || a.num_random > 0 || p.block_indices != nullptr ||
                     p.global_mask != nullptr;
  if (a.chunk_size > 0 && a.chunk_size <= 1024) return true;  // every row within its chunk
  if (a.window_left < 0 && a.window_right < 0) return other;  // local off, or dense
  if (a.window_left < 0 || (a.window_right < 0 && !a.causal)) return false;
  const int64_t width = int64_t(a.window_left) + (a.causal ? 0 : int64_t(a.window_right)) + 1;
  return width <= 1024;
}

// GQA row stacking (KParams::fold): the number of query heads of a KV head that one query tile
// stacks, 1 for none. Short queries (decoding: Lq = 1 or a few draft tokens) fill a tile of
// block_m rows with Lq rows, and every query head of a group read the group's K and V again (4x
// the bytes at GQA 32:8); stacking the group's fold * Lq rows into one tile reads them once. It
// needs:
//  * a 16-bit type (the tensor-core kernels; float32 has its own kernel);
//  * the whole group in one tile: fold * Lq <= block_m;
//  * a pattern that is the same for every head of the group: no random blocks (their hash takes
//    the head) and block_indices shared by all heads (Hl = 1), so that the group's one visit
//    list is every head's; sinks are per row (row_head);
//  * the group's rows of query and output as one strided run: head stride = Lq x row stride (the
//    contiguous [B, H, L, D] layout), or Lq = 1, where the head stride is the row stride.
int32_t gqa_fold(const Params& p, int32_t block_m) {
  if (p.dtype == DType::kFloat32 || p.heads_kv <= 0 || p.heads_q % p.heads_kv != 0) return 1;
  const int32_t g = p.heads_q / p.heads_kv;
  if (g <= 1 || int64_t(g) * p.len_q > block_m) return 1;
  if (p.pattern.num_random > 0 || (p.block_indices && p.bi_heads != 1)) return 1;
  if (p.len_q > 1 && (p.q_head_stride != int64_t(p.len_q) * p.q_row_stride ||
                      p.o_head_stride != int64_t(p.len_q) * p.o_row_stride))
    return 1;
  return g;
}

// The kernel of the 16-bit types. On a compute capability 9.0 device, when the library holds the
// sm_90a image, a Hopper kernel: the warp-specialized one (two 64-row consumers share each K/V
// load, the producer builds the next visit lists and streams the next work item meanwhile) for
// long rows, where it is 1.2x-1.4x faster, for plain short bands and, at head dims 96 and 128,
// for short bands with global tokens; the one-warpgroup kernel for the other short rows
// (narrow_rows): with random/listed blocks, and global tokens at head dim 64, where independent
// CTAs (two or three per SM, launch_wgmma) hide each other's per-tile start and finish better and
// the two 64-row halves of a 128-row tile would visit different key tiles. At head dim 256 the
// warp-specialized kernel takes every pattern: each tile's products are long enough to cover the
// rest, and it measured 1.12-1.62x faster than the one-warpgroup kernel on all five patterns of
// benchmarks/results/cuda_h200_L16K_d256_ws.json, random blocks and global tokens included.
// Elsewhere the portable mma.sync kernel.
// SPATTN_CUDA_KERNEL=ws|wgmma|mma forces one (to compare them, or to rule one out); float32 has
// its own kernel.
KernelKind kernel_for(const Params& p) {
#ifdef SPATTN_HAVE_SM90A
  if (p.dtype == DType::kFloat32) return kKernelMma;
  const char* env = std::getenv("SPATTN_CUDA_KERNEL");
  if (env && std::strcmp(env, "mma") == 0) return kKernelMma;
  DeviceFacts dev;
  if (device_facts(&dev) != cudaSuccess || dev.cc != 90) return kKernelMma;
  KernelKind k;
  if (env && std::strcmp(env, "wgmma") == 0) {
    k = kKernelWgmma;
  } else if (env && std::strcmp(env, "ws") == 0) {
    k = kKernelWs;
  } else {
    const bool blocks = p.pattern.num_random > 0 || p.block_indices != nullptr;
    const bool global = p.pattern.num_global > 0 || p.global_mask != nullptr;
    // Head dim 96 runs the tiles of 128 (hopper_dim) and takes their choice.
    const int32_t hd = hopper_dim(p.head_dim);
    k = hd != 256 && narrow_rows(p) && (blocks || (global && hd == 64)) ? kKernelWgmma : kKernelWs;
    // Stacked GQA rows that fit a 64-row tile (decoding): the one-warpgroup kernel, whose CTAs
    // (several per SM) each stream their own piece of the cache. The warp-specialized kernel's
    // second consumer would have no rows, and its first alone cannot keep up with the loads
    // (decode steps 1.07-1.12x faster, benchmarks/results/cuda_h200_decode_gqa_stack_kernels_*).
    if (gqa_fold(p, kBlockMMmaNarrow) > 1) k = kKernelWgmma;
  }
  // The portable kernel for a head dim the Hopper kernels do not take (common.cuh).
  if (!hopper_takes(p.head_dim)) k = kKernelMma;
  return k;
#else
  (void)p;
  return kKernelMma;
#endif
}

// Whether the warp-specialized kernel streams stages of two key tiles (WsKernel::kPairs): at
// tile widths 64 and 128 (head dims up to 128), for long rows (not narrow_rows: dense, causal,
// wide windows), where both 64-row halves of a work item see nearly every tile it visits. Not
// for strides (pairs 1-4% slower at head dims 32 and 64, 10% at 96 and 128: a strided row's
// columns and band seldom fill both tiles of a pair), nor at tile width 128 when `rows` (the
// rows the kernel sees, GQA stacking included) fit one 64-row half: decoding without stacking,
// where one consumer works and two stages of 128 keys keep fewer loads in flight than four of 64
// (up to 8% slower; at tile width 64, with five stages, pairs are 12-24% faster there).
// benchmarks/results/pairs_choice_h200*.txt has the measurements.
// SPATTN_WS_PAIRS=0|1 forces the choice at those head dims (to compare the two forms).
bool ws_pairs_for(const Params& p, int64_t rows) {
  const int32_t hd = hopper_dim(p.head_dim);
  if (hd > 128) return false;
  const char* env = std::getenv("SPATTN_WS_PAIRS");
  if (env && (std::strcmp(env, "0") == 0 || std::strcmp(env, "1") == 0)) return env[0] == '1';
  if (narrow_rows(p) || p.pattern.stride > 0) return false;
  return hd == 64 || rows > kBlockMWs / 2;
}

// Consumer warpgroups of the warp-specialized kernel (WsKernel::kParts): three at tile width 64
// (head dims 32 and 64) whenever its stages hold two key tiles, the 192-row tiles FlashAttention-3
// and -4 run there; two otherwise. SPATTN_WS_PARTS=2|3 forces the count where three can run (to
// compare them).
int32_t ws_parts_for(const Params& p) {
  if (hopper_dim(p.head_dim) != 64 || !ws_pairs_for(p, INT64_MAX)) return 2;
  const char* env = std::getenv("SPATTN_WS_PARTS");
  if (env && (std::strcmp(env, "2") == 0 || std::strcmp(env, "3") == 0)) return env[0] - '0';
  return 3;
}

int32_t block_m_for(const Params& p, KernelKind kernel) {
  if (p.dtype == DType::kFloat32) return kBlockMF32;
  if (kernel == kKernelWs) return kPartRows * ws_parts_for(p);
  if (kernel == kKernelWgmma) return kBlockMMmaNarrow;
  return narrow_rows(p) || !mma_wide_takes(p.head_dim) ? kBlockMMmaNarrow : kBlockMMmaWide;
}

size_t align_up(size_t x) { return (x + 255) / 256 * 256; }

// The folded view [B, Hkv, g * Lq, D] of query and output (g = gqa_fold); key and value as they
// are.
Params folded(const Params& p, int32_t g) {
  if (g <= 1) return p;
  Params f = p;
  if (p.len_q == 1) {  // row r of the group is head r: one head stride apart
    f.q_row_stride = p.q_head_stride;
    f.o_row_stride = p.o_head_stride;
  }
  f.heads_q = p.heads_kv;
  f.len_q = g * p.len_q;
  f.q_head_stride = g * p.q_head_stride;
  f.o_head_stride = g * p.o_head_stride;
  return f;
}

// The call as kernel `k` runs it: folded when it stacks GQA rows.
Params call_view(const Params& p, KernelKind k, int32_t* fold = nullptr) {
  const int32_t g = gqa_fold(p, block_m_for(p, k));
  if (fold) *fold = g;
  return folded(p, g);
}

// block_m: the kernel's rows per tile (0: block_m_for).
Layout make_layout(const Params& p, KernelKind kernel, int32_t block_m = 0) {
  Layout L;
  L.block_m = block_m > 0 ? block_m : block_m_for(p, kernel);
  const int64_t nqt = (int64_t(p.len_q) + L.block_m - 1) / L.block_m;
  L.total_q_tiles = int64_t(p.batch) * p.heads_q * nqt;
  // Split pieces are bounded by 2 * split_target (see schedule_kernel: at most total/per pieces
  // of full length plus one remainder per split tile), so the partial buffers stay within twice
  // the output size (above a floor, and below a fixed cap) whatever the sequence length.
  int64_t base = L.total_q_tiles < 128 ? 128 : L.total_q_tiles;
  if (base > kSplitTarget) base = kSplitTarget;
  // A single query tile shorter than block_m keeps only its rows (whole warps: KParams::part_rows).
  L.part_rows = int32_t(std::min<int64_t>(L.block_m, (int64_t(p.len_q) + 31) / 32 * 32));
  // Rows of partial results the workspace holds. Every piece of the layout grows with every size
  // (a TensorRT engine sizes the workspace once, for its profile's largest shape), so the
  // capacity is counted in rows of block_m, never in the call's own part_rows.
  const int64_t rows = 2 * std::max<int64_t>(base * L.block_m, int64_t(kFewTilesSplitTarget) * 32);
  int64_t target = base;
  // Few query tiles with long rows (as few_long_tiles, with a bound that does not depend on the
  // device, so that workspace_size holds for any): more pieces than tiles, as many as the rows
  // of their (short) partial results allow.
  const int64_t nkt = (int64_t(p.len_k) + kBlockN - 1) / kBlockN;
  if (L.total_q_tiles < kFewTilesSplitTarget / 2 && nkt > 2 * kMinTilesPerSplit)
    target = std::min<int64_t>(kFewTilesSplitPieces, rows / (2 * L.part_rows));
  L.split_target = int32_t(target);
  L.max_split_items = int32_t(2 * target);
  size_t off = 0;
  L.counts = off;
  off = align_up(off + sizeof(int32_t) * size_t(L.total_q_tiles));
  L.header = off;
  off = align_up(off + sizeof(int32_t) * 4);
  L.next_item = off;
  off = align_up(off + sizeof(int32_t));
  L.items = off;
  off =
      align_up(off + sizeof(WorkItem) * size_t(2 * std::max<int64_t>(base, kFewTilesSplitTarget)));
  L.part_o = off;
  off = align_up(off + sizeof(float) * size_t(rows) * size_t(p.head_dim_v));
  L.part_ml = off;
  off = align_up(off + sizeof(float2) * size_t(rows));
  // One byte per (batch, key tile), with global_mask (its presence is known when the workspace
  // is sized: a TensorRT engine sees the optional input or not).
  L.key_tiles_global = off;
  if (p.global_mask)
    off = align_up(off + size_t(p.batch) * size_t((int64_t(p.len_k) + kBlockN - 1) / kBlockN));
  L.total = off;
  return L;
}

int32_t sm_count() {
  DeviceFacts dev;
  return device_facts(&dev) == cudaSuccess ? dev.sms : 132;
}

// Few query tiles with long rows (decoding, short queries over a long cache): they need splits
// whatever the pattern.
bool few_long_tiles(const Params& p, const Layout& L) {
  const int64_t num_k_tiles = (int64_t(p.len_k) + kBlockN - 1) / kBlockN;
  return L.total_q_tiles < 2 * int64_t(sm_count()) && num_k_tiles > 2 * kMinTilesPerSplit;
}

// Whether a call runs a planned (split-KV) schedule, which needs the workspace. global_mask
// always does: its global query rows may sit in any query tile of any batch.
bool planned_mode(const Params& p, const Layout& L) {
  const PatternAttrs& a = p.pattern;
  const bool balanced = a.num_global == 0 && a.stride == 0 && a.num_random == 0 &&
                        p.block_indices == nullptr && p.global_mask == nullptr;
  return !balanced || few_long_tiles(p, L);
}

// The bounded plan of a planned call (PlanKind): possible when no strided component or
// global_mask runs and either the local band is bounded and the query tiles are many, so that
// only the query tiles holding global query rows can have long visit lists, or the query tiles
// are few (few_long_tiles: decoding), so that all of them are split alike. Fills the plan's
// fields of kp; false: count instead.
bool bounded_plan(const Params& p, const Layout& L, KParams* kp) {
  const PatternAttrs& a = p.pattern;
  // global_mask: which query tiles hold global rows is known on the device only: count instead.
  if (a.stride > 0 || p.global_mask) return false;
  const bool few = few_long_tiles(p, L);
  const int64_t nkt = (int64_t(p.len_k) + kBlockN - 1) / kBlockN;
  const bool other = a.num_global > 0 || a.num_random > 0 || p.block_indices != nullptr;
  const bool local_on = Pattern::local_component_on(a, other);
  const int64_t bm = L.block_m;
  // An upper estimate of a whole tile's visit list (it only sizes the pieces, so it must never
  // fall short: the bounded plan of few tiles gives each tile pieces for this many key tiles).
  int64_t light = 0;
  if (local_on) {
    // The keys a tile's band can span: width + bm - 1 for a window of width keys per row;
    // chunks: the first row's chunk to the last row's, bm + chunk_size - 1 keys with causal
    // (no key past the last row), at most bm + 2 * chunk_size - 2 without.
    const bool long_rows = a.window_left < 0 || (a.window_right < 0 && !a.causal);
    int64_t span = -1;
    if (!long_rows) span = int64_t(a.window_left) + (a.causal ? 0 : int64_t(a.window_right)) + bm;
    if (a.chunk_size > 0) {
      const int64_t c = int64_t(a.chunk_size) * (a.causal ? 1 : 2) + bm;
      if (span < 0 || c < span) span = c;
    }
    if (span < 0) {  // long rows
      if (!few) return false;
      light = nkt;
    } else {
      light += span / kBlockN + 2;
    }
  }
  if (a.num_global > 0) light += (a.num_global + kBlockN - 1) / kBlockN;
  const int64_t per_qb = a.num_random + (p.block_indices ? p.bi_k : 0);
  if (per_qb > 0) {
    const int64_t bs = a.block_size;
    light += per_qb * ((bm + bs - 1) / bs + 1) * ((bs + kBlockN - 1) / kBlockN + 1);
  }
  if (light > nkt) light = nkt;
  const int64_t bh = int64_t(p.batch) * p.heads_q;
  if (few) {
    // Few query tiles with long rows (decoding): every tile is split into the same pieces, sized
    // from the longest list a tile can have (every key tile when global rows may be in it), with
    // no counting pass; the pieces past the end of a shorter list are empty.
    // Global query rows p(i) < G exist only when Lk - Lq < G (a folded view's Lq is g x the
    // call's: the test stays on the safe side).
    const bool global_rows = a.num_global > 0 && int64_t(p.len_k) - p.len_q < a.num_global;
    const int64_t longest = global_rows ? nkt : light;
    int64_t per = (L.total_q_tiles * longest + L.split_target - 1) / L.split_target;
    if (per < kMinTilesPerSplit) per = kMinTilesPerSplit;
    const int64_t pieces = (longest + per - 1) / per;
    const int64_t n_split = pieces > 1 ? L.total_q_tiles * pieces : 0;
    if (n_split > L.max_split_items) return false;
    kp->heavy_qt0 = 0;
    kp->heavy_nqt = pieces > 1 ? int32_t(L.total_q_tiles / bh) : 0;
    kp->pieces = int32_t(pieces > 1 ? pieces : 1);
    kp->piece_tiles = int32_t(per);
    kp->n_split = int32_t(n_split);
    return true;
  }
  // Query rows i with a global position pos(i) = i + Lk - Lq in [0, G), clipped to [0, Lq).
  const int64_t shift = int64_t(p.len_k) - p.len_q;
  int64_t i_lo = -shift, i_hi = int64_t(a.num_global) - shift;  // [i_lo, i_hi)
  if (i_lo < 0) i_lo = 0;
  if (i_hi > p.len_q) i_hi = p.len_q;
  int64_t qt0 = 0, heavy_nqt = 0;
  if (a.num_global > 0 && i_lo < i_hi) {
    qt0 = i_lo / bm;
    heavy_nqt = (i_hi - 1) / bm - qt0 + 1;
  }
  const int64_t heavy = bh * heavy_nqt;
  const int64_t est = (L.total_q_tiles - heavy) * light + heavy * nkt;
  int64_t per = (est + L.split_target - 1) / L.split_target;
  if (per < kMinTilesPerSplit) per = kMinTilesPerSplit;
  int64_t pieces = (nkt + per - 1) / per;
  if (pieces <= 1) heavy_nqt = 0;  // a global row is no longer than the pieces: nothing to split
  const int64_t n_split = heavy_nqt > 0 ? bh * heavy_nqt * pieces : 0;
  if (n_split > L.max_split_items) return false;
  kp->heavy_qt0 = int32_t(heavy_nqt > 0 ? qt0 : 0);
  kp->heavy_nqt = int32_t(heavy_nqt);
  kp->pieces = int32_t(heavy_nqt > 0 ? pieces : 1);
  kp->piece_tiles = int32_t(per);
  kp->n_split = int32_t(n_split);
  return true;
}

enum : int32_t { kF32 = 0, kF16 = 1, kBF16 = 2 };

// The one dtype x head-dim dispatch, over every head dim of SPATTN_CUDA_HEAD_DIMS.
cudaError_t launch_attention(const KParams& kp, int32_t grid, cudaStream_t stream) {
  const int32_t key = int32_t(kp.p.dtype) * 1000 + kp.p.head_dim;
  switch (key) {
#define SPATTN_DISPATCH_CASES(d)                        \
  case kF32 * 1000 + d:                                 \
    return launch_attention_f32_d##d(kp, grid, stream); \
  case kF16 * 1000 + d:                                 \
    return launch_attention_f16_d##d(kp, grid, stream); \
  case kBF16 * 1000 + d:                                \
    return launch_attention_bf16_d##d(kp, grid, stream);
    SPATTN_CUDA_HEAD_DIMS(SPATTN_DISPATCH_CASES)
#undef SPATTN_DISPATCH_CASES
    default:
      return cudaErrorInvalidValue;
  }
}

bool is_cuda_head_dim(int32_t d) {
  for (int32_t x : kCudaHeadDims)
    if (x == d) return true;
  return false;
}

cudaError_t launch_combine(const KParams& kp, cudaStream_t stream) {
  const int32_t x = kp.planned == kBounded ? kp.n_split / kp.pieces : kp.max_split_items;
  const dim3 grid(x < kCombineCtasX ? x : kCombineCtasX,
                  (kp.part_rows + kCombineRows - 1) / kCombineRows);
  switch (kp.p.dtype) {
    case DType::kFloat32:
      return launch_combine_t<float>(kp, grid, stream);
    case DType::kFloat16:
      return launch_combine_t<__half>(kp, grid, stream);
    case DType::kBFloat16:
      return launch_combine_t<__nv_bfloat16>(kp, grid, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }

// cuTensorMapEncodeTiled, from the driver the runtime already loaded (no link to libcuda).
using EncodeTiledFn = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*,
                                   const cuuint64_t*, const cuuint64_t*, const cuuint32_t*,
                                   const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                   CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

EncodeTiledFn encode_tiled() {
  static const EncodeTiledFn fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault,
                                         &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      return EncodeTiledFn(nullptr);
    return reinterpret_cast<EncodeTiledFn>(f);
  }();
  return fn;
}

// The tensor map of a [B, H, L, D] tensor with element strides (batch, head, row): boxes of 64
// rows x 64 columns in the 128-byte swizzle of the tensor cores, rows past L read as zeros.
bool encode_bhld(CUtensorMap* map, const Params& p, const void* ptr, int32_t heads, int32_t len,
                 int32_t dim, int64_t sb, int64_t sh, int64_t sr) {
  const EncodeTiledFn fn = encode_tiled();
  if (!fn) return false;
  const cuuint64_t es = cuuint64_t(dtype_size(p.dtype));
  const cuuint64_t dims[4] = {cuuint64_t(dim), cuuint64_t(len), cuuint64_t(heads),
                              cuuint64_t(p.batch)};
  cuuint64_t strides[3] = {cuuint64_t(sr) * es, cuuint64_t(sh) * es, cuuint64_t(sb) * es};
  // A dimension of size 1 is never stepped: any valid stride does (some callers pass 0).
  for (int d = 0; d < 3; ++d)
    if (dims[d + 1] == 1) strides[d] = (d == 0 ? dims[0] * es : strides[d - 1] * dims[d]);
  const cuuint32_t box[4] = {64, 64, 1, 1};
  const cuuint32_t elem_strides[4] = {1, 1, 1, 1};
  const CUtensorMapDataType type = p.dtype == DType::kBFloat16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                                               : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  return fn(map, type, 4, const_cast<void*>(ptr), dims, strides, box, elem_strides,
            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// The tensor maps of the warp-specialized kernel; false if the driver refuses one.
bool encode_tensor_maps(const Params& p, KParams* kp) {
  return encode_bhld(&kp->tma_q, p, p.q, p.heads_q, p.len_q, p.head_dim, p.q_batch_stride,
                     p.q_head_stride, p.q_row_stride) &&
         encode_bhld(&kp->tma_k, p, p.k, p.heads_kv, p.len_k, p.head_dim, p.k_batch_stride,
                     p.k_head_stride, p.k_row_stride) &&
         encode_bhld(&kp->tma_v, p, p.v, p.heads_kv, p.len_k, p.head_dim_v, p.v_batch_stride,
                     p.v_head_stride, p.v_row_stride);
}

}  // namespace

HeadDimSupport head_dim_support() { return cuda_head_dim_support(); }

std::string unsupported(const Params& p) {
  // Every head dim of kCudaHeadDims (validated before), every input and attribute.
  if (p.head_dim != p.head_dim_v || !is_cuda_head_dim(p.head_dim))
    return "SparseAttention: query: head dim D = " + std::to_string(p.head_dim) +
           " has no CUDA kernel in this build";
  return {};
}

// Enough for any tensor-core kernel: the host asking may not know the device that runs it.
// Each kernel runs the call as call_view says (folded or not), so its layout is the one of that
// view. The size grows with every size of the call, which a TensorRT engine relies on: a layout
// grows with every size of its view, a folded view's layout is no larger than the unfolded one
// (fewer tiles), and a call that folds has no larger size that does not (tests/python,
// test_cuda_workspace).
size_t workspace_size(const Params& p) {
  size_t most = 0;
  for (KernelKind k : {kKernelMma, kKernelWgmma, kKernelWs}) {
    const size_t t = make_layout(call_view(p, k), k).total;
    if (t > most) most = t;
  }
  // Both consumer counts of the warp-specialized kernel (ws_parts_for): the count follows the
  // attributes and SPATTN_WS_PARTS, which an engine's calls may set apart from its build.
  if (p.dtype != DType::kFloat32 && hopper_dim(p.head_dim) == 64) {
    for (int32_t bm : {kBlockMWs, kBlockMWs3}) {
      const size_t t = make_layout(folded(p, gqa_fold(p, bm)), kKernelWs, bm).total;
      if (t > most) most = t;
    }
  }
  return most;
}

size_t workspace_size_current_device(const Params& p) {
  const KernelKind kernel = kernel_for(p);
  const Params v = call_view(p, kernel);
  const Layout L = make_layout(v, kernel);
  size_t need = planned_mode(v, L) ? L.total : 0;
  if (kernel == kKernelWs) {  // launch falls back to the one-warpgroup kernel without tensor maps
    const Params fv = call_view(p, kKernelWgmma);
    const Layout F = make_layout(fv, kKernelWgmma);
    if (planned_mode(fv, F) && F.total > need) need = F.total;
  }
  return need;
}

cudaError_t launch(const Params& p, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (p.head_dim != p.head_dim_v || !is_cuda_head_dim(p.head_dim)) return cudaErrorInvalidValue;
  if (p.batch <= 0 || p.heads_q <= 0 || p.heads_kv <= 0 || p.len_q <= 0 || p.len_k <= 0 ||
      p.heads_q % p.heads_kv != 0)
    return cudaErrorInvalidValue;
  if (p.dtype != DType::kFloat32) {
    // cp.async moves 16-byte chunks: rows must start on 16-byte boundaries.
    const int64_t strides[] = {p.q_batch_stride, p.q_head_stride, p.q_row_stride,
                               p.k_batch_stride, p.k_head_stride, p.k_row_stride,
                               p.v_batch_stride, p.v_head_stride, p.v_row_stride,
                               p.o_batch_stride, p.o_head_stride, p.o_row_stride};
    for (int64_t s : strides)
      if (s % 8 != 0) return cudaErrorMisalignedAddress;
    if (!aligned16(p.q) || !aligned16(p.k) || !aligned16(p.v) || !aligned16(p.o))
      return cudaErrorMisalignedAddress;
  }
  KParams kp;
  KernelKind kernel = kernel_for(p);
  int32_t fold = 1;
  Params v = call_view(p, kernel, &fold);  // what the kernels see; the pattern keeps p's sizes
  if (kernel == kKernelWs && !encode_tensor_maps(v, &kp)) {
    kernel = kKernelWgmma;
    v = call_view(p, kernel, &fold);
  }
  const Layout L = make_layout(v, kernel);
  if (L.total_q_tiles + L.max_split_items > INT32_MAX) return cudaErrorInvalidValue;

  kp.p = v;
  kp.pat = Pattern::make(p);
  kp.fold = fold;
  kp.fold_lq = p.len_q;
  kp.fold_magic = fastmod_magic(uint32_t(p.len_q));
  kp.block_m = L.block_m;
  kp.part_rows = L.part_rows;
  kp.kernel = kernel;
  kp.ws_pairs = kernel == kKernelWs && ws_pairs_for(p, v.len_q);
  kp.ws_parts = kernel == kKernelWs ? L.block_m / kPartRows : 2;
  kp.num_q_tiles = int32_t((int64_t(v.len_q) + L.block_m - 1) / L.block_m);
  kp.num_k_tiles = int32_t((int64_t(p.len_k) + kBlockN - 1) / kBlockN);
  kp.total_q_tiles = int32_t(L.total_q_tiles);
  kp.split_target = L.split_target;
  kp.max_split_items = L.max_split_items;
  // A scale above FLT_MAX / log2(e) would make scale_log2 +inf, and a zero score times it NaN:
  // FLT_MAX keeps zero scores at 0 and still sends every score beyond float32 to +-inf.
  kp.scale_log2 = std::fmin(p.pattern.scale * 1.4426950408889634f, FLT_MAX);
  // A cap whose log2 form overflows float32 changes no float32 score: off. A subnormal cap makes
  // scale / softcap overflow: FLT_MAX keeps a zero score at 0 (inf * 0 would be NaN) and sends
  // every other to +-1 * softcap, the limit.
  kp.softcap_on =
      p.pattern.softcap > 0.f && std::isfinite(p.pattern.softcap * 1.4426950408889634f) ? 1 : 0;
  kp.softcap_in = kp.softcap_on ? std::fmin(p.pattern.scale / p.pattern.softcap, FLT_MAX) : 0.f;
  kp.softcap_out = kp.softcap_on ? p.pattern.softcap * 1.4426950408889634f : 0.f;
  if (kp.softcap_on) kp.scale_log2 = 1.f;  // score_hook returns log2 units
  kp.extras = (p.global_mask || p.key_starts || p.sinks || kp.softcap_on) ? 1 : 0;
  kp.counts = nullptr;
  kp.header = nullptr;
  kp.items = nullptr;
  kp.part_o = nullptr;
  kp.part_ml = nullptr;
  kp.next_item = nullptr;
  kp.key_tiles_global = nullptr;

  kp.heavy_qt0 = kp.heavy_nqt = kp.n_split = 0;
  kp.pieces = kp.piece_tiles = 1;
  kp.planned = kDirect;
  // The bounded plan finds the tiles of global query rows from the call's row numbers, which a
  // folded view does not keep: a folded call counts instead (its tiles cost little to count),
  // unless it has few long tiles, which the bounded plan splits all alike.
  if (planned_mode(v, L))
    kp.planned =
        (fold == 1 || few_long_tiles(v, L)) && bounded_plan(v, L, &kp) ? kBounded : kCounted;

  if (kp.planned == kDirect) return launch_attention(kp, kp.total_q_tiles, stream);

  if (!workspace || workspace_bytes < L.total) return cudaErrorInvalidValue;
  char* ws = static_cast<char*>(workspace);
  kp.counts = reinterpret_cast<int32_t*>(ws + L.counts);
  kp.header = reinterpret_cast<int32_t*>(ws + L.header);
  kp.items = reinterpret_cast<WorkItem*>(ws + L.items);
  kp.part_o = reinterpret_cast<float*>(ws + L.part_o);
  kp.part_ml = reinterpret_cast<float2*>(ws + L.part_ml);
  if (p.global_mask) {
    uint8_t* tiles = reinterpret_cast<uint8_t*>(ws + L.key_tiles_global);
    const int64_t n = int64_t(p.batch) * kp.num_k_tiles;
    const int64_t ctas = (n + kThreads / 32 - 1) / (kThreads / 32);
    if (ctas > INT32_MAX) return cudaErrorInvalidValue;
    global_tiles_kernel<<<int32_t(ctas), kThreads, 0, stream>>>(kp, tiles);
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    kp.key_tiles_global = tiles;
  }
  if (kernel == kKernelWs) {
    kp.next_item = reinterpret_cast<int32_t*>(ws + L.next_item);
    const cudaError_t e = cudaMemsetAsync(kp.next_item, 0, sizeof(int32_t), stream);
    if (e != cudaSuccess) return e;
  }

  if (kp.planned == kBounded) {
    // When every query tile is split (few long tiles), the whole tiles' items after the pieces
    // would only start and return: the one-warpgroup and mma.sync kernels launch the pieces
    // alone (the persistent kernel's CTAs take the items in their own order).
    const bool all_split = kp.heavy_nqt == kp.num_q_tiles && kernel != kKernelWs;
    const cudaError_t e =
        launch_attention(kp, kp.n_split + (all_split ? 0 : kp.total_q_tiles), stream);
    if (e != cudaSuccess || kp.n_split == 0) return e;
    return launch_combine(kp, stream);
  }

  count_kernel<<<kp.total_q_tiles, kThreads, 0, stream>>>(kp);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  schedule_kernel<<<1, kScheduleThreads, 0, stream>>>(kp);
  e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  e = launch_attention(kp, kp.total_q_tiles + kp.max_split_items, stream);
  if (e != cudaSuccess) return e;
  return launch_combine(kp, stream);
}

}  // namespace cuda
}  // namespace spattn
