// Checks of the shared pattern rules (kernels/include/spattn/pattern.h):
//  - the random-block hash matches the spec's test vectors, and the kernels' remainder
//    (fastmod_u32) equals x % d,
//  - row_mask (interval form used by kernels) equals allowed (the spec's rule) for every pair,
//  - row_bounds().allows equals allowed when the pattern has no strided/random/listed component,
//  - classify is conservative: kEmpty tiles hold no allowed pair, kFull tiles only allowed pairs,
//    and a tile with an allowed pair is never kEmpty,
//  - candidate-tile enumeration (mark_candidate_tiles) visits every key tile holding an allowed
//    pair of a query tile, for several tile sizes,
//  - allowed itself against an independent restatement of the spec's rule (global_mask and
//    key_starts included),
// over random patterns with every component: band, causal, num_global, global_mask, stride,
// random and listed blocks, key_lengths and key_starts, Lq != Lk.
// Built and run by tests/kernels/test_pattern_rules.py. Prints "N passed, 0 failed" on success.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "spattn/pattern.h"
#include "spattn/validate.h"

using spattn::Params;
using spattn::Pattern;
using spattn::Tile;
using spattn::TileClass;

static int failures = 0, checks = 0;
#define CHECK(cond, ...)                                 \
  do {                                                   \
    ++checks;                                            \
    if (!(cond)) {                                       \
      if (++failures < 20) {                             \
        std::printf("FAIL %s:%d: ", __FILE__, __LINE__); \
        std::printf(__VA_ARGS__);                        \
        std::printf("\n");                               \
      }                                                  \
    }                                                    \
  } while (0)

