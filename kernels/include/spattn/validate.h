// Validation of the op's attributes and inputs (docs/op-spec.md, "Errors"), shared by every
// adapter.
//
// Each function returns an empty string when the input is valid, else the message to report
// ("SparseAttention: <name>: <expectation>, got <value>"). Host code only; no exceptions.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "spattn/params.h"
#include "spattn/pattern.h"

namespace spattn {

// Attribute values as a front end reads them (ONNX INT attributes are int64).
struct RawAttrs {
  float scale = 0.f;
  int64_t window_left = -1, window_right = -1, causal = 0, num_global = 0, stride = 0;
  int64_t block_size = 64, num_random = 0, seed = 0;
};

// Shape and type of one input as a front end sees it. `present == false` for an absent optional.
struct TensorDesc {
  bool present = false;
  int32_t dtype = -1;      // DType value for q/k/v; kInt32Code for integer inputs; -1 other/unknown
  std::string dtype_text;  // the front end's own name of the type, for messages
  int32_t rank = 0;
  int64_t dims[8] = {0, 0, 0, 0, 0, 0, 0, 0};
};
constexpr int32_t kInt32Code = 100;

// Head dims a backend accepts: [min, max] and whether D must equal Dv.
struct HeadDimSupport {
  int32_t max_dim = 512;
  const int32_t* dims = nullptr;  // if set, the only allowed values of D (and Dv)
  int32_t num_dims = 0;
  bool dv_equals_d = false;
  const char* backend = "this backend";
};

namespace detail {
inline std::string err(const char* name, const std::string& expect, const std::string& got) {
  return std::string("SparseAttention: ") + name + ": " + expect + ", got " + got;
}
inline std::string shape_str(const TensorDesc& t) {
  std::string s = "[";
  for (int i = 0; i < t.rank && i < 8; ++i) s += (i ? ", " : "") + std::to_string(t.dims[i]);
  return s + "]";
}
inline std::string check_int(const char* name, int64_t v, int64_t lo, int64_t hi,
                             const char* expect) {
  if (v < lo || v > hi) return err(name, expect, std::to_string(v));
  return {};
}
}  // namespace detail

// Checks the attributes and resolves them (scale stays 0 here; see resolve_scale).
inline std::string validate_attrs(const RawAttrs& r, PatternAttrs* out) {
  using detail::check_int;
  constexpr int64_t kMax = 2147483647;
  if (!std::isfinite(r.scale) || r.scale < 0.f)
    return detail::err("scale", "a finite value > 0 (0 selects 1/sqrt(D))",
                       std::to_string(r.scale));
  std::string e;
  if (!(e = check_int("window_left", r.window_left, -1, kMax, "-1 (unbounded) or >= 0")).empty())
    return e;
  if (!(e = check_int("window_right", r.window_right, -1, kMax, "-1 (unbounded) or >= 0")).empty())
    return e;
  if (!(e = check_int("causal", r.causal, 0, 1, "0 or 1")).empty()) return e;
  if (!(e = check_int("num_global", r.num_global, 0, kMax, ">= 0")).empty()) return e;
  if (!(e = check_int("stride", r.stride, 0, kMax, ">= 0 (0 off)")).empty()) return e;
  if (!(e = check_int("block_size", r.block_size, 1, 65536, "in [1, 65536]")).empty()) return e;
  if (!(e = check_int("num_random", r.num_random, 0, kMax, ">= 0")).empty()) return e;
  if (!(e = check_int("seed", r.seed, 0, kMax, "in [0, 2^31-1]")).empty()) return e;
  out->scale = r.scale;
  out->window_left = int32_t(r.window_left);
  out->window_right = int32_t(r.window_right);
  out->causal = int32_t(r.causal);
  out->num_global = int32_t(r.num_global);
  out->stride = int32_t(r.stride);
  out->block_size = int32_t(r.block_size);
  out->num_random = int32_t(r.num_random);
  out->seed = int32_t(r.seed);
  return {};
}

// The scale the kernels use: the attribute, or 1/sqrt(D) when it is 0.
inline float resolve_scale(float scale, int32_t head_dim) {
  return scale != 0.f ? scale : 1.f / std::sqrt(float(head_dim));
}

// Checks shapes and types of all inputs and fills the sizes, dtype, strides (contiguous) and the
// resolved pattern of `p` (pointers are left to the caller). `num_inputs` is how many inputs the
// node has, absent optionals included.
inline std::string validate_inputs(const PatternAttrs& attrs, int num_inputs, const TensorDesc& q,
                                   const TensorDesc& k, const TensorDesc& v,
                                   const TensorDesc& key_lengths, const TensorDesc& block_indices,
                                   const HeadDimSupport& support, Params* p) {
  using detail::err;
  using detail::shape_str;
  if (num_inputs > 5)
    return err("input 5", "not used by SparseAttention version 1 (reserved for later versions)",
               std::to_string(num_inputs) + " inputs");
  const TensorDesc* qkv[3] = {&q, &k, &v};
  const char* names[3] = {"query", "key", "value"};
  const char* layouts[3] = {"[B, Hq, Lq, D]", "[B, Hkv, Lk, D]", "[B, Hkv, Lk, Dv]"};
  for (int n = 0; n < 3; ++n) {
    const TensorDesc& t = *qkv[n];
    if (!t.present) return err(names[n], "a required input", "nothing");
    if (t.dtype < 0 || t.dtype > 2)
      return err(names[n], "float32, float16 or bfloat16", t.dtype_text);
    if (t.rank != 4)
      return err(names[n], std::string("rank 4 ") + layouts[n],
                 "rank " + std::to_string(t.rank) + " " + shape_str(t));
    for (int d = 0; d < 4; ++d)
      if (t.dims[d] <= 0)
        return err(names[n], std::string("non-empty dimensions ") + layouts[n], shape_str(t));
    for (int d = 0; d < 4; ++d)
      if (t.dims[d] > 2147483647) return err(names[n], "dimensions below 2^31", shape_str(t));
  }
  if (k.dtype != q.dtype)
    return err("key", std::string("the type of query (") + dtype_name(DType(q.dtype)) + ")",
               k.dtype_text);
  if (v.dtype != q.dtype)
    return err("value", std::string("the type of query (") + dtype_name(DType(q.dtype)) + ")",
               v.dtype_text);
  const int64_t B = q.dims[0], Hq = q.dims[1], Lq = q.dims[2], D = q.dims[3];
  const int64_t Hkv = k.dims[1], Lk = k.dims[2], Dv = v.dims[3];
  if (k.dims[0] != B)
    return err("key", "batch size " + std::to_string(B) + " (as query)", shape_str(k));
  if (v.dims[0] != B)
    return err("value", "batch size " + std::to_string(B) + " (as query)", shape_str(v));
  if (Hq % Hkv != 0)
    return err("query", "a head count Hq that is a multiple of key's Hkv = " + std::to_string(Hkv),
               "Hq = " + std::to_string(Hq));
  if (v.dims[1] != Hkv)
    return err("value", "Hkv = " + std::to_string(Hkv) + " heads (as key)", shape_str(v));
  if (k.dims[3] != D)
    return err("key", "head dim D = " + std::to_string(D) + " (as query)", shape_str(k));
  if (v.dims[2] != Lk)
    return err("value", "Lk = " + std::to_string(Lk) + " keys (as key)", shape_str(v));
  // Head dims supported by the backend.
  auto dim_ok = [&](int64_t d) {
    if (d > support.max_dim) return false;
    if (!support.dims) return true;
    for (int i = 0; i < support.num_dims; ++i)
      if (support.dims[i] == d) return true;
    return false;
  };
  auto dims_text = [&]() {
    if (!support.dims) return "1 .. " + std::to_string(support.max_dim);
    std::string s;
    for (int i = 0; i < support.num_dims; ++i)
      s += (i ? ", " : "") + std::to_string(support.dims[i]);
    return s;
  };
  if (!dim_ok(D))
    return err("query", std::string("head dim D in {") + dims_text() + "} on " + support.backend,
               "D = " + std::to_string(D));
  if (!dim_ok(Dv) || (support.dv_equals_d && Dv != D))
    return err("value",
               std::string("head dim Dv in {") + dims_text() + "}" +
                   (support.dv_equals_d ? " equal to D" : "") + " on " + support.backend,
               "Dv = " + std::to_string(Dv));
  if (key_lengths.present) {
    if (key_lengths.dtype != kInt32Code) return err("key_lengths", "int32", key_lengths.dtype_text);
    if (key_lengths.rank != 1 || key_lengths.dims[0] != B)
      return err("key_lengths", "shape [B] = [" + std::to_string(B) + "]", shape_str(key_lengths));
  }
  const int64_t bs = attrs.block_size;
  const int64_t nqb = (Lq + bs - 1) / bs;
  if (block_indices.present) {
    if (block_indices.dtype != kInt32Code)
      return err("block_indices", "int32", block_indices.dtype_text);
    if (block_indices.rank != 3)
      return err("block_indices", "rank 3 [Hl, ceil(Lq / block_size), K]",
                 shape_str(block_indices));
    if (block_indices.dims[0] != 1 && block_indices.dims[0] != Hq)
      return err("block_indices",
                 "Hl = 1 or Hq = " + std::to_string(Hq) + " in [Hl, ceil(Lq / block_size), K]",
                 shape_str(block_indices));
    if (block_indices.dims[1] != nqb)
      return err("block_indices",
                 "ceil(Lq / block_size) = " + std::to_string(nqb) + " query blocks (Lq = " +
                     std::to_string(Lq) + ", block_size = " + std::to_string(bs) + ")",
                 shape_str(block_indices));
    if (block_indices.dims[2] > 2147483647)
      return err("block_indices", "K below 2^31", shape_str(block_indices));
  }
  p->dtype = DType(q.dtype);
  p->batch = int32_t(B);
  p->heads_q = int32_t(Hq);
  p->heads_kv = int32_t(Hkv);
  p->len_q = int32_t(Lq);
  p->len_k = int32_t(Lk);
  p->head_dim = int32_t(D);
  p->head_dim_v = int32_t(Dv);
  p->bi_heads = block_indices.present ? int32_t(block_indices.dims[0]) : 0;
  p->bi_k = block_indices.present ? int32_t(block_indices.dims[2]) : 0;
  p->pattern = attrs;
  p->pattern.scale = resolve_scale(attrs.scale, int32_t(D));
  set_contiguous_strides(*p);
  return {};
}

// Checks the values of key_lengths (host memory): each in [0, Lk].
inline std::string validate_key_lengths_values(const int32_t* kl, int32_t batch, int32_t len_k) {
  for (int32_t b = 0; b < batch; ++b)
    if (kl[b] < 0 || kl[b] > len_k)
      return detail::err("key_lengths", "values in [0, Lk = " + std::to_string(len_k) + "]",
                         "key_lengths[" + std::to_string(b) + "] = " + std::to_string(kl[b]));
  return {};
}

// Checks the values of block_indices (host memory): each -1 or in [0, ceil(Lk / block_size)).
inline std::string validate_block_indices_values(const int32_t* bi, int64_t count, int32_t len_k,
                                                 int32_t block_size) {
  const int32_t nkb = ceil_div(len_k, block_size);
  for (int64_t n = 0; n < count; ++n)
    if (bi[n] < -1 || bi[n] >= nkb)
      return detail::err(
          "block_indices",
          "entries -1 (padding) or in [0, ceil(Lk / block_size) = " + std::to_string(nkb) + ")",
          "flat entry " + std::to_string(n) + " = " + std::to_string(bi[n]));
  return {};
}

}  // namespace spattn
