"""Speed of the CUDA kernel (direct entry) against PyTorch FlexAttention and dense SDPA.

Question answered: how fast is spattn's CUDA kernel on the common sparse patterns, next to
FlexAttention with the same mask (block mask at BLOCK_SIZE=128) and dense cuDNN /
FlashAttention-2 SDPA? With --ort, in the same run: the float16 rows also through ONNX
Runtime's CUDA EP (I/O binding on the same device tensors) and, dense, ONNX Runtime's own
com.microsoft::MultiHeadAttention (needs onnxruntime-gpu; bench_ort_cuda.py has the longer
ONNX Runtime study: CUDA graphs, fixed cost per Run). B=1, 16 query heads (GQA pattern: 32 query
heads over 8 KV heads). Effective TFLOP/s count only allowed (query, key) pairs:
4 * B * H * D * pairs / time.

    python3 benchmarks/bench_cuda.py --L 4096 16384 --out benchmarks/results
    python3 benchmarks/bench_cuda.py --L 16384 --D 128 --flex-fp16 --ort --tag h100_L16K_D128

Writes cuda_<tag>.json (with the command line and the device name) and cuda_<tag>.png; the tags
of the committed runs name the device, the shape and the patterns (benchmarks/results/README.md).
`time_callable` times any no-argument callable and is meant to be reused (e.g. for an ONNX
Runtime session run).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import torch

from spattn import reference
from spattn.attributes import PATTERN_ATTRIBUTES
from spattn.bench import require_cuda
from spattn.capi import CudaRunner


def time_callable(fn, warmup: int = 5, iters: int = 20, min_time_s: float = 0.0) -> dict:
    """Median time of `fn()` in milliseconds, measured with CUDA events around each call.

    `fn` launches work on the current CUDA stream. Warm-up calls come first (compilation,
    autotuning, caches); then at least `iters` timed calls (more while `min_time_s` is not spent).
    """
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    t0 = time.perf_counter()
    while len(times) < iters or time.perf_counter() - t0 < min_time_s:
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
        if len(times) >= 10 * iters:
            break
    return {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "n": len(times),
    }


# ----------------------------------------------------------------------------------------------
# Patterns: our attributes, the FlexAttention mask_mod, and row intervals for exact pair counts.


class Pattern:
    """A benchmarked pattern: the op's attributes (a dict; absent ones take the spec defaults)."""

    def __init__(self, name, attrs, hq=16, hkv=16, head_dependent=False):
        self.name, self.attrs, self.hq, self.hkv = name, attrs, hq, hkv
        self.head_dependent = head_dependent
        self._pairs = {}  # L -> pair count (the same for every D and dtype)

    def mask_mod(self, L, device):
        """The op's mask as a FlexAttention mask_mod: spattn.reference's rule itself."""
        rule = reference.MaskRule(self.attrs, L, L, self.hq, device=device)

        def mod(b, h, q, kv):
            return rule.allowed(q, kv, h)

        return mod

    def pair_count(self, L, device):
        """Exact allowed pairs summed over the query heads: the oracle's rule evaluated on the
        device, a band of query rows at a time (about 2^28 pairs per step)."""
        if L in self._pairs:
            return self._pairs[L]
        rule = reference.MaskRule(self.attrs, L, L, self.hq, device=device)
        heads = self.hq if rule.head_dependent else 1
        h = torch.arange(heads, device=device).view(-1, 1, 1)
        j = torch.arange(L, device=device).view(1, 1, -1)
        rows = max(1, (1 << 28) // (heads * L))
        total = torch.zeros((), dtype=torch.int64, device=device)
        for i0 in range(0, L, rows):
            i = torch.arange(i0, min(L, i0 + rows), device=device).view(1, -1, 1)
            total += rule.allowed(i, j, h).sum()
        self._pairs[L] = int(total) * (self.hq // heads)
        return self._pairs[L]


def patterns():
    return {
        "sliding256": Pattern("sliding ±256", dict(window_left=256, window_right=256)),
        "sliding256_global64": Pattern(
            "±256 + 64 global", dict(window_left=256, window_right=256, num_global=64)
        ),
        "bigbird": Pattern(
            "BigBird-like (bs 64, ±64, 64 global, 2 random)",
            dict(block_size=64, window_left=64, window_right=64, num_global=64, num_random=2),
            head_dependent=True,
        ),
        "causal_window4096_gqa": Pattern(
            "causal window 4096, GQA 32:8", dict(causal=1, window_left=4095), hq=32, hkv=8
        ),
        "dense": Pattern("dense", dict()),
    }


# ----------------------------------------------------------------------------------------------


def bench_one(pat: Pattern, L, D, dtype, args, kernel, results):
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    q = torch.randn(1, pat.hq, L, D, device=dev, dtype=dtype, generator=g)
    k = torch.randn(1, pat.hkv, L, D, device=dev, dtype=dtype, generator=g)
    v = torch.randn(1, pat.hkv, L, D, device=dev, dtype=dtype, generator=g)
    pairs = pat.pair_count(L, dev)  # summed over the query heads
    flops = 4.0 * D * pairs
    row = {
        "pattern": pat.name,
        "key": None,
        "L": L,
        "D": D,
        "dtype": str(dtype).replace("torch.", ""),
        "heads_q": pat.hq,
        "heads_kv": pat.hkv,
        "pairs_per_head": pairs / pat.hq,
        "density": pairs / (pat.hq * L * L),
        "impl": {},
    }
    dense = pat.name == "dense"
    iters = args.iters

    def record(name, fn):
        try:
            t = time_callable(fn, warmup=args.warmup, iters=iters)
            t["tflops"] = flops / (t["median_ms"] * 1e-3) / 1e12
            row["impl"][name] = t
        except Exception as ex:  # a backend that cannot run this shape is reported, not fatal
            row["impl"][name] = {"error": f"{type(ex).__name__}: {str(ex)[:300]}"}
        torch.cuda.empty_cache()

    out = torch.empty(1, pat.hq, L, D, device=dev, dtype=dtype)
    direct = kernel.prepare(q, k, v, out, pat.attrs)
    record("spattn", direct)
    row["_direct_call"] = direct
    for other in args.also_kernels if dtype != torch.float32 else []:
        # The other kernels of the 16-bit types, forced with SPATTN_CUDA_KERNEL: the one-warpgroup
        # Hopper kernel and the portable mma.sync kernel (what runs where sm_90a is not built).
        os.environ["SPATTN_CUDA_KERNEL"] = other
        try:
            record(f"spattn_{other}", kernel.prepare(q, k, v, out, pat.attrs))
        finally:
            del os.environ["SPATTN_CUDA_KERNEL"]

    if args.flex and (dtype == torch.bfloat16 or args.flex_fp16):
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        flex = args._flex_compiled
        if flex is None:
            # Static shapes: FlexAttention's lowering fails on the dynamic shapes that dynamo picks
            # after a few sizes; each size compiles once instead.
            flex = args._flex_compiled = torch.compile(flex_attention, dynamic=False)
        if dense:
            bm = None
        else:
            bm = create_block_mask(
                pat.mask_mod(L, dev),
                B=None,
                H=pat.hq if pat.head_dependent else None,
                Q_LEN=L,
                KV_LEN=L,
                device=dev,
                BLOCK_SIZE=128,
                _compile=True,
            )
        gqa = pat.hq != pat.hkv
        record("flex", lambda: flex(q, k, v, block_mask=bm, enable_gqa=gqa))
        del bm

    if args.ort and dtype == torch.float16:
        ort_columns(pat, q, k, v, out, row, record, args)

    if dense and args.sdpa:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        from torch.nn.functional import scaled_dot_product_attention as sdpa

        for name, backend in (
            ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION),
            ("sdpa_flash2", SDPBackend.FLASH_ATTENTION),
        ):

            def fn(backend=backend):
                with sdpa_kernel(backend):
                    return sdpa(q, k, v)

            record(name, fn)

    row.pop("_direct_call")
    for name, t in row["impl"].items():
        if "median_ms" in t and "tflops" not in t:
            t["tflops"] = flops / (t["median_ms"] * 1e-3) / 1e12
        # Streamed timings compare with the direct launch streamed, the others with it per call.
        base = "spattn_streamed" if name.endswith("_streamed") else "spattn"
        ours = row["impl"][base].get("median_ms")
        if name != base and ours and "median_ms" in t:
            t["spattn_speedup"] = t["median_ms"] / ours
    results.append(row)
    cells = []
    for name, t in row["impl"].items():
        if "median_ms" in t:
            tf = f" {t['tflops']:.0f} TF/s" if "tflops" in t else ""
            cells.append(f"{name} {t['median_ms']:.3f} ms{tf}")
        else:
            cells.append(f"{name} ERR")
    print(f"{pat.name:48s} L={L:6d} D={D:3d} {row['dtype']:8s} | " + " | ".join(cells), flush=True)


# The op's attributes as ONNX node attributes (the pattern's own, from the one table).
_ONNX_ATTRS = tuple(a.name for a in PATTERN_ATTRIBUTES)


def ort_columns(pat: Pattern, q, k, v, out, row, record, args):
    """Float16 rows with --ort: the same call through ONNX Runtime's CUDA EP (a one-node model,
    I/O binding on the same device tensors, torch's stream), per synchronized call and streamed,
    beside the direct launch streamed; on the dense pattern, ONNX Runtime's own
    com.microsoft::MultiHeadAttention. The ORT output must equal the direct launch's."""
    import bench_ort_cuda as ob  # imports onnxruntime: only with --ort

    attrs = {n: pat.attrs[n] for n in _ONNX_ATTRS if n in pat.attrs}
    D = q.shape[3]
    direct = row["_direct_call"]
    direct()
    torch.cuda.synchronize()
    ref = out.clone()
    got = torch.full_like(out, float("nan"))
    sess = ob.session(ob.sparse_model(D, attrs, pat.hq, pat.hkv), True)
    feeds = {"query": q, "key": k, "value": v}
    record("spattn_ort", ob.bound(sess, feeds, got))
    row["ort_output_equals_direct"] = bool(torch.equal(got, ref))
    calls = args.stream_calls
    row["impl"]["spattn_streamed"] = {"median_ms": ob.streamed_time(direct, calls)}
    row["impl"]["spattn_ort_streamed"] = {
        "median_ms": ob.streamed_time(ob.bound(sess, feeds, got, sync=False), calls)
    }
    row["ort_over_direct"] = (
        row["impl"]["spattn_ort"].get("median_ms", float("nan"))
        / (row["impl"]["spattn"]["median_ms"])
    )
    row["ort_over_direct_streamed"] = (
        row["impl"]["spattn_ort_streamed"]["median_ms"]
        / row["impl"]["spattn_streamed"]["median_ms"]
    )
    del sess
    if pat.name == "dense" and pat.hq == pat.hkv:
        L = q.shape[2]
        flat = [x.transpose(1, 2).reshape(1, L, pat.hq * D).contiguous() for x in (q, k, v)]
        dout = torch.empty_like(flat[0])
        mha = ob.session(ob.dense_model(D), False)
        feeds = dict(zip(("query", "key", "value"), flat, strict=True))
        record("ort_mha", ob.bound(mha, feeds, dout))
        del mha, flat, dout


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({(r["pattern"], r["D"], r["dtype"]) for r in results})
    if len({r["L"] for r in results}) == 1:
        return plot_bars(results, keys, path)
    bf = [kk for kk in keys if kk[2] == "bfloat16"] or keys
    n = len(bf)
    cols = 2
    rows_ = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(12, 3.2 * rows_), squeeze=False)
    for ax, (pname, D, dt) in zip(axes.flat, bf, strict=False):
        sel = sorted(
            (r for r in results if (r["pattern"], r["D"], r["dtype"]) == (pname, D, dt)),
            key=lambda r: r["L"],
        )
        impls = sorted({n for r in sel for n in r["impl"]})
        for name in impls:
            xs = [r["L"] for r in sel if "tflops" in r["impl"].get(name, {})]
            ys = [r["impl"][name]["tflops"] for r in sel if "tflops" in r["impl"].get(name, {})]
            if xs:
                ax.plot(xs, ys, marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_title(f"{pname}, D={D}, {dt}", fontsize=9)
        ax.set_xlabel("L")
        ax.set_ylabel("effective TFLOP/s")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_bars(results, keys, path):
    """One sequence length: a panel per (pattern, D, dtype), a bar per implementation."""
    import matplotlib.pyplot as plt

    cols = 2
    rows_ = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(12, 3.2 * rows_), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        row = next(r for r in results if (r["pattern"], r["D"], r["dtype"]) == key)
        names = [n for n, t in row["impl"].items() if "tflops" in t]
        ax.barh(names, [row["impl"][n]["tflops"] for n in names])
        ax.set_title(f"{key[0]}, L={row['L']}, D={key[1]}, {key[2]}", fontsize=9)
        ax.set_xlabel("effective TFLOP/s")
        ax.tick_params(labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--L", type=int, nargs="+", default=[4096, 16384, 65536, 131072])
    ap.add_argument("--D", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16", "float16"])
    ap.add_argument("--patterns", nargs="+", default=list(patterns()))
    ap.add_argument(
        "--skip-dense-above",
        type=int,
        default=1 << 30,
        help="skip the dense pattern for L above this (it dominates the run time)",
    )
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--no-flex", dest="flex", action="store_false")
    ap.add_argument("--flex-fp16", action="store_true", help="also time FlexAttention in float16")
    ap.add_argument("--no-sdpa", dest="sdpa", action="store_false")
    ap.add_argument(
        "--also-kernels",
        nargs="*",
        default=[],
        choices=["ws", "wgmma", "mma"],
        help="also time these kernels of the 16-bit types (SPATTN_CUDA_KERNEL=...): "
        "ws, the warp-specialized Hopper kernel; wgmma, the one-warpgroup Hopper "
        "kernel; mma, the portable mma.sync kernel",
    )
    ap.add_argument("--also-mma", action="store_true", help="same as --also-kernels mma")
    ap.add_argument(
        "--ort",
        action="store_true",
        help="float16 rows: also our op through ONNX Runtime's CUDA EP (I/O binding), "
        "per call and streamed, and ONNX Runtime's dense MultiHeadAttention",
    )
    ap.add_argument(
        "--stream-calls",
        type=int,
        default=50,
        help="calls per streamed run with --ort (bench_ort_cuda.streamed_time)",
    )
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--tag", default="bench")
    args = ap.parse_args(argv)
    require_cuda("bench_cuda.py")
    if args.also_mma and "mma" not in args.also_kernels:
        args.also_kernels.append("mma")
    args._flex_compiled = None
    if args.ort:
        try:
            import onnxruntime
        except ImportError:
            ap.error("--ort needs onnxruntime-gpu (pip install onnxruntime-gpu)")
        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            ap.error(
                "--ort needs onnxruntime-gpu: this onnxruntime has no CUDAExecutionProvider "
                f"(available: {', '.join(onnxruntime.get_available_providers())})"
            )
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = 1024
    if hasattr(torch._dynamo.config, "recompile_limit"):
        torch._dynamo.config.recompile_limit = 1024
    kernel = CudaRunner()
    pats = patterns()
    results = []
    for L in args.L:
        for D in args.D:
            for dt in args.dtypes:
                for key in args.patterns:
                    if key == "dense" and L > args.skip_dense_above:
                        continue
                    bench_one(pats[key], L, D, getattr(torch, dt), args, kernel, results)
                    results[-1]["key"] = key
    os.makedirs(args.out, exist_ok=True)
    meta = {
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "batch": 1,
        "note": "effective TFLOP/s = 4 * B * Hq * D * allowed pairs / median time",
    }
    if args.ort:
        import onnxruntime

        meta["onnxruntime"] = onnxruntime.__version__
        meta["ort_note"] = (
            "spattn_ort: our op through ONNX Runtime's CUDA EP, each Run "
            "synchronized; *_streamed: --stream-calls calls back to back, wall "
            "time per call; ort_mha: com.microsoft::MultiHeadAttention, dense"
        )
    path = os.path.join(args.out, f"cuda_{args.tag}.json")
    with open(path, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    try:
        plot(results, os.path.join(args.out, f"cuda_{args.tag}.png"))
    except Exception as ex:
        print("plot failed:", ex)
    print("wrote", path)


if __name__ == "__main__":
    main()
