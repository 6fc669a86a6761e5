"""Memory stays flat over many runs and many sessions (real ONNX Runtime + our library, CPU EP).

The resident set size (/proc/self/statm, with freed C-heap pages handed back first) is read after
a warm-up (ONNX Runtime's arena, the kernel's per-thread scratch and Python's allocator reach their
steady size there) and again after
N more iterations; the growth must stay under 8 MiB. The bound is meaningful: each test also
retains the objects of a leak of the kind it looks for (the output of every run, every session)
over the same N and checks that the probe then sees more than the bound, so a leak of one output
per run or one session per create/destroy cannot pass.

CI sizes: 1,000 runs and 200 sessions. `make soak` (SPATTN_SOAK_FULL=1): 10,000 runs and 1,000
sessions.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os

import numpy as np
import pytest
from stress_models import PATTERNS, feeds, model, rss_bytes, session

from spattn.attributes import INPUTS

FULL = os.environ.get("SPATTN_SOAK_FULL") == "1"
RUNS = 10_000 if FULL else 1_000
SESSIONS = 1_000 if FULL else 200
BOUND = 8 << 20  # bytes
# Small shapes, one per pattern feature; the output of one run is 1 x 4 x 64 x 32 float32 = 32 KiB.
SHAPES = [(1, 4, 2, 64, 64, 32), (1, 4, 2, 64, 96, 32), (1, 4, 4, 64, 40, 32)]
ALL_INPUTS = tuple(i.name for i in INPUTS if not i.required)  # every optional input
ATTRS = {"window_left": 16, "window_right": 8, "num_random": 1, "block_size": 16, "seed": 3}


def _trimmer():
    """glibc's malloc_trim, or None where the C library has none."""
    name = ctypes.util.find_library("c")
    fn = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    if fn is not None:
        fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


_MALLOC_TRIM = _trimmer()


def _settle() -> int:
    """RSS of what is live. Blocks freed earlier in this process (by other tests, by the loop
    before) stay resident in the C heap and would absorb a later leak unseen, so they are handed
    back to the system first."""
    gc.collect()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
    return rss_bytes()


def test_runs_rss_flat():
    sess = session(model("float32", ATTRS, ALL_INPUTS), threads=2)
    inputs = [feeds("float32", ALL_INPUTS, s, seed=i) for i, s in enumerate(SHAPES)]
    expected = [sess.run(None, f)[0] for f in inputs]
    out_bytes = expected[0].nbytes
    # A leak of one output per run must exceed the bound over RUNS runs.
    assert out_bytes * RUNS > 2 * BOUND
    for i in range(300):  # warm-up: every shape, many times
        sess.run(None, inputs[i % len(inputs)])
    before = _settle()
    for i in range(RUNS):
        j = i % len(inputs)
        got = sess.run(None, inputs[j])[0]
        if i % 97 == 0:
            assert got.tobytes() == expected[j].tobytes(), f"run {i}: the output changed"
    after = _settle()
    assert after - before < BOUND, (
        f"RSS grew {(after - before) / 2**20:.1f} MiB over {RUNS} runs (bound {BOUND >> 20} MiB)"
    )

    # Control: the same runs, each output kept alive (a leak of the output), must be seen.
    kept = []
    base = _settle()
    for i in range(RUNS):
        kept.append(sess.run(None, inputs[i % len(inputs)])[0])
    leaked = _settle() - base
    assert leaked > BOUND, f"the probe saw only {leaked / 2**20:.1f} MiB of a retained-output leak"


def test_sessions_rss_flat():
    name = "padding"
    attrs, present = PATTERNS[name]
    m = model("float16", {**attrs, "num_global": 2}, (*present, "sinks"))
    f = feeds("float16", (*present, "sinks"), (1, 4, 2, 48, 64, 32), seed=5)
    first = session(m).run(None, f)[0]

    def one() -> object:
        s = session(m)
        assert s.run(None, f)[0].tobytes() == first.tobytes()
        return s

    for _ in range(30):  # warm-up
        one()
    before = _settle()
    for _ in range(SESSIONS):
        one()
    after = _settle()
    assert after - before < BOUND, (
        f"RSS grew {(after - before) / 2**20:.1f} MiB over {SESSIONS} sessions created and "
        f"destroyed (bound {BOUND >> 20} MiB)"
    )

    # Control: the same number of sessions kept alive (a leaked session) must be seen.
    kept = []
    base = _settle()
    for _ in range(SESSIONS):
        kept.append(one())
    leaked = _settle() - base
    assert leaked > BOUND, (
        f"the probe saw only {leaked / 2**20:.1f} MiB of {SESSIONS} live sessions"
    )