// Lengths near the limits (Lq, Lk up to 2^30; int32 attributes up to 2^31 - 1): block counts,
// positions and bounds must come out exact, with no signed overflow (test_pattern_rules.py also
// builds this file with -fsanitize=signed-integer-overflow).
static void large_lengths() {
  using spattn::ceil_div;
  const int32_t kMax = 2147483647, kLimit = int32_t(spattn::kMaxSeqLen);
  CHECK(ceil_div(kMax, 1) == kMax, "ceil_div(2^31-1, 1)");
  CHECK(ceil_div(kMax, 65536) == 32768, "ceil_div(2^31-1, 65536) = %d", ceil_div(kMax, 65536));
  CHECK(ceil_div(kMax - 63, 65536) == 32768, "ceil_div(2^31-64, 65536)");
  CHECK(ceil_div(kMax, kMax) == 1 && ceil_div(0, 5) == 0 && ceil_div(65, 64) == 2, "ceil_div");
  CHECK(ceil_div(kLimit, 64) == (1 << 24), "ceil_div(2^30, 64)");

  // block_indices entries against ceil(Lk / block_size), for the largest Lk the value check can
  // be given (it takes int32 lengths) and for the largest valid one.
  const int32_t ok_entry = 32767, bad_entry = 32768, last_valid = 16383, past = 16384;
  CHECK(spattn::validate_block_indices_values(&ok_entry, 1, kMax, 65536).empty(),
        "entry 32767 with Lk = 2^31-1, block_size 65536");
  CHECK(!spattn::validate_block_indices_values(&bad_entry, 1, kMax, 65536).empty(),
        "entry 32768 with Lk = 2^31-1, block_size 65536");
  CHECK(spattn::validate_block_indices_values(&last_valid, 1, kLimit, 65536).empty(),
        "entry 16383 with Lk = 2^30");
  const std::string e = spattn::validate_block_indices_values(&past, 1, kLimit, 65536);
  CHECK(e.find("ceil(Lk / block_size) = 16384") != std::string::npos, "%s", e.c_str());

  // validate_inputs: Lq and Lk up to 2^30 are accepted, one more is an error naming the input.
  auto shapes = [](int64_t lq, int64_t lk, Params* p) {
    spattn::TensorDesc in[spattn::kNumInputs];
    const int64_t dims[3][4] = {{1, 1, lq, 8}, {1, 1, lk, 8}, {1, 1, lk, 8}};
    for (int n = 0; n < 3; ++n) {
      in[n].present = true;
      in[n].dtype = 0;
      in[n].rank = 4;
      for (int d = 0; d < 4; ++d) in[n].dims[d] = dims[n][d];
    }
    spattn::PatternAttrs attrs;
    attrs.block_size = 65536;
    attrs.num_random = 1;
    return spattn::validate_inputs(attrs, 3, in, spattn::cpu_head_dim_support(), p);
  };
  Params p;
  CHECK(shapes(kLimit, kLimit, &p).empty(), "Lq = Lk = 2^30 rejected: %s",
        shapes(kLimit, kLimit, &p).c_str());
  std::string eq = shapes(int64_t(kLimit) + 1, 64, &p), ek = shapes(64, int64_t(kLimit) + 1, &p);
  CHECK(eq.find("SparseAttention: query: Lq at most 2^30") == 0, "%s", eq.c_str());
  CHECK(ek.find("SparseAttention: key: Lk at most 2^30") == 0, "%s", ek.c_str());
  eq = shapes(kMax, 64, &p);
  CHECK(eq.find("SparseAttention: query:") == 0, "Lq = 2^31-1: %s", eq.c_str());

  // The pattern at Lq = Lk = 2^30 with the largest attributes: counts, bounds and tiles exact.
  shapes(kLimit, kLimit, &p);
  p.pattern.window_left = kMax;
  p.pattern.window_right = kMax;
  p.pattern.num_global = kMax;
  p.pattern.stride = kMax;
  p.pattern.seed = kMax;
  p.pattern.num_random = 65536;
  Pattern pat = Pattern::make(p);
  CHECK(pat.num_key_blocks == 16384 && pat.num_query_blocks == 16384, "blocks %d %d",
        pat.num_key_blocks, pat.num_query_blocks);
  const int32_t last = kLimit - 1;
  CHECK(pat.allowed(0, 0, last, last) && pat.allowed(0, 0, 0, last) && pat.allowed(0, 0, last, 0),
        "corner pairs");
  const spattn::RowBounds rb = pat.row_bounds(0, last);
  CHECK(rb.upper == kLimit && rb.lower == 0 && rb.num_global == kLimit, "row bounds");
  const int32_t kb = pat.random_kb(0, 16383, 65535);
  CHECK(kb >= 0 && kb < 16384, "random block %d", kb);
  const Tile corner{last - 63, kLimit, last - 63, kLimit};
  CHECK(pat.classify(0, 0, corner) == TileClass::kFull, "corner tile");
  std::vector<uint8_t> marks(16384);
  pat.mark_candidate_tiles(0, 0, last - 63, kLimit, 65536, marks.data());
  CHECK(marks[0] == 1 && marks[16383] == 1, "candidate tiles");

  // One query against 2^30 keys (position 2^30 - 1), causal, one random block per query block:
  // that block is among the candidates and within the keys.
  p.len_q = 1;
  p.pattern = spattn::PatternAttrs();
  p.pattern.block_size = 65536;
  p.pattern.num_random = 1;
  p.pattern.causal = 1;
  p.pattern.window_left = 0;
  pat = Pattern::make(p);
  CHECK(pat.num_key_blocks == 16384 && pat.num_query_blocks == 1, "1 x 2^30 blocks");
  const int32_t rkb = pat.random_kb(0, 0, 0);
  CHECK(rkb >= 0 && rkb < 16384 && pat.allowed(0, 0, 0, rkb * 65536), "random block %d", rkb);
  CHECK(pat.allowed(0, 0, 0, last) && !pat.allowed(0, 0, 0, last - 1) == (rkb != 16383),
        "band of the one query");
  pat.mark_candidate_tiles(0, 0, 0, 1, 65536, marks.data());
  CHECK(marks[rkb] == 1 && marks[16383] == 1, "candidate tiles of the one query");

  // Chunks at 2^30 keys, the largest chunk_size and one that leaves a short last chunk.
  p.len_q = kLimit;
  p.pattern = spattn::PatternAttrs();
  p.pattern.causal = 1;
  p.pattern.chunk_size = kMax;
  pat = Pattern::make(p);
  CHECK(pat.allowed(0, 0, last, 0) && pat.row_bounds(0, last).lo == 0, "one chunk of 2^31-1");
  p.pattern.chunk_size = kLimit - 5;  // chunks [0, 2^30 - 5) and [2^30 - 5, 2^30)
  pat = Pattern::make(p);
  const spattn::RowBounds rc = pat.row_bounds(0, last);
  CHECK(rc.lo == kLimit - 5 && rc.hi == last && !pat.allowed(0, 0, last, kLimit - 6),
        "last chunk %d %d", rc.lo, rc.hi);
  CHECK(pat.classify(0, 0, Tile{last - 3, kLimit, 0, 64}) == TileClass::kEmpty, "earlier chunk");
}

