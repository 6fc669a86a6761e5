"""Two A/Bs behind docs/hf.md's session and graph notes, on bench_hf.py's small Mistral-like model.

Questions answered (ONNX Runtime CPU EP, each run in its own process, the two sides interleaved):
- the exported graph with and without ``export._lean_graph``: how many nodes are left after
  ONNX Runtime's optimizations, and decode tokens/s at L = 1024 (``--rounds`` runs each);
- ONNX Runtime's memory pattern on and off (``spattn.runtime.SESSION_MEM_PATTERN``): peak resident
  memory after three prefills and decode tokens/s, at each of ``--lengths``.

    python benchmarks/hf_graph_ab.py --out benchmarks/results/hf_graph_ab.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_hf  # noqa: E402

# One measurement in a child: bench_hf.measure with the memory pattern as asked.
_CHILD = """
import json, sys
sys.path.insert(0, {here!r})
import spattn.runtime as rt
rt.SESSION_MEM_PATTERN = {mem_pattern}
import bench_hf
print(json.dumps(bench_hf.measure({path!r}, {length}, {threads}, {steps}, 3)))
"""


def measure(path: str, length: int, threads: int, steps: int, mem_pattern: bool) -> dict[str, Any]:
    code = _CHILD.format(
        here=HERE, mem_pattern=mem_pattern, path=path, length=length, threads=threads, steps=steps
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def optimized_nodes(path: str) -> int:
    import onnx
    import onnxruntime as ort

    from spattn.runtime import library_path

    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        so.register_custom_ops_library(library_path("ort"))
        so.optimized_model_filepath = os.path.join(d, "o.onnx")
        so.log_severity_level = 3
        ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        return len(onnx.load(so.optimized_model_filepath, load_external_data=False).graph.node)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/spattn_hf_graph_ab")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--decode-steps", type=int, default=128)
    ap.add_argument("--lengths", type=int, nargs="+", default=[2048, 16384])
    ap.add_argument("--out", default="benchmarks/results/hf_graph_ab.json")
    a = ap.parse_args()

    import spattn.hf.export as hf_export

    work = Path(a.work)
    src = bench_hf._hf_model(work)
    paths = {}
    real = hf_export._lean_graph
    for name, rewrite in (("lean", real), ("plain", lambda proto, windows: {})):
        out = work / name
        if not (out / "model.onnx").is_file():
            hf_export._lean_graph = rewrite  # "plain": the graph as traced
            try:
                hf_export.export_hf(
                    str(src), task="text-generation-with-past", output_dir=str(out), validate=False
                )
            finally:
                hf_export._lean_graph = real
        paths[name] = str(out / "model.onnx")
    graph: dict[str, Any] = {
        name: {"nodes_after_ort_optimizations": optimized_nodes(p), "decode_tokens_per_s": []}
        for name, p in paths.items()
    }
    for _ in range(a.rounds):
        for name in ("plain", "lean"):
            row = measure(paths[name], 1024, a.threads, a.decode_steps, True)
            graph[name]["decode_tokens_per_s"].append(row["decode_tokens_per_s"])
            print(name, json.dumps(row), flush=True)
    pattern: dict[str, Any] = {}
    for length in a.lengths:
        runs: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
        for _ in range(2):
            for side in ("on", "off"):
                row = measure(paths["lean"], length, a.threads, a.decode_steps // 2, side == "on")
                runs[side].append(
                    {
                        "peak_rss_bytes": row["peak_rss_bytes"],
                        "prefill_s": row["prefill_s"],
                        "decode_tokens_per_s": row["decode_tokens_per_s"],
                    }
                )
                print(length, side, json.dumps(runs[side][-1]), flush=True)
        pattern[str(length)] = runs
    result = {
        "question": __doc__.split("\n\n")[1],
        "command": "python benchmarks/hf_graph_ab.py " + " ".join(sys.argv[1:]),
        "machine": bench_hf._machine(),
        "threads": a.threads,
        "config": bench_hf.CONFIG,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "lean_graph": graph,
        "lean_graph_decode_median": {
            n: statistics.median(g["decode_tokens_per_s"]) for n, g in graph.items()
        },
        "memory_pattern": pattern,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("lean_graph_decode_median",)}))


if __name__ == "__main__":
    main()
