// The pattern rules of docs/op-spec.md, written once for every backend.
//
// Token level: `Pattern::allowed(b, h, i, j)` is the mask of the spec, exactly.
// Tile level: `Pattern::classify(tile)` tells a kernel whether a (query tile, key tile) rectangle
// holds no allowed pair (skip it), only allowed pairs (no masking needed) or some (mask per pair).
// The tile answers are conservative: kEmpty and kFull are only returned when they are certain, so
// a kernel that masks every kPartial tile with `allowed` computes exactly the spec's mask.
#pragma once

#include <cstdint>

#include "spattn/params.h"

#if defined(__CUDACC__)
#define SPATTN_HD __host__ __device__ __forceinline__
#else
#define SPATTN_HD inline
#endif

namespace spattn {

// The spec's 32-bit mixer (lowbias32 constants), unsigned arithmetic with wrap-around.
SPATTN_HD uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

// The hash behind random block r of (query head h, query block qb).
SPATTN_HD uint32_t random_hash(uint32_t seed, uint32_t h, uint32_t qb, uint32_t r) {
  uint32_t x = mix32(seed + 0x9e3779b9u);
  x = mix32(x ^ h);
  x = mix32(x ^ qb);
  return mix32(x ^ r);
}

// Random key block number r of (query head h, query block qb), in [0, num_key_blocks).
SPATTN_HD int32_t random_block(uint32_t seed, uint32_t h, uint32_t qb, uint32_t r,
                               uint32_t num_key_blocks) {
  return int32_t(random_hash(seed, h, qb, r) % num_key_blocks);
}

// x mod d for 32-bit x and d > 0 from m = fastmod_magic(d): the remainder by direct computation
// of Lemire, Kaser and Kurz, exact for every 32-bit x; a multiply and a high product instead of a
// division (the kernels' hot use: random blocks in masks and lists). m = floor((2^64 - 1) / d) + 1.
SPATTN_HD uint64_t fastmod_magic(uint32_t d) { return ~uint64_t(0) / d + 1; }

SPATTN_HD uint32_t fastmod_u32(uint32_t x, uint64_t m, uint32_t d) {
  const uint64_t low = m * x;
#ifdef __CUDA_ARCH__
  return uint32_t(__umul64hi(low, d));
#else
  return uint32_t((static_cast<unsigned __int128>(low) * d) >> 64);
#endif
}

SPATTN_HD int32_t ceil_div(int32_t a, int32_t b) { return (a + b - 1) / b; }

// Floor division for possibly negative numerators (b > 0).
SPATTN_HD int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

enum class TileClass : int32_t { kEmpty = 0, kPartial = 1, kFull = 2 };

// Half-open rectangle of query indices [i0, i1) and key indices [j0, j1); both non-empty.
struct Tile {
  int32_t i0, i1, j0, j1;
};

// The interval form of one query row, for keys 0 <= j < len_k: `allows(j)` is allowed(b, h, i, j)
// without the strided, random and listed components (the whole rule when the pattern has none of
// them). Those components add keys below `upper` only.
struct RowBounds {
  int32_t upper;       // keys j >= upper are never allowed (key length, causal), in [0, len_k]
  bool global_row;     // a global query row: every key below upper (the band says so too)
  int32_t num_global;  // keys [0, num_global) are allowed (global keys), num_global <= upper
  int32_t lo, hi;      // keys [lo, hi] are allowed (local band), hi < upper; empty when lo > hi
  SPATTN_HD bool allows(int32_t j) const { return (j < num_global) | ((j >= lo) & (j <= hi)); }
};

// The pattern of one call: attributes plus the run-time sizes and inputs it depends on.
struct Pattern {
  PatternAttrs a;
  int32_t len_q = 0, len_k = 0;
  int32_t heads_q = 0;
  const int32_t* key_lengths = nullptr;    // [B] or null
  const int32_t* block_indices = nullptr;  // [Hl, nqb, K] or null
  int32_t bi_heads = 0, bi_k = 0;
  bool local_on = true;
  int32_t num_key_blocks = 0, num_query_blocks = 0;
  uint64_t key_blocks_magic = 0;  // fastmod_u32's m for num_key_blocks

  SPATTN_HD static Pattern make(const Params& p) {
    Pattern t;
    t.a = p.pattern;
    t.len_q = p.len_q;
    t.len_k = p.len_k;
    t.heads_q = p.heads_q;
    t.key_lengths = p.key_lengths;
    t.block_indices = p.block_indices;
    t.bi_heads = p.bi_heads;
    t.bi_k = p.bi_k;
    const bool other =
        t.a.num_global > 0 || t.a.stride > 0 || t.a.num_random > 0 || p.block_indices != nullptr;
    t.local_on = !(t.a.window_left < 0 && t.a.window_right < 0 && other);
    t.num_key_blocks = ceil_div(p.len_k, t.a.block_size);
    if (t.num_key_blocks > 0) t.key_blocks_magic = fastmod_magic(uint32_t(t.num_key_blocks));
    t.num_query_blocks = ceil_div(p.len_q, t.a.block_size);
    return t;
  }

