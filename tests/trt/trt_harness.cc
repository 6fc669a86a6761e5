// Test harness of the TensorRT plugin without TensorRT: it loads libspattn_trt.so with dlopen,
// finds the creator through the library's getCreators entry (as IPluginRegistry::loadLibrary does),
// creates the plugin from the fields TensorRT's ONNX parser makes of exported nodes, drives the
// build-phase methods with a small IExprBuilder, enqueues on the GPU and compares with the CPU
// kernel on the same inputs (docs/op-spec.md tolerances). Also: the optional inputs global_mask,
// key_starts and sinks and the softcap field, serialization round trip, bad fields and shapes,
// several execution contexts, and plugin enqueue time against the direct launch.
//
// usage: spattn_trt_harness --plugin libspattn_trt.so --nodes nodes.txt [--bench] [--bench-only]
//        spattn_trt_harness --print-tolerances   (the comparison table it was built with)
// Prints one line per check and "N passed, M failed"; exits non-zero on any failure.
#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "spattn/attributes.h"
#include "spattn/cpu.h"
#include "spattn/cuda.h"
#include "spattn/params.h"
#include "spattn/validate.h"
#include "spattn_tolerances.h"

using nvinfer1::DataType;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldType;

namespace {

int g_passed = 0, g_failed = 0;

// The op's attributes (attributes.h): how many, and which are FLOAT.
constexpr int kNumAttributes = 0
#define SPATTN_COUNT_ATTR(TYPE, name, def, lo, hi, c_block, expect) +1
    SPATTN_ATTRIBUTES(SPATTN_COUNT_ATTR)
#undef SPATTN_COUNT_ATTR
    ;
#define SPATTN_IS_FLOAT_FLOAT true
#define SPATTN_IS_FLOAT_INT false
bool is_float_attribute(const char* attr) {
#define SPATTN_FLOAT_ATTR(TYPE, name, def, lo, hi, c_block, expect) \
  if (std::strcmp(attr, #name) == 0) return SPATTN_IS_FLOAT_##TYPE;
  SPATTN_ATTRIBUTES(SPATTN_FLOAT_ATTR)
#undef SPATTN_FLOAT_ATTR
  return false;
}

void check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "PASS" : "FAIL", what.c_str());
  std::fflush(stdout);
  (ok ? g_passed : g_failed)++;
}

#define CUDA_OK(expr)                                                                    \
  do {                                                                                   \
    cudaError_t _e = (expr);                                                             \
    if (_e != cudaSuccess) {                                                             \
      std::fprintf(stderr, "CUDA error %s at %s:%d\n", cudaGetErrorString(_e), __FILE__, \
                   __LINE__);                                                            \
      std::exit(3);                                                                      \
    }                                                                                    \
  } while (0)

// ---- logging: what the plugin reports through setLoggerFinder ----

struct CaptureLogger : nvinfer1::ILogger {
  std::vector<std::string> errors;
  void log(Severity s, const char* msg) noexcept override {
    if (s <= Severity::kERROR) errors.emplace_back(msg);
  }
  std::string last() const { return errors.empty() ? "" : errors.back(); }
};

struct Finder : nvinfer1::ILoggerFinder {
  CaptureLogger* logger = nullptr;
  nvinfer1::ILogger* findLogger() override { return logger; }
};

struct Recorder : nvinfer1::IErrorRecorder {
  std::vector<std::string> errors;
  int32_t getNbErrors() const noexcept override { return int32_t(errors.size()); }
  nvinfer1::ErrorCode getErrorCode(int32_t) const noexcept override {
    return nvinfer1::ErrorCode::kINVALID_ARGUMENT;
  }
  ErrorDesc getErrorDesc(int32_t i) const noexcept override { return errors[i].c_str(); }
  bool hasOverflowed() const noexcept override { return false; }
  void clear() noexcept override { errors.clear(); }
  bool reportError(nvinfer1::ErrorCode, ErrorDesc desc) noexcept override {
    errors.emplace_back(desc);
    return true;
  }
  RefCount incRefCount() noexcept override { return 1; }
  RefCount decRefCount() noexcept override { return 0; }
};

struct ResourceContext : nvinfer1::IPluginResourceContext {
  Recorder recorder;
  nvinfer1::IGpuAllocator* getGpuAllocator() const noexcept override { return nullptr; }
  nvinfer1::IErrorRecorder* getErrorRecorder() const noexcept override {
    return const_cast<Recorder*>(&recorder);
  }
};

// ---- a small IExprBuilder: symbolic dims that carry the value they stand for ----

struct ExprImpl : nvinfer1::apiv::VDimensionExpr {
  bool constant = false;
  int64_t value = 0;
  bool isConstant() const override { return constant; }
  int64_t getConstantValue() const override { return constant ? value : -1; }
  bool isSizeTensor() const override { return false; }
};

struct Expr : nvinfer1::IDimensionExpr {
  ExprImpl impl;
  Expr(bool constant, int64_t value) {
    impl.constant = constant;
    impl.value = value;
    mImpl = &impl;
  }
  int64_t value() const { return impl.value; }
};

struct ExprBuilderImpl : nvinfer1::apiv::VExprBuilder {
  std::deque<Expr> pool;
  const nvinfer1::IDimensionExpr* make(bool constant, int64_t v) {
    pool.emplace_back(constant, v);
    return &pool.back();
  }
  const nvinfer1::IDimensionExpr* constant(int64_t v) override { return make(true, v); }
  const nvinfer1::IDimensionExpr* operation(nvinfer1::DimensionOperation op,
                                            const nvinfer1::IDimensionExpr& a,
                                            const nvinfer1::IDimensionExpr& b) override {
    const int64_t x = static_cast<const Expr&>(a).value(), y = static_cast<const Expr&>(b).value();
    int64_t r = 0;
    using Op = nvinfer1::DimensionOperation;
    switch (op) {
      case Op::kSUM:
        r = x + y;
        break;
      case Op::kPROD:
        r = x * y;
        break;
      case Op::kMAX:
        r = std::max(x, y);
        break;
      case Op::kMIN:
        r = std::min(x, y);
        break;
      case Op::kSUB:
        r = x - y;
        break;
      case Op::kEQUAL:
        r = x == y;
        break;
      case Op::kLESS:
        r = x < y;
        break;
      case Op::kFLOOR_DIV:
        r = x / y;
        break;
      case Op::kCEIL_DIV:
        r = (x + y - 1) / y;
        break;
    }
    return make(a.isConstant() && b.isConstant(), r);
  }
  const nvinfer1::IDimensionExpr* declareSizeTensor(int32_t, const nvinfer1::IDimensionExpr&,
                                                    const nvinfer1::IDimensionExpr&) override {
    return nullptr;
  }
};

struct ExprBuilder : nvinfer1::IExprBuilder {
  ExprBuilderImpl impl;
  ExprBuilder() { mImpl = &impl; }
  const nvinfer1::IDimensionExpr* symbol(int64_t v) { return impl.make(false, v); }
};

// ---- host conversions ----

uint16_t to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const int32_t exp = int32_t((x >> 23) & 0xff) - 127 + 15;
  uint32_t mant = x & 0x7fffffu;
  if (exp <= 0) {  // subnormal or zero
    if (exp < -10) return uint16_t(sign);
    mant |= 0x800000u;
    const int shift = 14 - exp;
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1))) ++h;
    return uint16_t(sign | h);
  }
  if (exp >= 31) return uint16_t(sign | 0x7c00u);
  uint32_t h = (uint32_t(exp) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) ++h;
  return uint16_t(sign | h);
}

