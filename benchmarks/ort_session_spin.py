"""CPU: does a call slow down when it starts right after another ONNX Runtime session's call?

Question: the CPU benchmarks interleave sessions (our op, dense attention, another build of our
op). Each session has its own intra-op thread pool, whose threads spin for a while after a run;
how much slower is a call of session A that starts right after a call of session B, against one
that follows A's own call, and how long a pause between them removes the difference? This is why
bench_cpu.py and bench_cpu_decode.py pause before each block (``--pause-ms``).

Two sessions of the same one-node model (SparseAttention, band +-256 + 64 global, B=1, 8 heads,
D=64, float32, L = ``--length``), same library, ``--threads`` intra-op threads each. For each
pause, ``--rounds`` rounds of: B, pause, A (timed: "after the other session"), pause, A (timed:
"after its own session"). Reported: the median of each over the rounds. Writes JSON (``--out``).

    python benchmarks/ort_session_spin.py [--length 4096] [--threads 2] [--rounds 12]
                                          [--pauses-ms 0 2 10 50 100] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort
from bench_cpu import _cpu_name, _session

from spattn.bench import DEFAULT_PATTERN, BenchConfig, sparse_attention_model
from spattn.runtime import library_path

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--pauses-ms", type=float, nargs="+", default=[0, 2, 10, 50, 100])
    parser.add_argument("--out", default=os.path.join(RESULTS, "cpu_ort_session_spin.json"))
    args = parser.parse_args()

    cfg = BenchConfig(heads=8, kv_heads=8, head_dim=64, attributes=dict(DEFAULT_PATTERN))
    model = sparse_attention_model(cfg)
    a, b = (_session(model, args.threads, library_path("ort")) for _ in range(2))
    rng = np.random.default_rng(0)
    shape = (1, cfg.heads, args.length, cfg.head_dim)
    feeds = {n: rng.standard_normal(shape, dtype=np.float32) for n in ("query", "key", "value")}
    a.run(None, feeds)
    b.run(None, feeds)

    def timed(session: ort.InferenceSession) -> float:
        t0 = time.perf_counter()
        session.run(None, feeds)
        return (time.perf_counter() - t0) * 1e3

    rows = []
    for pause_ms in args.pauses_ms:
        other, own = [], []
        for _ in range(args.rounds):
            b.run(None, feeds)
            time.sleep(pause_ms / 1e3)
            other.append(timed(a))
            time.sleep(pause_ms / 1e3)
            own.append(timed(a))
        row = {
            "pause_ms": pause_ms,
            "after_other_session_ms": statistics.median(other),
            "after_own_session_ms": statistics.median(own),
        }
        row["ratio"] = row["after_other_session_ms"] / row["after_own_session_ms"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "question": "a SparseAttention call right after another ONNX Runtime session's call "
        "against one after its own session's, by the pause between them",
        "command": "python benchmarks/ort_session_spin.py " + " ".join(sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "processor": _cpu_name(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "onnxruntime": ort.__version__,
        },
        "library": library_path("ort"),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "length": args.length,
        "rounds": args.rounds,
        "rows": rows,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
