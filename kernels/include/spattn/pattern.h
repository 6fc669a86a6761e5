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

// ceil(a / b) for a >= 0, b > 0, without forming a + b - 1 (which overflows int32 for a near
// 2^31).
SPATTN_HD int32_t ceil_div(int32_t a, int32_t b) { return a / b + (a % b != 0 ? 1 : 0); }

// Floor division for possibly negative numerators (b > 0).
SPATTN_HD int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

enum class TileClass : int32_t { kEmpty = 0, kPartial = 1, kFull = 2 };

// Half-open rectangle of query indices [i0, i1) and key indices [j0, j1); both non-empty.
struct Tile {
  int32_t i0, i1, j0, j1;
};

// The interval form of one query row, for keys 0 <= j < len_k: `allows(j)` is allowed(b, h, i, j)
// without the strided, random, listed and global_mask-key components (the whole rule when the
// pattern has none of them). Those components add keys in [lower, upper) only.
struct RowBounds {
  int32_t upper;       // keys j >= upper are never allowed (key length, causal), in [0, len_k]
  bool global_row;     // a global query row: every key in [lower, upper) (the band says so too)
  int32_t num_global;  // keys [lower, num_global) are allowed (global keys), num_global <= upper
  int32_t lo, hi;     // keys [lo, hi] are allowed (local band), lower <= lo, hi < upper; empty when
                      // lo > hi
  int32_t lower = 0;  // keys j < lower are never allowed (key_starts), lower <= upper
  SPATTN_HD bool allows(int32_t j) const {
    return ((j >= lower) & (j < num_global)) | ((j >= lo) & (j <= hi));
  }
};

// The key tiles (tile_k keys each: tile t holds keys [t * tile_k, (t + 1) * tile_k)) in which a
// query tile may hold an allowed pair (Pattern::candidate_tiles). A tile that holds an allowed
// pair is always a candidate; candidates may hold none (Pattern::classify decides).
struct CandidateTiles {
  int32_t first, last;       // no candidate outside [first, last] (key_starts, key_lengths, causal)
  bool all;                  // every tile in [first, last] (a global query row, the strided
                             // component or an unbounded band)
  int32_t band_lo, band_hi;  // the local band's tiles (empty when band_lo > band_hi)
  int32_t glob_lo, glob_hi;  // tiles [glob_lo, glob_hi) hold global keys j < num_global
  bool blocks;               // random/listed blocks add their tiles (Pattern::for_each_block)
  bool global_keys;          // global_mask adds the tiles holding a global key (has_global_key)
  SPATTN_HD bool empty() const { return first > last; }
};

