"""A mid-size Mistral-like model exported by spattn and by Optimum, run by ONNX Runtime CPU.

Random weights (hidden 512, 4 layers, 8 query / 2 key-value heads of 64, MLP 1536, vocabulary
4096, sliding window 512), ``text-generation-with-past`` from both exporters, the same
``save_pretrained`` folder. For each length L: prefill latency (batch 1, L tokens, empty cache),
the process's peak resident memory (each (exporter, L) in its own process), decode tokens/s
(``--decode-steps`` single-token steps after the prefill) and the KV-cache bytes the prefill
returns.

Usage::

    python benchmarks/bench_hf.py --lengths 2048 8192 16384 --threads 2 \\
        --optimum-python /path/to/venv-with-optimum-onnx/bin/python \\
        --out benchmarks/results/hf_cpu.json --plot benchmarks/results/hf_cpu.png

Optimum (``optimum-onnx``) needs transformers < 4.58, so it runs from its own environment
(``--optimum-python``); without it only spattn's export is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
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


def build(work: Path, optimum_python: str | None) -> dict[str, str]:
    import torch
    import transformers

    import spattn

    src = work / "model"
    if not (src / "config.json").is_file():
        torch.manual_seed(0)
        cfg = transformers.AutoConfig.for_model("mistral", **CONFIG)
        transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(src)
    paths = {}
    ours = work / "spattn"
    if not (ours / "model.onnx").is_file():
        t = time.time()
        rep = spattn.export_hf(
            str(src), task="text-generation-with-past", output_dir=str(ours), validate=False
        )
        print(f"spattn export: {time.time() - t:.1f} s, {rep.num_spattn_nodes} nodes", flush=True)
    paths["spattn"] = str(ours / "model.onnx")
    if optimum_python:
        opt = work / "optimum"
        if not (opt / "model.onnx").is_file():
            t = time.time()
            subprocess.run(
                [
                    optimum_python,
                    "-m",
                    "optimum.exporters.onnx",
                    "--model",
                    str(src),
                    "--task",
                    "text-generation-with-past",
                    str(opt),
                ],
                check=True,
            )
            print(f"optimum export: {time.time() - t:.1f} s", flush=True)
        paths["optimum"] = str(opt / "model.onnx")
    return paths


def measure(path: str, length: int, threads: int, decode_steps: int) -> dict[str, Any]:
    """Runs in its own process (peak memory is that process's)."""
    import numpy as np
    import onnxruntime as ort

    from spattn.runtime import library_path

    so = ort.SessionOptions()
    so.register_custom_ops_library(library_path("ort"))
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
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
    # warm-up on a short prompt (allocations, thread pool)
    w = 256
    sess.run(
        None,
        feeds(rng.integers(5, 4096, (1, w)), np.ones((1, w), np.int64), np.arange(w)[None], empty),
    )
    ids = rng.integers(5, 4096, (1, length)).astype(np.int64)
    mask = np.ones((1, length), np.int64)
    pos = np.arange(length, dtype=np.int64)[None]
    t = time.perf_counter()
    outs = dict(zip(names, sess.run(None, feeds(ids, mask, pos, empty)), strict=True))
    prefill = time.perf_counter() - t
    past = {n: outs[n.replace("past_key_values.", "present.")] for n in past_names}
    kv_bytes = int(sum(v.nbytes for v in past.values()))
    tok = outs["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
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


def plot(results: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    keys = [
        ("prefill_s", "prefill latency (s)"),
        ("peak_rss_bytes", "peak memory (GiB)"),
        ("kv_cache_bytes_after_prefill", "KV cache after prefill (MiB)"),
    ]
    scale = {"peak_rss_bytes": 2**30, "kv_cache_bytes_after_prefill": 2**20}
    for ax, (k, label) in zip(axes, keys, strict=True):
        for exporter, rows in results["runs"].items():
            pts = [(int(L), r[k] / scale.get(k, 1)) for L, r in rows.items() if "error" not in r]
            if pts:
                ax.plot(*zip(*sorted(pts), strict=True), marker="o", label=exporter)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=8)
    fig.suptitle(
        "Mistral-like (hidden 512, 4 layers, GQA 8:2, window 512), ORT CPU "
        f"{results['threads']} threads",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[2048, 8192, 16384])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decode-steps", type=int, default=16)
    ap.add_argument("--work", default="/tmp/spattn_bench_hf")
    ap.add_argument("--optimum-python")
    ap.add_argument("--exporters", nargs="+", default=["spattn", "optimum"])
    ap.add_argument("--skip", nargs="*", default=[], help="exporter:L pairs not to run")
    ap.add_argument("--out", default="benchmarks/results/hf_cpu.json")
    ap.add_argument("--plot")
    ap.add_argument("--measure", nargs=2, metavar=("ONNX", "L"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.measure:
        print(json.dumps(measure(a.measure[0], int(a.measure[1]), a.threads, a.decode_steps)))
        return
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    paths = build(work, a.optimum_python)
    results: dict[str, Any] = {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "threads": a.threads,
        "config": CONFIG,
        "decode_steps": a.decode_steps,
        "runs": {},
    }
    if Path(a.out).is_file():  # keep earlier runs (e.g. a length measured on another machine)
        results["runs"] = json.loads(Path(a.out).read_text()).get("runs", {})
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
                "--threads",
                str(a.threads),
                "--decode-steps",
                str(a.decode_steps),
            ]
            t = time.time()
            p = subprocess.run(cmd, capture_output=True, text=True)
            row: dict[str, Any]
            if p.returncode == 0:
                row = json.loads(p.stdout.strip().splitlines()[-1])
            else:
                row = {
                    "error": (p.stderr.strip().splitlines() or ["killed"])[-1][:300],
                    "returncode": p.returncode,
                }
            row["wall_s"] = time.time() - t
            results["runs"].setdefault(exporter, {})[str(L)] = row
            print(exporter, L, json.dumps(row), flush=True)
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
    if a.plot:
        plot(results, a.plot)


if __name__ == "__main__":
    main()