float from_half(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  int32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ffu;
  uint32_t x;
  if (exp == 0) {
    if (mant == 0) {
      x = sign;
    } else {
      exp = 1;
      while (!(mant & 0x400u)) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      x = sign | (uint32_t(exp - 15 + 127) << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    x = sign | 0x7f800000u | (mant << 13);
  } else {
    x = sign | (uint32_t(exp - 15 + 127) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

uint16_t to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  return uint16_t((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

float from_bf16(uint16_t b) {
  const uint32_t x = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

const char* dtype_label(spattn::DType t) { return spattn::dtype_name(t); }

DataType trt_type(spattn::DType t) {
  return t == spattn::DType::kFloat32   ? DataType::kFLOAT
         : t == spattn::DType::kFloat16 ? DataType::kHALF
                                        : DataType::kBF16;
}

// Rounds `x` to dtype in place and returns the device bytes of it.
std::vector<uint8_t> encode(std::vector<float>& x, spattn::DType t) {
  std::vector<uint8_t> bytes(x.size() * size_t(spattn::dtype_size(t)));
  for (size_t i = 0; i < x.size(); ++i) {
    if (t == spattn::DType::kFloat32) {
      std::memcpy(&bytes[i * 4], &x[i], 4);
    } else {
      const uint16_t h = t == spattn::DType::kFloat16 ? to_half(x[i]) : to_bf16(x[i]);
      x[i] = t == spattn::DType::kFloat16 ? from_half(h) : from_bf16(h);
      std::memcpy(&bytes[i * 2], &h, 2);
    }
  }
  return bytes;
}

std::vector<float> decode(const std::vector<uint8_t>& bytes, spattn::DType t) {
  const size_t n = bytes.size() / size_t(spattn::dtype_size(t));
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) {
    if (t == spattn::DType::kFloat32) {
      std::memcpy(&out[i], &bytes[i * 4], 4);
    } else {
      uint16_t h;
      std::memcpy(&h, &bytes[i * 2], 2);
      out[i] = t == spattn::DType::kFloat16 ? from_half(h) : from_bf16(h);
    }
  }
  return out;
}

// ---- the plugin library ----

using GetCreatorsFn = nvinfer1::IPluginCreatorInterface* const* (*)(int32_t&);
using SetLoggerFinderFn = void (*)(nvinfer1::ILoggerFinder*);

struct Library {
  void* handle = nullptr;
  nvinfer1::IPluginCreatorV3One* creator = nullptr;
  CaptureLogger logger;
  Finder finder;
};

// A node of an exported model (tests/trt/export_nodes.py): input mask and attributes.
struct Node {
  std::string model, name;
  std::string inputs;  // "111", "1111", "11101": which of q, k, v, key_lengths, block_indices
  // Set by tests/fuzz/trt_nodes.py for a field value the plugin must refuse, naming this field.
  std::string expect_error;
  struct Attr {
    char kind;  // 'i', 'f', 's'
    std::string text;
  };
  std::map<std::string, Attr> attrs;
};

std::vector<Node> read_nodes(const std::string& path) {
  std::vector<Node> nodes;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ss(line);
    std::string tok;
    if (!(ss >> tok) || tok != "node") continue;
    Node n;
    while (ss >> tok) {
      const size_t eq = tok.find('=');
      if (eq == std::string::npos) continue;
      const std::string key = tok.substr(0, eq), value = tok.substr(eq + 1);
      const size_t colon = key.find(':');
      if (colon == std::string::npos) {
        if (key == "model") n.model = value;
        if (key == "name") n.name = value;
        if (key == "inputs") n.inputs = value;
        if (key == "expect_error") n.expect_error = value;
      } else {
        n.attrs[key.substr(0, colon)] = {key[colon + 1], value};
      }
    }
    nodes.push_back(n);
  }
  return nodes;
}

// The fields TensorRT's ONNX parser makes of a node: only attributes named in the creator's field
// names; INT narrowed to INT32, FLOAT as FLOAT32 (strings never reach the creator here).
struct Fields {
  std::vector<PluginField> fields;
  std::deque<int32_t> ints;
  std::deque<float> floats;
  nvinfer1::PluginFieldCollection fc{};
  void finish() {
    fc.nbFields = int32_t(fields.size());
    fc.fields = fields.data();
  }
};

std::unique_ptr<Fields> parser_fields(nvinfer1::IPluginCreatorV3One* creator, const Node& node) {
  auto f = std::make_unique<Fields>();
  const nvinfer1::PluginFieldCollection* names = creator->getFieldNames();
  for (int32_t i = 0; i < names->nbFields; ++i) {
    const char* name = names->fields[i].name;
    auto it = node.attrs.find(name);
    if (it == node.attrs.end()) continue;
    if (it->second.kind == 'i') {
      f->ints.push_back(static_cast<int32_t>(std::stoll(it->second.text)));
      f->fields.emplace_back(name, &f->ints.back(), PluginFieldType::kINT32, 1);
    } else if (it->second.kind == 'f') {
      f->floats.push_back(std::stof(it->second.text));
      f->fields.emplace_back(name, &f->floats.back(), PluginFieldType::kFLOAT32, 1);
    }
  }
  f->finish();
  return f;
}

// Deep copy of a plugin's serialized fields (what an engine file stores).
std::unique_ptr<Fields> copy_fields(const nvinfer1::PluginFieldCollection* fc,
                                    std::deque<std::string>* names) {
  auto f = std::make_unique<Fields>();
  for (int32_t i = 0; i < fc->nbFields; ++i) {
    const PluginField& src = fc->fields[i];
    names->push_back(src.name);
    if (src.type == PluginFieldType::kINT32) {
      f->ints.push_back(*static_cast<const int32_t*>(src.data));
      f->fields.emplace_back(names->back().c_str(), &f->ints.back(), src.type, 1);
    } else if (src.type == PluginFieldType::kFLOAT32) {
      f->floats.push_back(*static_cast<const float*>(src.data));
      f->fields.emplace_back(names->back().c_str(), &f->floats.back(), src.type, 1);
    }
  }
  f->finish();
  return f;
}

struct PluginHandle {
  nvinfer1::IPluginV3* plugin = nullptr;
  nvinfer1::IPluginV3OneCore* core = nullptr;
  nvinfer1::IPluginV3OneBuild* build = nullptr;
  nvinfer1::IPluginV3OneRuntime* runtime = nullptr;
  explicit PluginHandle(nvinfer1::IPluginV3* p) : plugin(p) {
    if (!p) return;
    core = static_cast<nvinfer1::IPluginV3OneCore*>(
        p->getCapabilityInterface(nvinfer1::PluginCapabilityType::kCORE));
    build = static_cast<nvinfer1::IPluginV3OneBuild*>(
        p->getCapabilityInterface(nvinfer1::PluginCapabilityType::kBUILD));
    runtime = static_cast<nvinfer1::IPluginV3OneRuntime*>(
        p->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
  }
  ~PluginHandle() { delete plugin; }
  PluginHandle(const PluginHandle&) = delete;
  PluginHandle& operator=(const PluginHandle&) = delete;
};

// ---- a problem: shapes, host data, device buffers ----

struct Problem {
  spattn::DType dtype = spattn::DType::kFloat32;
  int32_t B = 2, Hq = 4, Hkv = 4, Lq = 300, Lk = 300, D = 64, Dv = 64;
  bool key_lengths = false, block_indices = false, null_key_lengths = false;
  bool global_mask = false, key_starts = false, sinks = false;
  int32_t bi_heads = 1, bi_k = 3;
  int32_t block_size = 64;
  // Inputs of the node: up to the last present one (absent ones before it have no rank).
  int32_t num_inputs() const {
    return sinks ? 8 : key_starts ? 7 : global_mask ? 6 : block_indices ? 5 : key_lengths ? 4 : 3;
  }
  bool has(int32_t i) const {
    switch (i) {
      case spattn::kKeyLengths:
        return key_lengths && !null_key_lengths;
      case spattn::kBlockIndices:
        return block_indices;
      case spattn::kGlobalMask:
        return global_mask;
      case spattn::kKeyStarts:
        return key_starts;
      case spattn::kSinks:
        return sinks;
      default:
        return i < 3;
    }
  }

  std::vector<float> q, k, v;  // rounded to dtype
  std::vector<int32_t> kl, bi, gm, ks;
  std::vector<float> sk;
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
  void* dkl = nullptr;
  void* dbi = nullptr;
  void* dgm = nullptr;
  void* dks = nullptr;
  void* dsk = nullptr;
  size_t out_elems() const { return size_t(B) * Hq * Lq * Dv; }
  size_t out_bytes() const { return out_elems() * size_t(spattn::dtype_size(dtype)); }

  void make(uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.f, 1.f);
    auto fill = [&](std::vector<float>& x, size_t n) {
      x.resize(n);
      for (auto& e : x) e = nd(rng);
    };
    fill(q, size_t(B) * Hq * Lq * D);
    fill(k, size_t(B) * Hkv * Lk * D);
    fill(v, size_t(B) * Hkv * Lk * Dv);
    auto upload = [&](std::vector<float>& x, void** d) {
      const std::vector<uint8_t> bytes = encode(x, dtype);
      CUDA_OK(cudaMalloc(d, bytes.size()));
      CUDA_OK(cudaMemcpy(*d, bytes.data(), bytes.size(), cudaMemcpyHostToDevice));
    };
    upload(q, &dq);
    upload(k, &dk);
    upload(v, &dv);
    if (key_lengths) {
      kl.resize(B);
      for (int b = 0; b < B; ++b) kl[b] = b == 0 ? Lk : std::max(0, Lk - 37 * b);
      if (B > 2) kl[2] = 0;  // a batch with no key: zeros
      CUDA_OK(cudaMalloc(&dkl, kl.size() * 4));
      CUDA_OK(cudaMemcpy(dkl, kl.data(), kl.size() * 4, cudaMemcpyHostToDevice));
    }
    if (block_indices) {
      const int nqb = (Lq + block_size - 1) / block_size, nkb = (Lk + block_size - 1) / block_size;
      std::uniform_int_distribution<int> ud(-1, nkb - 1);
      bi.resize(size_t(bi_heads) * nqb * bi_k);
      for (auto& e : bi) e = ud(rng);
      CUDA_OK(cudaMalloc(&dbi, bi.size() * 4));
      CUDA_OK(cudaMemcpy(dbi, bi.data(), bi.size() * 4, cudaMemcpyHostToDevice));
    }
    auto upload_int = [&](const std::vector<int32_t>& x, void** d) {
      CUDA_OK(cudaMalloc(d, x.size() * 4));
      CUDA_OK(cudaMemcpy(*d, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
    };
    if (global_mask) {  // about one global token in 16, values of either sign
      std::uniform_int_distribution<int> ud(0, 15);
      gm.resize(size_t(B) * Lk);
      for (auto& e : gm) e = ud(rng) == 0 ? (ud(rng) % 2 ? 1 : -7) : 0;
      upload_int(gm, &dgm);
    }
    if (key_starts) {  // left padding, up to the batch's key length (a batch with no key too)
      ks.resize(B);
      for (int b = 0; b < B; ++b) {
        const int end = has(spattn::kKeyLengths) ? kl[b] : Lk;
        ks[b] = b == 0 ? 0 : std::min(end, 29 * b);
      }
      if (B > 1 && !has(spattn::kKeyLengths)) ks[B - 1] = Lk;
      upload_int(ks, &dks);
    }
    if (sinks) {
      sk.resize(Hq);
      for (auto& e : sk) e = 2.f * nd(rng);
      CUDA_OK(cudaMalloc(&dsk, sk.size() * 4));
      CUDA_OK(cudaMemcpy(dsk, sk.data(), sk.size() * 4, cudaMemcpyHostToDevice));
    }
  }
  void release() {
    for (void* p : {dq, dk, dv, dkl, dbi, dgm, dks, dsk})
      if (p) cudaFree(p);
    dq = dk = dv = dkl = dbi = dgm = dks = dsk = nullptr;
  }

  // Descriptors of the inputs as TensorRT would pass them (scale by `grow` for profile bounds).
  std::vector<nvinfer1::PluginTensorDesc> descs(int32_t grow = 0) const {
    auto d4 = [](int64_t a, int64_t b, int64_t c, int64_t e) {
      nvinfer1::Dims x{};
      x.nbDims = 4;
      x.d[0] = a;
      x.d[1] = b;
      x.d[2] = c;
      x.d[3] = e;
      return x;
    };
    const int32_t lq = Lq + grow, lk = Lk + grow;
    std::vector<nvinfer1::PluginTensorDesc> out(static_cast<size_t>(num_inputs()));
    const DataType t = trt_type(dtype);
    out[0] = {d4(B, Hq, lq, D), t, nvinfer1::TensorFormat::kLINEAR, 1.f};
    out[1] = {d4(B, Hkv, lk, D), t, nvinfer1::TensorFormat::kLINEAR, 1.f};
    out[2] = {d4(B, Hkv, lk, Dv), t, nvinfer1::TensorFormat::kLINEAR, 1.f};
    if (num_inputs() > 3) {
      nvinfer1::Dims x{};
      x.nbDims = has(spattn::kKeyLengths) ? 1 : -1;  // omitted: no rank, as TensorRT passes it
      x.d[0] = B;
      out[3] = {x, DataType::kINT32, nvinfer1::TensorFormat::kLINEAR, 1.f};
    }
    if (num_inputs() > 4) {
      nvinfer1::Dims x{};
      x.nbDims = block_indices ? 3 : -1;
      x.d[0] = bi_heads;
      x.d[1] = (lq + block_size - 1) / block_size;
      x.d[2] = bi_k;
      out[4] = {x, DataType::kINT32, nvinfer1::TensorFormat::kLINEAR, 1.f};
    }
    if (num_inputs() > 5) {
      nvinfer1::Dims x{};
      x.nbDims = global_mask ? 2 : -1;
      x.d[0] = B;
      x.d[1] = lk;
      out[5] = {x, DataType::kINT32, nvinfer1::TensorFormat::kLINEAR, 1.f};
    }
    if (num_inputs() > 6) {
      nvinfer1::Dims x{};
      x.nbDims = key_starts ? 1 : -1;
      x.d[0] = B;
      out[6] = {x, DataType::kINT32, nvinfer1::TensorFormat::kLINEAR, 1.f};
    }
    if (num_inputs() > 7) {
      nvinfer1::Dims x{};
      x.nbDims = 1;
      x.d[0] = Hq;
      out[7] = {x, DataType::kFLOAT, nvinfer1::TensorFormat::kLINEAR, 1.f};
    }
    return out;
  }
  nvinfer1::PluginTensorDesc out_desc() const {
    nvinfer1::PluginTensorDesc o = descs()[0];
    o.dims.d[3] = Dv;
    return o;
  }
  std::vector<const void*> pointers() const {
    std::vector<const void*> p = {dq, dk, dv};
    if (num_inputs() > 3) p.push_back(null_key_lengths ? nullptr : dkl);
    if (num_inputs() > 4) p.push_back(dbi);
    if (num_inputs() > 5) p.push_back(dgm);
    if (num_inputs() > 6) p.push_back(dks);
    if (num_inputs() > 7) p.push_back(dsk);
    return p;
  }

  // The CPU kernel on the same (rounded) inputs in float32: the reference.
  std::vector<float> reference(const spattn::PatternAttrs& attrs) const {
    spattn::Params p;
    spattn::TensorDesc d[spattn::kNumInputs];
    auto desc4 = [](spattn::TensorDesc& t, int64_t a, int64_t b, int64_t c, int64_t e) {
      t.present = true;
      t.dtype = 0;
      t.rank = 4;
      t.dims[0] = a;
      t.dims[1] = b;
      t.dims[2] = c;
      t.dims[3] = e;
    };
    desc4(d[0], B, Hq, Lq, D);
    desc4(d[1], B, Hkv, Lk, D);
    desc4(d[2], B, Hkv, Lk, Dv);
    if (key_lengths && !null_key_lengths) {
      d[3].present = true;
      d[3].dtype = spattn::kInt32Code;
      d[3].rank = 1;
      d[3].dims[0] = B;
    }
    if (block_indices) {
      d[4].present = true;
      d[4].dtype = spattn::kInt32Code;
      d[4].rank = 3;
      d[4].dims[0] = bi_heads;
      d[4].dims[1] = (Lq + block_size - 1) / block_size;
      d[4].dims[2] = bi_k;
    }
    if (global_mask) {
      d[5].present = true;
      d[5].dtype = spattn::kInt32Code;
      d[5].rank = 2;
      d[5].dims[0] = B;
      d[5].dims[1] = Lk;
    }
    if (key_starts) {
      d[6].present = true;
      d[6].dtype = spattn::kInt32Code;
      d[6].rank = 1;
      d[6].dims[0] = B;
    }
    if (sinks) {
      d[7].present = true;
      d[7].dtype = int32_t(spattn::DType::kFloat32);
      d[7].rank = 1;
      d[7].dims[0] = Hq;
    }
    const std::string e =
        spattn::validate_inputs(attrs, num_inputs(), d, spattn::cpu_head_dim_support(), &p);
    if (!e.empty()) {
      std::fprintf(stderr, "reference: %s\n", e.c_str());
      std::exit(4);
    }
    std::vector<float> out(out_elems());
    p.q = q.data();
    p.k = k.data();
    p.v = v.data();
    p.o = out.data();
    p.key_lengths = (key_lengths && !null_key_lengths) ? kl.data() : nullptr;
    // K = 0: an empty vector's data() may be null, which would read as an absent input.
    static const int32_t kNoBlock = 0;
    p.block_indices = block_indices ? (bi.empty() ? &kNoBlock : bi.data()) : nullptr;
    p.global_mask = global_mask ? gm.data() : nullptr;
    p.key_starts = key_starts ? ks.data() : nullptr;
    p.sinks = sinks ? sk.data() : nullptr;
    const std::string v = spattn::validate_values(p);
    if (!v.empty()) {
      std::fprintf(stderr, "reference: %s\n", v.c_str());
      std::exit(4);
    }
    const std::string r = spattn::cpu::run(p, spattn::cpu::thread_parallel_for(0));
    if (!r.empty()) {
      std::fprintf(stderr, "reference: %s\n", r.c_str());
      std::exit(4);
    }
    return out;
  }
};

struct Tolerance {
  double atol, rtol;
};

// The table is spattn.tolerances' own: spattn_tolerances.h is generated by tests/trt/CMakeLists.txt
// from exporter/spattn/tolerances.json, which the Python module reads.
Tolerance tolerance(spattn::DType t) {
  for (const auto& e : spattn_tolerances::kTable)
    if (std::strcmp(e.dtype, spattn::dtype_name(t)) == 0) return {e.atol, e.rtol};
  std::fprintf(stderr, "no tolerance for dtype %s in spattn_tolerances.h\n", spattn::dtype_name(t));
  std::exit(4);
}

// Elementwise |got - ref| <= atol + rtol |ref|; returns a summary.
bool close(const std::vector<float>& got, const std::vector<float>& ref, Tolerance tol,
           std::string* summary) {
  size_t bad = 0;
  double max_abs = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::fabs(double(got[i]) - ref[i]);
    if (!std::isfinite(got[i]) || d > tol.atol + tol.rtol * std::fabs(ref[i])) ++bad;
    if (d > max_abs || !std::isfinite(got[i])) max_abs = std::isfinite(d) ? d : INFINITY;
  }
  char buf[160];
  std::snprintf(buf, sizeof(buf), "max abs err %.3g, %zu/%zu outside (atol %.3g, rtol %.3g)",
                max_abs, bad, got.size(), tol.atol, tol.rtol);
  *summary = buf;
  return bad == 0;
}

// Runs the plugin once on `prob` into a fresh output buffer and returns the output bytes.
std::vector<uint8_t> run_plugin(PluginHandle& h, const Problem& prob, size_t ws_bytes,
                                cudaStream_t stream, int32_t* rc) {
  void* out = nullptr;
  void* ws = nullptr;
  CUDA_OK(cudaMalloc(&out, prob.out_bytes()));
  CUDA_OK(cudaMemset(out, 0xff, prob.out_bytes()));  // NaN pattern: every element must be written
  if (ws_bytes) CUDA_OK(cudaMalloc(&ws, ws_bytes));
  const auto in = prob.descs();
  const auto od = prob.out_desc();
  const auto ptrs = prob.pointers();
  void* outs[1] = {out};
  *rc = h.runtime->onShapeChange(in.data(), int32_t(in.size()), &od, 1);
  if (*rc == 0) *rc = h.runtime->enqueue(in.data(), &od, ptrs.data(), outs, ws, stream);
  CUDA_OK(cudaStreamSynchronize(stream));
  std::vector<uint8_t> bytes(prob.out_bytes());
  CUDA_OK(cudaMemcpy(bytes.data(), out, bytes.size(), cudaMemcpyDeviceToHost));
  cudaFree(out);
  if (ws) cudaFree(ws);
  return bytes;
}

std::vector<nvinfer1::DynamicPluginTensorDesc> dynamic_descs(const Problem& prob) {
  // min: the problem's shapes minus 100 keys/queries, opt: the problem, max: 200 more.
  const auto mn = prob.descs(-100), opt = prob.descs(0), mx = prob.descs(200);
  std::vector<nvinfer1::DynamicPluginTensorDesc> d(opt.size());
  for (size_t i = 0; i < d.size(); ++i) {
    d[i].desc = opt[i];
    d[i].desc.dims.d[2] = opt[i].dims.nbDims == 4 ? -1 : opt[i].dims.d[2];  // dynamic length
    if (opt[i].dims.nbDims == 3) d[i].desc.dims.d[1] = -1;
    if (i == spattn::kGlobalMask && opt[i].dims.nbDims == 2) d[i].desc.dims.d[1] = -1;
    d[i].min = mn[i].dims;
    d[i].opt = opt[i].dims;
    d[i].max = mx[i].dims;
  }
  return d;
}

nvinfer1::DynamicPluginTensorDesc dyn_out(const Problem& prob) {
  nvinfer1::DynamicPluginTensorDesc o{};
  o.desc = prob.out_desc();
  o.min = o.opt = o.max = o.desc.dims;
  return o;
}

// Build phase as the builder drives it; returns the workspace size (or -1 on a failed check).
int64_t build_phase(PluginHandle& h, const Problem& prob, const std::string& tag) {
  bool ok = h.build->getNbOutputs() == 1;
  // Output types.
  std::vector<DataType> in_types;
  for (const auto& d : prob.descs()) in_types.push_back(d.type);
  DataType out_type = DataType::kINT8;
  ok = ok &&
       h.build->getOutputDataTypes(&out_type, 1, in_types.data(), int32_t(in_types.size())) == 0 &&
       out_type == trt_type(prob.dtype);
  check(ok, tag + " getNbOutputs/getOutputDataTypes");
  // Output shapes through symbolic expressions.
  ExprBuilder eb;
  std::vector<nvinfer1::DimsExprs> ins;
  for (const auto& d : prob.descs()) {
    nvinfer1::DimsExprs e;
    e.nbDims = d.dims.nbDims;
    for (int i = 0; i < d.dims.nbDims; ++i) e.d[i] = eb.symbol(d.dims.d[i]);
    ins.push_back(e);
  }
  nvinfer1::DimsExprs out;
  out.nbDims = 0;
  const int32_t rc =
      h.build->getOutputShapes(ins.data(), int32_t(ins.size()), nullptr, 0, &out, 1, eb);
  bool shape_ok = rc == 0 && out.nbDims == 4;
  const int64_t want[4] = {prob.B, prob.Hq, prob.Lq, prob.Dv};
  for (int i = 0; shape_ok && i < 4; ++i)
    shape_ok = static_cast<const Expr*>(out.d[i])->value() == want[i] && !out.d[i]->isConstant();
  check(shape_ok, tag + " getOutputShapes [B, Hq, Lq, Dv] from the input expressions");
  // Formats: the proper combination, then wrong types/formats.
  auto dyn = dynamic_descs(prob);
  dyn.push_back(dyn_out(prob));
  const int32_t n = prob.num_inputs();
  bool fmt_ok = true;
  for (int32_t pos = 0; pos <= n; ++pos)
    fmt_ok = fmt_ok && h.build->supportsFormatCombination(pos, dyn.data(), n, 1);
  auto bad = dyn;
  bad[0].desc.type = DataType::kINT8;
  fmt_ok = fmt_ok && !h.build->supportsFormatCombination(0, bad.data(), n, 1);
  bad = dyn;
  bad[1].desc.type = prob.dtype == spattn::DType::kFloat32 ? DataType::kHALF : DataType::kFLOAT;
  fmt_ok = fmt_ok && !h.build->supportsFormatCombination(1, bad.data(), n, 1);
  bad = dyn;
  bad[n].desc.type = bad[1].desc.type == DataType::kFLOAT ? DataType::kHALF : DataType::kFLOAT;
  fmt_ok = fmt_ok && !h.build->supportsFormatCombination(n, bad.data(), n, 1);
  bad = dyn;
  bad[0].desc.format = nvinfer1::TensorFormat::kCHW32;
  fmt_ok = fmt_ok && !h.build->supportsFormatCombination(0, bad.data(), n, 1);
  if (n > 3 && prob.has(spattn::kKeyLengths)) {
    bad = dyn;
    bad[3].desc.type = DataType::kINT64;
    fmt_ok = fmt_ok && !h.build->supportsFormatCombination(3, bad.data(), n, 1);
  }
  check(fmt_ok, tag + " supportsFormatCombination (linear, dtype of query, int32 integers)");
  const nvinfer1::DynamicPluginTensorDesc o = dyn_out(prob);
  const int32_t crc = h.build->configurePlugin(dyn.data(), n, &o, 1);
  const size_t ws = h.build->getWorkspaceSize(dyn.data(), n, &o, 1);
  // The workspace must cover the largest shapes of the profile.
  Problem big = prob;
  big.Lq += 200;
  big.Lk += 200;
  spattn::Params pb;
  auto bd = big.descs();
  spattn::TensorDesc td[spattn::kNumInputs];
  for (int i = 0; i < n; ++i) {
    td[i].present = bd[i].dims.nbDims >= 0;
    td[i].dtype =
        i < 3 ? int32_t(prob.dtype)
              : (i == spattn::kSinks ? int32_t(spattn::DType::kFloat32) : spattn::kInt32Code);
    td[i].rank = bd[i].dims.nbDims;
    for (int j = 0; j < td[i].rank; ++j) td[i].dims[j] = bd[i].dims.d[j];
  }
  spattn::PatternAttrs a;
  a.block_size = prob.block_size;
  spattn::validate_inputs(a, n, td, spattn::cuda::head_dim_support(), &pb);
  const size_t need = spattn::cuda::workspace_size(pb);
  check(crc == 0 && ws >= need, tag + " configurePlugin + getWorkspaceSize (" + std::to_string(ws) +
                                    " bytes for max shapes)");
  return ok && shape_ok && fmt_ok && crc == 0 ? int64_t(ws) : -1;
}

// ---- the checks ----

// The op's attributes of a node for the reference, through the shared validation.
spattn::PatternAttrs node_attrs(const Node& node) {
  spattn::RawAttrs r;
  auto get = [&](const char* name, auto* v) {
    auto it = node.attrs.find(name);
    if (it == node.attrs.end()) return;
    if (it->second.kind == 'i') *v = decltype(+*v)(std::stoll(it->second.text));
    if (it->second.kind == 'f') *v = decltype(+*v)(std::stof(it->second.text));
  };
#define SPATTN_NODE_ATTR(TYPE, name, def, lo, hi, c_block, expect) get(#name, &r.name);
  SPATTN_ATTRIBUTES(SPATTN_NODE_ATTR)
#undef SPATTN_NODE_ATTR
  spattn::PatternAttrs a;
  const std::string e = spattn::validate_attrs(r, &a);
  if (!e.empty()) {
    std::fprintf(stderr, "%s: %s\n", node.model.c_str(), e.c_str());
    std::exit(4);
  }
  return a;
}

void node_checks(Library& lib, const Node& node, spattn::DType dtype, cudaStream_t s0,
                 cudaStream_t s1) {
  const std::string tag = node.model + "/" + dtype_label(dtype);
  auto fields = parser_fields(lib.creator, node);
  PluginHandle h(
      lib.creator->createPlugin(node.name.c_str(), &fields->fc, nvinfer1::TensorRTPhase::kBUILD));
  check(h.plugin && h.core && h.build && h.runtime,
        tag + " createPlugin(kBUILD) from the parser's " + std::to_string(fields->fc.nbFields) +
            " fields" + (h.plugin ? "" : ": " + lib.logger.last()));
  if (!h.plugin) return;
  check(std::string(h.core->getPluginName()) == "SparseAttention" &&
            std::string(h.core->getPluginVersion()) == "1" &&
            std::string(h.core->getPluginNamespace()) == "spattn",
        tag + " name/version/namespace SparseAttention/1/spattn");

  Problem prob;
  prob.dtype = dtype;
  prob.key_lengths = node.inputs.size() > 3;
  prob.null_key_lengths = node.inputs.size() > 3 && node.inputs[3] == '0';
  prob.block_indices = node.inputs.size() > 4 && node.inputs[4] == '1';
  if (node.attrs.count("block_size")) prob.block_size = std::stoi(node.attrs.at("block_size").text);
  if (node.model == "gqa_decoder" || node.model == "mixed") prob.Hkv = 2;
  prob.B = prob.key_lengths && !prob.null_key_lengths ? 3 : 2;
  prob.Lk = node.model == "gqa_decoder" ? 333 : 300;  // Lq < Lk: bottom-right aligned queries
  if (prob.block_indices) prob.bi_heads = prob.Hq;
  prob.make(1234u + uint32_t(dtype));

  const int64_t ws = build_phase(h, prob, tag);
  if (ws < 0) {
    prob.release();
    return;
  }
  // Runtime: enqueue on the GPU, compare with the CPU kernel on the same inputs.
  int32_t rc = -1;
  const std::vector<uint8_t> first = run_plugin(h, prob, size_t(ws), s0, &rc);
  const std::vector<float> ref = prob.reference(node_attrs(node));
  std::string summary;
  const bool ok = rc == 0 && close(decode(first, dtype), ref, tolerance(dtype), &summary);
  check(ok, tag + " enqueue vs CPU kernel: " + (rc == 0 ? summary : lib.logger.last()));

  if (prob.block_indices) {
    // block_indices with K = 0 lists no block; the zero-size tensor may come without storage (a
    // null pointer) and must still count as present (not as an absent input: the dense pattern).
    Problem none = prob;  // the same shapes; its own buffers below
    none.dq = none.dk = none.dv = none.dkl = none.dbi = none.dgm = none.dks = none.dsk = nullptr;
    none.bi_k = 0;
    none.make(1234u + uint32_t(dtype));
    if (none.dbi) cudaFree(none.dbi);
    none.dbi = nullptr;
    int32_t rc0 = -1;
    const std::vector<uint8_t> got = run_plugin(h, none, size_t(ws), s0, &rc0);
    std::string s0_summary;
    const bool ok0 = rc0 == 0 && close(decode(got, dtype), none.reference(node_attrs(node)),
                                       tolerance(dtype), &s0_summary);
    check(ok0, tag + " block_indices with K = 0 and no storage lists no block: " +
                   (rc0 == 0 ? s0_summary : lib.logger.last()));
    none.release();
  }

  // Serialization: the fields an engine stores -> createPlugin(kRUNTIME) -> identical output.
  std::deque<std::string> names;
  const nvinfer1::PluginFieldCollection* ser = h.runtime->getFieldsToSerialize();
  auto copy = copy_fields(ser, &names);
  PluginHandle r(
      lib.creator->createPlugin(node.name.c_str(), &copy->fc, nvinfer1::TensorRTPhase::kRUNTIME));
  bool same = false;
  if (r.plugin && r.runtime) {
    int32_t rrc = -1;
    same = run_plugin(r, prob, size_t(ws), s0, &rrc) == first && rrc == 0;
  }
  check(same && copy->fc.nbFields == kNumAttributes,
        tag + " getFieldsToSerialize -> createPlugin(kRUNTIME): identical output");

  // Two execution contexts: clones attached to their own resource contexts, enqueued at once
  // on two streams, each bitwise equal to the first run.
  ResourceContext ca, cb;
  PluginHandle a(h.runtime->attachToContext(&ca));
  PluginHandle b(h.runtime->attachToContext(&cb));
  bool ctx_ok = a.plugin && b.plugin && a.plugin != h.plugin && b.plugin != a.plugin;
  if (ctx_ok) {
    void *oa, *ob, *wa = nullptr, *wb = nullptr;
    CUDA_OK(cudaMalloc(&oa, prob.out_bytes()));
    CUDA_OK(cudaMalloc(&ob, prob.out_bytes()));
    if (ws) {
      CUDA_OK(cudaMalloc(&wa, size_t(ws)));
      CUDA_OK(cudaMalloc(&wb, size_t(ws)));
    }
    const auto in = prob.descs();
    const auto od = prob.out_desc();
    const auto ptrs = prob.pointers();
    void* outa[1] = {oa};
    void* outb[1] = {ob};
    ctx_ok = a.runtime->onShapeChange(in.data(), int32_t(in.size()), &od, 1) == 0 &&
             b.runtime->onShapeChange(in.data(), int32_t(in.size()), &od, 1) == 0;
    for (int it = 0; ctx_ok && it < 3; ++it)
      ctx_ok = a.runtime->enqueue(in.data(), &od, ptrs.data(), outa, wa, s0) == 0 &&
               b.runtime->enqueue(in.data(), &od, ptrs.data(), outb, wb, s1) == 0;
    CUDA_OK(cudaDeviceSynchronize());
    std::vector<uint8_t> ba(prob.out_bytes()), bb(prob.out_bytes());
    CUDA_OK(cudaMemcpy(ba.data(), oa, ba.size(), cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(bb.data(), ob, bb.size(), cudaMemcpyDeviceToHost));
    ctx_ok = ctx_ok && ba == first && bb == first;
    for (void* p : {oa, ob, wa, wb})
      if (p) cudaFree(p);
  }
  check(ctx_ok, tag + " clone + attachToContext x2, concurrent enqueue on two streams: identical");
  prob.release();
}

// The optional inputs global_mask, key_starts and sinks and the softcap field on the GPU against
// the CPU kernel, each alone (the inputs before it omitted: no rank, null pointer) and all
// together with a band, num_global, key_lengths and GQA; then every head dim of the CUDA table.
void new_input_checks(Library& lib, cudaStream_t s) {
  struct Case {
    const char* label;
    bool gm, ks, sk;
    float softcap;
    int32_t d;
    int32_t chunk = 0;  // chunk_size, with causal (Llama 4's chunked layers)
  };
  const Case cases[] = {
      {"global_mask alone", true, false, false, 0.f, 64},
      {"key_starts alone", false, true, false, 0.f, 64},
      {"sinks alone", false, false, true, 0.f, 64},
      {"softcap alone", false, false, false, 20.f, 64},
      {"all four", true, true, true, 20.f, 128},
      {"causal chunks with key_starts", false, true, false, 0.f, 128, 40},
  };
  for (spattn::DType dtype :
       {spattn::DType::kFloat32, spattn::DType::kFloat16, spattn::DType::kBFloat16}) {
    for (const Case& c : cases) {
      const bool all = c.gm && c.ks && c.sk;
      int32_t ints[3] = {all ? 16 : -1, all ? 8 : -1, all ? 2 : 0};
      float cap = c.softcap;
      int32_t chunk[2] = {c.chunk, c.chunk > 0 ? 1 : 0};  // chunk_size, causal
      PluginField f[6] = {{"window_left", &ints[0], PluginFieldType::kINT32, 1},
                          {"window_right", &ints[1], PluginFieldType::kINT32, 1},
                          {"num_global", &ints[2], PluginFieldType::kINT32, 1},
                          {"softcap", &cap, PluginFieldType::kFLOAT32, 1},
                          {"chunk_size", &chunk[0], PluginFieldType::kINT32, 1},
                          {"causal", &chunk[1], PluginFieldType::kINT32, 1}};
      nvinfer1::PluginFieldCollection fc{6, f};
      const std::string tag = std::string(c.label) + "/" + dtype_label(dtype) + " D" +
                              std::to_string(c.d) + (c.softcap > 0 ? " softcap" : "");
      PluginHandle h(lib.creator->createPlugin("new", &fc, nvinfer1::TensorRTPhase::kBUILD));
      check(h.plugin != nullptr, tag + " createPlugin with the softcap field");
      if (!h.plugin) continue;
      Problem prob;
      prob.dtype = dtype;
      prob.B = 3;
      prob.Hkv = all ? 2 : 4;
      prob.Lq = 300;
      prob.Lk = 333;
      prob.D = prob.Dv = c.d;
      prob.key_lengths = all;
      prob.global_mask = c.gm;
      prob.key_starts = c.ks;
      prob.sinks = c.sk;
      prob.make(99u + uint32_t(dtype));
      const int64_t ws = build_phase(h, prob, tag);
      if (ws >= 0) {
        int32_t rc = -1;
        const std::vector<uint8_t> got = run_plugin(h, prob, size_t(ws), s, &rc);
        std::string summary;
        spattn::PatternAttrs attrs;
        attrs.window_left = ints[0];
        attrs.window_right = ints[1];
        attrs.num_global = ints[2];
        attrs.softcap = cap;
        attrs.chunk_size = chunk[0];
        attrs.causal = chunk[1];
        const bool ok =
            rc == 0 && close(decode(got, dtype), prob.reference(attrs), tolerance(dtype), &summary);
        check(ok, tag + " enqueue vs CPU kernel: " + (rc == 0 ? summary : lib.logger.last()));
      }
      prob.release();
    }
    // Every head dim of the CUDA table, a causal band.
    for (int32_t d : spattn::kCudaHeadDims) {
      int32_t ints[2] = {100, 1};
      PluginField f[2] = {{"window_left", &ints[0], PluginFieldType::kINT32, 1},
                          {"causal", &ints[1], PluginFieldType::kINT32, 1}};
      nvinfer1::PluginFieldCollection fc{2, f};
      const std::string tag =
          std::string("head dim ") + std::to_string(d) + "/" + dtype_label(dtype) + " causal band";
      PluginHandle h(lib.creator->createPlugin("dims", &fc, nvinfer1::TensorRTPhase::kBUILD));
      Problem prob;
      prob.dtype = dtype;
      prob.D = prob.Dv = d;
      prob.make(5u + uint32_t(d));
      const int64_t ws = h.plugin ? build_phase(h, prob, tag) : -1;
      if (ws >= 0) {
        int32_t rc = -1;
        const std::vector<uint8_t> got = run_plugin(h, prob, size_t(ws), s, &rc);
        std::string summary;
        spattn::PatternAttrs attrs;
        attrs.window_left = ints[0];
        attrs.causal = ints[1];
        const bool ok =
            rc == 0 && close(decode(got, dtype), prob.reference(attrs), tolerance(dtype), &summary);
        check(ok, tag + " enqueue vs CPU kernel: " + (rc == 0 ? summary : lib.logger.last()));
      }
      prob.release();
    }
  }
}

// Fields the creator must refuse, each with a message naming the attribute.
void bad_field_checks(Library& lib) {
  struct Case {
    const char* name;
    PluginFieldType type;
    double value;
    int32_t length;
  };
  const Case cases[] = {
      {"causal", PluginFieldType::kINT32, 2, 1},
      {"block_size", PluginFieldType::kINT32, 0, 1},
      {"block_size", PluginFieldType::kINT32, 65537, 1},
      {"seed", PluginFieldType::kINT32, -1, 1},
      {"window_left", PluginFieldType::kINT32, -2, 1},
      {"num_global", PluginFieldType::kINT32, -3, 1},
      {"stride", PluginFieldType::kINT32, -1, 1},
      {"num_random", PluginFieldType::kINT32, -1, 1},
      {"scale", PluginFieldType::kFLOAT32, -1.0, 1},
      {"scale", PluginFieldType::kFLOAT32, NAN, 1},
      {"scale", PluginFieldType::kINT32, 1, 1},
      {"window_right", PluginFieldType::kFLOAT32, 3.0, 1},
      {"causal", PluginFieldType::kINT32, 1, 2},
      {"softcap", PluginFieldType::kFLOAT32, -1.0, 1},
      {"softcap", PluginFieldType::kFLOAT32, NAN, 1},
      {"softcap", PluginFieldType::kFLOAT32, INFINITY, 1},
      {"softcap", PluginFieldType::kINT32, 30, 1},
      {"chunk_size", PluginFieldType::kINT32, -1, 1},
  };
  for (const Case& c : cases) {
    int32_t ints[2] = {int32_t(c.value), int32_t(c.value)};
    float floats[2] = {float(c.value), float(c.value)};
    PluginField f(c.name, c.type == PluginFieldType::kFLOAT32 ? static_cast<void*>(floats) : ints,
                  c.type, c.length);
    nvinfer1::PluginFieldCollection fc{1, &f};
    lib.logger.errors.clear();
    nvinfer1::IPluginV3* p = lib.creator->createPlugin("bad", &fc, nvinfer1::TensorRTPhase::kBUILD);
    const std::string msg = lib.logger.last();
    const bool ok =
        !p && msg.find(std::string("SparseAttention: ") + c.name + ":") != std::string::npos;
    delete p;
    char what[96];
    std::snprintf(what, sizeof(what), "bad field %s=%g (%s, length %d) rejected", c.name, c.value,
                  c.type == PluginFieldType::kFLOAT32 ? "FLOAT32" : "INT32", c.length);
    check(ok, std::string(what) + ": " + msg);
  }
  // Fields TensorRT never passes (plugin_version, unknown names) are ignored.
  const char* v = "1";
  PluginField extra("plugin_version", v, PluginFieldType::kCHAR, 1);
  nvinfer1::PluginFieldCollection fc{1, &extra};
  nvinfer1::IPluginV3* p = lib.creator->createPlugin("extra", &fc, nvinfer1::TensorRTPhase::kBUILD);
  check(p != nullptr, "a field that is not an attribute of the op is ignored");
  delete p;
}

// Shapes the build phase must refuse, each with a message naming the input.
void bad_shape_checks(Library& lib) {
  struct Case {
    const char* what;
    const char* name;
    void (*edit)(Problem&, std::vector<nvinfer1::DynamicPluginTensorDesc>&);
  };
  const Case cases[] = {
      {"head dim 80 (the CUDA kernels: 32, 64, 96, 128, 256)", "query",
       [](Problem&, std::vector<nvinfer1::DynamicPluginTensorDesc>& d) {
         for (int i = 0; i < 3; ++i) d[i].max.d[3] = d[i].desc.dims.d[3] = 80;
       }},
      {"head dim D = 64, Dv = 128", "value",
       [](Problem&, std::vector<nvinfer1::DynamicPluginTensorDesc>& d) {
         d[2].max.d[3] = d[2].desc.dims.d[3] = 128;
       }},
      {"global_mask [B, Lk + 1]", "global_mask",
       [](Problem&, std::vector<nvinfer1::DynamicPluginTensorDesc>& d) { d[5].max.d[1] += 1; }},
      {"global_mask of rank 1", "global_mask",
       [](Problem&, std::vector<nvinfer1::DynamicPluginTensorDesc>& d) { d[5].max.nbDims = 1; }},
      {"key_starts of length B + 1", "key_starts",
       [](Problem&, std::vector<nvinfer1::DynamicPluginTensorDesc>& d) { d[6].max.d[0] += 1; }},
      {"sinks [Hq + 1]", "sinks",
       [](Problem&, std::vector<nvinfer1::DynamicPluginTensorDesc>& d) { d[7].max.d[0] += 1; }},
      {"sinks of type float16", "sinks",
       [](Problem&, std::vector<nvinfer1::DynamicPluginTensorDesc>& d) {
         d[7].desc.type = DataType::kHALF;
       }},
      {"Hq = 6 with Hkv = 4", "query",
       [](Problem&, std::vector<nvinfer1::DynamicPluginTensorDesc>& d) { d[0].max.d[1] = 6; }},
      {"key of another dtype", "key",
       [](Problem&, std::vector<nvinfer1::DynamicPluginTensorDesc>& d) {
         d[1].desc.type = DataType::kHALF;
       }},
      {"value with another Lk", "value",
       [](Problem&, std::vector<nvinfer1::DynamicPluginTensorDesc>& d) { d[2].max.d[2] += 1; }},
      {"key_lengths of length B + 1", "key_lengths",
       [](Problem&, std::vector<nvinfer1::DynamicPluginTensorDesc>& d) { d[3].max.d[0] += 1; }},
      {"block_indices with the wrong query-block count", "block_indices",
       [](Problem&, std::vector<nvinfer1::DynamicPluginTensorDesc>& d) { d[4].max.d[1] += 1; }},
      {"key of rank 3", "key",
       [](Problem&, std::vector<nvinfer1::DynamicPluginTensorDesc>& d) { d[1].max.nbDims = 3; }},
  };
  PluginField f("block_size", nullptr, PluginFieldType::kINT32, 1);
  int32_t bs = 64;
  f.data = &bs;
  nvinfer1::PluginFieldCollection fc{1, &f};
  for (const Case& c : cases) {
    PluginHandle h(lib.creator->createPlugin("shape", &fc, nvinfer1::TensorRTPhase::kBUILD));
    Problem prob;
    prob.key_lengths = prob.block_indices = true;
    prob.global_mask = prob.key_starts = prob.sinks = true;
    auto d = dynamic_descs(prob);
    c.edit(prob, d);
    const nvinfer1::DynamicPluginTensorDesc o = dyn_out(prob);
    lib.logger.errors.clear();
    const int32_t rc = h.build->configurePlugin(d.data(), int32_t(d.size()), &o, 1);
    const std::string msg = lib.logger.last();
    check(rc != 0 && msg.find(std::string("SparseAttention: ") + c.name + ":") != std::string::npos,
          std::string("bad shapes rejected at build (") + c.what + "): " + msg);
  }
  // Nine inputs (a reserved position) and a query of rank 3 in getOutputShapes.
  PluginHandle h(lib.creator->createPlugin("shape", &fc, nvinfer1::TensorRTPhase::kBUILD));
  ExprBuilder eb;
  nvinfer1::DimsExprs ins[9];
  for (auto& e : ins) {
    e.nbDims = 4;
    for (int i = 0; i < 4; ++i) e.d[i] = eb.symbol(8);
  }
  nvinfer1::DimsExprs out;
  lib.logger.errors.clear();
  int32_t rc = h.build->getOutputShapes(ins, 9, nullptr, 0, &out, 1, eb);
  check(rc != 0 && lib.logger.last().find("SparseAttention: input 8:") != std::string::npos,
        "nine inputs rejected: " + lib.logger.last());
  ins[0].nbDims = 3;
  lib.logger.errors.clear();
  rc = h.build->getOutputShapes(ins, 3, nullptr, 0, &out, 1, eb);
  check(rc != 0 && lib.logger.last().find("SparseAttention: query:") != std::string::npos,
        "query of rank 3 rejected in getOutputShapes: " + lib.logger.last());
  // An error at run time goes to the execution context's error recorder.
  ResourceContext ctx;
  PluginHandle a(h.runtime->attachToContext(&ctx));
  Problem prob;
  auto in = prob.descs();
  in[0].dims.d[3] = 80;  // query D = 80, key D = 64
  const auto od = prob.out_desc();
  rc = a.runtime->onShapeChange(in.data(), 3, &od, 1);
  check(rc != 0 && !ctx.recorder.errors.empty() &&
            ctx.recorder.errors.back().find("SparseAttention: key:") != std::string::npos,
        "a bad shape at run time goes to the context's error recorder: " +
            (ctx.recorder.errors.empty() ? std::string("(none)") : ctx.recorder.errors.back()));
  // A present input with elements but no storage: an error naming it, nothing launched (the
  // other pointers are never read, so no GPU is needed).
  Problem with_lengths;
  with_lengths.key_lengths = true;
  const auto lin = with_lengths.descs();
  const auto lod = with_lengths.out_desc();
  rc = a.runtime->onShapeChange(lin.data(), int32_t(lin.size()), &lod, 1);
  static const float kFake[4] = {};
  const void* ptrs[4] = {kFake, kFake, kFake, nullptr};
  void* outs[1] = {const_cast<float*>(kFake)};
  ctx.recorder.errors.clear();
  if (rc == 0) rc = a.runtime->enqueue(lin.data(), &lod, ptrs, outs, nullptr, nullptr);
  const std::string last = ctx.recorder.errors.empty() ? "(none)" : ctx.recorder.errors.back();
  check(rc != 0 && last.find("SparseAttention: key_lengths:") != std::string::npos &&
            last.find("null pointer") != std::string::npos,
        "a present key_lengths with a null pointer is an error naming it: " + last);
}

// Plugin enqueue against the direct launch of the shared kernel on the same problem.
void bench(Library& lib, cudaStream_t s) {
  struct Case {
    const char* label;
    spattn::DType dtype;
    int32_t B, H, L, D;
    int32_t wl, wr, causal, global;
  };
  const Case cases[] = {
      {"longformer fp16 B1 H16 L4096 D64 w256 g2", spattn::DType::kFloat16, 1, 16, 4096, 64, 128,
       128, 0, 2},
      {"causal window bf16 B2 H16 L8192 D128 w1024", spattn::DType::kBFloat16, 2, 16, 8192, 128,
       1023, -1, 1, 0},
      {"sliding window fp16 B4 H8 L1024 D64 w128", spattn::DType::kFloat16, 4, 8, 1024, 64, 64, 64,
       0, 0},
      {"longformer fp32 B1 H8 L2048 D64 w256 g2", spattn::DType::kFloat32, 1, 8, 2048, 64, 128, 128,
       0, 2},
  };
  for (const Case& c : cases) {
    int32_t ints[4] = {c.wl, c.wr, c.causal, c.global};
    PluginField f[4] = {{"window_left", &ints[0], PluginFieldType::kINT32, 1},
                        {"window_right", &ints[1], PluginFieldType::kINT32, 1},
                        {"causal", &ints[2], PluginFieldType::kINT32, 1},
                        {"num_global", &ints[3], PluginFieldType::kINT32, 1}};
    nvinfer1::PluginFieldCollection fc{4, f};
    PluginHandle h(lib.creator->createPlugin("bench", &fc, nvinfer1::TensorRTPhase::kRUNTIME));
    Problem prob;
    prob.dtype = c.dtype;
    prob.B = c.B;
    prob.Hq = prob.Hkv = c.H;
    prob.Lq = prob.Lk = c.L;
    prob.D = prob.Dv = c.D;
    prob.make(7);
    const auto in = prob.descs();
    const auto od = prob.out_desc();
    const auto ptrs = prob.pointers();
    // The direct launch: the same params the plugin builds, through the shared entry.
    spattn::Params p;
    spattn::PatternAttrs attrs;
    attrs.window_left = c.wl;
    attrs.window_right = c.wr;
    attrs.causal = c.causal;
    attrs.num_global = c.global;
    spattn::TensorDesc td[spattn::kNumInputs];
    for (int i = 0; i < 3; ++i) {
      td[i].present = true;
      td[i].dtype = int32_t(c.dtype);
      td[i].rank = 4;
      for (int j = 0; j < 4; ++j) td[i].dims[j] = in[i].dims.d[j];
    }
    spattn::validate_inputs(attrs, 3, td, spattn::cuda::head_dim_support(), &p);
    void *out, *ws = nullptr;
    const size_t wsb = spattn::cuda::workspace_size(p);
    CUDA_OK(cudaMalloc(&out, prob.out_bytes()));
    if (wsb) CUDA_OK(cudaMalloc(&ws, wsb));
    p.q = prob.dq;
    p.k = prob.dk;
    p.v = prob.dv;
    p.o = out;
    void* outs[1] = {out};
    bool ok = h.runtime->onShapeChange(in.data(), 3, &od, 1) == 0;
    auto plugin_call = [&] {
      ok = ok && h.runtime->enqueue(in.data(), &od, ptrs.data(), outs, ws, s) == 0;
    };
    auto direct_call = [&] { ok = ok && spattn::cuda::launch(p, ws, wsb, s) == cudaSuccess; };
    cudaEvent_t e0, e1;
    CUDA_OK(cudaEventCreate(&e0));
    CUDA_OK(cudaEventCreate(&e1));
    auto time_ms = [&](auto&& fn, int iters) {
      CUDA_OK(cudaEventRecord(e0, s));
      for (int i = 0; i < iters; ++i) fn();
      CUDA_OK(cudaEventRecord(e1, s));
      CUDA_OK(cudaEventSynchronize(e1));
      float ms = 0;
      CUDA_OK(cudaEventElapsedTime(&ms, e0, e1));
      return double(ms) / iters;
    };
    for (int i = 0; i < 10; ++i) {
      plugin_call();
      direct_call();
    }
    CUDA_OK(cudaStreamSynchronize(s));
    // Calibrate to ~5 ms per sample; alternate plugin/direct samples, take medians.
    const double one = time_ms(direct_call, 3);
    const int iters = std::max(3, std::min(200, int(5.0 / std::max(one, 1e-3))));
    std::vector<double> tp, td2;
    for (int rep = 0; rep < 15; ++rep) {
      tp.push_back(time_ms(plugin_call, iters));
      td2.push_back(time_ms(direct_call, iters));
    }
    std::sort(tp.begin(), tp.end());
    std::sort(td2.begin(), td2.end());
    const double mp = tp[tp.size() / 2] * 1e3, md = td2[td2.size() / 2] * 1e3;
    const double ratio = mp / md;
    std::printf("BENCH %s: plugin %.2f us, direct %.2f us, ratio %.4f (%d calls x 15 samples)\n",
                c.label, mp, md, ratio, iters);
    check(ok && ratio <= 1.03,
          std::string("plugin enqueue within 3% of the direct launch: ") + c.label);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaFree(out);
    if (ws) cudaFree(ws);
    prob.release();
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string plugin_path, nodes_path;
  bool do_bench = false, bench_only = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--plugin" && i + 1 < argc)
      plugin_path = argv[++i];
    else if (a == "--nodes" && i + 1 < argc)
      nodes_path = argv[++i];
    else if (a == "--bench")
      do_bench = true;
    else if (a == "--bench-only")
      do_bench = bench_only = true;
    else if (a == "--print-tolerances") {
      for (const auto& e : spattn_tolerances::kTable)
        std::printf("%s %.17g %.17g\n", e.dtype, e.atol, e.rtol);
      return 0;
    }
  }
  if (plugin_path.empty() || (nodes_path.empty() && !bench_only)) {
    std::fprintf(stderr, "usage: %s --plugin libspattn_trt.so --nodes nodes.txt [--bench]\n",
                 argv[0]);
    return 2;
  }
  // Without a GPU only the checks that launch nothing run (library, fields, build-phase errors).
  int dev_count = 0;
  const bool gpu = cudaGetDeviceCount(&dev_count) == cudaSuccess && dev_count > 0;
  if (gpu) {
    cudaDeviceProp prop{};
    CUDA_OK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  } else {
    std::printf("no CUDA device: GPU checks (enqueue, serialization, contexts, timing) skipped\n");
  }

  Library lib;
  lib.handle = dlopen(plugin_path.c_str(), RTLD_NOW | RTLD_LOCAL);
  check(lib.handle != nullptr,
        "dlopen " + plugin_path + (lib.handle ? "" : std::string(": ") + dlerror()));
  if (!lib.handle) return 1;
  auto get_creators = reinterpret_cast<GetCreatorsFn>(dlsym(lib.handle, "getCreators"));
  auto set_finder = reinterpret_cast<SetLoggerFinderFn>(dlsym(lib.handle, "setLoggerFinder"));
  check(get_creators && set_finder, "exports getCreators and setLoggerFinder");
  if (!get_creators || !set_finder) return 1;
  lib.finder.logger = &lib.logger;
  set_finder(&lib.finder);
  int32_t n = 0;
  nvinfer1::IPluginCreatorInterface* const* creators = get_creators(n);
  for (int32_t i = 0; i < n; ++i) {
    if (std::strcmp(creators[i]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") != 0) continue;
    auto* c = static_cast<nvinfer1::IPluginCreatorV3One*>(creators[i]);
    if (std::string(c->getPluginName()) == "SparseAttention" &&
        std::string(c->getPluginVersion()) == "1" &&
        std::string(c->getPluginNamespace()) == "spattn")
      lib.creator = c;
  }
  check(lib.creator != nullptr, "getCreators has SparseAttention version 1 in namespace spattn");
  if (!lib.creator) return 1;
  const nvinfer1::PluginFieldCollection* names = lib.creator->getFieldNames();
  std::string list;
  bool types_ok = names && names->nbFields == kNumAttributes;
  for (int32_t i = 0; names && i < names->nbFields; ++i) {
    const PluginField& f = names->fields[i];
    list += std::string(i ? "," : "") + f.name;
    types_ok = types_ok && (is_float_attribute(f.name) ? f.type == PluginFieldType::kFLOAT32
                                                       : f.type == PluginFieldType::kINT32);
  }
  check(types_ok,
        "field names = the op's attributes (scale, softcap FLOAT32, the rest INT32): " + list);

  cudaStream_t s0 = nullptr, s1 = nullptr;
  if (gpu) {
    CUDA_OK(cudaStreamCreateWithFlags(&s0, cudaStreamNonBlocking));
    CUDA_OK(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
  }
  if (!bench_only) {
    const std::vector<Node> nodes = read_nodes(nodes_path);
    check(!nodes.empty(), "nodes read from " + nodes_path + ": " + std::to_string(nodes.size()));
    for (const Node& node : nodes) {
      if (!node.expect_error.empty()) {  // a fuzz case: refused, with the field named
        auto fields = parser_fields(lib.creator, node);
        lib.logger.errors.clear();
        nvinfer1::IPluginV3* p = lib.creator->createPlugin(node.name.c_str(), &fields->fc,
                                                           nvinfer1::TensorRTPhase::kBUILD);
        const std::string msg = lib.logger.last();
        const bool ok =
            !p && msg.find("SparseAttention: " + node.expect_error + ":") != std::string::npos;
        delete p;
        check(ok, node.model + " refuses its " + node.expect_error + " field by name: " + msg);
        continue;
      }
      if (!gpu) {  // the parser's fields still have to make a plugin
        auto fields = parser_fields(lib.creator, node);
        PluginHandle h(lib.creator->createPlugin(node.name.c_str(), &fields->fc,
                                                 nvinfer1::TensorRTPhase::kBUILD));
        check(h.plugin != nullptr, node.model + " createPlugin(kBUILD) from the parser's " +
                                       std::to_string(fields->fc.nbFields) + " fields");
        continue;
      }
      for (spattn::DType t :
           {spattn::DType::kFloat32, spattn::DType::kFloat16, spattn::DType::kBFloat16})
        node_checks(lib, node, t, s0, s1);
    }
    if (gpu) new_input_checks(lib, s0);
    bad_field_checks(lib);
    bad_shape_checks(lib);
  }
  if (do_bench && gpu) bench(lib, s0);
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}
