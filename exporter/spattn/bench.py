"""Benchmark helpers: spattn::SparseAttention against dense attention over sequence lengths.

On CPU, our op runs in ONNX Runtime's CPU execution provider against ONNX Runtime's own fused
dense attention, ``com.microsoft::MultiHeadAttention``, with the same thread count (the question
benchmarks/bench_cpu.py asks). On a GPU, both also run in the CUDA execution provider (inputs
bound on the device), and torch FlexAttention runs with the same mask. Peak memory is measured in
a child process per point (``python -m spattn.bench --memory-child ...``): the growth of the
peak resident set during one run on CPU, the growth of device memory in use on a GPU.

Used by ``spattn bench``; the model builders and timers are usable on their own.

Examples
--------
>>> from spattn import bench
>>> cfg = bench.BenchConfig(lengths=[256, 512], memory=False)
>>> result = bench.run_benchmark(cfg, device="cpu")  # doctest: +SKIP
>>> print(bench.table(result))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .attributes import INT_ATTRIBUTES

__all__ = [
    "DEFAULT_PATTERN",
    "BenchConfig",
    "parse_attributes",
    "sparse_attention_model",
    "dense_attention_model",
    "time_session",
    "cuda_event_times",
    "measure_memory",
    "run_benchmark",
    "table",
    "plot",
]

#: Longformer-style band +-256 plus 64 global tokens (benchmarks/bench_cpu.py's pattern).
DEFAULT_PATTERN = {"window_left": 256, "window_right": 256, "num_global": 64}

_INT_ATTRS = INT_ATTRIBUTES

#: Display names of the measured backends.
LABELS = {
    "spattn-ort-cpu": "spattn SparseAttention, ORT CPU",
    "dense-ort-cpu": "dense MultiHeadAttention, ORT CPU",
    "spattn-ort-cuda": "spattn SparseAttention, ORT CUDA",
    "dense-ort-cuda": "dense MultiHeadAttention, ORT CUDA",
    "flex-torch-cuda": "torch FlexAttention, CUDA",
}


@dataclass
class BenchConfig:
    """Shapes, pattern and measurement settings of one sweep."""

    lengths: Sequence[int] = (256, 512, 1024, 2048)
    heads: int = 8
    kv_heads: int = 8
    head_dim: int = 64
    batch: int = 1
    attributes: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_PATTERN))
    dtype: str = "float32"
    threads: int = 2
    warmup: int = 1
    repeat: int = 5
    dense_max: int = 8192
    memory: bool = True


def parse_attributes(items: Sequence[str]) -> dict[str, Any]:
    """``["window_left=128", "causal=1"]`` -> op attributes (``scale`` is a float).

    Raises
    ------
    ValueError
        An unknown attribute name or a value that is not a number.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in (*_INT_ATTRS, "scale"):
            raise ValueError(
                f"{item!r}: expected NAME=VALUE with NAME one of "
                f"{', '.join((*_INT_ATTRS, 'scale'))}"
            )
        try:
            out[key] = float(value) if key == "scale" else int(value)
        except ValueError:
            raise ValueError(f"{item!r}: {key} takes a number") from None
    from onnx import helper

    from .errors import UserError
    from .nodes import check_attributes

    try:  # the op spec's ranges, with its messages
        check_attributes(
            helper.make_node("SparseAttention", ["q", "k", "v"], ["o"], name="--attr", **out)
        )
    except UserError as e:
        raise ValueError(str(e).split(";")[0]) from None
    return out


def _onnx_dtype(dtype: str) -> int:
    from onnx import TensorProto

    return {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}[dtype]


def sparse_attention_model(cfg: BenchConfig) -> bytes:
    """One ``spattn::SparseAttention`` node, inputs ``[B, H, L, D]`` with a dynamic ``L``.

    Examples
    --------
    >>> len(sparse_attention_model(BenchConfig())) > 0
    True
    """
    from onnx import helper

    t = _onnx_dtype(cfg.dtype)
    d = cfg.head_dim
    ins = [
        helper.make_tensor_value_info("query", t, [cfg.batch, cfg.heads, "L", d]),
        helper.make_tensor_value_info("key", t, [cfg.batch, cfg.kv_heads, "L", d]),
        helper.make_tensor_value_info("value", t, [cfg.batch, cfg.kv_heads, "L", d]),
    ]
    node = helper.make_node(
        "SparseAttention", ["query", "key", "value"], ["output"], domain="spattn", **cfg.attributes
    )
    out = helper.make_tensor_value_info("output", t, [cfg.batch, cfg.heads, "L", d])
    model = helper.make_model(
        helper.make_graph([node], "sparse", ins, [out]),
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("spattn", 1)],
    )
    model.ir_version = 10
    return model.SerializeToString()


