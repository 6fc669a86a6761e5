// The library side of the TensorRT plugin: the entry points TensorRT looks up, error reporting,
// and registration when the library is merely loaded.
//
// Ways users load plugins, and what each needs:
//  - IPluginRegistry::loadLibrary, trtexec --dynamicPlugins, engines that carry the library:
//    the exported C functions getCreators and setLoggerFinder.
//  - trtexec --staticPlugins, polygraphy --plugins (ctypes), Triton's TensorRT backend, a plain
//    dlopen: nothing is called, so a load-time constructor registers the creator with the
//    process's TensorRT plugin registry, found at run time (no link dependency on libnvinfer: the
//    library also loads where TensorRT is absent, e.g. in tests).
#include <dlfcn.h>
#include <link.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>

#include "sparse_attention_plugin.h"

namespace spattn {
namespace trt {
namespace {

SparseAttentionPluginCreator& creator() {
  static SparseAttentionPluginCreator instance;
  return instance;
}

std::atomic<nvinfer1::ILoggerFinder*> g_logger_finder{nullptr};

// IPluginRegistry is implemented by TensorRT and its virtual table differs between releases:
// TensorRT 10 (the headers we build with) still has four IPluginV2-era methods in it
// (registerCreator(IPluginCreator&), getPluginCreatorList, getPluginCreator,
// deregisterCreator(IPluginCreator const&)); TensorRT 11 and TensorRT for RTX removed them, which
// shifts every later slot (read from the libraries: getAllCreators is slot 9 there, 13 in 10.x).
// Calling the 10.x slots on those registries crashes, so the few calls made here go through the
// slot table of the TensorRT actually loaded.
struct RegistryAbi {
  int get_error_recorder, register_creator, get_creator, deregister_creator;
};
constexpr RegistryAbi kRegistryAbi10{6, 12, 14, 15};
constexpr RegistryAbi kRegistryAbiNoV2{3, 8, 10, 11};

struct Registry {
  void* object = nullptr;
  const RegistryAbi* abi = nullptr;
  explicit operator bool() const { return object && abi; }

