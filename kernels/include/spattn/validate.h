// Validation of the op's attributes and inputs (docs/op-spec.md, "Errors"), shared by every
// adapter.
//
// Each function returns an empty string when the input is valid, else the message to report
// ("SparseAttention: <name>: <expectation>, got <value>"). Host code only; no exceptions.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

#include "spattn/attributes.h"
#include "spattn/params.h"
#include "spattn/pattern.h"

namespace spattn {

// Attribute values as a front end reads them, before validation: INT as int64 (ONNX INT
// attributes are int64), FLOAT as double (a TensorRT FLOAT64 field keeps its value until checked).
#define SPATTN_RAW_CTYPE_FLOAT double
#define SPATTN_RAW_CTYPE_INT int64_t
struct RawAttrs {
#define SPATTN_RAW_FIELD(TYPE, name, def, lo, hi, c_block, expect) \
  SPATTN_RAW_CTYPE_##TYPE name = SPATTN_RAW_CTYPE_##TYPE(def);
  SPATTN_ATTRIBUTES(SPATTN_RAW_FIELD)
#undef SPATTN_RAW_FIELD
};

// The inputs of the op, by position (docs/op-spec.md, "Inputs").
enum InputIndex : int32_t {
  kQuery = 0,
  kKey = 1,
  kValue = 2,
  kKeyLengths = 3,
  kBlockIndices = 4,
  kGlobalMask = 5,
  kKeyStarts = 6,
  kSinks = 7,
  kNumInputs = 8
};
constexpr const char* kInputNames[kNumInputs] = {
    "query", "key", "value", "key_lengths", "block_indices", "global_mask", "key_starts", "sinks"};

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
  int32_t max_dim = kCpuMaxHeadDim;
  const int32_t* dims = nullptr;  // if set, the only allowed values of D (and Dv)
  int32_t num_dims = 0;
  bool dv_equals_d = false;
  const char* backend = "this backend";
};

// The CPU kernel: any D and Dv up to kCpuMaxHeadDim.
inline HeadDimSupport cpu_head_dim_support(const char* backend = "CPU") {
  HeadDimSupport s;
  s.backend = backend;
  return s;
}

// The CUDA kernels and the TensorRT plugin: D = Dv in kCudaHeadDims (params.h).
inline HeadDimSupport cuda_head_dim_support(const char* backend = "CUDA") {
  HeadDimSupport s;
  s.max_dim = kCudaHeadDims[kNumCudaHeadDims - 1];
  s.dims = kCudaHeadDims;
  s.num_dims = kNumCudaHeadDims;
  s.dv_equals_d = true;
  s.backend = backend;
  return s;
}

namespace detail {
inline std::string err(const char* name, const std::string& expect, const std::string& got) {
  return std::string("SparseAttention: ") + name + ": " + expect + ", got " + got;
}
inline std::string shape_str(const TensorDesc& t) {
  std::string s = "[";
  for (int i = 0; i < t.rank && i < 8; ++i) s += (i ? ", " : "") + std::to_string(t.dims[i]);
  return s + "]";
}
inline bool in_range(double v, double lo, double hi) {
  return std::isfinite(v) && v >= lo && v <= hi;
}
inline bool in_range(int64_t v, int64_t lo, int64_t hi) { return v >= lo && v <= hi; }
inline std::string text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.9g", v);
  return buf;
}
inline std::string text(int64_t v) { return std::to_string(v); }
}  // namespace detail

