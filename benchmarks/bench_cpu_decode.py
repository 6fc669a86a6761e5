"""CPU decode: spattn::SparseAttention vs ONNX Runtime's GroupQueryAttention with a local window.

Question: one decode step (one new query token over a K/V cache of Lk tokens, causal sliding
window of W keys, grouped-query heads) in ONNX Runtime's CPU execution provider: how long does our
op take against ONNX Runtime's own decode attention, ``com.microsoft::GroupQueryAttention`` with
``local_window_size = W`` and a past cache, and are the outputs equal?

Both run as one-node ONNX Runtime sessions with the same intra-op thread count, float32, B = 1:

- ours: ``query [B, Hq, 1, D]``, ``key``/``value`` the whole cache ``[B, Hkv, Lk, D]``,
  ``causal=1, window_left=W-1`` (op spec: the query and the W - 1 keys before it);
- ``GroupQueryAttention`` (``num_heads=Hq, kv_num_heads=Hkv, local_window_size=W``): the new
  token's ``query``/``key``/``value`` ``[B, 1, H * D]``, ``past_key``/``past_value``
  ``[B, Hkv, cap, D]``, ``seqlens_k = Lk - 1``, ``total_sequence_length = Lk``. In ONNX Runtime
  1.32, ``local_window_size = W`` lets a query see W keys, itself included (checked here on every
  row: the outputs must agree). Two ways of running it are timed:
  ``gqa_shared``: the cache buffer is shared between ``past_key`` and ``present_key`` (I/O
  binding, cap = Lk, the new token written in place: how a generation loop runs it, and ONNX
  Runtime's fastest path); ``gqa_copy``: plain ``run`` with a past of Lk - 1 tokens, which ONNX
  Runtime copies into a new present cache each step.

Timing: wall clock of ``run_with_iobinding`` (inputs and outputs bound once); after a warm-up,
``--rounds`` rounds, each timing ``--calls`` consecutive calls of every backend in turn (so load
from other jobs on the machine falls on all of them alike; each block ``--pause-ms`` after the
previous one); a round's time is the median call of its block, the reported time the median over
rounds, with the spread (min, max, quartiles). The 1-minute load average before and after each
row is recorded. Writes benchmarks/results/cpu_decode_vs_ort_gqa.json and .png.

``--baseline-lib PATH`` times another build of our library (libspattn_ort.so) beside it in the
same rounds (a before/after of a kernel change).

    python benchmarks/bench_cpu_decode.py [--threads 2] [--lengths 4096 8192 16384] [--window 512]
                                          [--rounds 15] [--calls 20] [--target 2.0]
                                          [--pause-ms 100]
                                          [--baseline-lib PATH] [--note TEXT] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

# The CPU benchmark's session and machine description (run from benchmarks/, as a script).
from bench_cpu import _cpu_name, _session
from onnx import TensorProto, helper

import spattn
from spattn.runtime import library_path

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
NAME = "cpu_decode_vs_ort_gqa"
# (query heads, key/value heads, head dim)
HEAD_CONFIGS = [(32, 8, 128), (16, 4, 64)]


def _model(graph: Any, domain: str) -> bytes:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(domain, 1)]
    )
    model.ir_version = 10
    return model.SerializeToString()


def spattn_model(hq: int, hkv: int, d: int, window: int) -> bytes:
    f = TensorProto.FLOAT
    ins = [
        helper.make_tensor_value_info("query", f, [1, hq, 1, d]),
        helper.make_tensor_value_info("key", f, [1, hkv, "Lk", d]),
        helper.make_tensor_value_info("value", f, [1, hkv, "Lk", d]),
    ]
    node = helper.make_node(
        "SparseAttention",
        ["query", "key", "value"],
        ["output"],
        domain="spattn",
        causal=1,
        window_left=window - 1,
    )
    out = helper.make_tensor_value_info("output", f, [1, hq, 1, d])
    return _model(helper.make_graph([node], "decode", ins, [out]), "spattn")


def gqa_model(hq: int, hkv: int, d: int, window: int) -> bytes:
    """``com.microsoft::GroupQueryAttention``, one decode step over a past cache."""
    f = TensorProto.FLOAT
    ins = [
        helper.make_tensor_value_info("query", f, [1, 1, hq * d]),
        helper.make_tensor_value_info("key", f, [1, 1, hkv * d]),
        helper.make_tensor_value_info("value", f, [1, 1, hkv * d]),
        helper.make_tensor_value_info("past_key", f, [1, hkv, "cap", d]),
        helper.make_tensor_value_info("past_value", f, [1, hkv, "cap", d]),
        helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [1]),
        helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, []),
    ]
    outs = [
        helper.make_tensor_value_info("output", f, [1, 1, hq * d]),
        helper.make_tensor_value_info("present_key", f, [1, hkv, "present", d]),
        helper.make_tensor_value_info("present_value", f, [1, hkv, "present", d]),
    ]
    node = helper.make_node(
        "GroupQueryAttention",
        [i.name for i in ins],
        [o.name for o in outs],
        domain="com.microsoft",
        num_heads=hq,
        kv_num_heads=hkv,
        local_window_size=window,
    )
    return _model(helper.make_graph([node], "gqa", ins, outs), "com.microsoft")


def _value(x: np.ndarray) -> ort.OrtValue:
    return ort.OrtValue.ortvalue_from_numpy(x)


class Case:
    """The sessions, bound inputs and outputs of one (heads, Lk) row."""

    def __init__(
        self,
        hq: int,
        hkv: int,
        d: int,
        length: int,
        window: int,
        threads: int,
        baseline: str | None = None,
    ):
        rng = np.random.default_rng(length + 7 * d)
        q = rng.standard_normal((1, hq, 1, d), dtype=np.float32)
        k = rng.standard_normal((1, hkv, length, d), dtype=np.float32)
        v = rng.standard_normal((1, hkv, length, d), dtype=np.float32)
        self.calls: dict[str, Any] = {}
        self.outputs: dict[str, Any] = {}

        # ours: the whole cache, the op reads only the window (and the same op from another
        # build of our library, --baseline-lib, in the same rounds).
        libraries = {"spattn": library_path("ort")}
        if baseline:
            libraries["spattn_baseline"] = baseline
        for name, library in libraries.items():
            s = _session(spattn_model(hq, hkv, d, window), threads, library)
            b = s.io_binding()
            for n, x in (("query", q), ("key", k), ("value", v)):
                b.bind_ortvalue_input(n, _value(x))
            o = _value(np.zeros((1, hq, 1, d), np.float32))
            b.bind_ortvalue_output("output", o)
            self._add(name, s, b, lambda o=o: o.numpy())

        def token(x: np.ndarray) -> np.ndarray:  # the last cache row, [1, 1, H * D]
            return np.ascontiguousarray(x[:, :, -1:].transpose(0, 2, 1, 3).reshape(1, 1, -1))

        step = {
            "query": q.transpose(0, 2, 1, 3).reshape(1, 1, hq * d).copy(),
            "key": token(k),
            "value": token(v),
            "seqlens_k": np.array([length - 1], np.int32),
            "total_sequence_length": np.array(length, np.int32),
        }
        gqa = gqa_model(hq, hkv, d, window)

        # GQA, past and present share one buffer of Lk tokens: the new token is written in
        # place (the same values the cache already holds at Lk - 1, so every call is alike).
        s = _session(gqa, threads, None)
        b = s.io_binding()
        for n, x in step.items():
            b.bind_ortvalue_input(n, _value(x))
        cache_k, cache_v = _value(k.copy()), _value(v.copy())
        b.bind_ortvalue_input("past_key", cache_k)
        b.bind_ortvalue_input("past_value", cache_v)
        b.bind_ortvalue_output("present_key", cache_k)
        b.bind_ortvalue_output("present_value", cache_v)
        o2 = _value(np.zeros((1, 1, hq * d), np.float32))
        b.bind_ortvalue_output("output", o2)
        self._add("gqa_shared", s, b, lambda o=o2: o.numpy())

        # GQA, past of Lk - 1 tokens: ONNX Runtime writes past + new token into a new present.
        s = _session(gqa, threads, None)
        b = s.io_binding()
        for n, x in step.items():
            b.bind_ortvalue_input(n, _value(x))
        b.bind_ortvalue_input("past_key", _value(np.ascontiguousarray(k[:, :, :-1])))
        b.bind_ortvalue_input("past_value", _value(np.ascontiguousarray(v[:, :, :-1])))
        o3 = _value(np.zeros((1, 1, hq * d), np.float32))
        b.bind_ortvalue_output("output", o3)
        b.bind_output("present_key")
        b.bind_output("present_value")
        self._add("gqa_copy", s, b, lambda o=o3: o.numpy())

        self.hq, self.d = hq, d
        self.k, self.v = k, v

    def _add(self, name: str, session: Any, binding: Any, fetch: Any) -> None:
        self.calls[name] = lambda: session.run_with_iobinding(binding)
        self.outputs[name] = fetch

    def output(self, name: str) -> np.ndarray:
        """The backend's output as ``[1, Hq, 1, D]``."""
        o = self.outputs[name]()
        if not name.startswith("spattn"):
            o = o.reshape(1, 1, self.hq, self.d).transpose(0, 2, 1, 3)
        return np.asarray(o)


