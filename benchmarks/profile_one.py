"""GPU: one pattern through the direct entry, for profilers (ncu) or a per-kernel time breakdown.

Runs the op on B=1, 16 heads, bf16 inputs three times (the run that ncu's --launch-skip 1
profiles follows a warm-up), or with --breakdown prints each kernel's device time (the counting,
scheduling and combine kernels of the split-KV schedule beside the attention kernel), median of
10 calls, from torch.profiler.

    PAT=sliding L=16384 D=128 python benchmarks/profile_one.py [--breakdown]
    (PAT: sliding, global, bigbird, dense; SPATTN_CUDA_KERNEL=ws|wgmma|mma picks a kernel)
"""

from __future__ import annotations

import os
import sys

import torch

from spattn.bench import require_cuda
from spattn.capi import CudaRunner

PATTERNS = {
    "sliding": dict(window_left=256, window_right=256),
    "global": dict(window_left=256, window_right=256, num_global=64),
    "bigbird": dict(block_size=64, window_left=64, window_right=64, num_global=64, num_random=2),
    "dense": dict(),
}


def main() -> None:
    require_cuda("profile_one.py")
    length = int(os.environ.get("L", 16384))
    d = int(os.environ.get("D", 128))
    pat = os.environ.get("PAT", "sliding")
    q = torch.randn(1, 16, length, d, device="cuda", dtype=torch.bfloat16)
    k, v, out = torch.randn_like(q), torch.randn_like(q), torch.empty_like(q)
    fn = CudaRunner().prepare(q, k, v, out, PATTERNS[pat])
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    if "--breakdown" not in sys.argv:
        return
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            fn()
        torch.cuda.synchronize()
    parts = [
        f"{e.key[:60]}: {e.device_time_total / 10 / 1000:.3f} ms"
        for e in prof.key_averages()
        if e.device_time_total > 0
    ]
    print(f"{pat} L={length} D={d}: " + "; ".join(parts))


if __name__ == "__main__":
    main()