// Checks the attributes (the ranges of attributes.h) and converts them (scale stays 0 here; see
// resolve_scale).
inline std::string validate_attrs(const RawAttrs& r, PatternAttrs* out) {
#define SPATTN_CHECK_ATTR(TYPE, name, def, lo, hi, c_block, expect)                        \
  if (!detail::in_range(r.name, SPATTN_RAW_CTYPE_##TYPE(lo), SPATTN_RAW_CTYPE_##TYPE(hi))) \
    return detail::err(#name, expect, detail::text(r.name));
  SPATTN_ATTRIBUTES(SPATTN_CHECK_ATTR)
#undef SPATTN_CHECK_ATTR
#define SPATTN_SET_ATTR(TYPE, name, def, lo, hi, c_block, expect) \
  out->name = SPATTN_ATTR_CTYPE(TYPE)(r.name);
  SPATTN_ATTRIBUTES(SPATTN_SET_ATTR)
#undef SPATTN_SET_ATTR
  return {};
}

// The scale the kernels use: the attribute, or 1/sqrt(D) when it is 0.
inline float resolve_scale(float scale, int32_t head_dim) {
  return scale != 0.f ? scale : 1.f / std::sqrt(float(head_dim));
}

// Checks the input count and the element types of the inputs that are present (no shapes): what
// a front end knows when it loads a model (ONNX Runtime at kernel creation). validate_inputs runs
// it first, so load-time and run-time messages agree.
inline std::string validate_input_types(int num_inputs, const TensorDesc* in) {
  using detail::err;
  if (num_inputs > kNumInputs)
    return err(
        ("input " + std::to_string(kNumInputs)).c_str(),
        "not used by SparseAttention version 1 (at most " + std::to_string(kNumInputs) + " inputs)",
        std::to_string(num_inputs) + " inputs");
  for (int n = 0; n < 3; ++n) {
    const TensorDesc& t = in[n];
    if (!t.present) return err(kInputNames[n], "a required input", "nothing");
    if (t.dtype < 0 || t.dtype > 2)
      return err(kInputNames[n], "float32, float16 or bfloat16", t.dtype_text);
  }
  for (int n = 1; n < 3; ++n)
    if (in[n].dtype != in[kQuery].dtype)
      return err(kInputNames[n],
                 std::string("the type of query (") + dtype_name(DType(in[kQuery].dtype)) + ")",
                 in[n].dtype_text);
  for (int n = kKeyLengths; n <= kKeyStarts; ++n)
    if (in[n].present && in[n].dtype != kInt32Code)
      return err(kInputNames[n], "int32", in[n].dtype_text);
  if (in[kSinks].present && in[kSinks].dtype != int32_t(DType::kFloat32))
    return err("sinks", "float32 (whatever the type of query)", in[kSinks].dtype_text);
  return {};
}

// Checks shapes and types of all inputs and fills the sizes, dtype, strides (contiguous) and the
// resolved pattern of `p` (pointers are left to the caller). `in` holds kNumInputs descriptions
// (absent optionals: present == false); `num_inputs` is how many inputs the node has, absent
// optionals included.
inline std::string validate_inputs(const PatternAttrs& attrs, int num_inputs, const TensorDesc* in,
                                   const HeadDimSupport& support, Params* p) {
  using detail::err;
  using detail::shape_str;
  const std::string type_error = validate_input_types(num_inputs, in);
  if (!type_error.empty()) return type_error;
  const TensorDesc &q = in[kQuery], &k = in[kKey], &v = in[kValue];
  const TensorDesc &key_lengths = in[kKeyLengths], &block_indices = in[kBlockIndices];
  const TensorDesc &global_mask = in[kGlobalMask], &key_starts = in[kKeyStarts];
  const TensorDesc& sinks = in[kSinks];
  const char* layouts[3] = {"[B, Hq, Lq, D]", "[B, Hkv, Lk, D]", "[B, Hkv, Lk, Dv]"};
  for (int n = 0; n < 3; ++n) {
    const TensorDesc& t = in[n];
    const char* name = kInputNames[n];
    if (!t.present) return err(name, "a required input", "nothing");
    if (t.dtype < 0 || t.dtype > 2) return err(name, "float32, float16 or bfloat16", t.dtype_text);
    if (t.rank != 4)
      return err(name, std::string("rank 4 ") + layouts[n],
                 "rank " + std::to_string(t.rank) + " " + shape_str(t));
    for (int d = 0; d < 4; ++d)
      if (t.dims[d] <= 0)
        return err(name, std::string("non-empty dimensions ") + layouts[n], shape_str(t));
    for (int d = 0; d < 4; ++d)
      if (t.dims[d] > 2147483647) return err(name, "dimensions below 2^31", shape_str(t));
  }
  if (k.dtype != q.dtype)
    return err("key", std::string("the type of query (") + dtype_name(DType(q.dtype)) + ")",
               k.dtype_text);
  if (v.dtype != q.dtype)
    return err("value", std::string("the type of query (") + dtype_name(DType(q.dtype)) + ")",
               v.dtype_text);
  const int64_t B = q.dims[0], Hq = q.dims[1], Lq = q.dims[2], D = q.dims[3];
  const int64_t Hkv = k.dims[1], Lk = k.dims[2], Dv = v.dims[3];
  if (Lq > kMaxSeqLen)
    return err("query", "Lq at most 2^30 = " + std::to_string(kMaxSeqLen) + " in [B, Hq, Lq, D]",
               shape_str(q));
  if (Lk > kMaxSeqLen)
    return err("key", "Lk at most 2^30 = " + std::to_string(kMaxSeqLen) + " in [B, Hkv, Lk, D]",
               shape_str(k));
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
      return err("key_lengths", "shape [B] = [" + std::to_string(B) + "]",
                 "rank " + std::to_string(key_lengths.rank) + " " + shape_str(key_lengths));
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
  if (global_mask.present) {
    if (global_mask.dtype != kInt32Code) return err("global_mask", "int32", global_mask.dtype_text);
    if (global_mask.rank != 2 || global_mask.dims[0] != B || global_mask.dims[1] != Lk)
      return err("global_mask",
                 "shape [B, Lk] = [" + std::to_string(B) + ", " + std::to_string(Lk) + "]",
                 "rank " + std::to_string(global_mask.rank) + " " + shape_str(global_mask));
  }
  if (key_starts.present) {
    if (key_starts.dtype != kInt32Code) return err("key_starts", "int32", key_starts.dtype_text);
    if (key_starts.rank != 1 || key_starts.dims[0] != B)
      return err("key_starts", "shape [B] = [" + std::to_string(B) + "]",
                 "rank " + std::to_string(key_starts.rank) + " " + shape_str(key_starts));
  }
  if (sinks.present) {
    if (sinks.dtype != int32_t(DType::kFloat32))
      return err("sinks", "float32 (whatever the type of query)", sinks.dtype_text);
    if (sinks.rank != 1 || sinks.dims[0] != Hq)
      return err("sinks", "shape [Hq] = [" + std::to_string(Hq) + "]",
                 "rank " + std::to_string(sinks.rank) + " " + shape_str(sinks));
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

// Checks the values of key_starts (host memory): each in [0, key_lengths[b]] (key_lengths may be
// null: [0, Lk]).
inline std::string validate_key_starts_values(const int32_t* ks, const int32_t* kl, int32_t batch,
                                              int32_t len_k) {
  for (int32_t b = 0; b < batch; ++b) {
    const int32_t end = kl ? kl[b] : len_k;
    if (ks[b] < 0 || ks[b] > end)
      return detail::err(
          "key_starts",
          kl ? "values in [0, key_lengths[b]] (key_starts[b] <= key_lengths[b] <= Lk = " +
                   std::to_string(len_k) + ")"
             : "values in [0, Lk = " + std::to_string(len_k) + "]",
          "key_starts[" + std::to_string(b) + "] = " + std::to_string(ks[b]) +
              (kl ? " with key_lengths[" + std::to_string(b) + "] = " + std::to_string(kl[b])
                  : std::string()));
  }
  return {};
}

// Checks the values of sinks (host memory): no NaN and no +inf (-inf is allowed: no sink for
// that head).
inline std::string validate_sinks_values(const float* sinks, int32_t heads_q) {
  for (int32_t h = 0; h < heads_q; ++h)
    if (std::isnan(sinks[h]) || (std::isinf(sinks[h]) && sinks[h] > 0))
      return detail::err("sinks", "finite values (or -inf: no sink for that head)",
                         "sinks[" + std::to_string(h) + "] = " + detail::text(double(sinks[h])));
  return {};
}

// Checks the values of every host-memory integer/float input of `p` that is present: key_lengths,
// key_starts, block_indices and sinks (the CPU backend; the CUDA backends cannot read them without
// a synchronization, see docs/op-spec.md).
inline std::string validate_values(const Params& p) {
  std::string e;
  if (p.key_lengths && !(e = validate_key_lengths_values(p.key_lengths, p.batch, p.len_k)).empty())
    return e;
  if (p.key_starts &&
      !(e = validate_key_starts_values(p.key_starts, p.key_lengths, p.batch, p.len_k)).empty())
    return e;
  if (p.block_indices &&
      !(e = validate_block_indices_values(
            p.block_indices,
            int64_t(p.bi_heads) * ceil_div(p.len_q, p.pattern.block_size) * int64_t(p.bi_k),
            p.len_k, p.pattern.block_size))
           .empty())
    return e;
  if (p.sinks && !(e = validate_sinks_values(p.sinks, p.heads_q)).empty()) return e;
  return {};
}

}  // namespace spattn
