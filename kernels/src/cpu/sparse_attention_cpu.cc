// CPU kernel of SparseAttention: a block-sparse walk with online softmax (docs/op-spec.md).
//
// Work item: (batch, query head, query tile of kTileQ rows), or, for few query rows, the heads of
// a GQA group stacked into one item (stacked_heads). For each, the candidate key tiles
// come from Pattern::mark_candidate_tiles, every candidate is classified with Pattern::classify,
// empty tiles are skipped, full tiles need no mask, and only partial tiles are masked token by
// token (Pattern::row_mask). Scores and sums are float32; softcap is applied to the scaled scores
// (TileKernels::softcap) and the sink logit joins the softmax denominator at the end. Non-finite
// inputs follow docs/op-spec.md ("Non-finite values and masked positions").
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "spattn/cpu.h"
#include "spattn/pattern.h"
#include "tile_kernels.h"

namespace spattn {
namespace cpu {

const TileKernels& select_tile_kernels() {
  static const TileKernels* chosen = [] {
    const char* force = std::getenv("SPATTN_CPU_ISA");  // generic | avx2 | avx512
#if defined(SPATTN_X86)
    __builtin_cpu_init();
    const bool has512 = __builtin_cpu_supports("avx512f");
    const bool has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    const bool has512 = false, has2 = false;
#endif
    if (force && std::strcmp(force, "generic") == 0) return &generic::kKernels;
    if (force && std::strcmp(force, "avx2") == 0 && has2) return &avx2::kKernels;
    if (has512 && !(force && std::strcmp(force, "avx2") == 0)) return &avx512::kKernels;
    if (has2) return &avx2::kKernels;
    return &generic::kKernels;
  }();
  return *chosen;
}

namespace {

// ---- element conversions (round to nearest even on the way out) ----
inline float bf16_to_float(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u | (man << 13);
  } else if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: normalize
      int e = -1;
      do {
        ++e;
        man <<= 1;
      } while (!(man & 0x400u));
      u = sign | uint32_t(127 - 15 - e) << 23 | (man & 0x3ffu) << 13;
    }
  } else {
    u = sign | (exp + 112) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t float_to_half(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (u >= 0x477ff000u) return sign | 0x7c00u;  // overflow (and inf) after rounding
  if (u < 0x38800000u) {                        // subnormal or zero in half
    if (u < 0x33000000u) return sign;           // rounds to zero
    const uint32_t man = (u & 0x7fffffu) | 0x800000u;
    const int shift = 126 - int(u >> 23);  // 14 + (113 - exp)
    const uint32_t half = man >> shift;
    const uint32_t rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
    return sign | uint16_t(half + (rem > mid || (rem == mid && (half & 1))));
  }
  u += 0x0fffu + ((u >> 13) & 1u);  // round mantissa to 10 bits
  return sign | uint16_t(((u >> 13) - (112u << 10)) & 0xffffu);
}

// Loads n elements of dtype t from src into float dst, multiplied by `mul`.
inline void load_row(DType t, const void* src, int64_t offset, int n, float mul, float* dst) {
  switch (t) {
    case DType::kFloat32: {
      const float* s = static_cast<const float*>(src) + offset;
      for (int x = 0; x < n; ++x) dst[x] = s[x] * mul;
      break;
    }
    case DType::kFloat16: {
      const uint16_t* s = static_cast<const uint16_t*>(src) + offset;
      for (int x = 0; x < n; ++x) dst[x] = half_to_float(s[x]) * mul;
      break;
    }
    case DType::kBFloat16: {
      const uint16_t* s = static_cast<const uint16_t*>(src) + offset;
      for (int x = 0; x < n; ++x) dst[x] = bf16_to_float(s[x]) * mul;
      break;
    }
  }
}
inline void store_row(DType t, const float* src, int n, void* dst, int64_t offset) {
  switch (t) {
    case DType::kFloat32:
      std::memcpy(static_cast<float*>(dst) + offset, src, sizeof(float) * n);
      break;
    case DType::kFloat16: {
      uint16_t* d = static_cast<uint16_t*>(dst) + offset;
      for (int x = 0; x < n; ++x) d[x] = float_to_half(src[x]);
      break;
    }
    case DType::kBFloat16: {
      uint16_t* d = static_cast<uint16_t*>(dst) + offset;
      for (int x = 0; x < n; ++x) d[x] = float_to_bf16(src[x]);
      break;
    }
  }
}

inline int round_up(int x, int m) { return (x + m - 1) / m * m; }

// The columns [span[0], span[1]) of a token-mask row (kTileK bytes) from its first to its last
// allowed one; empty (0, 0) when none is. Eight bytes at a time.
inline void allowed_span(const uint8_t* a, int32_t* span) {
  constexpr int kWords = kTileK / 8;
  uint64_t w[kWords];
  std::memcpy(w, a, kTileK);
  int first = 0, last = kWords - 1;
  while (first < kWords && !w[first]) ++first;
  if (first == kWords) {
    span[0] = span[1] = 0;
    return;
  }
  while (!w[last]) --last;
  // Bytes are little-endian in the word on every target the kernel builds for (x86-64, aarch64).
  span[0] = first * 8 + __builtin_ctzll(w[first]) / 8;
  span[1] = last * 8 + (63 - __builtin_clzll(w[last])) / 8 + 1;
}

// Per-thread scratch, reused across work items and calls.
struct Scratch {
  std::vector<float> q, s, o, m, l, corr;
  std::vector<uint8_t> marks;
  std::vector<uint8_t> allowed;  // [kTileQ][kTileK] token mask of a partial tile
  std::vector<int32_t> span;     // [kTileQ][2] its allowed columns per row (allowed_span)
  // Converted key/value tiles (K transposed to [D][kTileK], V as [kTileK][dv_pad]), cached by key
  // tile: neighbouring query tiles of a band visit mostly the same key tiles, so each tile is
  // converted about once per thread instead of once per visit. Direct-mapped on the tile index,
  // `slots` of them (Scratch::slots_for).
  static constexpr int kMaxSlots = 64;
  std::vector<float> kt_cache, v_cache;
  int64_t tag[kMaxSlots];
  bool v_nonfinite[kMaxSlots];  // the slot's value tile holds a NaN or an infinity
  int slots = 0;
  // 64 slots while a converted key tile takes at most 16 KB (D <= 64), else 32: a task's first
  // item may be a global query row, which converts every key tile of the row; with 32 slots at
  // 64 key tiles (L = 4K) its last tiles evicted the ones the band's items after it reuse (per
  // head, 152 conversions where 101 suffice: benchmarks/cpu_tile_cache_replay.py).
  static int slots_for(int32_t head_dim) { return head_dim <= 64 ? 64 : 32; }
  uint64_t call = 0;  // the call the tags belong to
};

// Each call gets a new id, so no thread reuses tiles converted from another call's tensors.
std::atomic<uint64_t> g_call_counter{0};

// One work item: query rows [i0, i1) of the query heads [h0, h0 + nh), which all read key/value
// head hk. The rows are stacked head by head (row r: query i0 + r % ni of head h0 + r / ni), so
// the heads of a GQA group that share a key tile share its conversion and its loads.
// direct: float32 keys and values read in place (TileKernels::qk_rows) instead of converted.
struct Item {
  int32_t b, h0, nh, i0, i1;
  bool direct;
};

void run_item(const Params& p, const Pattern& pat, const TileKernels& kern, const Item& it,
              uint64_t call_id, Scratch& w) {
  const int32_t b = it.b, h0 = it.h0, i0 = it.i0, i1 = it.i1;
  const int32_t ni = i1 - i0, rows = ni * it.nh;
  const int32_t hk = h0 / (p.heads_q / p.heads_kv);
  const int32_t D = p.head_dim, Dv = p.head_dim_v;
  const int32_t dv_pad = round_up(Dv, kern.dv_multiple);
  const int32_t num_tiles = ceil_div(p.len_k, kTileK);
  const float neg_inf = -std::numeric_limits<float>::infinity();

  w.q.resize(size_t(kTileQ) * D);
  w.s.resize(size_t(kTileQ) * kTileK);
  w.o.assign(size_t(rows) * dv_pad, 0.f);
  w.m.assign(kTileQ, neg_inf);
  w.l.assign(kTileQ, 0.f);
  w.corr.resize(kTileQ);
  w.marks.resize(num_tiles);
  w.allowed.resize(size_t(kTileQ) * kTileK);
  w.span.resize(size_t(kTileQ) * 2);
  const size_t kt_size = size_t(D) * kTileK, v_size = size_t(kTileK) * dv_pad;
  // Float32 values whose rows are whole vector chunks (dv_pad == Dv) are read in place, as the
  // micro-kernel reads a converted tile: copying them cost as much as transposing the keys. Only
  // their non-finite check is kept with the key tile.
  const bool v_in_place = p.dtype == DType::kFloat32 && dv_pad == Dv;
  if (w.call != call_id && !it.direct) {
    // Every tile is written whole (padding included) before its tag is set, so a new call only
    // forgets the tags: clearing the 2 x 32 tiles (2 MiB at D = 128) cost more than a decode
    // step's whole work.
    w.slots = Scratch::slots_for(D);
    w.kt_cache.resize(kt_size * w.slots);
    if (!v_in_place) w.v_cache.resize(v_size * w.slots);
    std::fill(w.tag, w.tag + Scratch::kMaxSlots, int64_t(-1));
    w.call = call_id;
  }

  // Query rows as given: the scale multiplies each float32 dot product (TileKernels::qk), so a
  // score is scale * q.k as the op spec defines it (an overflow to +-inf included), and the
  // softmax subtracts the row maximum before any other scaling.
  const float scale = p.pattern.scale, softcap = p.pattern.softcap;
  for (int32_t g = 0; g < it.nh; ++g) {
    const int64_t q_base = b * p.q_batch_stride + (h0 + g) * p.q_head_stride;
    for (int32_t r = 0; r < ni; ++r)
      load_row(p.dtype, p.q, q_base + (i0 + r) * p.q_row_stride, D, 1.f,
               &w.q[size_t(g * ni + r) * D]);
  }

  // The heads of an item share one pattern (run() stacks heads only then): marks, classes and
  // token masks are those of head h0.
  pat.mark_candidate_tiles(b, h0, i0, i1, kTileK, w.marks.data());
  const int64_t k_base = b * p.k_batch_stride + hk * p.k_head_stride;
  const int64_t v_base = b * p.v_batch_stride + hk * p.v_head_stride;
  float krow[512];  // head dims are validated to at most 512
  for (int32_t t = 0; t < num_tiles; ++t) {
    if (!w.marks[t]) continue;
    const int32_t j0 = t * kTileK, j1 = std::min(p.len_k, j0 + kTileK), cols = j1 - j0;
    const TileClass cls = pat.classify(b, h0, Tile{i0, i1, j0, j1});
    if (cls == TileClass::kEmpty) continue;
    // A partial tile's token mask comes first: the columns each row allows bound the work of
    // the micro-kernels (TileKernels::qk's span), so the masked corners of the band's edge
    // tiles are not computed. The mask comes from the pattern rules here, in code built for the
    // baseline instruction set: the rules are inline functions, and a copy of them built with
    // AVX-512 flags in tile_kernels_avx512.cc could otherwise be the one the linker keeps.
    const int32_t* span = nullptr;
    if (cls == TileClass::kPartial) {
      for (int32_t r = 0; r < ni; ++r) {
        uint8_t* a = &w.allowed[r * kTileK];
        pat.row_mask(b, h0, i0 + r, j0, j1, a);
        std::fill(a + cols, a + kTileK, uint8_t(0));
        allowed_span(a, &w.span[2 * r]);
      }
      for (int32_t g = 1; g < it.nh; ++g) {
        std::memcpy(&w.allowed[size_t(g * ni) * kTileK], w.allowed.data(), size_t(ni) * kTileK);
        std::memcpy(&w.span[2 * g * ni], w.span.data(), sizeof(int32_t) * 2 * ni);
      }
      span = w.span.data();
    }
    const float* vt;  // the value tile: rows of ldv floats, dv_pad of them read
    int64_t ldv;
    bool v_bad;  // the value tile holds a NaN or an infinity
    if (it.direct) {
      // Keys and values read in place (float32, value rows a multiple of the vector width).
      const float* kp = static_cast<const float*>(p.k) + k_base + int64_t(j0) * p.k_row_stride;
      vt = static_cast<const float*>(p.v) + v_base + int64_t(j0) * p.v_row_stride;
      ldv = p.v_row_stride;
      int nonfinite = 0;  // an OR reduction, which vectorizes
      for (int32_t c = 0; c < cols; ++c)
        for (int32_t d = 0; d < Dv; ++d)
          nonfinite |= !(std::fabs(vt[c * ldv + d]) <= std::numeric_limits<float>::max());
      v_bad = nonfinite != 0;
      kern.qk_rows(w.q.data(), D, kp, p.k_row_stride, cols, D, w.s.data(), rows, scale);
    } else {
      const int slot = t % w.slots;
      const int64_t tag = (int64_t(b) * p.heads_kv + hk) * num_tiles + t;
      float* kt = &w.kt_cache[slot * kt_size];
      float* vc = v_in_place ? nullptr : &w.v_cache[slot * v_size];
      const float* v_src =
          v_in_place ? static_cast<const float*>(p.v) + v_base + int64_t(j0) * p.v_row_stride
                     : nullptr;
      if (w.tag[slot] != tag) {
        // K tile transposed to [D][kTileK], V tile to [kTileK][dv_pad] (unless read in place);
        // zero padded.
        bool bad = false;
        for (int32_t c = 0; c < cols; ++c) {
          load_row(p.dtype, p.k, k_base + (j0 + c) * p.k_row_stride, D, 1.f, krow);
          for (int32_t d = 0; d < D; ++d) kt[d * kTileK + c] = krow[d];
          const float* vr = v_in_place ? v_src + c * p.v_row_stride : nullptr;
          if (!v_in_place) {
            float* vw = vc + size_t(c) * dv_pad;
            load_row(p.dtype, p.v, v_base + (j0 + c) * p.v_row_stride, Dv, 1.f, vw);
            std::fill(vw + Dv, vw + dv_pad, 0.f);
            vr = vw;
          }
          int nonfinite = 0;  // an OR reduction, which vectorizes
          for (int32_t d = 0; d < Dv; ++d)
            nonfinite |= !(std::fabs(vr[d]) <= std::numeric_limits<float>::max());
          bad = bad || nonfinite;
        }
        w.v_nonfinite[slot] = bad;
        if (cols < kTileK) {
          for (int32_t d = 0; d < D; ++d)
            std::fill(kt + d * kTileK + cols, kt + (d + 1) * kTileK, 0.f);
          if (!v_in_place) std::fill(vc + size_t(cols) * dv_pad, vc + v_size, 0.f);
        }
        w.tag[slot] = tag;
      }
      kern.qk(w.q.data(), D, kt, D, w.s.data(), rows, scale, span);
      vt = v_in_place ? v_src : vc;
      ldv = v_in_place ? p.v_row_stride : dv_pad;
      v_bad = w.v_nonfinite[slot];
    }
    // The score hook: transforms of the scaled scores, before the mask (softcap). The mask then
    // overwrites the scores of excluded keys, whatever their key rows hold.
    if (softcap > 0.f) kern.softcap(w.s.data(), rows, softcap);
    if (cls == TileClass::kPartial) {
      kern.mask(w.allowed.data(), rows, cols, w.s.data());
    }
    if (cols < kTileK)
      for (int32_t r = 0; r < rows; ++r)
        std::fill(&w.s[r * kTileK + cols], &w.s[(r + 1) * kTileK], neg_inf);
    kern.softmax(w.s.data(), rows, w.m.data(), w.l.data(), w.corr.data());
    // Excluded and padding keys weigh exactly zero; with a non-finite value row in the tile they
    // must also add exactly nothing (op spec, "Non-finite values and masked positions").
    kern.pv(w.s.data(), vt, ldv, cols, w.o.data(), dv_pad, dv_pad, w.corr.data(), rows, v_bad,
            span);
  }

  // Normalize; rows without any allowed key (or only -inf scores) are zeros, rows with a NaN or
  // +inf score NaN (l is NaN). The sink adds e^sink to the denominator only (e^(sink - m)
  // relative to the row's running max m; an overflow to inf gives the limit, zeros).
  for (int32_t r = 0; r < rows; ++r) {
    const int32_t h = h0 + r / ni, i = i0 + r % ni;
    float* orow = &w.o[size_t(r) * dv_pad];
    float l = w.l[r];
    if (std::isnan(l)) {
      std::fill(orow, orow + Dv, std::numeric_limits<float>::quiet_NaN());
    } else {
      if (p.sinks && l > 0.f) l += std::exp(p.sinks[h] - w.m[r]);
      const float inv = l > 0.f ? 1.f / l : 0.f;
      for (int32_t d = 0; d < Dv; ++d) orow[d] *= inv;
    }
    store_row(p.dtype, orow, Dv, p.o,
              b * p.o_batch_stride + h * p.o_head_stride + i * p.o_row_stride);
  }
}

// The most query heads one work item can stack (a divisor of the GQA group size Hq / Hkv): it
// needs one pattern for all the heads of an item (no random blocks, no per-head block_indices)
// and few query rows (the item's rows fit one query tile: decode steps and short chunks).
int32_t max_stacked_heads(const Params& p) {
  const int32_t group = p.heads_q / p.heads_kv;
  const bool per_head =
      p.pattern.num_random > 0 || (p.block_indices != nullptr && p.bi_heads == p.heads_q);
  if (group <= 1 || per_head || p.len_q < 1 || p.len_q > kTileQ / 2) return 1;
  for (int32_t n = group; n > 1; --n)
    if (group % n == 0 && int64_t(n) * p.len_q <= kTileQ) return n;
  return 1;
}

// The heads stacked per item: the most that still leave at least as many items as the machine
// has hardware threads where possible, so that a batch of one over few key/value heads (MQA)
// still spreads over the threads. Stacking changes no result bit (rows are independent in every
// micro-kernel); only the time.
int32_t stacked_heads(const Params& p, int32_t most) {
  static const int64_t threads = std::max<int64_t>(1, std::thread::hardware_concurrency());
  for (int32_t n = most; n > 1; --n)
    if (most % n == 0 && int64_t(p.batch) * (p.heads_q / n) >= threads) return n;
  return 1;
}

// Float32 keys and values are read in place (Item::direct) when an item has at most this many
// rows even with every head it can stack: scoring from key rows costs a horizontal sum per
// (row, key), which beats transposing the key tile only for few rows; more so as D grows (the
// transpose costs D per key). Decided from the shape alone, so the path (and the result's
// rounding) does not depend on the machine's thread count.
bool reads_in_place(const Params& p, const TileKernels& kern, int32_t most) {
  return p.dtype == DType::kFloat32 && p.head_dim_v % kern.dv_multiple == 0 &&
         int64_t(p.len_q) * most <= std::max(4, p.head_dim / 8);
}

}  // namespace

ParallelFor thread_parallel_for(int num_threads) {
  return [num_threads](int64_t n, const std::function<void(int64_t)>& fn) {
    int threads = num_threads > 0 ? num_threads : int(std::thread::hardware_concurrency());
    threads = int(std::max<int64_t>(1, std::min<int64_t>(threads, n)));
    std::atomic<int64_t> next{0};
    auto worker = [&] {
      for (int64_t t; (t = next.fetch_add(1)) < n;) fn(t);
    };
    std::vector<std::thread> pool;
    for (int i = 1; i < threads; ++i) pool.emplace_back(worker);
    worker();
    for (auto& th : pool) th.join();
  };
}

std::string run(const Params& p, const ParallelFor& parallel_for) {
  const Pattern pat = Pattern::make(p);
  const TileKernels& kern = select_tile_kernels();
  const uint64_t call_id = ++g_call_counter;
  const int32_t most = max_stacked_heads(p), nh = stacked_heads(p, most);
  const bool direct = reads_in_place(p, kern, most);
  const int32_t tile_rows = nh > 1 ? p.len_q : kTileQ;
  const int32_t nqt = ceil_div(p.len_q, tile_rows), head_groups = p.heads_q / nh;
  const int64_t items = int64_t(p.batch) * head_groups * nqt;
  // A task is a run of consecutive query tiles of one (batch, head): they share most key tiles,
  // which then stay in the thread's tile cache (a band's task of n query tiles converts about
  // n + 9 key tiles). Eight tasks per hardware thread remain to balance the threads.
  static const int64_t threads = std::max<int64_t>(1, std::thread::hardware_concurrency());
  const int64_t per_task = std::max<int64_t>(1, std::min<int64_t>(32, items / (8 * threads)));
  const int64_t tasks = (items + per_task - 1) / per_task;
  std::atomic<bool> failed{false};
  std::string error;
  parallel_for(tasks, [&](int64_t task) {
    thread_local Scratch scratch;
    try {
      const int64_t end = std::min(items, (task + 1) * per_task);
      for (int64_t item = task * per_task; item < end; ++item) {
        const int32_t qt = int32_t(item % nqt);
        const int32_t hg = int32_t((item / nqt) % head_groups);
        const int32_t b = int32_t(item / (int64_t(nqt) * head_groups));
        const int32_t i0 = qt * tile_rows;
        run_item(p, pat, kern, Item{b, hg * nh, nh, i0, std::min(p.len_q, i0 + tile_rows), direct},
                 call_id, scratch);
      }
    } catch (const std::exception& e) {  // allocation failure: report, never throw across the API
      if (!failed.exchange(true)) error = std::string("SparseAttention: CPU kernel: ") + e.what();
    }
  });
  return failed ? error : std::string();
}

}  // namespace cpu
}  // namespace spattn
