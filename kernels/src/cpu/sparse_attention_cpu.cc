// CPU kernel of SparseAttention: a block-sparse walk with online softmax (docs/op-spec.md).
//
// Work item: (batch, query head, query tile of kTileQ rows). For each, the candidate key tiles
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

// Per-thread scratch, reused across work items and calls.
struct Scratch {
  std::vector<float> q, s, o, m, l, corr;
  std::vector<uint8_t> marks;
  std::vector<uint8_t> allowed;  // [kTileQ][kTileK] token mask of a partial tile
  // Converted key/value tiles (K transposed to [D][kTileK], V as [kTileK][dv_pad]), cached by key
  // tile: neighbouring query tiles of a band visit mostly the same key tiles, so each tile is
  // converted about once per thread instead of once per visit. Direct-mapped on the tile index.
  static constexpr int kSlots = 32;
  std::vector<float> kt_cache, v_cache;
  int64_t tag[kSlots];
  bool v_nonfinite[kSlots];  // the slot's value tile holds a NaN or an infinity
  uint64_t call = 0;         // the call the tags belong to
};

// Each call gets a new id, so no thread reuses tiles converted from another call's tensors.
std::atomic<uint64_t> g_call_counter{0};

void run_item(const Params& p, const Pattern& pat, const TileKernels& kern, int64_t item,
              uint64_t call_id, Scratch& w) {
  const int32_t nqt = ceil_div(p.len_q, kTileQ);
  const int32_t qt = int32_t(item % nqt);
  const int32_t h = int32_t((item / nqt) % p.heads_q);
  const int32_t b = int32_t(item / (int64_t(nqt) * p.heads_q));
  const int32_t hk = h / (p.heads_q / p.heads_kv);
  const int32_t i0 = qt * kTileQ, i1 = std::min(p.len_q, i0 + kTileQ), rows = i1 - i0;
  const int32_t D = p.head_dim, Dv = p.head_dim_v;
  const int32_t dv_pad = round_up(Dv, kern.dv_multiple);
  const int32_t num_tiles = ceil_div(p.len_k, kTileK);
  const float neg_inf = -std::numeric_limits<float>::infinity();

  w.q.resize(size_t(kTileQ) * D);
  w.s.resize(size_t(kTileQ) * kTileK);
  w.o.assign(size_t(kTileQ) * dv_pad, 0.f);
  w.m.assign(kTileQ, neg_inf);
  w.l.assign(kTileQ, 0.f);
  w.corr.resize(kTileQ);
  w.marks.resize(num_tiles);
  w.allowed.resize(size_t(kTileQ) * kTileK);
  const size_t kt_size = size_t(D) * kTileK, v_size = size_t(kTileK) * dv_pad;
  if (w.call != call_id || w.kt_cache.size() != kt_size * Scratch::kSlots ||
      w.v_cache.size() != v_size * Scratch::kSlots) {
    w.kt_cache.assign(kt_size * Scratch::kSlots, 0.f);
    w.v_cache.assign(v_size * Scratch::kSlots, 0.f);
    std::fill(w.tag, w.tag + Scratch::kSlots, int64_t(-1));
    w.call = call_id;
  }

  // Query rows as given: the scale multiplies each float32 dot product (TileKernels::qk), so a
  // score is scale * q.k as the op spec defines it (an overflow to +-inf included), and the
  // softmax subtracts the row maximum before any other scaling.
  const int64_t q_base = b * p.q_batch_stride + h * p.q_head_stride;
  const float scale = p.pattern.scale, softcap = p.pattern.softcap;
  for (int32_t r = 0; r < rows; ++r)
    load_row(p.dtype, p.q, q_base + (i0 + r) * p.q_row_stride, D, 1.f, &w.q[r * D]);

  pat.mark_candidate_tiles(b, h, i0, i1, kTileK, w.marks.data());
  const int64_t k_base = b * p.k_batch_stride + hk * p.k_head_stride;
  const int64_t v_base = b * p.v_batch_stride + hk * p.v_head_stride;
  float krow[512];  // head dims are validated to at most 512
  for (int32_t t = 0; t < num_tiles; ++t) {
    if (!w.marks[t]) continue;
    const int32_t j0 = t * kTileK, j1 = std::min(p.len_k, j0 + kTileK), cols = j1 - j0;
    const TileClass cls = pat.classify(b, h, Tile{i0, i1, j0, j1});
    if (cls == TileClass::kEmpty) continue;
    const int slot = t % Scratch::kSlots;
    const int64_t tag = (int64_t(b) * p.heads_kv + hk) * num_tiles + t;
    float* kt = &w.kt_cache[slot * kt_size];
    float* vt = &w.v_cache[slot * v_size];
    if (w.tag[slot] != tag) {
      // K tile transposed to [D][kTileK], V tile to [kTileK][dv_pad]; zero padded.
      bool v_bad = false;
      for (int32_t c = 0; c < cols; ++c) {
        load_row(p.dtype, p.k, k_base + (j0 + c) * p.k_row_stride, D, 1.f, krow);
        for (int32_t d = 0; d < D; ++d) kt[d * kTileK + c] = krow[d];
        float* vr = vt + size_t(c) * dv_pad;
        load_row(p.dtype, p.v, v_base + (j0 + c) * p.v_row_stride, Dv, 1.f, vr);
        int nonfinite = 0;  // an OR reduction, which vectorizes
        for (int32_t d = 0; d < Dv; ++d)
          nonfinite |= !(std::fabs(vr[d]) <= std::numeric_limits<float>::max());
        v_bad = v_bad || nonfinite;
        std::fill(vr + Dv, vr + dv_pad, 0.f);
      }
      w.v_nonfinite[slot] = v_bad;
      if (cols < kTileK) {
        for (int32_t d = 0; d < D; ++d)
          std::fill(kt + d * kTileK + cols, kt + (d + 1) * kTileK, 0.f);
        std::fill(vt + size_t(cols) * dv_pad, vt + v_size, 0.f);
      }
      w.tag[slot] = tag;
    }
    kern.qk(w.q.data(), D, kt, D, w.s.data(), rows, scale);
    // The score hook: transforms of the scaled scores, before the mask (softcap). The mask then
    // overwrites the scores of excluded keys, whatever their key rows hold.
    if (softcap > 0.f) kern.softcap(w.s.data(), rows, softcap);
    if (cls == TileClass::kPartial) {
      // The token mask comes from the pattern rules here, in code built for the baseline
      // instruction set: the rules are inline functions, and a copy of them built with AVX-512
      // flags in tile_kernels_avx512.cc could otherwise be the one the linker keeps.
      for (int32_t r = 0; r < rows; ++r) pat.row_mask(b, h, i0 + r, j0, j1, &w.allowed[r * kTileK]);
      kern.mask(w.allowed.data(), rows, cols, w.s.data());
    }
    if (cols < kTileK)
      for (int32_t r = 0; r < rows; ++r)
        std::fill(&w.s[r * kTileK + cols], &w.s[(r + 1) * kTileK], neg_inf);
    kern.softmax(w.s.data(), rows, w.m.data(), w.l.data(), w.corr.data());
    // Excluded and padding keys weigh exactly zero; with a non-finite value row in the tile they
    // must also add exactly nothing (op spec, "Non-finite values and masked positions").
    kern.pv(w.s.data(), vt, dv_pad, cols, w.o.data(), dv_pad, dv_pad, w.corr.data(), rows,
            w.v_nonfinite[slot]);
  }

  // Normalize; rows without any allowed key (or only -inf scores) are zeros, rows with a NaN or
  // +inf score NaN (l is NaN). The sink adds e^sink to the denominator only (e^(sink - m)
  // relative to the row's running max m; an overflow to inf gives the limit, zeros).
  const int64_t o_base = b * p.o_batch_stride + h * p.o_head_stride;
  const float sink = p.sinks ? p.sinks[h] : 0.f;
  for (int32_t r = 0; r < rows; ++r) {
    float* orow = &w.o[size_t(r) * dv_pad];
    float l = w.l[r];
    if (std::isnan(l)) {
      std::fill(orow, orow + Dv, std::numeric_limits<float>::quiet_NaN());
    } else {
      if (p.sinks && l > 0.f) l += std::exp(sink - w.m[r]);
      const float inv = l > 0.f ? 1.f / l : 0.f;
      for (int32_t d = 0; d < Dv; ++d) orow[d] *= inv;
    }
    store_row(p.dtype, orow, Dv, p.o, o_base + (i0 + r) * p.o_row_stride);
  }
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
  const int64_t items = int64_t(p.batch) * p.heads_q * ceil_div(p.len_q, kTileQ);
  // A task is a run of consecutive query tiles of one (batch, head): they share most key tiles,
  // which then stay in the thread's tile cache. Enough tasks remain to balance the threads.
  const int64_t per_task = std::max<int64_t>(1, std::min<int64_t>(8, items / 64));
  const int64_t tasks = (items + per_task - 1) / per_task;
  std::atomic<bool> failed{false};
  std::string error;
  parallel_for(tasks, [&](int64_t task) {
    thread_local Scratch scratch;
    try {
      const int64_t end = std::min(items, (task + 1) * per_task);
      for (int64_t item = task * per_task; item < end; ++item)
        run_item(p, pat, kern, item, call_id, scratch);
    } catch (const std::exception& e) {  // allocation failure: report, never throw across the API
      if (!failed.exchange(true)) error = std::string("SparseAttention: CPU kernel: ") + e.what();
    }
  });
  return failed ? error : std::string();
}

}  // namespace cpu
}  // namespace spattn