def time_case(
    case: Case, warmup: int, rounds: int, calls: int, pause_s: float
) -> dict[str, list[float]]:
    """Per-round times (ms) of every backend; each block of calls starts ``pause_s`` after the
    previous one, so that no block shares the cores with another session's spinning pool threads
    (bench_cpu.time_length says why)."""
    for call in case.calls.values():
        for _ in range(warmup):
            call()
    per_round: dict[str, list[float]] = {n: [] for n in case.calls}
    for _ in range(rounds):
        for name, call in case.calls.items():
            time.sleep(pause_s)
            t = []
            for _ in range(calls):
                t0 = time.perf_counter()
                call()
                t.append((time.perf_counter() - t0) * 1e3)
            per_round[name].append(statistics.median(t))
    return per_round


def _summary(times: list[float]) -> dict[str, float]:
    q = np.percentile(times, [25, 75])
    return {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "q25_ms": float(q[0]),
        "q75_ms": float(q[1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192, 16384])
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--target", type=float, default=2.0, help="speedup asked for")
    parser.add_argument(
        "--pause-ms", type=float, default=100, help="pause before each block of calls (ms)"
    )
    parser.add_argument("--out", default=os.path.join(RESULTS, NAME + ".json"))
    parser.add_argument(
        "--baseline-lib",
        help="another build of libspattn_ort.so, timed beside ours in the same rounds",
    )
    parser.add_argument("--note", default="", help="recorded in the JSON")
    args = parser.parse_args()

    rows = []
    for hq, hkv, d in HEAD_CONFIGS:
        for length in args.lengths:
            load_before = os.getloadavg()[0]
            case = Case(hq, hkv, d, length, args.window, args.threads, args.baseline_lib)
            ours = case.output("spattn")
            diffs = {}
            per_round = time_case(case, args.warmup, args.rounds, args.calls, args.pause_ms / 1e3)
            for name in case.calls:
                if name != "spattn":
                    diffs[name] = float(np.abs(case.output(name) - ours).max())
            if not np.isfinite(ours).all():
                raise SystemExit(f"non-finite output of SparseAttention at Lk={length}")
            times = {n: _summary(t) for n, t in per_round.items()}
            best_ort = min(times["gqa_shared"]["median_ms"], times["gqa_copy"]["median_ms"])
            speedup = best_ort / times["spattn"]["median_ms"]
            # Per-round ratios (each round times both back to back): their spread shows how much
            # the load on the machine moved the ratio.
            ratios = [
                min(a, b) / c
                for a, b, c in zip(
                    per_round["gqa_shared"], per_round["gqa_copy"], per_round["spattn"], strict=True
                )
            ]
            row = {
                "heads_q": hq,
                "heads_kv": hkv,
                "head_dim": d,
                "length": length,
                "window": args.window,
                "spattn": times["spattn"],
                "gqa_shared": times["gqa_shared"],
                "gqa_copy": times["gqa_copy"],
                "round_times_ms": per_round,
                "speedup_vs_best_gqa": speedup,
                "speedup_vs_gqa_shared": times["gqa_shared"]["median_ms"]
                / times["spattn"]["median_ms"],
                "speedup_per_round_min": min(ratios),
                "speedup_per_round_max": max(ratios),
                "max_abs_diff_vs_gqa_shared": diffs["gqa_shared"],
                "max_abs_diff_vs_gqa_copy": diffs["gqa_copy"],
                "target_speedup": args.target,
                "target_met": bool(speedup >= args.target),
                **(
                    {
                        "spattn_baseline": times["spattn_baseline"],
                        "speedup_vs_baseline": times["spattn_baseline"]["median_ms"]
                        / times["spattn"]["median_ms"],
                        "max_abs_diff_vs_baseline": diffs["spattn_baseline"],
                    }
                    if "spattn_baseline" in times
                    else {}
                ),
                "loadavg_1min_before": load_before,
                "loadavg_1min_after": os.getloadavg()[0],
            }
            rows.append(row)
            print(
                f"Hq={hq} Hkv={hkv} D={d} Lk={length}: spattn {times['spattn']['median_ms']:.3f} ms"
                f", GQA shared {times['gqa_shared']['median_ms']:.3f} ms, GQA copy "
                f"{times['gqa_copy']['median_ms']:.3f} ms, speedup {speedup:.2f}x, max|diff| "
                f"{max(diffs['gqa_shared'], diffs['gqa_copy']):.2e}, load {load_before:.2f}"
                + (
                    f", baseline {times['spattn_baseline']['median_ms']:.3f} ms"
                    if "spattn_baseline" in times
                    else ""
                ),
                flush=True,
            )
            del case

    result = {
        "question": "one decode step (Lq = 1, causal window of W keys, GQA) through ONNX Runtime's "
        "CPU EP: spattn::SparseAttention against com.microsoft::GroupQueryAttention with "
        "local_window_size = W and a past cache, float32, B = 1",
        "command": "python benchmarks/bench_cpu_decode.py " + " ".join(sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "processor": _cpu_name(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
        },
        "versions": {
            "onnxruntime": ort.__version__,
            "onnx": onnx.__version__,
            "numpy": np.__version__,
            "spattn": getattr(spattn, "__version__", "unknown"),
            "python": platform.python_version(),
        },
        "library": library_path("ort"),
        "baseline_library": args.baseline_lib,
        "note": args.note,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "settings": {
            "window": args.window,
            "window_semantics": "local_window_size = W: the query and the W - 1 keys before it "
            "(ONNX Runtime 1.32, checked by the output comparison); ours causal=1, "
            "window_left=W-1",
            "warmup_calls": args.warmup,
            "rounds": args.rounds,
            "calls_per_round": args.calls,
            "pause_ms": args.pause_ms,
            "time": "median over rounds of each round's median call (ms); spread: min, max, "
            "quartiles of the round medians",
            "speedup": "GroupQueryAttention's faster way (gqa_shared or gqa_copy) / ours",
        },
        "rows": rows,
        "all_targets_met": all(r["target_met"] for r in rows),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    plot(result, os.path.splitext(args.out)[0] + ".png")
    print(f"wrote {args.out}")


def plot(result: dict, path: str) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    configs = sorted({(r["heads_q"], r["heads_kv"], r["head_dim"]) for r in result["rows"]})
    fig, axes = plt.subplots(1, len(configs), figsize=(5.5 * len(configs), 4), squeeze=False)
    labels = {
        "spattn": "spattn SparseAttention (window only)",
        "gqa_shared": "ORT GroupQueryAttention (shared cache)",
        "gqa_copy": "ORT GroupQueryAttention (past copied)",
        "spattn_baseline": "spattn, --baseline-lib build",
    }
    for ax, (hq, hkv, d) in zip(axes[0], configs, strict=True):
        rows = [
            r
            for r in result["rows"]
            if (r["heads_q"], r["heads_kv"], r["head_dim"]) == (hq, hkv, d)
        ]
        xs = [r["length"] for r in rows]
        series = [("spattn", "o-"), ("gqa_shared", "s-"), ("gqa_copy", "^--")]
        if "spattn_baseline" in rows[0]:
            series.append(("spattn_baseline", "x:"))
        for name, marker in series:
            med = [r[name]["median_ms"] for r in rows]
            err = [
                [m - r[name]["min_ms"] for m, r in zip(med, rows, strict=True)],
                [r[name]["max_ms"] - m for m, r in zip(med, rows, strict=True)],
            ]
            ax.errorbar(xs, med, yerr=err, fmt=marker, capsize=3, label=labels[name])
        for x, r in zip(xs, rows, strict=True):
            ax.annotate(
                f"{r['speedup_vs_best_gqa']:.1f}x",
                (x, r["spattn"]["median_ms"]),
                textcoords="offset points",
                xytext=(7, -3),
                ha="left",
                fontsize=8,
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("K/V cache length Lk")
        ax.set_ylabel("time per decode step (ms)")
        ax.set_title(f"{hq}:{hkv} heads, D={d}, window {result['settings']['window']}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    m = result["machine"]
    fig.suptitle(
        f"decode step, ONNX Runtime {result['versions']['onnxruntime']} CPU EP, "
        f"{m['threads']} threads, {m['processor']}, fp32 (bars: min-max over rounds)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
