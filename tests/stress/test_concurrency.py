"""One InferenceSession run from 8 threads at once gives, bit for bit, what one thread gives.

Real ONNX Runtime with our library: the CPU execution provider for every pattern family (global,
random blocks, block_indices, padding with key_starts, sinks with softcap) in float32 and float16,
each thread with its own inputs and shapes, so a kernel state shared between concurrent calls
(scratch buffers, tile caches, call ids) shows as a wrong output. The same through the direct C
API, whose calls start threads of their own. A CUDA EP variant runs where onnxruntime-gpu and a
CUDA build of the library are present. scripts/sanitize.sh runs this file under ThreadSanitizer
and under AddressSanitizer + UBSan.
"""

from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort
import pytest
import torch
from stress_models import PATTERNS, feeds, model, session

from spattn import capi
from spattn.reference import reference_attention
from spattn.tolerances import assert_close

THREADS = 8
ROUNDS = 4
# (B, Hq, Hkv, Lq, Lk, D): a different shape per thread, Lq != Lk and GQA among them.
SHAPES = [
    (1, 4, 2, 64, 64, 32),
    (2, 4, 1, 48, 80, 32),
    (1, 2, 2, 100, 70, 64),
    (2, 4, 4, 33, 33, 128),
]


def _in_threads(fn, n: int = THREADS) -> list:
    """fn(t) in n threads started together; the results in thread order, errors re-raised."""
    results: list = [None] * n
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def body(t: int) -> None:
        try:
            barrier.wait()
            results[t] = fn(t)
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=body, args=(t,)) for t in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    return results


def _oracle(f: dict[str, np.ndarray], attrs: dict) -> np.ndarray:
    t = {n: torch.from_numpy(np.asarray(x)) for n, x in f.items()}
    q, k, v = (t[n].float() for n in ("query", "key", "value"))
    return reference_attention(
        q,
        k,
        v,
        dict(attrs),
        key_lengths=t.get("key_lengths"),
        block_indices=t.get("block_indices"),
        global_mask=t.get("global_mask"),
        key_starts=t.get("key_starts"),
        sinks=t.get("sinks"),
    ).numpy()


def _check_concurrent(dtype: str, name: str, providers) -> None:
    attrs, present = PATTERNS[name]
    m = model(dtype, attrs, present)
    inputs = [feeds(dtype, present, SHAPES[t % len(SHAPES)], seed=100 + t) for t in range(THREADS)]
    # One thread: a session with one intra-op thread, the inputs one after the other.
    single = session(m, threads=1, providers=providers)
    expected = [single.run(None, f)[0] for f in inputs]
    del single
    for t in (0, 1):  # the single-thread results are themselves right
        assert np.isfinite(expected[t]).all() and np.abs(expected[t]).max() > 0
        assert_close(expected[t], _oracle(inputs[t], attrs), dtype, f"{name} thread {t}")

    shared = session(m, threads=2, providers=providers)

    def work(t: int) -> list[np.ndarray]:
        return [shared.run(None, inputs[t])[0] for _ in range(ROUNDS)]

    for t, outs in enumerate(_in_threads(work)):
        for r, got in enumerate(outs):
            assert got.dtype == expected[t].dtype and got.shape == expected[t].shape
            assert got.tobytes() == expected[t].tobytes(), (
                f"{name} {dtype}: thread {t} round {r} differs from the single-thread result "
                f"(max |diff| {np.abs(got.astype(np.float64) - expected[t]).max()})"
            )


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_eight_threads_one_session_cpu(name, dtype):
    _check_concurrent(dtype, name, ["CPUExecutionProvider"])


def _cuda_available() -> str | None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu is not installed)"
    if not capi.has_cuda():
        return "the spattn library was built without CUDA kernels"
    return None


@pytest.mark.gpu
@pytest.mark.skipif(_cuda_available() is not None, reason=str(_cuda_available()))
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("name", ["global", "random", "block_indices", "padding"])
def test_eight_threads_one_session_cuda(name, dtype):
    _check_concurrent(dtype, name, ["CUDAExecutionProvider"])


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["float32", "float16"])
def test_eight_threads_direct_c_api(dtype):
    """capi.cpu_forward from 8 threads, each call with 2 threads of its own, equals the same
    calls made one at a time with one thread."""
    cases = []
    for t in range(THREADS):
        name = sorted(PATTERNS)[t % len(PATTERNS)]
        attrs, present = PATTERNS[name]
        f = feeds(np.dtype(dtype).name, present, SHAPES[t % len(SHAPES)], seed=200 + t)
        q, k, v = f.pop("query"), f.pop("key"), f.pop("value")
        cases.append((q, k, v, f, attrs))
    expected = [capi.cpu_forward(q, k, v, num_threads=1, **f, **a) for q, k, v, f, a in cases]
    assert all(np.abs(e).max() > 0 for e in expected)

    def work(t: int) -> list[np.ndarray]:
        q, k, v, f, a = cases[t]
        return [capi.cpu_forward(q, k, v, num_threads=2, **f, **a) for _ in range(ROUNDS)]

    for t, outs in enumerate(_in_threads(work)):
        for got in outs:
            assert got.tobytes() == expected[t].tobytes(), f"case {t} differs from one thread"
