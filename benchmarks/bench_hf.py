"""A mid-size Mistral-like model exported by spattn and by Optimum, run by ONNX Runtime.

Random weights (hidden 512, 4 layers, 8 query / 2 key-value heads of 64, MLP 1536, vocabulary
4096, sliding window 512), ``text-generation-with-past`` from both exporters, the same
``save_pretrained`` folder. For each length L: prefill latency (batch 1, L tokens, empty cache),
the peak memory of the process that ran it (each (exporter, L) in its own process), decode
tokens/s (``--decode-steps`` single-token steps after the prefill) and the KV-cache bytes the
prefill returns.

CPU (float32)::

    python benchmarks/bench_hf.py --lengths 2048 8192 16384 --threads 2 --max-rss-gib 16 \\
        --optimum-python /path/to/venv-with-optimum-onnx/bin/python \\
        --out benchmarks/results/hf_cpu.json --plot benchmarks/results/hf_cpu.png

``--max-rss-gib`` stops a run whose resident memory passes the limit (or that would leave the
machine under 2 GiB available) and records it as not completed, with the memory and time it had
reached, instead of letting the machine run out of memory.

CUDA (float16, ONNX Runtime's CUDA EP, I/O binding: inputs, outputs and the cache stay on the
device; median of ``--runs`` synchronized runs; peak device memory polled with NVML): a machine
without transformers or Optimum runs graphs prepared elsewhere. ``--prepare-gpu DIR`` (here)
writes both float16 graphs without their weight matrices plus a manifest (a few MB, instead of
twice the weights); ``--gpu-pack DIR`` (there) refills the matrices, the same random values for
both exporters, each placed where that exporter's graph holds it (transposed where it stores the
transpose), and measures::

    python benchmarks/bench_hf.py --prepare-gpu .gpu/hf --optimum-python /path/bin/python
    python benchmarks/bench_hf.py --provider cuda --gpu-pack .gpu/hf --lengths 16384 65536 \\
        --out benchmarks/results/hf_cuda_h200.json --plot benchmarks/results/hf_cuda_h200.png

Optimum (``optimum-onnx``) needs transformers < 4.58, so it runs from its own environment
(``--optimum-python``); without it only spattn's export is measured. Both float16 graphs are
exports of the checkpoint loaded in float16 (Optimum's CLI on a CPU exports float32 only; its
exporter is given the float16 model, as its CLI does with ``--dtype fp16`` on a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

CONFIG = dict(
    hidden_size=512,
    intermediate_size=1536,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=2,
    head_dim=64,
    vocab_size=4096,
    sliding_window=512,
    max_position_embeddings=65536,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
# HF's initializer_range for Mistral: the refilled matrices are drawn with the same spread.
INIT_STD = 0.02
# Weight matrices at least this large are left out of a prepared pack and refilled; smaller
# initializers (norm weights, constants) stay in the graph as exported.
REFILL_MIN_ELEMENTS = 4096
EXPORTERS = ("spattn", "optimum")


def _hf_model(work: Path) -> Path:
    import torch
    import transformers

    src = work / "model"
    if not (src / "config.json").is_file():
        torch.manual_seed(0)
        cfg = transformers.AutoConfig.for_model("mistral", **CONFIG)
        transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(src)
    return src


# Optimum's CLI loads the checkpoint in its stored float32 on the CPU; for float16 the model is
# loaded in float16 and handed to Optimum's exporter, as its CLI does with --dtype fp16 on a GPU.
_OPTIMUM_FP16 = """
import sys, torch, transformers
from optimum.exporters.onnx import onnx_export_from_model
m = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float16)
onnx_export_from_model(m, sys.argv[2], task="text-generation-with-past", do_validation=False)
"""


def _optimum_export(src: Path, out: Path, optimum_python: str, dtype: str = "float32") -> None:
    if (out / "model.onnx").is_file():
        return
    t = time.time()
    if dtype == "float32":
        cmd = [optimum_python, "-m", "optimum.exporters.onnx", "--model", str(src)]
        cmd += ["--task", "text-generation-with-past", str(out)]
    elif dtype == "float16":
        cmd = [optimum_python, "-c", _OPTIMUM_FP16, str(src), str(out)]
    else:
        raise SystemExit(f"dtype {dtype}: Optimum's graph is exported in float32 or float16")
    subprocess.run(cmd, check=True)
    print(f"optimum export ({dtype}): {time.time() - t:.1f} s", flush=True)


def build(work: Path, optimum_python: str | None, dtype: str = "float32") -> dict[str, str]:
    """Float32 (or ``dtype``) exports of the benchmark model; returns exporter -> model.onnx."""
    import spattn

    src = _hf_model(work)
    paths = {}
    ours = work / ("spattn" if dtype == "float32" else f"spattn_{dtype}")
    if not (ours / "model.onnx").is_file():
        t = time.time()
        rep = spattn.export_hf(
            str(src),
            task="text-generation-with-past",
            output_dir=str(ours),
            dtype=dtype,
            validate=False,
        )
        print(f"spattn export: {time.time() - t:.1f} s, {rep.num_spattn_nodes} nodes", flush=True)
    paths["spattn"] = str(ours / "model.onnx")
    if optimum_python:
        opt = work / ("optimum" if dtype == "float32" else f"optimum_{dtype}")
        _optimum_export(src, opt, optimum_python, dtype)
        paths["optimum"] = str(opt / "model.onnx")
    return paths


# --- packs of weightless graphs (prepared here, refilled on a machine without transformers) ---


def _match(a: Any, weights: dict[str, Any]) -> tuple[str, bool] | None:
    """The state-dict matrix an initializer holds, as is or transposed.

    Equal within 1e-6 rather than bit-equal, so that an exporter that rounds or clips tiny
    entries still matches; any other matrix differs by ~1e-2.
    """
    import numpy as np

    a = a.astype(np.float32)
    for key, v in weights.items():
        for transposed, w in ((False, v), (True, v.T if v.ndim == 2 else None)):
            if w is None or w.shape != a.shape:
                continue
            if np.abs(a.ravel()[:64] - w.ravel()[:64]).max() > 1e-6:
                continue
            if np.abs(a - w).max() <= 1e-6:
                return key, transposed
    return None


def prepare_gpu(work: Path, optimum_python: str | None, dest: Path, dtype: str) -> None:
    """Writes DEST/{spattn,optimum}.onnx without their weight matrices and DEST/manifest.json."""
    import numpy as np
    import onnx
    from onnx import numpy_helper
    from safetensors.numpy import load_file

    paths = build(work, optimum_python, dtype)
    src = _hf_model(work)
    np_dtype = np.float16 if dtype == "float16" else np.float32
    weights = {
        key: v.astype(np_dtype).astype(np.float32)
        for f in sorted(src.glob("*.safetensors"))
        for key, v in load_file(str(f)).items()
        if v.size >= REFILL_MIN_ELEMENTS
    }
    dest.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "config": CONFIG,
        "dtype": dtype,
        "init_std": INIT_STD,
        "shapes": {k: list(v.shape) for k, v in weights.items()},
        "models": {},
    }
    for name, path in paths.items():
        m = onnx.load(path)
        keep, refill = [], {}
        for init in m.graph.initializer:
            a = numpy_helper.to_array(init)
            hit = None
            # a float16 export may still hold some matrices in float32 (Optimum: o_proj)
            if a.size >= REFILL_MIN_ELEMENTS and a.dtype in (np.float16, np.float32):
                hit = _match(a, weights)
            if hit is None:
                keep.append(init)
            else:
                refill[init.name] = {"key": hit[0], "transposed": hit[1], "dtype": str(a.dtype)}
        kept_bytes = sum(numpy_helper.to_array(i).nbytes for i in keep)
        if kept_bytes > 4 * 2**20:
            big = sorted(keep, key=lambda i: -numpy_helper.to_array(i).nbytes)[:3]
            raise SystemExit(
                f"--prepare-gpu: {name}'s graph keeps {kept_bytes / 2**20:.1f} MiB of initializers "
                f"that match no weight matrix (largest: {[i.name for i in big]})"
            )
        del m.graph.initializer[:]
        m.graph.initializer.extend(keep)
        onnx.save(m, str(dest / f"{name}.onnx"))
        manifest["models"][name] = {"refill": refill, "kept_initializer_bytes": kept_bytes}
        print(
            f"{name}: {len(refill)} matrices left out, {kept_bytes / 2**20:.2f} MiB kept, "
            f"graph {os.path.getsize(dest / f'{name}.onnx') / 2**20:.2f} MiB",
            flush=True,
        )
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def refill(pack: Path, work: Path) -> dict[str, str]:
    """Inverse of :func:`prepare_gpu`: the same matrices for every exporter's graph."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    manifest = json.loads((pack / "manifest.json").read_text())
    if manifest["config"] != CONFIG:
        raise SystemExit(f"--gpu-pack {pack}: prepared for another config: {manifest['config']}")
    np_dtype = np.float16 if manifest["dtype"] == "float16" else np.float32
    weights: dict[str, Any] = {}
    for key, shape in manifest["shapes"].items():
        # seeded by the name, so every graph (and every machine) gets the same matrix
        rng = np.random.default_rng(zlib.crc32(key.encode()))
        weights[key] = (rng.standard_normal(shape, dtype=np.float32) * manifest["init_std"]).astype(
            np_dtype
        )
    work.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, spec in manifest["models"].items():
        m = onnx.load(str(pack / f"{name}.onnx"))
        for init_name, r in spec["refill"].items():
            a = weights[r["key"]].astype(r.get("dtype", manifest["dtype"]))
            a = np.ascontiguousarray(a.T) if r["transposed"] else a
            m.graph.initializer.append(numpy_helper.from_array(a, init_name))
        out = work / f"{name}_{manifest['dtype']}.onnx"
        onnx.save(m, str(out))
        paths[name] = str(out)
    return paths


