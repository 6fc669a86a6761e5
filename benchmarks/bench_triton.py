"""Load test: a Triton Inference Server (python backend, our model.py) against ONNX Runtime
in-process, with 1, 8 and 32 concurrent clients sending a mix of sequence lengths.

Question: what does serving an exported spattn model through `spattn serve` cost or gain
against calling ONNX Runtime directly in one process, in throughput and latency, and does it
stay exact under concurrency (every answer checked against a direct run of that request)?

Steps: export a built-in sample (`spattn export`, dynamic batch and sequence axes), write a
python-backend repository (`spattn triton-repo --backend python`), start the server (`spattn
serve`'s code, loopback, free ports), then for each client count send the same fixed list of
requests (lengths cycled through --lengths in a shuffled order, batch 1) over gRPC (or HTTP)
with one client object per thread, and run the same list through one shared in-process
ONNX Runtime session from the same number of threads. Latency is per request, wall clock,
client side. Errors (exceptions, wrong shapes, answers off the expected ones) must be 0.
On the CPU the answers must be bit-identical; with the CUDA EP within spattn.tolerances.

Writes benchmarks/results/triton_<--tag>.json and .png.

    python benchmarks/bench_triton.py [--kind cpu] [--instances 2] [--threads 1]
                                      [--lengths 128 256 512 1024] [--requests 256]
                                      [--clients 1 8 32] [--protocol grpc] [--tag cpu]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from spattn import serve
from spattn.runtime import ort_session
from spattn.tolerances import tolerance

RESULTS = Path(__file__).resolve().parent / "results"


def _spattn(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "spattn.cli", *args], check=True)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _gpu_names() -> list[str]:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return out.stdout.split("\n")[:-1] if out.returncode == 0 else []
    except (OSError, subprocess.SubprocessError):
        return []


def _percentiles(lat: list[float]) -> dict[str, float]:
    a = np.asarray(lat) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99))}


class Checker:
    """Compares an answer with the expected one: exact on the CPU, tolerances on the GPU."""

    def __init__(self, exact: bool) -> None:
        self.exact = exact
        self.atol, self.rtol = tolerance("float32")
        self.max_err = 0.0
        self.lock = threading.Lock()

    def ok(self, got: np.ndarray | None, want: np.ndarray) -> bool:
        if got is None or got.shape != want.shape:
            return False
        err = float(np.max(np.abs(got - want))) if got.size else 0.0
        with self.lock:
            self.max_err = max(self.max_err, err)
        if self.exact:
            return bool(np.array_equal(got, want))
        return bool(np.all(np.abs(got - want) <= self.atol + self.rtol * np.abs(want)))


def _drive(
    n_clients: int,
    requests: list[dict[str, np.ndarray]],
    expected: list[np.ndarray],
    make_call: Any,
    checker: Checker,
    timeout_s: float,
) -> dict[str, Any]:
    """``n_clients`` threads take requests from one list in order; each thread has its own
    ``call`` (``make_call()``): ``call(feeds) -> output``."""
    lat = [0.0] * len(requests)
    errors: list[str] = []
    next_i = iter(range(len(requests)))
    lock = threading.Lock()

    def worker() -> None:
        call = make_call()
        while True:
            with lock:
                i = next(next_i, None)
            if i is None:
                return
            t0 = time.perf_counter()
            try:
                out = call(requests[i])
            except Exception as e:  # counted, reported
                out = None
                with lock:
                    errors.append(f"request {i}: {type(e).__name__}: {str(e)[:200]}")
            lat[i] = time.perf_counter() - t0
            if out is not None and not checker.ok(out, expected[i]):
                with lock:
                    errors.append(f"request {i}: answer differs from the direct run")

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(n_clients) as pool:
        futures = [pool.submit(worker) for _ in range(n_clients)]
        for f in cf.as_completed(futures, timeout=timeout_s):
            f.result()
    wall = time.perf_counter() - t0
    return {
        "clients": n_clients,
        "requests": len(requests),
        "seconds": wall,
        "throughput_rps": len(requests) / wall,
        "tokens_per_s": sum(int(r["x"].shape[1]) for r in requests) / wall,
        **_percentiles(lat),
        "errors": len(errors),
        "error_samples": errors[:5],
    }


def _grpc_call(endpoint: str, model: str, out_name: str, timeout_s: float) -> Any:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import np_to_triton_dtype

    client = grpcclient.InferenceServerClient(endpoint)

    def call(feeds: dict[str, np.ndarray]) -> np.ndarray:
        inputs = []
        for name, a in feeds.items():
            t = grpcclient.InferInput(name, list(a.shape), np_to_triton_dtype(a.dtype))
            t.set_data_from_numpy(a)
            inputs.append(t)
        res = client.infer(model, inputs, client_timeout=timeout_s)
        return res.as_numpy(out_name)

    return call


def _http_call(endpoint: str, model: str, out_name: str, timeout_s: float) -> Any:
    import tritonclient.http as httpclient
    from tritonclient.utils import np_to_triton_dtype

    client = httpclient.InferenceServerClient(
        endpoint.removeprefix("http://"), connection_timeout=timeout_s, network_timeout=timeout_s
    )

    def call(feeds: dict[str, np.ndarray]) -> np.ndarray:
        inputs = []
        for name, a in feeds.items():
            t = httpclient.InferInput(name, list(a.shape), np_to_triton_dtype(a.dtype))
            t.set_data_from_numpy(a, binary_data=True)
            inputs.append(t)
        res = client.infer(model, inputs, timeout=int(timeout_s * 1e6))
        return res.as_numpy(out_name)

    return call


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sample", default="longformer_encoder")
    p.add_argument(
        "-p",
        "--param",
        action="append",
        default=None,
        help="factory parameter KEY=VALUE (repeatable); default d_model=64 nhead=4 "
        "num_layers=2 attention_window=32",
    )
    p.add_argument("--lengths", type=int, nargs="+", default=[128, 256, 512, 1024])
    p.add_argument("--requests", type=int, default=256, help="requests per client count")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--kind", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--instances", type=int, default=2, help="per GPU with --kind gpu")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per instance")
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--queue-delay-us", type=int, default=2000)
    p.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--server-arg", action="append", default=[], help="extra tritonserver arg")
    p.add_argument("--tag", default=None, help="results name: triton_<tag>.json")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    tag = args.tag or args.kind
    params = args.param or ["d_model=64", "nhead=4", "num_layers=2", "attention_window=32"]

    work = Path(tempfile.mkdtemp(prefix="spattn_bench_triton_"))
    model = work / "model.onnx"
    export = ["export", args.sample, "-o", str(model), "--no-validate", "-q"]
    for kv in params:
        export += ["-p", kv]
    _spattn(*export)
    repo = work / "repo"
    _spattn(
        "triton-repo", str(model), "-o", str(repo), "--name", "m", "--backend", "python",
        "--kind", args.kind, "--instances", str(args.instances), "--threads", str(args.threads),
        "--max-batch-size", str(args.max_batch_size),
        "--max-queue-delay-us", str(args.queue_delay_us), "-q",
    )  # fmt: skip

    providers: list[Any] = ["CPUExecutionProvider"]
    if args.kind == "gpu":
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    threads = args.threads * args.instances if args.kind == "cpu" else None
    sess = ort_session(str(model), providers=providers, intra_op_threads=threads)
    in_specs = sess.get_inputs()
    out_name = sess.get_outputs()[0].name
    width = int(in_specs[0].shape[-1])
    rng = np.random.default_rng(args.seed)
    lengths = [args.lengths[i % len(args.lengths)] for i in range(args.requests)]
    rng.shuffle(lengths)
    requests = []
    for n in lengths:
        feeds = {"x": rng.standard_normal((1, n, width), dtype=np.float32)}
        if any(i.name == "key_lengths" for i in in_specs):
            feeds["key_lengths"] = np.array([n], np.int32)
        requests.append(feeds)
    # The expected answers: one direct run per request, alone.
    expected = [sess.run([out_name], f)[0] for f in requests]
    checker = Checker(exact=args.kind == "cpu")

    def wire(f: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: (v.reshape(-1, 1) if k == "key_lengths" else v) for k, v in f.items()}

    wired = [wire(f) for f in requests]
    http, grpc, metrics = sorted(serve.free_port() for _ in range(3))
    while len({http, grpc, metrics}) < 3:
        http, grpc, metrics = sorted(serve.free_port() for _ in range(3))
    log = work / "server.log"
    rows = []
    with serve.start(
        repo,
        http_port=http,
        grpc_port=grpc,
        metrics_port=metrics,
        log=str(log),
        ready_timeout_s=600,
        extra_args=args.server_arg,
    ) as server:
        endpoint = server.endpoints[args.protocol]
        maker = _grpc_call if args.protocol == "grpc" else _http_call

        def make_server_call() -> Any:
            return maker(endpoint, "m", out_name, args.timeout)

        # Warm-up: every length once through the server and in process.
        warm = make_server_call()
        for n in sorted(set(lengths)):
            i = lengths.index(n)
            warm(wired[i])
        for c in args.clients:
            stats0 = _stats(server)
            r = _drive(c, wired, expected, make_server_call, checker, args.timeout * 50)
            stats1 = _stats(server)
            r["target"] = f"triton-{args.protocol}"
            r["server_executions"] = stats1[0] - stats0[0]
            r["server_inferences"] = stats1[1] - stats0[1]
            rows.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "error_samples"}), flush=True)

    def make_direct_call() -> Any:
        return lambda f: sess.run([out_name], f)[0]

    for c in args.clients:
        r = _drive(c, requests, expected, make_direct_call, checker, args.timeout * 50)
        r["target"] = "onnxruntime-in-process"
        rows.append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "error_samples"}), flush=True)

    result = {
        "question": "Triton (python backend, spattn model.py) vs ONNX Runtime in-process: "
        f"{args.sample} {' '.join(params)}, float32, lengths {args.lengths} mixed, batch 1 per "
        f"request, {args.requests} requests per client count",
        "command": "python benchmarks/bench_triton.py " + " ".join(sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "processor": _cpu_name(),
            "cpus": os.cpu_count(),
            "gpus": _gpu_names(),
            "onnxruntime": ort.__version__,
            "providers": sess.get_providers(),
            "server": (serve.find_server() or serve.ServerInstall("", "")).source,
        },
        "setup": {
            "kind": args.kind,
            "instances": args.instances,
            "threads_per_instance": args.threads,
            "in_process_threads": threads or "ONNX Runtime default",
            "max_batch_size": args.max_batch_size,
            "max_queue_delay_us": args.queue_delay_us,
            "protocol": args.protocol,
            "check": "bit-identical" if checker.exact else "spattn.tolerances float32",
        },
        "date": time.strftime("%Y-%m-%d"),
        "max_abs_err": checker.max_err,
        "total_errors": sum(r["errors"] for r in rows),
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"triton_{tag}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, RESULTS / f"triton_{tag}.png")
    print(f"wrote {path}; errors: {result['total_errors']}")
    if result["total_errors"]:
        sys.exit(1)


def _stats(server: serve.Server) -> tuple[int, int]:
    """(executions, successful requests) of model m so far, from the server's statistics."""
    import urllib.request

    url = f"{server.endpoints['http']}/v2/models/m/stats"
    with urllib.request.urlopen(url, timeout=30) as r:
        s = json.loads(r.read())["model_stats"][0]
    return int(s.get("execution_count", 0)), int(s["inference_stats"]["success"]["count"])


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    targets = sorted({r["target"] for r in result["rows"]})
    for t in targets:
        rows = [r for r in result["rows"] if r["target"] == t]
        c = [r["clients"] for r in rows]
        ax1.plot(c, [r["throughput_rps"] for r in rows], "o-", label=t)
        line = ax2.plot(c, [r["p50_ms"] for r in rows], "o-", label=f"{t} p50")[0]
        ax2.plot(c, [r["p99_ms"] for r in rows], "s--", color=line.get_color(), label=f"{t} p99")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    ax1.set_ylabel("requests / s")
    ax2.set_ylabel("latency per request (ms)")
    ax2.set_yscale("log")
    s = result["setup"]
    fig.suptitle(
        f"Triton python backend ({s['kind']}, {s['instances']} instances x "
        f"{s['threads_per_instance']} threads) vs ONNX Runtime in-process; errors: "
        f"{result['total_errors']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