def test_rss_probe_reads_this_process():
    """The probe follows an allocation of this process touched page by page."""
    before = rss_bytes()
    block = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB, every page written
    grown = rss_bytes() - before
    assert block[-1] == 1
    assert 48 << 20 < grown < 96 << 20, f"64 MiB allocated, RSS grew {grown / 2**20:.1f} MiB"


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def _cuda_reason() -> str | None:
    import onnxruntime as ort

    from spattn import capi

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu is not installed)"
    if not capi.has_cuda():
        return "the spattn library was built without CUDA kernels"
    try:
        import torch
    except ImportError:
        return "torch reads the device's memory here, and it is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device visible to torch"
    return None


def _device_used() -> int:
    """Bytes in use on the device: ONNX Runtime's arena, our workspace pool, the contexts."""
    import torch

    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    return total - free


CUDA_BOUND = 32 << 20  # bytes; the arena and the workspace pool grow in blocks of MiBs
CUDA_SHAPES = [(1, 4, 2, 64, 64, 64), (1, 4, 2, 64, 96, 64), (1, 4, 4, 64, 40, 64)]


@pytest.mark.gpu
@pytest.mark.skipif(_cuda_reason() is not None, reason=str(_cuda_reason()))
def test_cuda_device_memory_probe_sees_a_leak():
    """The control of the test below: the probe sees 64 MiB kept on the device, so a leak of
    that order in the runs or sessions could not pass unseen."""
    import torch

    before = _device_used()
    kept = torch.ones(64 << 20, dtype=torch.uint8, device="cuda")
    grown = _device_used() - before
    assert int(kept[-1]) == 1
    assert grown >= 48 << 20, f"64 MiB kept on the device, the probe saw {grown / 2**20:.1f} MiB"
    assert grown > CUDA_BOUND, "the bound would let a leak of this size through"


@pytest.mark.gpu
@pytest.mark.skipif(_cuda_reason() is not None, reason=str(_cuda_reason()))
def test_cuda_device_memory_flat():
    """The CUDA EP: device memory flat over RUNS runs (ONNX Runtime's arena and the workspace
    pool reach their size in the warm-up and keep it) and over SESSIONS // 4 sessions created,
    run and destroyed; the outputs stay those of the first runs."""
    m = model("float16", ATTRS, ALL_INPUTS)
    providers = ["CUDAExecutionProvider"]
    inputs = [feeds("float16", ALL_INPUTS, s, seed=i) for i, s in enumerate(CUDA_SHAPES)]
    sess = session(m, threads=2, providers=providers)
    expected = [sess.run(None, f)[0] for f in inputs]
    for i in range(300):
        sess.run(None, inputs[i % len(inputs)])
    before = _device_used()
    for i in range(RUNS):
        j = i % len(inputs)
        got = sess.run(None, inputs[j])[0]
        if i % 97 == 0:
            assert got.tobytes() == expected[j].tobytes(), f"run {i}: the output changed"
    after = _device_used()
    assert after - before < CUDA_BOUND, (
        f"device memory grew {(after - before) / 2**20:.1f} MiB over {RUNS} runs"
    )
    del sess
    gc.collect()

    def one_session() -> None:
        s = session(m, threads=1, providers=providers)
        assert s.run(None, inputs[0])[0].tobytes() == expected[0].tobytes()
        del s
        gc.collect()

    for _ in range(5):
        one_session()
    before = _device_used()
    for _ in range(SESSIONS // 4):
        one_session()
    after = _device_used()
    assert after - before < CUDA_BOUND, (
        f"device memory grew {(after - before) / 2**20:.1f} MiB over {SESSIONS // 4} sessions"
    )