  template <typename R, typename... A>
  R call(int slot, A... args) const {
    using Fn = R (*)(void*, A...);  // Itanium C++ ABI: `this` first
    void* const* vtable = *static_cast<void* const* const*>(object);
    return reinterpret_cast<Fn>(vtable[slot])(object, args...);
  }
  nvinfer1::IErrorRecorder* error_recorder() const {
    return call<nvinfer1::IErrorRecorder*>(abi->get_error_recorder);
  }
  bool has_creator() const {
    return call<nvinfer1::IPluginCreatorInterface*>(abi->get_creator, kPluginName, kPluginVersion,
                                                    kPluginNamespace) != nullptr;
  }
  bool register_creator(nvinfer1::IPluginCreatorInterface* c) const {
    return call<bool>(abi->register_creator, c, kPluginNamespace);
  }
  bool deregister_creator(nvinfer1::IPluginCreatorInterface* c) const {
    return call<bool>(abi->deregister_creator, static_cast<const void*>(c));
  }
};

// The registry the load-time constructor registered the creator with (null if it did not).
std::atomic<void*> g_auto_registry{nullptr};
std::atomic<const RegistryAbi*> g_auto_registry_abi{nullptr};

using GetRegistryFn = void* (*)();
using GetLoggerFn = nvinfer1::ILogger* (*)();
using GetVersionFn = int32_t (*)();

// Shared objects of TensorRT builds that provide the C entries getPluginRegistry and getLogger.
const char* tensorrt_library_kind(const char* path) {
  const char* base = std::strrchr(path, '/');
  base = base ? base + 1 : path;
  if (std::strncmp(base, "libtensorrt_rtx.so", 18) == 0) return "rtx";
  if (std::strncmp(base, "libnvinfer.so", 13) == 0 ||
      std::strncmp(base, "libnvinfer_lean.so", 18) == 0)
    return "nvinfer";
  return nullptr;
}

struct Lookup {
  const char* symbol;
  void* address;
};

int find_in_loaded(struct dl_phdr_info* info, size_t, void* data) {
  auto* look = static_cast<Lookup*>(data);
  if (!info->dlpi_name || !*info->dlpi_name || !tensorrt_library_kind(info->dlpi_name)) return 0;
  // RTLD_NOLOAD: only a handle to what is already loaded; never loads TensorRT ourselves.
  void* handle = dlopen(info->dlpi_name, RTLD_LAZY | RTLD_NOLOAD);
  if (!handle) return 0;
  look->address = dlsym(handle, look->symbol);
  dlclose(handle);
  return look->address ? 1 : 0;
}

// A C entry of the TensorRT library loaded in this process, or null. TensorRT may have been
// loaded with RTLD_LOCAL (Python's tensorrt package does), so the global scope is not enough.
void* find_tensorrt_symbol(const char* symbol) {
  if (void* f = dlsym(RTLD_DEFAULT, symbol)) return f;
  Lookup look{symbol, nullptr};
  dl_iterate_phdr(find_in_loaded, &look);
  return look.address;
}

// The process's plugin registry and the slot table of the library that owns it.
Registry process_registry() {
  Registry r;
  void* fn = find_tensorrt_symbol("getPluginRegistry");
  Dl_info info{};
  if (!fn || !dladdr(fn, &info) || !info.dli_fname) return r;
  const char* kind = tensorrt_library_kind(info.dli_fname);
  if (!kind) return r;
  if (std::strcmp(kind, "rtx") == 0) {
    r.abi = &kRegistryAbiNoV2;
  } else {
    void* handle = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    auto major =
        handle ? reinterpret_cast<GetVersionFn>(dlsym(handle, "getInferLibMajorVersion")) : nullptr;
    const int32_t v = major ? major() : 0;
    if (handle) dlclose(handle);
    if (v == 10) r.abi = &kRegistryAbi10;
    if (v >= 11) r.abi = &kRegistryAbiNoV2;
  }
  if (r.abi) r.object = reinterpret_cast<GetRegistryFn>(fn)();
  return r;
}

// Registers the creator when the library is loaded into a process that has TensorRT.
__attribute__((constructor)) void register_on_load() {
  try {
    const Registry registry = process_registry();
    if (!registry) return;  // no TensorRT (yet): loadLibrary/getCreators is the way in
    if (registry.has_creator()) return;
    if (registry.register_creator(&creator())) {
      g_auto_registry_abi = registry.abi;
      g_auto_registry = registry.object;
    }
  } catch (...) {
    // Nothing may escape a load-time constructor; TensorRT then finds us through getCreators.
  }
}

}  // namespace

void report_error(const std::string& message, nvinfer1::IErrorRecorder* recorder) noexcept {
  try {
    bool reported = false;
    if (nvinfer1::ILoggerFinder* finder = g_logger_finder.load()) {
      if (nvinfer1::ILogger* logger = finder->findLogger()) {
        logger->log(nvinfer1::ILogger::Severity::kERROR, message.c_str());
        reported = true;
      }
    }
    if (!recorder) {
      if (const Registry registry = process_registry()) recorder = registry.error_recorder();
    }
    if (recorder) {
      recorder->reportError(nvinfer1::ErrorCode::kINVALID_ARGUMENT, message.c_str());
      reported = true;
    }
    if (!reported) {
      if (auto fn = reinterpret_cast<GetLoggerFn>(find_tensorrt_symbol("getLogger"))) {
        if (nvinfer1::ILogger* logger = fn()) {
          logger->log(nvinfer1::ILogger::Severity::kERROR, message.c_str());
          reported = true;
        }
      }
    }
    if (!reported) std::fprintf(stderr, "%s\n", message.c_str());
  } catch (...) {
  }
}

}  // namespace trt
}  // namespace spattn

extern "C" {

// Called by IPluginRegistry::loadLibrary before getCreators.
__attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
  spattn::trt::g_logger_finder = finder;
}

// The plugin creators of this library, for IPluginRegistry::loadLibrary (trtexec --dynamicPlugins).
__attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(
    int32_t& nb_creators) {
  static nvinfer1::IPluginCreatorInterface* const creators[] = {&spattn::trt::creator()};
  // loadLibrary refuses a library whose creator is already registered; if the load-time
  // constructor registered ours, hand it over to the caller instead.
  spattn::trt::Registry registry;
  registry.object = spattn::trt::g_auto_registry.exchange(nullptr);
  registry.abi = spattn::trt::g_auto_registry_abi.load();
  if (registry) registry.deregister_creator(&spattn::trt::creator());
  nb_creators = 1;
  return creators;
}

}  // extern "C"
