// ThreadSanitizer annotations for ONNX Runtime's intra-op thread pool. The pool is not built with
// TSan, so the order it guarantees (KernelContext_ParallelFor starts every task after the call
// begins and returns after the last task ends) is invisible to TSan, which then reports every
// handoff of our data to a pool thread as a race. Releasing before the call and in each task's
// end, and acquiring in each task's start and after the call, states that order; TSan then checks
// our own code against it. Empty in every other build.
#pragma once

#if defined(__SANITIZE_THREAD__)
#define SPATTN_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SPATTN_TSAN 1
#endif
#endif

#if defined(SPATTN_TSAN)
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#define SPATTN_TSAN_ACQUIRE(addr) __tsan_acquire(addr)
#define SPATTN_TSAN_RELEASE(addr) __tsan_release(addr)
#else
#define SPATTN_TSAN_ACQUIRE(addr) ((void)(addr))
#define SPATTN_TSAN_RELEASE(addr) ((void)(addr))
#endif
