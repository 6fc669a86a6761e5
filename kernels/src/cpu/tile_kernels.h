// The CPU micro-kernels of one (query tile, key tile) step, compiled once per instruction set
// (tile_kernels.inc) and chosen at run time (select_tile_kernels). They call no inline function
// shared with other files (such as the pattern rules): the linker keeps one copy of each, which
// could be the one built for an instruction set the CPU lacks.
#pragma once

#include <cstdint>

namespace spattn {
namespace cpu {

// Tile edges. kTileK is a multiple of every vector width used (4, 8 and 16 floats, two vectors).
constexpr int kTileQ = 64;
constexpr int kTileK = 64;

struct TileKernels {
  const char* isa;
  // s[r][c] = scale * sum_d q[r][d] * kt[d][c] for r < rows, c < kTileK (kt is [d][kTileK],
  // zero padded): the scale multiplies the float32 dot product, as the op spec computes scores.
  // span (or null: every column): row r's allowed columns lie in [span[2r], span[2r + 1]);
  // columns outside it may be left unwritten (the caller masks them).
  void (*qk)(const float* q, int ldq, const float* kt, int d, float* s, int rows, float scale,
             const int32_t* span);
  // The same scores from key rows as stored: s[r][c] = scale * sum_d q[r][d] * k[c * ldk + d] for
  // r < rows, c < cols, and s[r][c] = 0 for cols <= c < kTileK. For float32 keys read in place
  // when few query rows use a key tile (decode), where transposing the tile would cost more
  // than the scores themselves.
  void (*qk_rows)(const float* q, int ldq, const float* k, int64_t ldk, int cols, int d, float* s,
                  int rows, float scale);
  // Online-softmax step for `rows` rows of s[r][0..kTileK): s holds scores (-inf where masked);
  // updates the running max m[r] and sum l[r], overwrites s with e^(s - m_new) (computed as
  // 2^((s - m_new) * log2(e)): the subtraction comes first, so large scores lose no accuracy) and
  // writes corr[r] = e^(m_old - m_new), which rescales the row's output accumulator. A NaN or
  // +inf score makes l[r] NaN for good (the row's output is NaN; its weights in s may then be NaN
  // too); -inf weighs zero.
  void (*softmax)(float* s, int rows, float* m, float* l, float* corr);
  // o[r][0..dv_pad) = corr[r] * o[r] + sum_c p[r][c] * v[c][0..dv_pad) for c < cols. skip_zero:
  // a zero p[r][c] adds nothing even when v[c] is not finite (the caller sets it for value tiles
  // with a non-finite element, so that masked keys never leak NaN). span as for qk: p[r][c] is
  // zero outside it, and those columns are skipped.
  void (*pv)(const float* p, const float* v, int64_t ldv, int cols, float* o, int ldo, int dv_pad,
             const float* corr, int rows, bool skip_zero, const int32_t* span);
  // The score hook: s[r][c] = cap * tanh(s[r][c] / cap) for r < rows, c < kTileK (softcap).
  void (*softcap)(float* s, int rows, float cap);
  // Sets s[r][c] = -inf where allowed[r * kTileK + c] == 0 (r < rows, c < cols): the token-level
  // mask of a partial tile (Pattern::row_mask, computed by the caller).
  void (*mask)(const uint8_t* allowed, int rows, int cols, float* s);
  int dv_multiple;  // o/v rows are padded to a multiple of this many floats
};

const TileKernels& select_tile_kernels();

namespace avx512 {
extern const TileKernels kKernels;
}
namespace avx2 {
extern const TileKernels kKernels;
}
namespace generic {
extern const TileKernels kKernels;
}

}  // namespace cpu
}  // namespace spattn