// The pattern of one call: attributes plus the run-time sizes and inputs it depends on.
struct Pattern {
  PatternAttrs a;
  int32_t len_q = 0, len_k = 0;
  int32_t heads_q = 0;
  const int32_t* key_lengths = nullptr;    // [B] or null
  const int32_t* block_indices = nullptr;  // [Hl, nqb, K] or null
  const int32_t* global_mask = nullptr;    // [B, Lk] or null
  const int32_t* key_starts = nullptr;     // [B] or null
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
    t.global_mask = p.global_mask;
    t.key_starts = p.key_starts;
    t.bi_heads = p.bi_heads;
    t.bi_k = p.bi_k;
    // The presence of global_mask (like block_indices), not its content, counts as a component.
    const bool other = t.a.num_global > 0 || t.a.stride > 0 || t.a.num_random > 0 ||
                       p.block_indices != nullptr || p.global_mask != nullptr;
    t.local_on = local_component_on(t.a, other);
    t.num_key_blocks = ceil_div(p.len_k, t.a.block_size);
    if (t.num_key_blocks > 0) t.key_blocks_magic = fastmod_magic(uint32_t(t.num_key_blocks));
    t.num_query_blocks = ceil_div(p.len_q, t.a.block_size);
    return t;
  }

  // Is the local component on? Off only when both windows are unbounded, no chunk bounds it
  // and another component exists (the pattern is then that component, not dense); `other`: a
  // global, strided, random or listed component, or global_mask. launch.cu sizes its plans by
  // the same rule.
  SPATTN_HD static bool local_component_on(const PatternAttrs& a, bool other) {
    return a.chunk_size > 0 || !(a.window_left < 0 && a.window_right < 0 && other);
  }

  // The first position of the chunk holding position x of batch b (chunk_size > 0): chunks are
  // runs of chunk_size positions counted from key_start(b), the first valid key.
  SPATTN_HD int64_t chunk_begin(int32_t b, int64_t x) const {
    const int64_t s = key_start(b);
    return s + floor_div(x - s, a.chunk_size) * a.chunk_size;
  }

  // Position of query i (bottom-right alignment).
  SPATTN_HD int64_t pos(int32_t i) const { return int64_t(i) + len_k - len_q; }

  // Keys [key_start(b), key_len(b)) of batch b are valid (not padding).
  SPATTN_HD int32_t key_len(int32_t b) const { return key_lengths ? key_lengths[b] : len_k; }
  SPATTN_HD int32_t key_start(int32_t b) const { return key_starts ? key_starts[b] : 0; }

  // global_mask[b, j] != 0 (false without global_mask); 0 <= j < len_k.
  SPATTN_HD bool mask_global(int32_t b, int64_t j) const {
    return global_mask && global_mask[int64_t(b) * len_k + j] != 0;
  }

  // Is query i of batch b a global row (it attends to every valid key)? Queries at negative
  // positions never are.
  SPATTN_HD bool global_row(int32_t b, int32_t i) const {
    const int64_t p = pos(i);
    if (p < 0) return false;
    return p < a.num_global || (p < len_k && mask_global(b, p));
  }

  // Is key j of batch b a global key (attended by every query)?
  SPATTN_HD bool global_key(int32_t b, int32_t j) const {
    return j < a.num_global || mask_global(b, j);
  }

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

  // The token-level components, without the key-padding and causal conditions.
  SPATTN_HD bool structural(int32_t b, int32_t h, int32_t i, int32_t j) const {
    const int64_t p = pos(i);
    const int64_t d = p - j;  // how far the key lies before the query
    if (local_on && (a.window_left < 0 || d <= a.window_left) &&
        (a.window_right < 0 || -d <= a.window_right) &&
        (a.chunk_size <= 0 || chunk_begin(b, p) == chunk_begin(b, j)))
      return true;
    if (global_key(b, j) || global_row(b, i)) return true;
    if (a.stride > 0 && d % a.stride == 0) return true;
    return block_selected(h, i / a.block_size, j / a.block_size);
  }

  // The spec's allowed(b, h, i, j).
  SPATTN_HD bool allowed(int32_t b, int32_t h, int32_t i, int32_t j) const {
    if (j >= key_len(b) || j < key_start(b)) return false;
    if (a.causal && int64_t(j) > pos(i)) return false;
    return structural(b, h, i, j);
  }

  // The valid keys [lower, upper) of query row i of batch b (key_starts, key_lengths and causal),
  // clipped to [0, len_k] with lower <= upper.
  SPATTN_HD void key_bounds(int32_t b, int32_t i, int64_t* lower, int64_t* upper) const {
    const int64_t p = pos(i);
    int64_t up = key_len(b);
    if (a.causal && p + 1 < up) up = p + 1;
    up = up < 0 ? 0 : (up > len_k ? len_k : up);
    int64_t low = key_start(b);
    low = low < 0 ? 0 : (low > up ? up : low);
    *lower = low;
    *upper = up;
  }

  // The interval form of query row i of batch b (see RowBounds): the key-padding and causal
  // bounds, the global-row flag, the global keys j < num_global and the local band, each clipped
  // to the valid keys.
  SPATTN_HD RowBounds row_bounds(int32_t b, int32_t i) const {
    RowBounds r;
    const int64_t p = pos(i);
    int64_t low, up;  // valid keys [low, up)
    key_bounds(b, i, &low, &up);
    r.upper = int32_t(up);
    r.lower = int32_t(low);
    r.global_row = global_row(b, i);
    int64_t lo = 1, hi = 0;  // an empty band when local is off
    if (r.global_row) {      // a global query row: every valid key
      lo = low;
      hi = up - 1;
    } else if (local_on) {
      lo = a.window_left < 0 ? 0 : p - a.window_left;
      hi = a.window_right < 0 ? up - 1 : p + a.window_right;
      if (a.chunk_size > 0) {  // the band stops at the query's chunk
        const int64_t c0 = chunk_begin(b, p);
        if (lo < c0) lo = c0;
        if (hi > c0 + a.chunk_size - 1) hi = c0 + a.chunk_size - 1;
      }
    }
    if (lo < low) lo = low;
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
  // pair by pair (row_bounds, then the global_mask, strided, random and listed keys);
  // tests/kernels checks it against `allowed`.
  SPATTN_HD void row_mask(int32_t b, int32_t h, int32_t i, int32_t j0, int32_t j1,
                          uint8_t* out) const {
    const int32_t n = j1 - j0;
    const RowBounds rb = row_bounds(b, i);
    for (int32_t t = 0; t < n; ++t) out[t] = uint8_t(rb.allows(j0 + t));  // branch-free, vectorizes
    if (rb.global_row) return;
    const int64_t upper = rb.upper;
    const int64_t start = j0 > rb.lower ? j0 : rb.lower;  // first valid key of the range
    const int64_t stop = j1 < upper ? j1 : upper;
    const int64_t p = pos(i);
    if (global_mask) {
      const int32_t* g = global_mask + int64_t(b) * len_k;
      for (int64_t j = start; j < stop; ++j) out[j - j0] |= uint8_t(g[j] != 0);
    }
    if (a.stride > 0) {
      // Keys j = p - m * stride in [start, stop): from the smallest such j >= start.
      int64_t j = p - floor_div(p - start, a.stride) * a.stride;
      for (; j < stop; j += a.stride) out[j - j0] = 1;
    }
    if (a.num_random > 0 || block_indices) {
      const int32_t bs = a.block_size, qb = i / bs;
      for (int32_t kb = j0 / bs; kb <= (j1 - 1) / bs; ++kb) {
        if (!block_selected(h, qb, kb)) continue;
        const int64_t lo_b = int64_t(kb) * bs > start ? int64_t(kb) * bs : start;
        const int64_t hi_b = (int64_t(kb) + 1) * bs < stop ? (int64_t(kb) + 1) * bs : stop;
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

  // Are some (any) or all (all) of the query rows [i0, i1) of batch b global rows?
  SPATTN_HD void global_rows(int32_t b, int32_t i0, int32_t i1, bool* any, bool* all) const {
    const int64_t p0 = pos(i0), p1 = pos(i1 - 1);
    // Rows with a position in [0, num_global).
    bool hit = a.num_global > 0 && p1 >= 0 && p0 < a.num_global;
    bool every = a.num_global > 0 && p0 >= 0 && p1 < a.num_global;
    if (global_mask && !every) {
      // The rows not covered by num_global (positions from max(p0, num_global, 0)) are global
      // when their position's mask is set; rows at negative positions never are.
      int64_t q0 = p0 > a.num_global ? p0 : a.num_global;
      if (q0 < 0) q0 = 0;
      bool rest = p0 >= 0;
      const int32_t* g = global_mask + int64_t(b) * len_k;
      for (int64_t q = q0; q <= p1; ++q) {
        const bool on = g[q] != 0;
        hit = hit || on;
        rest = rest && on;
      }
      every = rest;
    }
    *any = hit;
    *all = every;
  }

  // Classifies a tile for batch b and query head h (see the file comment).
  SPATTN_HD TileClass classify(int32_t b, int32_t h, const Tile& t) const {
    const int32_t len = key_len(b), start = key_start(b);
    if (t.j0 >= len || t.j1 <= start) return TileClass::kEmpty;
    const int64_t p0 = pos(t.i0), p1 = pos(t.i1 - 1);  // first and last query positions
    if (a.causal && int64_t(t.j0) > p1) return TileClass::kEmpty;
    const bool bounds_all = t.j1 <= len && t.j0 >= start && (!a.causal || int64_t(t.j1 - 1) <= p0);

    // d = p - j ranges over [dmin, dmax] in the tile.
    const int64_t dmin = p0 - (t.j1 - 1), dmax = p1 - t.j0;
    bool any = false, all = false;

    if (local_on) {
      // Band: -window_right <= d <= window_left (an unbounded side imposes nothing).
      const bool lo_ok_any = a.window_right < 0 || dmax >= -int64_t(a.window_right);
      const bool hi_ok_any = a.window_left < 0 || dmin <= int64_t(a.window_left);
      // With causal, pairs with d < 0 are never allowed: the band must reach d >= 0.
      const bool causal_ok = !a.causal || dmax >= 0;
      bool band_any = lo_ok_any && hi_ok_any && causal_ok;
      bool band_all = (a.window_right < 0 || dmin >= -int64_t(a.window_right)) &&
                      (a.window_left < 0 || dmax <= int64_t(a.window_left));
      if (a.chunk_size > 0) {
        // Chunks of the tile's queries [q0, q1] and keys [k0, k1] (by first position): some
        // pair can share one only if the ranges meet; every pair does only if all are one chunk.
        const int64_t q0 = chunk_begin(b, p0), q1 = chunk_begin(b, p1);
        const int64_t k0 = chunk_begin(b, t.j0), k1 = chunk_begin(b, t.j1 - 1);
        band_any = band_any && (q0 > k0 ? q0 : k0) <= (q1 < k1 ? q1 : k1);
        band_all = band_all && q0 == q1 && k0 == k1 && q0 == k0;
      }
      any = band_any;
      all = band_all;
    }
    if (a.num_global > 0) {
      if (t.j0 < a.num_global) any = true;
      if (t.j1 <= a.num_global) all = true;
    }
    if (a.num_global > 0 || global_mask) {
      bool rows_any, rows_all;
      global_rows(b, t.i0, t.i1, &rows_any, &rows_all);
      any = any || rows_any;
      all = all || rows_all;
    }
    if (global_mask && !all) {
      // Global keys: some among the valid keys of the tile (with causal, at most the last query's
      // position), or all of the tile's keys.
      int64_t k0 = t.j0 > start ? t.j0 : start, k1 = t.j1 < len ? t.j1 : len;
      if (a.causal && p1 + 1 < k1) k1 = p1 + 1;
      const int32_t* g = global_mask + int64_t(b) * len_k;
      bool every = true;
      for (int64_t j = t.j0; j < t.j1; ++j) {
        const bool on = g[j] != 0;
        every = every && on;
        any = any || (on && j >= k0 && j < k1);
      }
      all = all || every;
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

  // The candidate key tiles of query rows [i0, i1) of batch b (see CandidateTiles): tiles of
  // tile_k keys, tile t = keys [t * tile_k, min((t + 1) * tile_k, len_k)).
  SPATTN_HD CandidateTiles candidate_tiles(int32_t b, int32_t i0, int32_t i1,
                                           int32_t tile_k) const {
    CandidateTiles c;
    const int64_t p0 = pos(i0), p1 = pos(i1 - 1);
    // Valid keys of the tile's rows: [start, end] (the causal bound of the last row).
    int64_t start = key_start(b), end = key_len(b);
    start = start < 0 ? 0 : start;
    end = end > len_k ? len_k : end;
    if (a.causal && p1 + 1 < end) end = p1 + 1;
    end -= 1;
    c.first = int32_t(start / tile_k);
    c.last = end >= start ? int32_t(end / tile_k) : c.first - 1;
    c.band_lo = 1;
    c.band_hi = 0;
    c.glob_lo = c.glob_hi = 0;
    c.blocks = a.num_random > 0 || block_indices != nullptr;
    c.global_keys = global_mask != nullptr;
    bool rows_any = false, rows_all;
    if (a.num_global > 0 || global_mask) global_rows(b, i0, i1, &rows_any, &rows_all);
    const bool unbounded_local =
        local_on && a.window_left < 0 && a.window_right < 0 && a.chunk_size <= 0;
    c.all = a.stride > 0 || rows_any || unbounded_local;
    if (local_on) {
      int64_t lo = a.window_left < 0 ? 0 : p0 - a.window_left;
      int64_t hi = a.window_right < 0 ? int64_t(len_k) - 1 : p1 + a.window_right;
      if (a.chunk_size > 0) {  // the rows' chunks: from the first row's to the last row's end
        const int64_t c0 = chunk_begin(b, p0), c1 = chunk_begin(b, p1) + a.chunk_size - 1;
        if (lo < c0) lo = c0;
        if (hi > c1) hi = c1;
      }
      if (lo < start) lo = start;
      if (hi > end) hi = end;
      if (lo <= hi) {
        c.band_lo = int32_t(lo / tile_k);
        c.band_hi = int32_t(hi / tile_k);
      }
    }
    if (a.num_global > 0) {
      const int64_t g_end = (a.num_global < end + 1 ? a.num_global : end + 1) - 1;
      if (start <= g_end) {
        c.glob_lo = int32_t(start / tile_k);
        c.glob_hi = int32_t(g_end / tile_k) + 1;
      }
    }
    return c;
  }

  // Calls f(kb) for every random and listed key block of the query blocks of rows [i0, i1) of
  // head h (repeats included; listed entries outside [0, num_key_blocks) are skipped).
  template <typename F>
  SPATTN_HD void for_each_block(int32_t h, int32_t i0, int32_t i1, F&& f) const {
    const int32_t bs = a.block_size;
    for (int32_t qb = i0 / bs; qb <= (i1 - 1) / bs; ++qb) {
      for (int32_t r = 0; r < a.num_random; ++r) f(random_kb(h, qb, r));
      if (block_indices) {
        const int32_t* row = listed_row(h, qb);
        for (int32_t k = 0; k < bi_k; ++k)
          if (row[k] >= 0 && row[k] < num_key_blocks) f(row[k]);
      }
    }
  }

  // Marks marks[t] = 1 for every candidate key tile t of query rows [i0, i1) of (b, h), 0 for the
  // others (marks has ceil(len_k / tile_k) entries): every tile that holds an allowed pair of
  // these rows is marked. The walk of the CPU kernel; the CUDA visit lists enumerate the same
  // CandidateTiles by windows.
  SPATTN_HD void mark_candidate_tiles(int32_t b, int32_t h, int32_t i0, int32_t i1, int32_t tile_k,
                                      uint8_t* marks) const {
    const int32_t num_tiles = ceil_div(len_k, tile_k);
    for (int32_t t = 0; t < num_tiles; ++t) marks[t] = 0;
    const CandidateTiles c = candidate_tiles(b, i0, i1, tile_k);
    if (c.empty()) return;
    if (c.all) {
      for (int32_t t = c.first; t <= c.last; ++t) marks[t] = 1;
      return;
    }
    auto mark_range = [&](int64_t t0, int64_t t1) {  // tiles [t0, t1] within [first, last]
      if (t0 < c.first) t0 = c.first;
      if (t1 > c.last) t1 = c.last;
      for (int64_t t = t0; t <= t1; ++t) marks[t] = 1;
    };
    mark_range(c.band_lo, c.band_hi);
    mark_range(c.glob_lo, int64_t(c.glob_hi) - 1);
    if (c.blocks) {
      const int32_t bs = a.block_size;
      for_each_block(h, i0, i1, [&](int32_t kb) {
        const int64_t j0 = int64_t(kb) * bs;
        const int64_t j1 = (j0 + bs < len_k ? j0 + bs : int64_t(len_k)) - 1;
        mark_range(j0 / tile_k, j1 / tile_k);
      });
    }
    if (c.global_keys) {
      const int32_t* g = global_mask + int64_t(b) * len_k;
      const int64_t stop =
          int64_t(c.last + 1) * tile_k < len_k ? int64_t(c.last + 1) * tile_k : int64_t(len_k);
      for (int64_t j = int64_t(c.first) * tile_k; j < stop; ++j)
        if (g[j] != 0) {
          marks[j / tile_k] = 1;
          j = (j / tile_k + 1) * tile_k - 1;  // the tile is marked: on to the next one
        }
    }
  }
};

}  // namespace spattn
