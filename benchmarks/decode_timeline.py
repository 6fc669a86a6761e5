"""GPU: where a decode step's time goes, per kernel, inside a CUDA graph.

The decode shape of bench_hopper.py (B = 16, 32 query heads over 8 KV heads, D = 128, bf16,
cache 32K, Lq 1 and 8; causal window 4096 and full causal): 20 calls captured in one graph,
one replay under torch.profiler. Prints the step time (the replay's span / 20) and each
kernel's median device time. The combine kernel is a programmatic dependent launch: its span
starts while the attention kernel still runs, so the two overlap and the step is about the
attention kernel plus the combine's tail.

    SPATTN_KERNELS_LIB=... python3 benchmarks/decode_timeline.py
"""

from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile

from spattn.bench import require_cuda
from spattn.capi import CudaRunner

B, HQ, HK, D = 16, 32, 8, 128
CALLS = 20
PATTERNS = {"window": dict(causal=1, window_left=4096), "causal": dict(causal=1)}


def step_times(q, k, v, attrs) -> str:
    out = torch.empty_like(q)
    graph, stream = torch.cuda.CUDAGraph(), torch.cuda.Stream()
    with torch.cuda.stream(stream):
        fn = CudaRunner().prepare(q, k, v, out, attrs)  # bound to the capture stream
        fn()
        torch.cuda.synchronize()
        with torch.cuda.graph(graph, stream=stream):
            for _ in range(CALLS):
                fn()
    graph.replay()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        graph.replay()
        torch.cuda.synchronize()
    gpu = [e for e in prof.events() if e.device_type.name == "CUDA"]
    events = sorted(
        (e for e in gpu if e.time_range.elapsed_us() > 0), key=lambda e: e.time_range.start
    )
    span = (events[-1].time_range.end - events[0].time_range.start) / CALLS
    durations: dict[str, list[float]] = {}
    for e in events:
        durations.setdefault(e.name[:40], []).append(e.time_range.elapsed_us())
    parts = [f"{n}: {sorted(d)[len(d) // 2]:.1f} us x{len(d)}" for n, d in durations.items()]
    return f"per step {span:.1f} us; " + "; ".join(parts)


def main() -> None:
    require_cuda("decode_timeline.py")
    for cache, lq in [(32768, 1), (32768, 8)]:
        k = torch.randn(B, HK, cache, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        q = torch.randn(B, HQ, lq, D, device="cuda", dtype=torch.bfloat16)
        for name, attrs in PATTERNS.items():
            print(f"{name} cache={cache} lq={lq}: {step_times(q, k, v, attrs)}")


if __name__ == "__main__":
    main()