  // Position of query i (bottom-right alignment).
  SPATTN_HD int64_t pos(int32_t i) const { return int64_t(i) + len_k - len_q; }

  // Number of valid keys of batch b.
  SPATTN_HD int32_t key_len(int32_t b) const { return key_lengths ? key_lengths[b] : len_k; }

  // random_block(seed, h, qb, r, num_key_blocks), with the remainder by fastmod_u32.
  SPATTN_HD int32_t random_kb(int32_t h, int32_t qb, int32_t r) const {
    return int32_t(
        fastmod_u32(random_hash(uint32_t(a.seed), uint32_t(h), uint32_t(qb), uint32_t(r)),
                    key_blocks_magic, uint32_t(num_key_blocks)));
  }

  // Listed key blocks of (query head h, query block qb): pointer to K entries, -1 padded.
  SPATTN_HD const int32_t* listed_row(int32_t h, int32_t qb) const {
    const int32_t hl = bi_heads == heads_q ? h : 0;
    return block_indices + (int64_t(hl) * num_query_blocks + qb) * bi_k;
  }

  // Is key block kb one of the random or listed blocks of (h, qb)?
  SPATTN_HD bool block_selected(int32_t h, int32_t qb, int32_t kb) const {
    for (int32_t r = 0; r < a.num_random; ++r)
      if (random_kb(h, qb, r) == kb) return true;
    if (block_indices) {
      const int32_t* row = listed_row(h, qb);
      for (int32_t k = 0; k < bi_k; ++k)
        if (row[k] == kb) return true;
    }
    return false;
  }

  // The token-level components, without the key-length and causal conditions.
  SPATTN_HD bool structural(int32_t h, int32_t i, int32_t j) const {
    const int64_t p = pos(i);
    const int64_t d = p - j;  // how far the key lies before the query
    if (local_on && (a.window_left < 0 || d <= a.window_left) &&
        (a.window_right < 0 || -d <= a.window_right))
      return true;
    if (j < a.num_global || (p >= 0 && p < a.num_global)) return true;
    if (a.stride > 0 && d % a.stride == 0) return true;
    return block_selected(h, i / a.block_size, j / a.block_size);
  }

  // The spec's allowed(b, h, i, j).
  SPATTN_HD bool allowed(int32_t b, int32_t h, int32_t i, int32_t j) const {
    if (j >= key_len(b)) return false;
    if (a.causal && int64_t(j) > pos(i)) return false;
    return structural(h, i, j);
  }

  // The interval form of query row i of batch b (see RowBounds): the key-length and causal bound,
  // the global-row flag, the global keys and the local band, each clipped to [0, len_k).
  SPATTN_HD RowBounds row_bounds(int32_t b, int32_t i) const {
    RowBounds r;
    const int64_t p = pos(i);
    int64_t up = key_len(b);  // keys >= up are never allowed
    if (a.causal && p + 1 < up) up = p + 1;
    up = up < 0 ? 0 : (up > len_k ? len_k : up);
    r.upper = int32_t(up);
    r.global_row = p >= 0 && p < a.num_global;
    int64_t lo = 1, hi = 0;  // an empty band when local is off
    if (r.global_row) {      // a global query row: every key below the bound
      lo = 0;
      hi = up - 1;
    } else if (local_on) {
      lo = a.window_left < 0 ? 0 : p - a.window_left;
      hi = a.window_right < 0 ? up - 1 : p + a.window_right;
    }
    if (lo < 0) lo = 0;
    if (hi > up - 1) hi = up - 1;
    if (lo > hi) {
      lo = 1;
      hi = 0;
    }
    r.lo = int32_t(lo);
    r.hi = int32_t(hi);
    r.num_global = int32_t(a.num_global < up ? a.num_global : up);
    return r;
  }