# --- one measurement, in its own process ---


def _session(path: str, provider: str, threads: int) -> Any:
    import onnxruntime as ort

    from spattn.runtime import library_path

    so = ort.SessionOptions()
    so.register_custom_ops_library(library_path("ort"))
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if provider == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise SystemExit(
                "--provider cuda: this onnxruntime has no CUDAExecutionProvider (available: "
                f"{ort.get_available_providers()}); install onnxruntime-gpu"
            )
        # kSameAsRequested: the arena grows by what is asked, so the peak is the model's need
        cuda = {"device_id": 0, "arena_extend_strategy": "kSameAsRequested"}
        sess = ort.InferenceSession(
            path, so, providers=[("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]
        )
        if sess.get_providers()[0] != "CUDAExecutionProvider":
            raise SystemExit(f"--provider cuda: session providers are {sess.get_providers()}")
        return sess
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _phase(name: str) -> None:
    print(f"phase: {name}", file=sys.stderr, flush=True)


def measure(path: str, length: int, threads: int, decode_steps: int) -> dict[str, Any]:
    """CPU EP, numpy feeds (the float32 table)."""
    import numpy as np

    sess = _session(path, "cpu", threads)
    ins = {i.name: i for i in sess.get_inputs()}
    past_names = [n for n in ins if n.startswith("past_key_values.")]
    rng = np.random.default_rng(0)

    def feeds(ids: Any, mask: Any, pos: Any, past: dict[str, Any]) -> dict[str, Any]:
        f = {"input_ids": ids, "attention_mask": mask, **past}
        if "position_ids" in ins:
            f["position_ids"] = pos
        return f

    empty = {n: np.zeros((1, ins[n].shape[1], 0, ins[n].shape[3]), np.float32) for n in past_names}
    names = [o.name for o in sess.get_outputs()]
    _phase("warm-up")
    w = 256
    sess.run(
        None,
        feeds(rng.integers(5, 4096, (1, w)), np.ones((1, w), np.int64), np.arange(w)[None], empty),
    )
    ids = rng.integers(5, 4096, (1, length)).astype(np.int64)
    mask = np.ones((1, length), np.int64)
    pos = np.arange(length, dtype=np.int64)[None]
    _phase("prefill")
    t = time.perf_counter()
    outs = dict(zip(names, sess.run(None, feeds(ids, mask, pos, empty)), strict=True))
    prefill = time.perf_counter() - t
    past = {n: outs[n.replace("past_key_values.", "present.")] for n in past_names}
    kv_bytes = int(sum(v.nbytes for v in past.values()))
    tok = outs["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
    _phase("decode")
    t = time.perf_counter()
    for s in range(decode_steps):
        mask = np.ones((1, length + s + 1), np.int64)
        o = dict(
            zip(
                names, sess.run(None, feeds(tok, mask, np.array([[length + s]]), past)), strict=True
            )
        )
        past = {n: o[n.replace("past_key_values.", "present.")] for n in past_names}
        tok = o["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
    decode = time.perf_counter() - t
    return {
        "prefill_s": prefill,
        "decode_tokens_per_s": decode_steps / decode if decode_steps else None,
        "kv_cache_bytes_after_prefill": kv_bytes,
        "kv_cache_bytes_after_decode": int(sum(v.nbytes for v in past.values())),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def measure_bound(
    path: str, length: int, provider: str, threads: int, decode_steps: int, runs: int
) -> dict[str, Any]:
    """I/O binding: every input, output and the cache on the provider's device (CUDA: float16).

    ``Run`` synchronizes the CUDA EP's stream before it returns, so host timing around it is
    the device time plus ONNX Runtime's host work. Prefill: median of ``runs``; decode: median
    tokens/s of ``runs`` passes of ``decode_steps`` greedy steps from the same prefill (each step
    reads the argmax token back to the host, as a decoding loop does).
    """
    import numpy as np
    import onnxruntime as ort

    sess = _session(path, provider, threads)
    dev = "cuda" if provider == "cuda" else "cpu"
    ins = {i.name: i for i in sess.get_inputs()}
    past_names = [n for n in ins if n.startswith("past_key_values.")]
    out_names = [o.name for o in sess.get_outputs()]
    ftype = np.float16 if "float16" in ins[past_names[0]].type else np.float32
    rng = np.random.default_rng(0)

    def on_dev(a: Any) -> Any:
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a), dev, 0)

    def bind(ids: Any, start: int, past: dict[str, Any]) -> Any:
        n = ids.shape[1]
        io = sess.io_binding()
        io.bind_ortvalue_input("input_ids", on_dev(ids.astype(np.int64)))
        io.bind_ortvalue_input("attention_mask", on_dev(np.ones((1, start + n), np.int64)))
        if "position_ids" in ins:
            io.bind_ortvalue_input(
                "position_ids", on_dev(np.arange(start, start + n, dtype=np.int64)[None])
            )
        for k, v in past.items():
            if isinstance(v, np.ndarray):  # the empty cache: nothing to place on the device
                io.bind_cpu_input(k, v)
            else:
                io.bind_ortvalue_input(k, v)
        for o in out_names:
            io.bind_output(o, dev)
        return io

    def run(io: Any) -> dict[str, Any]:
        sess.run_with_iobinding(io)
        return dict(zip(out_names, io.get_outputs(), strict=True))

    def last_token(logits: Any) -> Any:
        return logits.numpy()[:, -1].argmax(-1)[:, None]

    empty = {n: np.zeros((1, ins[n].shape[1], 0, ins[n].shape[3]), ftype) for n in past_names}
    _phase("warm-up")
    run(bind(rng.integers(5, 4096, (1, 256)), 0, empty))
    ids = rng.integers(5, 4096, (1, length))
    _phase("prefill")
    times = []
    for _ in range(runs):
        io = bind(ids, 0, empty)
        t = time.perf_counter()
        outs = run(io)
        times.append(time.perf_counter() - t)
    past = {n: outs[n.replace("past_key_values.", "present.")] for n in past_names}
    kv_bytes = int(sum(np.prod(v.shape()) * np.dtype(ftype).itemsize for v in past.values()))
    first = last_token(outs["logits"])
    logits_last = outs["logits"].numpy()[0, -1].astype(np.float32)
    _phase("decode")
    rates = []
    for _ in range(runs if decode_steps else 0):
        p, tok = dict(past), first
        t = time.perf_counter()
        for s in range(decode_steps):
            o = run(bind(tok, length + s, p))
            p = {n: o[n.replace("past_key_values.", "present.")] for n in past_names}
            tok = last_token(o["logits"])
        rates.append(decode_steps / (time.perf_counter() - t))
    after = int(sum(np.prod(v.shape()) * np.dtype(ftype).itemsize for v in p.values()))
    return {
        "prefill_s": statistics.median(times),
        "prefill_s_runs": times,
        "decode_tokens_per_s": statistics.median(rates) if rates else None,
        "decode_tokens_per_s_runs": rates,
        "kv_cache_bytes_after_prefill": kv_bytes,
        "kv_cache_bytes_after_decode": after if rates else kv_bytes,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        # to compare exporters: the same weights give the same next-token distribution
        "last_logits_head": [float(x) for x in logits_last[:8]],
        "last_logits_argmax": int(logits_last.argmax()),
        "finite_logits": bool(np.isfinite(logits_last).all()),
    }


# --- the parent: one guarded subprocess per (exporter, L) ---


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 1 << 62


class _GpuMemory:
    """Peak device memory in use during a run, minus what was in use before it (NVML)."""

    def __init__(self) -> None:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._h = pynvml.nvmlDeviceGetHandleByIndex(0)
        self.base = self._used()
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()

    def _used(self) -> int:
        return int(self._nvml.nvmlDeviceGetMemoryInfo(self._h).used)

    def _poll(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._used())

    def stop(self) -> int:
        self._stop.set()
        self._t.join()
        return self.peak - self.base


def run_guarded(cmd: list[str], max_rss: int | None, timeout_s: float, gpu: bool) -> dict[str, Any]:
    """Runs one measurement; stops it above ``max_rss`` resident bytes, under 2 GiB available
    on the machine, or after ``timeout_s``, and says so in the row."""
    gpu_mem = None
    if gpu:
        try:
            gpu_mem = _GpuMemory()
        except Exception as e:  # no NVML: the table still has the times, not the memory
            print(f"peak GPU memory not measured: NVML unavailable ({e})", flush=True)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.time()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        peak, stopped = 0, None
        while p.poll() is None:
            rss = _rss(p.pid)
            peak = max(peak, rss)
            if max_rss is not None and rss > max_rss:
                stopped = f"exceeded {max_rss / 2**30:g} GiB RSS after {time.time() - t0:.0f} s"
            elif max_rss is not None and _mem_available() < 2 * 2**30:
                stopped = (
                    f"stopped at {rss / 2**30:.1f} GiB RSS after {time.time() - t0:.0f} s: the "
                    "machine had under 2 GiB available"
                )
            elif time.time() - t0 > timeout_s:
                stopped = f"timed out after {timeout_s:g} s"
            if stopped:
                p.send_signal(signal.SIGKILL)
                p.wait()
                break
            time.sleep(0.1)
        wall = time.time() - t0
        gpu_peak = gpu_mem.stop() if gpu_mem else None
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    phases = [ln[7:] for ln in stderr.splitlines() if ln.startswith("phase: ")]
    row: dict[str, Any]
    if stopped:
        row = {"status": stopped, "phase": phases[-1] if phases else None, "peak_rss_bytes": peak}
    elif p.returncode == 0:
        row = json.loads(stdout.strip().splitlines()[-1])
    else:
        lines = [ln for ln in stderr.strip().splitlines() if not ln.startswith("phase: ")]
        row = {
            "error": (lines or ["killed"])[-1][:400],
            "returncode": p.returncode,
            "phase": phases[-1] if phases else None,
            "peak_rss_bytes": peak,
        }
    if gpu_peak is not None:
        row["peak_gpu_bytes"] = gpu_peak
    row["wall_s"] = wall
    return row


# --- report ---


def _completed(r: dict[str, Any]) -> bool:
    return "prefill_s" in r


def _gb(b: float) -> str:
    return f"{b / 1e9:.2f} GB"


def table(results: dict[str, Any]) -> str:
    """Markdown table of a results file: one row per L, spattn / Optimum in each cell."""
    runs = results["runs"]
    lengths = sorted({int(L) for rows in runs.values() for L in rows})
    mem = "peak GPU memory" if results.get("provider") == "cuda" else "peak memory (RSS)"
    lines = [
        f"| L | prefill spattn / Optimum | {mem} spattn / Optimum | "
        "decode tokens/s spattn / Optimum | KV cache spattn / Optimum |",
        "|---|---|---|---|---|",
    ]
    memkey = "peak_gpu_bytes" if results.get("provider") == "cuda" else "peak_rss_bytes"

    def cells(r: dict[str, Any] | None) -> list[str]:
        if r is None:
            return ["not run"] * 4
        if not _completed(r):
            why = r.get("status") or f"failed: {r.get('error', '?')[:80]}"
            if memkey == "peak_gpu_bytes" and r.get(memkey) is not None:
                reached = f"{_gb(r[memkey])} when it stopped"
            elif "status" in r:
                reached = f"> {_gb(r['peak_rss_bytes'])} RSS"
            else:
                reached = "-"
            return [f"did not complete ({why})", reached, "-", "-"]
        p = r["prefill_s"]
        return [
            f"{p:.3g} s" if p >= 1 else f"{p * 1e3:.3g} ms",
            _gb(r[memkey]) if r.get(memkey) is not None else "-",
            f"{r['decode_tokens_per_s']:.3g}" if r.get("decode_tokens_per_s") else "-",
            f"{r['kv_cache_bytes_after_prefill'] / 1e6:.3g} MB",
        ]

    for L in lengths:
        a = cells(runs.get("spattn", {}).get(str(L)))
        b = cells(runs.get("optimum", {}).get(str(L)))
        lines.append(
            f"| {L} | " + " | ".join(f"{x} / {y}" for x, y in zip(a, b, strict=True)) + " |"
        )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cuda = results.get("provider") == "cuda"
    memkey = "peak_gpu_bytes" if cuda else "peak_rss_bytes"
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    keys = [
        ("prefill_s", "prefill latency (s)"),
        (memkey, "peak GPU memory (GiB)" if cuda else "peak memory, RSS (GiB)"),
        ("decode_tokens_per_s", "decode tokens/s"),
        ("kv_cache_bytes_after_prefill", "KV cache after prefill (MiB)"),
    ]
    scale = {memkey: 2**30, "kv_cache_bytes_after_prefill": 2**20}
    colors = {"spattn": "C0", "optimum": "C1"}
    for ax, (k, label) in zip(axes, keys, strict=True):
        for exporter, rows in results["runs"].items():
            c = colors.get(exporter, None)
            pts = [(int(L), r[k] / scale.get(k, 1)) for L, r in rows.items() if r.get(k)]
            pts = [(L, v) for L, v in pts if _completed(rows[str(L)])]
            if pts:
                ax.plot(*zip(*sorted(pts), strict=True), marker="o", label=exporter, color=c)
            for L, r in rows.items():
                if _completed(r):
                    continue
                # a run that stopped (memory guard, out of memory, error): the memory it had
                # reached, marked as such, on the memory plot; a note on the others
                if k == memkey and r.get(k):
                    y = r[k] / scale[k]
                    ax.plot([int(L)], [y], marker="^", ms=10, color=c, ls="none")
                    ax.annotate(
                        f"{exporter} {L}: stopped\nat {y:.1f} GiB",
                        (int(L), y),
                        fontsize=7,
                        xytext=(-70, -22),
                        textcoords="offset points",
                    )
                else:
                    why = r.get("status") or "failed, see the JSON"
                    ax.annotate(
                        f"{exporter} {L}: did not complete\n({why})",
                        (0.02, 0.88 - 0.14 * list(results["runs"]).index(exporter)),
                        xycoords="axes fraction",
                        fontsize=7,
                        color=c,
                    )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=8)
    where = (
        f"ORT CUDA EP float16 ({results.get('device', 'GPU')})"
        if cuda
        else f"ORT CPU {results['threads']} threads"
    )
    fig.suptitle(
        f"Mistral-like (hidden 512, 4 layers, GQA 8:2, window 512), {where}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _device_name() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 else "unknown GPU"
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown GPU"


def _optimum_versions(python: str) -> str:
    code = (
        "import importlib.metadata as m; print(', '.join(f'{p} {m.version(p)}' for p in "
        "('optimum-onnx', 'optimum', 'transformers', 'torch', 'onnxruntime')))"
    )
    return subprocess.run([python, "-c", code], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[2048, 8192, 16384])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decode-steps", type=int, default=16)
    ap.add_argument("--provider", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument(
        "--io-binding",
        action="store_true",
        help="CPU: the I/O-binding measurement the CUDA EP uses (always on with --provider cuda)",
    )
    ap.add_argument("--runs", type=int, default=5, help="I/O binding: prefill/decode repeats")
    ap.add_argument("--work", default="/tmp/spattn_bench_hf")
    ap.add_argument("--optimum-python")
    ap.add_argument("--exporters", nargs="+", default=list(EXPORTERS))
    ap.add_argument("--skip", nargs="*", default=[], help="exporter:L pairs not to run")
    ap.add_argument(
        "--max-rss-gib",
        type=float,
        help="stop a run above this resident memory (or with the machine under 2 GiB available) "
        "and record it as not completed",
    )
    ap.add_argument("--timeout-s", type=float, default=3600.0, help="per (exporter, L) run")
    ap.add_argument("--prepare-gpu", metavar="DIR", help="write the weightless float16 pack")
    ap.add_argument("--prepare-dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--gpu-pack", metavar="DIR", help="refill and measure a prepared pack")
    ap.add_argument("--out", default="benchmarks/results/hf_cpu.json")
    ap.add_argument("--plot")
    ap.add_argument(
        "--table",
        action="store_true",
        help="measure nothing: print the markdown table of --out (and write --plot from it)",
    )
    ap.add_argument("--measure", nargs=2, metavar=("ONNX", "L"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.runs < 1:
        ap.error(f"--runs: expected at least 1, got {a.runs}")
    if a.max_rss_gib is not None and a.max_rss_gib <= 0:
        ap.error(f"--max-rss-gib: expected a positive number of GiB, got {a.max_rss_gib}")
    if a.measure:
        if a.provider == "cuda" or a.io_binding:
            row = measure_bound(
                a.measure[0], int(a.measure[1]), a.provider, a.threads, a.decode_steps, a.runs
            )
        else:
            row = measure(a.measure[0], int(a.measure[1]), a.threads, a.decode_steps)
        print(json.dumps(row))
        return
    if a.table:
        results = json.loads(Path(a.out).read_text())
        if a.plot:
            plot(results, a.plot)
        print(table(results), end="")
        return
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    if a.prepare_gpu:
        prepare_gpu(work, a.optimum_python, Path(a.prepare_gpu), a.prepare_dtype)
        return
    if a.provider == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise SystemExit(
                "--provider cuda: this onnxruntime has no CUDAExecutionProvider (available: "
                f"{ort.get_available_providers()}); install onnxruntime-gpu"
            )
        if not a.gpu_pack:
            ap.error("--provider cuda: give --gpu-pack DIR (made by --prepare-gpu)")
    paths = refill(Path(a.gpu_pack), work / "refilled") if a.gpu_pack else None
    paths = paths or build(work, a.optimum_python)
    import onnxruntime as ort

    results: dict[str, Any] = {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "provider": a.provider,
        "onnxruntime": ort.__version__,
        "threads": a.threads,
        "config": CONFIG,
        "dtype": "float16" if a.gpu_pack else "float32",
        "decode_steps": a.decode_steps,
        "runs": {},
    }
    if a.provider == "cuda":
        results["device"] = _device_name()
        results["runs_per_point"] = a.runs
        results["memory"] = (
            "peak_gpu_bytes: device memory in use (NVML, polled every 5 ms) above what was in "
            "use before the process started; includes the CUDA context and ONNX Runtime's "
            "arena (kSameAsRequested)"
        )
    if a.optimum_python:
        results["optimum_env"] = _optimum_versions(a.optimum_python)
    if a.max_rss_gib is not None:
        results["max_rss_gib"] = a.max_rss_gib
    if Path(a.out).is_file():  # keep earlier runs (e.g. a length measured on another machine)
        earlier = json.loads(Path(a.out).read_text())
        results["runs"] = earlier.get("runs", {})
        results["commands"] = earlier.get("commands") or [earlier["command"]]
        for rows in results["runs"].values():
            for r in rows.values():
                r.setdefault("command", 0)  # rows of a file that had one command
    # each row's "command" is its index in "commands"
    results.setdefault("commands", []).append(results["command"])
    max_rss = int(a.max_rss_gib * 2**30) if a.max_rss_gib is not None else None
    for exporter in a.exporters:
        if exporter not in paths:
            continue
        for L in a.lengths:
            if f"{exporter}:{L}" in a.skip:
                continue
            cmd = [
                sys.executable,
                __file__,
                "--measure",
                paths[exporter],
                str(L),
                "--provider",
                a.provider,
                "--threads",
                str(a.threads),
                "--decode-steps",
                str(a.decode_steps),
                "--runs",
                str(a.runs),
                *(["--io-binding"] if a.io_binding else []),
            ]
            row = run_guarded(cmd, max_rss, a.timeout_s, gpu=a.provider == "cuda")
            row["command"] = len(results["commands"]) - 1
            results["runs"].setdefault(exporter, {})[str(L)] = row
            print(exporter, L, json.dumps(row), flush=True)
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
    agreement = {}
    for L in a.lengths:
        r = [results["runs"].get(e, {}).get(str(L), {}) for e in EXPORTERS]
        if all("last_logits_head" in x for x in r):
            diff = max(abs(x - y) for x, y in zip(*(x["last_logits_head"] for x in r), strict=True))
            same = r[0]["last_logits_argmax"] == r[1]["last_logits_argmax"]
            agreement[str(L)] = {"max_abs_diff_first_logits": diff, "same_next_token": same}
    if agreement:
        # same weights, same tokens: the two graphs must predict the same next token
        results["exporters_agree"] = agreement
        Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
        print("exporters agree:", json.dumps(agreement))
    if a.plot:
        plot(results, a.plot)
    print(table(results), end="")


if __name__ == "__main__":
    main()