int main() {
  // Spec test vectors (docs/op-spec.md, "Random blocks").
  struct V {
    uint32_t seed, h, qb, r, n;
    int32_t block;
  };
  const V vectors[] = {{0, 0, 0, 0, 16, 14},   {0, 0, 0, 1, 16, 11},
                       {0, 1, 0, 0, 16, 11},   {0, 0, 1, 0, 16, 11},
                       {42, 3, 7, 1, 256, 95}, {2147483647u, 15, 1023, 2, 2048, 2000},
                       {7, 0, 5, 0, 1, 0},     {123, 2, 9, 3, 1000, 871}};
  for (const V& v : vectors)
    CHECK(spattn::random_block(v.seed, v.h, v.qb, v.r, v.n) == v.block,
          "random_block(%u,%u,%u,%u,%u)", v.seed, v.h, v.qb, v.r, v.n);

  std::mt19937 rng(1234);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };

  // fastmod_u32 (the kernels' remainder for random blocks) equals x % d: edge values of x and d,
  // then random pairs over the whole 32-bit range.
  {
    const uint32_t xs[] = {0u,  1u,          2u,          63u,         64u,
                           65u, 0x7fffffffu, 0x80000000u, 0xfffffffeu, 0xffffffffu};
    const uint32_t ds[] = {1u,    2u,    3u,     7u,          64u,         1000u,
                           2047u, 2048u, 65535u, 0x7fffffffu, 0x80000000u, 0xffffffffu};
    for (uint32_t d : ds)
      for (uint32_t x : xs)
        CHECK(spattn::fastmod_u32(x, spattn::fastmod_magic(d), d) == x % d, "fastmod %u %% %u", x,
              d);
    std::uniform_int_distribution<uint32_t> any;
    for (int t = 0; t < 200000; ++t) {
      const uint32_t x = any(rng), d = t % 2 ? any(rng) % 5000u + 1u : any(rng) | 1u;
      CHECK(spattn::fastmod_u32(x, spattn::fastmod_magic(d), d) == x % d, "fastmod %u %% %u", x, d);
    }
  }
  for (int trial = 0; trial < 400; ++trial) {
    Params p;
    p.batch = 2;
    p.heads_q = pick(1, 3);
    p.len_q = pick(1, 90);
    p.len_k = pick(1, 90);
    p.pattern.window_left = pick(-1, 12);
    p.pattern.window_right = pick(-1, 12);
    p.pattern.causal = pick(0, 1);
    p.pattern.num_global = pick(0, 1) ? pick(0, 6) : 0;
    p.pattern.stride = pick(0, 2) == 0 ? pick(1, 9) : 0;
    p.pattern.block_size = pick(1, 20);
    p.pattern.num_random = pick(0, 2) == 0 ? pick(1, 3) : 0;
    p.pattern.seed = pick(0, 1000);
    p.pattern.chunk_size = pick(0, 2) == 0 ? pick(1, 24) : 0;
    const int nqb = spattn::ceil_div(p.len_q, p.pattern.block_size);
    const int nkb = spattn::ceil_div(p.len_k, p.pattern.block_size);
    std::vector<int32_t> bi;
    if (pick(0, 2) == 0) {
      p.bi_heads = pick(0, 1) ? p.heads_q : 1;
      p.bi_k = pick(0, 3);
      bi.resize(size_t(p.bi_heads) * nqb * p.bi_k);
      for (auto& x : bi) x = pick(-1, nkb - 1);
      p.block_indices = bi.data();
    }
    std::vector<int32_t> kl = {pick(0, p.len_k), p.len_k};
    if (pick(0, 1)) p.key_lengths = kl.data();
    std::vector<int32_t> ks = {pick(0, kl[0]), pick(0, p.len_k)};
    if (pick(0, 2) == 0) p.key_starts = ks.data();
    if (p.key_starts && !p.key_lengths) ks[0] = pick(0, p.len_k);
    std::vector<int32_t> gm(size_t(p.batch) * p.len_k, 0);
    if (pick(0, 2) == 0) {
      const int density = pick(1, 12);
      for (auto& x : gm) x = pick(0, density) == 0 ? pick(1, 3) * (pick(0, 1) ? 1 : -1) : 0;
      p.global_mask = gm.data();
    }
    const Pattern pat = Pattern::make(p);

    // The spec's rule (docs/op-spec.md, "The mask"), restated pair by pair.
    const spattn::PatternAttrs& A = p.pattern;
    auto spec_allowed = [&](int b, int h, int i, int j) {
      const int64_t pos = int64_t(i) + p.len_k - p.len_q;
      const int start = p.key_starts ? p.key_starts[b] : 0;
      const int len = p.key_lengths ? p.key_lengths[b] : p.len_k;
      if (j < start || j >= len) return false;
      if (A.causal && j > pos) return false;
      const bool other = A.num_global > 0 || A.stride > 0 || A.num_random > 0 ||
                         p.block_indices != nullptr || p.global_mask != nullptr;
      const bool local_on =
          A.chunk_size > 0 || !(A.window_left == -1 && A.window_right == -1 && other);
      // Chunk numbers by floating-point floor (the rule's own words), not the kernels' integers.
      auto chunk_of = [&](int64_t x) { return std::floor(double(x - start) / A.chunk_size); };
      const bool same_chunk = A.chunk_size == 0 || chunk_of(pos) == chunk_of(j);
      const bool local = local_on && (A.window_left == -1 || pos - j <= A.window_left) &&
                         (A.window_right == -1 || j - pos <= A.window_right) && same_chunk;
      const bool gm_key = p.global_mask && p.global_mask[b * p.len_k + j] != 0;
      const bool gm_row =
          p.global_mask && pos >= 0 && pos < p.len_k && p.global_mask[b * p.len_k + pos] != 0;
      const bool global = j < A.num_global || (pos >= 0 && pos < A.num_global) || gm_key || gm_row;
      const bool strided = A.stride > 0 && (pos - j) % A.stride == 0;
      bool blocks = false;
      const int bs = A.block_size, qb = i / bs, kbj = j / bs;
      for (int r = 0; r < A.num_random; ++r)
        blocks = blocks || spattn::random_block(uint32_t(A.seed), uint32_t(h), uint32_t(qb),
                                                uint32_t(r), uint32_t(nkb)) == kbj;
      if (p.block_indices) {
        const int hl = p.bi_heads == p.heads_q ? h : 0;
        for (int k = 0; k < p.bi_k; ++k)
          blocks = blocks || p.block_indices[(size_t(hl) * nqb + qb) * p.bi_k + k] == kbj;
      }
      return local || global || strided || blocks;
    };

    std::vector<uint8_t> mask(p.len_k);
    for (int b = 0; b < p.batch; ++b)
      for (int h = 0; h < p.heads_q; ++h) {
        // Candidate tiles: every key tile with an allowed pair of the query tile is marked.
        for (int tile_q : {1, 7, 16, 64}) {
          for (int tile_k : {1, 5, 16, 64}) {
            const int ntk = spattn::ceil_div(p.len_k, tile_k);
            std::vector<uint8_t> marks(ntk, 7);
            for (int i0 = 0; i0 < p.len_q; i0 += tile_q) {
              const int i1 = std::min(p.len_q, i0 + tile_q);
              pat.mark_candidate_tiles(b, h, i0, i1, tile_k, marks.data());
              for (int t = 0; t < ntk; ++t) {
                CHECK(marks[t] <= 1, "mark value %d", marks[t]);
                bool has = false;
                for (int i = i0; i < i1 && !has; ++i)
                  for (int j = t * tile_k; j < std::min(p.len_k, (t + 1) * tile_k) && !has; ++j)
                    has = pat.allowed(b, h, i, j);
                CHECK(!has || marks[t] == 1,
                      "tile %d (of %d keys) holds an allowed pair of rows [%d, %d) but is not a "
                      "candidate (trial %d b%d h%d)",
                      t, tile_k, i0, i1, trial, b, h);
              }
            }
          }
        }
        for (int i = 0; i < p.len_q; ++i) {
          for (int j = 0; j < p.len_k; ++j)
            CHECK(pat.allowed(b, h, i, j) == spec_allowed(b, h, i, j),
                  "allowed != spec rule trial %d b%d h%d i%d j%d", trial, b, h, i, j);
          pat.row_mask(b, h, i, 0, p.len_k, mask.data());
          for (int j = 0; j < p.len_k; ++j)
            CHECK(bool(mask[j]) == pat.allowed(b, h, i, j),
                  "row_mask != allowed trial %d b%d h%d i%d j%d", trial, b, h, i, j);
          // row_bounds: the interval part. Exact without strided/random/listed components; with
          // them, a subset of the allowed keys, and every allowed key lies below `upper`.
          const spattn::RowBounds rb = pat.row_bounds(b, i);
          const bool intervals_only = p.pattern.stride == 0 && p.pattern.num_random == 0 &&
                                      p.block_indices == nullptr && p.global_mask == nullptr;
          for (int j = 0; j < p.len_k; ++j) {
            const bool al = pat.allowed(b, h, i, j);
            if (intervals_only)
              CHECK(rb.allows(j) == al, "row_bounds != allowed trial %d b%d h%d i%d j%d", trial, b,
                    h, i, j);
            else
              CHECK(!rb.allows(j) || al, "row_bounds allows a masked pair trial %d i%d j%d", trial,
                    i, j);
            CHECK(!al || (j < rb.upper && j >= rb.lower),
                  "allowed pair outside [lower, upper) "
                  "trial %d i%d j%d",
                  trial, i, j);
            CHECK(!rb.global_row || al == (j < rb.upper && j >= rb.lower),
                  "global row trial %d i%d j%d", trial, i, j);
          }
          // A sub-range gives the same answer.
          const int j0 = pick(0, p.len_k - 1), j1 = pick(j0 + 1, p.len_k);
          pat.row_mask(b, h, i, j0, j1, mask.data());
          for (int j = j0; j < j1; ++j)
            CHECK(bool(mask[j - j0]) == pat.allowed(b, h, i, j), "row_mask range trial %d", trial);
        }
        for (int t = 0; t < 30; ++t) {
          Tile tile;
          tile.i0 = pick(0, p.len_q - 1);
          tile.i1 = pick(tile.i0 + 1, p.len_q);
          tile.j0 = pick(0, p.len_k - 1);
          tile.j1 = pick(tile.j0 + 1, p.len_k);
          int allowed = 0, total = 0;
          for (int i = tile.i0; i < tile.i1; ++i)
            for (int j = tile.j0; j < tile.j1; ++j, ++total) allowed += pat.allowed(b, h, i, j);
          const TileClass c = pat.classify(b, h, tile);
          CHECK(c != TileClass::kEmpty || allowed == 0,
                "kEmpty tile with %d allowed pairs (trial %d)", allowed, trial);
          CHECK(c != TileClass::kFull || allowed == total,
                "kFull tile with %d/%d allowed (trial %d)", allowed, total, trial);
        }
      }
  }
  large_lengths();
  std::printf("%d passed, %d failed\n", checks - failures, failures);
  return failures ? 1 : 0;
}