def dense_attention_model(cfg: BenchConfig) -> bytes:
    """``com.microsoft::MultiHeadAttention`` (ONNX Runtime's fused dense attention).

    Inputs ``[B, L, H * D]``; causal (``unidirectional``) when the pattern is causal, so the
    dense op computes what users would otherwise run. GQA is fed with repeated K/V heads.
    """
    from onnx import helper

    t = _onnx_dtype(cfg.dtype)
    hidden = cfg.heads * cfg.head_dim
    ins = [
        helper.make_tensor_value_info(n, t, [cfg.batch, "L", hidden])
        for n in ("query", "key", "value")
    ]
    attrs: dict[str, Any] = {
        "num_heads": cfg.heads,
        "unidirectional": int(cfg.attributes.get("causal", 0)),
    }
    if cfg.attributes.get("scale"):
        attrs["scale"] = float(cfg.attributes["scale"])
    node = helper.make_node(
        "MultiHeadAttention", ["query", "key", "value"], ["output"], domain="com.microsoft", **attrs
    )
    out = helper.make_tensor_value_info("output", t, [cfg.batch, "L", hidden])
    model = helper.make_model(
        helper.make_graph([node], "dense", ins, [out]),
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)],
    )
    model.ir_version = 10
    return model.SerializeToString()


def _session(model: bytes, cfg: BenchConfig, provider: str, sparse: bool) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = cfg.threads
    if sparse:
        from .runtime import library_path

        opts.register_custom_ops_library(library_path("ort"))
    providers = [provider] + (
        ["CPUExecutionProvider"] if provider != "CPUExecutionProvider" else []
    )
    return ort.InferenceSession(model, opts, providers=providers)


