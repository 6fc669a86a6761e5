"""Device time per kernel (torch.profiler) of the direct entry, for the library in
SPATTN_KERNELS_LIB: separates kernel time from host time per call.

    SPATTN_KERNELS_LIB=path/libspattn_kernels.so python3 benchmarks/kernel_times.py TAG
"""

import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from spattn.capi import CudaRunner

pats = {
    "sliding256": dict(window_left=256, window_right=256),
    "sliding256_global64": dict(window_left=256, window_right=256, num_global=64),
    "bigbird": dict(block_size=64, window_left=64, window_right=64, num_global=64, num_random=2),
}
tag = sys.argv[1]
kern = CudaRunner()
for D in (64, 128):
    for name, a in pats.items():
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (
            torch.randn(1, 16, 16384, D, device="cuda", generator=g, dtype=torch.bfloat16)
            for _ in range(3)
        )
        out = torch.empty_like(q)
        f = kern.prepare(q, k, v, out, a)
        for _ in range(5):
            f()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(20):
            f()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) / 20 * 1e3
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                f()
            torch.cuda.synchronize()
        ks = {
            e.key[:40]: e.device_time_total / e.count / 1e3
            for e in prof.key_averages()
            if e.device_time_total > 0
        }
        print(
            f"{tag} D={D} {name:22s} wall/call {wall:.3f} ms | "
            + " | ".join(f"{k} {v:.3f}" for k, v in ks.items()),
            flush=True,
        )
