"""Repeatability of the demo's headline speedup (``make demo``, samples/quickstart.py).

Runs the demo's timing part (fresh ONNX Runtime sessions, then the interleaved paired runs of
the sparse and the dense encoder, summarised as the median speedup with the middle half of the
pairs) several times on the demo's exported models, and records each run's headline, its spread,
the machine's load average around it, and whether the headlines agree within a tolerance.

    python samples/quickstart.py --out out/            # writes the two encoders
    python benchmarks/bench_demo.py --models out/ --runs 4 \\
        --json benchmarks/results/cpu_demo_speedup_repeatability.json
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]


def _quickstart():
    spec = importlib.util.spec_from_file_location("quickstart", REPO / "samples" / "quickstart.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _processor() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", required=True, help="the demo's --out folder (both encoders)")
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=15, help="paired runs per run (the demo's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--tolerance", type=float, default=0.10)
    ap.add_argument("--json", required=True)
    ap.add_argument("--plot", help="PNG (default: the JSON's path with .png)")
    args = ap.parse_args()
    qs = _quickstart()
    sparse = os.path.join(args.models, "longformer_encoder.onnx")
    dense = os.path.join(args.models, "dense_encoder.onnx")
    for p in (sparse, dense):
        if not os.path.isfile(p):
            sys.exit(f"--models: {p} is missing; run python samples/quickstart.py --out DIR first")
    x = np.random.default_rng(0).standard_normal((1, args.seq_len, args.d_model), np.float32)
    runs = []
    for r in range(args.runs):
        load_before = os.getloadavg()
        s_ms, d_ms = qs.time_encoders(sparse, dense, x, args.threads, args.repeats)
        summary = qs.speedup_summary(s_ms, d_ms)
        summary.update(
            run=r,
            sparse_ms=s_ms.tolist(),
            dense_ms=d_ms.tolist(),
            loadavg_1min_before=load_before[0],
            loadavg_1min_after=os.getloadavg()[0],
        )
        runs.append(summary)
        print(f"run {r}: " + qs.speedup_text(summary, args.threads).splitlines()[-1].strip())
        sys.stdout.flush()
    heads = [r["speedup_median"] for r in runs]
    spread = (max(heads) - min(heads)) / min(heads)
    cpus = os.cpu_count() or 0
    loads = [v for r in runs for v in (r["loadavg_1min_before"], r["loadavg_1min_after"])]
    result = {
        "question": "Do the demo's headline speedups (median of the paired runs, whole "
        "encoder) of separate runs agree within the tolerance?",
        "command": "python " + " ".join([os.path.relpath(__file__, REPO), *sys.argv[1:]]),
        "machine": {
            "platform": platform.platform(),
            "processor": _processor(),
            "cpus": cpus,
            "threads": args.threads,
            "onnxruntime": ort.__version__,
            "python": platform.python_version(),
            "loadavg_1min_range": [min(loads), max(loads)],
            "under_load": max(loads) > cpus,
            "note": (
                f"measured under load: 1-minute load average {min(loads):.1f} to "
                f"{max(loads):.1f} on {cpus} CPUs (other jobs shared the machine)"
                if max(loads) > cpus
                else f"1-minute load average at most {max(loads):.1f} on {cpus} CPUs"
            ),
        },
        "models_made_by": f"python samples/quickstart.py --out {args.models} (the demo itself)",
        "date": datetime.date.today().isoformat(),
        "method": "per run: fresh sessions, one warm-up call each, then repeats x (sparse, "
        "dense) alternated; speedup per pair = dense / sparse; headline = median over the "
        "pairs, spread = their quartiles",
        "headline_speedups": heads,
        "max_over_min_minus_1": spread,
        "tolerance": args.tolerance,
        "agree": spread <= args.tolerance,
        "runs": runs,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"headlines {', '.join(f'{h:.2f}x' for h in heads)}: max/min - 1 = {spread:.1%} "
        f"({'within' if spread <= args.tolerance else 'NOT within'} {args.tolerance:.0%}); "
        f"load average {min(loads):.1f} to {max(loads):.1f} on {cpus} CPUs"
    )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.boxplot([r["speedups"] for r in runs], whis=(0, 100))
    ax.plot(range(1, len(runs) + 1), heads, "o", color="C3", label="headline (median)")
    ax.set_xlabel("run")
    ax.set_ylabel("speedup of a pair (dense / sparse)")
    ax.set_title(
        f"demo speedup, {args.repeats} paired runs per run; headlines within "
        f"{spread:.1%}\nload average {min(loads):.1f}-{max(loads):.1f} on {cpus} CPUs",
        fontsize=8,
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.plot or str(Path(args.json).with_suffix(".png")), dpi=120)


if __name__ == "__main__":
    main()