def _inputs(cfg: BenchConfig, length: int, sparse: bool, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    np_dtype = np.float16 if cfg.dtype == "float16" else np.float32
    shapes = {"query": cfg.heads, "key": cfg.kv_heads, "value": cfg.kv_heads}
    # Drawn in float32 directly: a float64 temporary, once freed, would be reused by the run's
    # allocations and hide them from the memory measurement.
    qkv = {
        n: rng.standard_normal((cfg.batch, h, length, cfg.head_dim), dtype=np.float32).astype(
            np_dtype, copy=False
        )
        for n, h in shapes.items()
    }
    if sparse:
        return qkv
    rep = cfg.heads // cfg.kv_heads
    out = {}
    for n, x in qkv.items():
        if n != "query":
            x = np.repeat(x, rep, axis=1)
        out[n] = np.ascontiguousarray(
            x.transpose(0, 2, 1, 3).reshape(cfg.batch, length, cfg.heads * cfg.head_dim)
        )
    return out


def time_session(
    session: Any,
    feeds: dict[str, np.ndarray],
    warmup: int = 1,
    repeat: int = 5,
    device: str = "cpu",
) -> list[float]:
    """Times (ms) of ``repeat`` runs after ``warmup`` runs; on CUDA the tensors stay on device.

    Examples
    --------
    >>> times = time_session(session, feeds)  # doctest: +SKIP
    """
    import onnxruntime as ort

    if device == "cuda":
        binding = session.io_binding()
        for k, v in feeds.items():
            binding.bind_ortvalue_input(k, ort.OrtValue.ortvalue_from_numpy(v, "cuda", 0))
        for o in session.get_outputs():
            binding.bind_output(o.name, "cuda")

        def call() -> None:
            session.run_with_iobinding(binding)
    else:

        def call() -> None:
            session.run(None, feeds)

    if device != "cuda":
        # Another session's thread pool may still spin after its run; a run that starts beside
        # it shares the cores (up to 1.3x the time on two cores). Its threads are parked by now.
        time.sleep(0.1)
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


# ------------------------------------------------------------------------------ FlexAttention
def flex_mask_mod(attrs: dict[str, Any], length: int, heads: int, device: str) -> Any:
    """A FlexAttention ``mask_mod`` for the op's mask at ``Lq = Lk = length`` (no padding): the
    oracle's rule (:class:`spattn.reference.MaskRule`) itself."""
    from . import reference

    rule = reference.MaskRule(attrs, length, length, heads, device=device)

    def mask_mod(b: Any, h: Any, q: Any, kv: Any) -> Any:
        return rule.allowed(q, kv, h)

    return mask_mod


def _flex_runner(cfg: BenchConfig, length: int) -> Callable[[], Any]:
    import torch
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    dt = torch.float16 if cfg.dtype == "float16" else torch.float32
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(
        cfg.batch, cfg.heads, length, cfg.head_dim, device="cuda", dtype=dt, generator=gen
    )
    k = torch.randn(
        cfg.batch, cfg.kv_heads, length, cfg.head_dim, device="cuda", dtype=dt, generator=gen
    )
    v = torch.randn_like(k)
    head_dependent = int(cfg.attributes.get("num_random", 0)) > 0
    mask = create_block_mask(
        flex_mask_mod(cfg.attributes, length, cfg.heads, "cuda"),
        B=None,
        H=cfg.heads if head_dependent else None,
        Q_LEN=length,
        KV_LEN=length,
        device="cuda",
    )
    fn = torch.compile(flex_attention)
    scale = cfg.attributes.get("scale") or None
    return lambda: fn(q, k, v, block_mask=mask, scale=scale, enable_gqa=cfg.kv_heads != cfg.heads)


def cuda_event_times(call: Callable[[], Any], warmup: int, repeat: int) -> list[float]:
    """Milliseconds of ``repeat`` calls between CUDA events on the current stream, after warm-up."""
    import torch

    for _ in range(max(warmup, 1)):  # the first call compiles
        call()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


# ------------------------------------------------------------------------------ memory
def measure_memory(backend: str, cfg: BenchConfig, length: int) -> dict[str, Any]:
    """Run one point in a child process; returns its memory numbers (bytes)."""
    payload = json.dumps({"backend": backend, "length": length, "config": asdict(cfg)})
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-m", "spattn.bench", "--memory-child", payload],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"memory run of {backend} at L={length} failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _memory_child(payload: str) -> None:
    spec = json.loads(payload)
    raw = spec["config"]
    cfg = BenchConfig(**raw)
    backend, length = spec["backend"], int(spec["length"])
    if backend == "flex-torch-cuda":
        import torch

        call = _flex_runner(cfg, length)
        call()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        call()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        print(json.dumps({"run_growth_bytes": peak - base, "what": "torch peak allocated"}))
        return
    sparse = backend.startswith("spattn")
    cuda = backend.endswith("cuda")
    model = sparse_attention_model(cfg) if sparse else dense_attention_model(cfg)
    sess = _session(model, cfg, "CUDAExecutionProvider" if cuda else "CPUExecutionProvider", sparse)
    feeds = _inputs(cfg, length, sparse)
    if cuda:
        import torch

        torch.cuda.init()
        free0, _ = torch.cuda.mem_get_info()
        time_session(sess, feeds, warmup=0, repeat=1, device="cuda")
        free1, _ = torch.cuda.mem_get_info()
        print(
            json.dumps(
                {
                    "run_growth_bytes": int(free0 - free1),
                    "what": "device memory in use, growth over one run",
                }
            )
        )
        return
    # The first run: ONNX Runtime's arena and the allocator keep what it takes for later runs.
    reset = _reset_peak_rss()
    base = _status_bytes("VmRSS") if reset else _maxrss()
    sess.run(None, feeds)
    peak = _status_bytes("VmHWM") if reset else _maxrss()
    print(
        json.dumps(
            {
                "run_growth_bytes": max(0, peak - base),
                "what": "peak resident set growth over one run",
            }
        )
    )


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS (Linux: ``5`` into /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_bytes("VmHWM") > 0
    except OSError:
        return False


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


# ------------------------------------------------------------------------------ the sweep
def _density(attrs: dict[str, Any], length: int, heads: int) -> float | None:
    try:
        from .patterns import Pattern

        h = heads if int(attrs.get("num_random", 0)) > 0 else 1
        return float(Pattern.from_attributes(attrs).density(length, heads=h))
    except ImportError:  # torch absent: no density
        return None


def require_cuda(script: str) -> None:
    """Stop a GPU benchmark at its start, with what to fix, where no CUDA GPU is usable.

    The GPU scripts of ``benchmarks/`` time kernels on the device through PyTorch's CUDA
    tensors; without this check a CPU-only machine ends them in a traceback from deep inside
    torch (a generator or tensor on ``device="cuda"``), which names neither the cause nor the fix.
    """
    try:
        import torch
    except ImportError:
        raise SystemExit(
            f"{script}: needs PyTorch with CUDA (import torch failed); install a CUDA build of "
            "torch on a machine with an NVIDIA GPU"
        ) from None
    if torch.cuda.is_available():
        return
    if torch.version.cuda is None:
        why = f"this PyTorch ({torch.__version__}) is a CPU-only build"
    else:
        why = "PyTorch sees no CUDA device (torch.cuda.is_available() is False)"
    raise SystemExit(
        f"{script} times kernels on an NVIDIA GPU, and {why}. Run it on a machine with a CUDA "
        "GPU and a CUDA build of torch (`spattn doctor` says what this machine can run)."
    )


def gpu_backends_status() -> tuple[bool, str, bool, str]:
    """``(ort_cuda_ok, reason, flex_ok, reason)``."""
    from .runners import backend_status

    ok, why = backend_status("ort-cuda")
    flex_ok, flex_why = False, "torch with CUDA is not installed"
    try:
        import torch

        if torch.cuda.is_available():
            import torch.nn.attention.flex_attention  # noqa: F401

            flex_ok, flex_why = True, ""
        else:
            flex_why = "torch sees no CUDA device"
    except ImportError as e:
        flex_why = f"FlexAttention unavailable: {e}"
    return ok, why, flex_ok, flex_why


def run_benchmark(
    cfg: BenchConfig,
    device: str = "auto",
    bar: Callable[..., Any] | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the sweep; returns ``{"config", "machine", "backends", "rows", "notes"}``.

    Each row: ``length``, ``density``, ``times_ms`` and ``memory_bytes`` per backend (None where
    a backend was skipped at that length, e.g. dense above ``dense_max``).

    Raises
    ------
    UserError
        ``device="cuda"`` where the CUDA backends are not usable.
    """
    from .errors import UserError
    from .runners import backend_status

    ok, why = backend_status("ort-cpu")
    if not ok:
        raise UserError(why)
    notes: list[str] = []
    if device in ("auto", "cuda"):
        cuda_ok, cuda_why, flex_ok, flex_why = gpu_backends_status()
        if device == "cuda" and not cuda_ok:
            raise UserError(f"--device cuda: {cuda_why}")
        if device == "auto":
            device = "cuda" if cuda_ok else "cpu"
            if not cuda_ok:
                notes.append(f"CPU only: {cuda_why}")
    if device == "cuda":
        names = ["spattn-ort-cuda", "dense-ort-cuda"]
        if flex_ok:
            names.append("flex-torch-cuda")
        else:
            notes.append(f"FlexAttention skipped: {flex_why}")
    else:
        names = ["spattn-ort-cpu", "dense-ort-cpu"]
        if cfg.dtype == "float16":
            notes.append(
                "float16 on CPU: ONNX Runtime's dense MultiHeadAttention may lack "
                "float16 CPU kernels; such points are reported as skipped"
            )
    provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    sessions: dict[str, Any] = {}
    for n in names:
        if n.startswith("flex"):
            continue
        sparse = n.startswith("spattn")
        try:
            sessions[n] = _session(
                sparse_attention_model(cfg) if sparse else dense_attention_model(cfg),
                cfg,
                provider,
                sparse,
            )
        except Exception as e:  # onnxruntime's exception types
            msg = " ".join(str(e).split())
            if sparse:
                raise UserError(
                    f"ONNX Runtime rejected the SparseAttention benchmark model: {msg}"
                ) from e
            notes.append(f"{n} skipped: {msg[:200]}")
    names = [n for n in names if n in sessions or n.startswith("flex")]

    rows = []
    steps = len(cfg.lengths) * len(names) * (2 if cfg.memory else 1)
    progress = bar(total=steps, desc="bench", unit="point") if bar else None
    try:
        for length in cfg.lengths:
            row: dict[str, Any] = {
                "length": length,
                "density": _density(cfg.attributes, length, cfg.heads),
                "times_ms": {},
                "memory_bytes": {},
            }
            for n in names:
                if progress is not None:
                    progress.set_postfix_str(f"{n} L={length}")
                skip = not n.startswith("spattn") and length > cfg.dense_max
                t = None
                if not skip:
                    try:
                        if n.startswith("flex"):
                            t = cuda_event_times(_flex_runner(cfg, length), cfg.warmup, cfg.repeat)
                        else:
                            feeds = _inputs(cfg, length, n.startswith("spattn"))
                            t = time_session(
                                sessions[n],
                                feeds,
                                cfg.warmup,
                                cfg.repeat,
                                "cuda" if device == "cuda" else "cpu",
                            )
                    except Exception as e:  # a backend failing at one length is reported
                        notes.append(f"{n} at L={length}: {' '.join(str(e).split())[:200]}")
                row["times_ms"][n] = float(np.median(t)) if t else None
                if progress is not None:
                    progress.update()
                if cfg.memory:
                    m = None
                    if t:
                        try:
                            m = measure_memory(n, cfg, length)["run_growth_bytes"]
                        except (RuntimeError, subprocess.SubprocessError, ValueError) as e:
                            notes.append(str(e)[:300])
                    row["memory_bytes"][n] = m
                    if progress is not None:
                        progress.update()
            rows.append(row)
    finally:
        if progress is not None:
            progress.close()
    if warn is not None:
        for n in notes:
            warn(n)
    import onnxruntime as ort

    return {
        "question": "spattn::SparseAttention vs dense attention: time and memory against L",
        "config": asdict(cfg) | {"lengths": list(cfg.lengths)},
        "device": device,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "onnxruntime": ort.__version__,
        },
        "date": time.strftime("%Y-%m-%d"),
        "backends": names,
        "rows": rows,
        "notes": notes,
    }


def table(result: dict[str, Any]) -> str:
    """The sweep as a text table: ms and MiB per backend, speedup over dense on one device."""
    from .text import format_table

    names = result["backends"]
    heads = ["L", "density"] + [f"{n} ms" for n in names]
    pairs = [(s, s.replace("spattn", "dense")) for s in names if s.startswith("spattn")]
    heads += [f"speedup ({s.split('-', 1)[1]})" for s, _ in pairs]
    mem = result["config"].get("memory")
    if mem:
        heads += [f"{n} MiB" for n in names]
    rows = []
    for r in result["rows"]:
        t = r["times_ms"]
        line = [r["length"], "-" if r["density"] is None else f"{r['density']:.2%}"]
        line += ["-" if t.get(n) is None else f"{t[n]:.3f}" for n in names]
        for s, d in pairs:
            line.append(f"{t[d] / t[s]:.2f}x" if t.get(s) and t.get(d) else "-")
        if mem:
            m = r["memory_bytes"]
            line += ["-" if m.get(n) is None else f"{m[n] / 2**20:.1f}" for n in names]
        rows.append(line)
    return format_table(heads, rows)


def plot(result: dict[str, Any], path: str) -> str:
    """Write a PNG: time against L (log-log) and, when measured, memory against L."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mem = bool(result["config"].get("memory"))
    fig, axes = plt.subplots(1, 2 if mem else 1, figsize=(11 if mem else 6, 4), squeeze=False)
    cfg = result["config"]
    ax = axes[0][0]
    for n in result["backends"]:
        pts = [
            (r["length"], r["times_ms"][n])
            for r in result["rows"]
            if r["times_ms"].get(n) is not None
        ]
        if pts:
            ax.plot(*zip(*pts, strict=True), "o-", label=LABELS.get(n, n))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length")
    ax.set_ylabel("time per call (ms)")
    ax.set_title(
        f"{result['device'].upper()}, B={cfg['batch']}, {cfg['heads']} heads, "
        f"D={cfg['head_dim']}, {cfg['dtype']}",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    if mem:
        ax2 = axes[0][1]
        for n in result["backends"]:
            pts = [
                (r["length"], r["memory_bytes"][n] / 2**20)
                for r in result["rows"]
                if r["memory_bytes"].get(n) is not None
            ]
            if pts:
                ax2.plot(*zip(*pts, strict=True), "o-", label=LABELS.get(n, n))
        ax2.set_xscale("log", base=2)
        ax2.set_xlabel("sequence length")
        ax2.set_ylabel("peak memory growth during a call (MiB)")
        attrs = " ".join(f"{k}={v}" for k, v in cfg["attributes"].items())
        ax2.set_title(f"pattern: {attrs}", fontsize=9)
        ax2.grid(True, alpha=0.3)
        ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-child":
        _memory_child(sys.argv[2])
    else:
        sys.exit("usage: python -m spattn.bench --memory-child JSON (use `spattn bench`)")