  // allowed(b, h, i, j) for the keys j in [j0, j1) of one query row (j1 <= len_k), written to
  // out[j - j0] (1 allowed, 0 not). The same rules as `allowed`, evaluated by intervals instead of
  // pair by pair (row_bounds, then the strided, random and listed keys); tests/kernels checks it
  // against `allowed`.
  SPATTN_HD void row_mask(int32_t b, int32_t h, int32_t i, int32_t j0, int32_t j1,
                          uint8_t* out) const {
    const int32_t n = j1 - j0;
    const RowBounds rb = row_bounds(b, i);
    for (int32_t t = 0; t < n; ++t) out[t] = uint8_t(rb.allows(j0 + t));  // branch-free, vectorizes
    if (rb.global_row) return;
    const int64_t upper = rb.upper;
    const int64_t p = pos(i);
    if (a.stride > 0) {
      // Keys j = p - m * stride in [j0, min(j1, upper)): from the smallest such j >= j0.
      int64_t j = p - floor_div(p - j0, a.stride) * a.stride;
      for (; j < j1 && j < upper; j += a.stride) out[j - j0] = 1;
    }
    if (a.num_random > 0 || block_indices) {
      const int32_t bs = a.block_size, qb = i / bs;
      for (int32_t kb = j0 / bs; kb <= (j1 - 1) / bs; ++kb) {
        if (!block_selected(h, qb, kb)) continue;
        const int64_t lo_b = kb * bs > j0 ? kb * bs : j0;
        int64_t hi_b = (kb + 1) * bs < j1 ? (kb + 1) * bs : j1;
        if (hi_b > upper) hi_b = upper;
        for (int64_t j = lo_b; j < hi_b; ++j) out[j - j0] = 1;
      }
    }
  }

  // Does the key range [j0, j1) meet a random or listed block of (h, qb)? Does one block cover it?
  SPATTN_HD void block_hits(int32_t h, int32_t qb, int32_t j0, int32_t j1, bool* any,
                            bool* all) const {
    const int32_t bs = a.block_size;
    const int32_t kb0 = j0 / bs, kb1 = (j1 - 1) / bs;  // blocks the key range touches
    bool hit = false, cover = false;
    for (int32_t r = 0; r < a.num_random && !cover; ++r) {
      const int32_t kb = random_kb(h, qb, r);
      if (kb >= kb0 && kb <= kb1) hit = true;
      if (kb0 == kb1 && kb == kb0) cover = true;
    }
    if (block_indices) {
      const int32_t* row = listed_row(h, qb);
      for (int32_t k = 0; k < bi_k && !cover; ++k) {
        const int32_t kb = row[k];
        if (kb >= kb0 && kb <= kb1) hit = true;
        if (kb0 == kb1 && kb == kb0) cover = true;
      }
    }
    *any = hit || cover;
    *all = cover;
  }

  // Classifies a tile for batch b and query head h (see the file comment).
  SPATTN_HD TileClass classify(int32_t b, int32_t h, const Tile& t) const {
    const int32_t len = key_len(b);
    if (t.j0 >= len) return TileClass::kEmpty;
    const int64_t p0 = pos(t.i0), p1 = pos(t.i1 - 1);  // first and last query positions
    if (a.causal && int64_t(t.j0) > p1) return TileClass::kEmpty;
    const bool bounds_all = t.j1 <= len && (!a.causal || int64_t(t.j1 - 1) <= p0);

    // d = p - j ranges over [dmin, dmax] in the tile.
    const int64_t dmin = p0 - (t.j1 - 1), dmax = p1 - t.j0;
    bool any = false, all = false;

    if (local_on) {
      // Band: -window_right <= d <= window_left (an unbounded side imposes nothing).
      const bool lo_ok_any = a.window_right < 0 || dmax >= -int64_t(a.window_right);
      const bool hi_ok_any = a.window_left < 0 || dmin <= int64_t(a.window_left);
      // With causal, pairs with d < 0 are never allowed: the band must reach d >= 0.
      const bool causal_ok = !a.causal || dmax >= 0;
      if (lo_ok_any && hi_ok_any && causal_ok) any = true;
      if ((a.window_right < 0 || dmin >= -int64_t(a.window_right)) &&
          (a.window_left < 0 || dmax <= int64_t(a.window_left)))
        all = true;
    }
    if (a.num_global > 0) {
      if (t.j0 < a.num_global || (p1 >= 0 && p0 < a.num_global)) any = true;
      if (t.j1 <= a.num_global || (p0 >= 0 && p1 < a.num_global)) all = true;
    }
    if (a.stride > 0 && !all) {
      // Some d in [dmin, dmax] divisible by stride?
      if (floor_div(dmax, a.stride) * a.stride >= dmin) any = true;
      if (a.stride == 1) all = true;
    }
    if ((a.num_random > 0 || block_indices) && !all) {
      const int32_t qb0 = t.i0 / a.block_size, qb1 = (t.i1 - 1) / a.block_size;
      bool every = true;
      for (int32_t qb = qb0; qb <= qb1; ++qb) {
        bool hit, cover;
        block_hits(h, qb, t.j0, t.j1, &hit, &cover);
        any = any || hit;
        every = every && cover;
      }
      all = all || every;
    }
    if (!any && !all) return TileClass::kEmpty;
    return (all && bounds_all) ? TileClass::kFull : TileClass::kPartial;
  }
};

}  // namespace spattn
