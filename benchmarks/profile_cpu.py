"""CPU: the band ±256 + 64 global tokens through the direct C API, for a profiler.

Question answered: where does the CPU kernel's time go on the benchmark's band (L = 4K, 8 heads,
D = 64, float32; benchmarks/bench_cpu.py times the same shape through ONNX Runtime)? Runs the
call N times after one warm-up on T threads and prints the median; run it under perf:

    T=1 N=60 perf record -o cpu.data -g python3 benchmarks/profile_cpu.py
    perf report -i cpu.data --no-children --sort symbol --stdio

SPATTN_KERNELS_LIB picks the library (spattn.capi.find_library); L, H and D override the shape.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "exporter"))
from spattn import capi  # noqa: E402


def main() -> None:
    length, heads, d = (int(os.environ.get(k, v)) for k, v in (("L", 4096), ("H", 8), ("D", 64)))
    threads, calls = int(os.environ.get("T", "2")), int(os.environ.get("N", "20"))
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, heads, length, d), dtype=np.float32) for _ in range(3))
    attrs = dict(window_left=256, window_right=256, num_global=64)
    capi.cpu_forward(q, k, v, num_threads=threads, **attrs)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        capi.cpu_forward(q, k, v, num_threads=threads, **attrs)
        times.append(time.perf_counter() - t0)
    times.sort()
    print(
        f"{capi.find_library()}: median {times[len(times) // 2] * 1e3:.2f} ms, "
        f"min {times[0] * 1e3:.2f} ms over {calls} calls, {threads} thread(s)"
    )


if __name__ == "__main__":
    main()
