// Runs an ONNX model that contains spattn::SparseAttention nodes with the ONNX Runtime C++ API.
//
//   spattn_run_model MODEL.onnx LIBSPATTN_ORT.so LIBONNXRUNTIME.so [SEQ_LEN] [BATCH] [REPEATS]
//
// Inputs are filled with deterministic pseudo-random values (float inputs) or the sequence length
// (int32 inputs such as key_lengths); dynamic dimensions named like a sequence axis take SEQ_LEN,
// the others BATCH. Prints each output's shape and checksum and the median run time.
#define ORT_API_MANUAL_INIT
#include <dlfcn.h>
#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

uint16_t to_half(float f) {  // float -> IEEE half, round to nearest even (normal range)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  u &= 0x7fffffffu;
  if (u < 0x38800000u) return sign;
  u += 0x0fffu + ((u >> 13) & 1u);
  return sign | uint16_t((u >> 13) - (112u << 10));
}
uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

struct Input {
  std::string name;
  ONNXTensorElementDataType type;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(
        stderr,
        "usage: %s MODEL.onnx LIBSPATTN_ORT.so LIBONNXRUNTIME.so [SEQ_LEN] [BATCH] [REPEATS]\n",
        argv[0]);
    return 2;
  }
  const char* model = argv[1];
  const char* custom_lib = argv[2];
  const int64_t seq = argc > 4 ? std::atoll(argv[4]) : 1024;
  const int64_t batch = argc > 5 ? std::atoll(argv[5]) : 1;
  const int repeats = argc > 6 ? std::atoi(argv[6]) : 5;

  void* ort = dlopen(argv[3], RTLD_NOW | RTLD_GLOBAL);
  if (!ort) {
    std::fprintf(stderr, "error: cannot load ONNX Runtime from %s: %s\n", argv[3], dlerror());
    return 1;
  }
  using GetApiBase = const OrtApiBase* (*)();
  auto get_base = reinterpret_cast<GetApiBase>(dlsym(ort, "OrtGetApiBase"));
  if (!get_base) {
    std::fprintf(stderr, "error: %s has no OrtGetApiBase\n", argv[3]);
    return 1;
  }
  const OrtApi* api = get_base()->GetApi(ORT_API_VERSION);
  if (!api) {
    std::fprintf(stderr, "error: this ONNX Runtime is older than the headers (API %d)\n",
                 ORT_API_VERSION);
    return 1;
  }
  Ort::InitApi(api);

  try {
    Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "spattn");
    Ort::SessionOptions options;
    options.RegisterCustomOpsLibrary(custom_lib);
    Ort::Session session(env, model, options);

    Ort::AllocatorWithDefaultOptions alloc;
    std::vector<Input> inputs;
    uint32_t state = 12345u;
    auto next = [&state]() {  // xorshift, values in [-1, 1)
      state ^= state << 13;
      state ^= state >> 17;
      state ^= state << 5;
      return float(state & 0xffffff) / float(0x800000) - 1.f;
    };
    for (size_t i = 0; i < session.GetInputCount(); ++i) {
      Input in;
      in.name = session.GetInputNameAllocated(i, alloc).get();
      Ort::TypeInfo type_info = session.GetInputTypeInfo(i);  // owns what `info` views
      auto info = type_info.GetTensorTypeAndShapeInfo();
      in.type = info.GetElementType();
      in.shape = info.GetShape();
      std::vector<const char*> sym(in.shape.size());
      info.GetSymbolicDimensions(sym.data(), sym.size());
      int64_t count = 1;
      for (size_t d = 0; d < in.shape.size(); ++d) {
        if (in.shape[d] < 0) {
          const std::string s = sym[d] ? sym[d] : "";
          const bool is_batch =
              s.find("batch") != std::string::npos || (d == 0 && in.shape.size() > 1);
          in.shape[d] = is_batch ? batch : seq;
        }
        count *= in.shape[d];
      }
      const size_t esize = in.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT   ? 4
                           : in.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 ? 4
                           : in.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 ? 8
                                                                            : 2;
      in.data.resize(size_t(count) * esize);
      for (int64_t n = 0; n < count; ++n) {
        switch (in.type) {
          case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: {
            float v = next();
            std::memcpy(&in.data[n * 4], &v, 4);
            break;
          }
          case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: {
            uint16_t v = to_half(next());
            std::memcpy(&in.data[n * 2], &v, 2);
            break;
          }
          case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: {
            uint16_t v = to_bf16(next());
            std::memcpy(&in.data[n * 2], &v, 2);
            break;
          }
          case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: {
            int32_t v = int32_t(seq);
            std::memcpy(&in.data[n * 4], &v, 4);
            break;
          }
          case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: {
            int64_t v = seq;
            std::memcpy(&in.data[n * 8], &v, 8);
            break;
          }
          default:
            std::fprintf(stderr,
                         "error: input %s has element type %d, which this sample does not fill\n",
                         in.name.c_str(), int(in.type));
            return 1;
        }
      }
      inputs.push_back(std::move(in));
    }

    Ort::MemoryInfo mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    std::vector<Ort::Value> values;
    std::vector<const char*> in_names;
    for (auto& in : inputs) {
      values.push_back(Ort::Value::CreateTensor(mem, in.data.data(), in.data.size(),
                                                in.shape.data(), in.shape.size(), in.type));
      in_names.push_back(in.name.c_str());
    }
    std::vector<std::string> out_store;
    std::vector<const char*> out_names;
    for (size_t i = 0; i < session.GetOutputCount(); ++i)
      out_store.push_back(session.GetOutputNameAllocated(i, alloc).get());
    for (auto& s : out_store) out_names.push_back(s.c_str());

    std::vector<double> ms;
    std::vector<Ort::Value> outs;
    for (int r = 0; r < repeats + 1; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      outs = session.Run(Ort::RunOptions{nullptr}, in_names.data(), values.data(), values.size(),
                         out_names.data(), out_names.size());
      const auto t1 = std::chrono::steady_clock::now();
      if (r > 0)
        ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());  // r = 0 warms up
    }
    std::sort(ms.begin(), ms.end());
    for (size_t i = 0; i < outs.size(); ++i) {
      auto info = outs[i].GetTensorTypeAndShapeInfo();
      const auto shape = info.GetShape();
      double sum = 0;
      if (info.GetElementType() == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {
        const float* p = outs[i].GetTensorData<float>();
        for (size_t n = 0; n < info.GetElementCount(); ++n) sum += p[n];
      }
      std::printf("output %s: shape [", out_names[i]);
      for (size_t d = 0; d < shape.size(); ++d)
        std::printf("%s%lld", d ? ", " : "", (long long)shape[d]);
      std::printf("], sum %.6f\n", sum);
    }
    std::printf("median run time: %.3f ms over %d runs\n", ms.empty() ? 0.0 : ms[ms.size() / 2],
                repeats);
  } catch (const Ort::Exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
