"""Where spattn stands against the Hopper anchors: the latest measurement of every target row.

bench_hopper.py runs cover a few patterns or head dims each (a kernel change is measured on the
rows it touches), so the current standing is spread over several result files. This script
reads them and keeps, for each row (kind, pattern, L, D, dtype; decode: pattern, Lq, cache), the
measurement of the latest run that timed it beside its anchors, then writes one table per issue
target with the ratio, the target, whether it is met, and the file the row comes from.

    python3 benchmarks/hopper_standing.py [FILES...] [--md OUT.md] [--json OUT.json]

FILES default to benchmarks/results/hopper_h200_*.json (not archive/). Rows of runs that left
the anchors out (no ratio) never replace a row that has one.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
# One rendering of met / not met and of the band-efficiency cell.
from summarize_hopper import _band_cell, _met  # noqa: E402

# Issue targets in the order the tables list them (bench_hopper.py's pattern keys).
PREFILL_ORDER = [
    "dense",
    "causal_window4096_gqa",
    "sliding256",
    "sliding256_global64",
    "bigbird",
    "block64",
]


def _run_date(data: dict, row: dict) -> str:
    meta = data.get("meta", {})
    runs = meta.get("runs") or []
    i = row.get("run", 0)
    if runs and 0 <= i < len(runs):
        return str(runs[i].get("date", meta.get("date", "")))
    return str(meta.get("date", ""))


def _ratio(row: dict) -> float | None:
    if row.get("kind") == "decode":
        return row.get("ratio_vs_fa4")
    return (row.get("target") or {}).get("ratio")


def latest_rows(paths: list[str]) -> dict[str, dict]:
    """Row id -> {row, file, date} of the latest run that measured it beside its anchors."""
    best: dict[str, dict] = {}
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        for i, row in enumerate(data.get("rows", [])):
            if _ratio(row) is None or "spattn" not in row.get("impl", {}):
                continue
            rid = row.get("id", f"{path}#{i}")
            date = _run_date(data, row)
            if rid not in best or date >= best[rid]["date"]:
                device = data.get("meta", {}).get("device", "")
                best[rid] = {
                    "row": row,
                    "file": os.path.basename(path),
                    "date": date,
                    "device": device,
                }
    return best


def _plot_order(e: dict) -> tuple:
    r = e["row"]
    return (r.get("kind", ""), r.get("D", 0), r.get("L", 0), r.get("dtype", ""), r.get("Lq", 0))


def _range(values: list[float]) -> str:
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return f"{lo:.2f}x" if abs(hi - lo) < 0.005 else f"{lo:.2f}-{hi:.2f}x"


def prefill_tables(best: dict[str, dict]) -> tuple[list[str], list[dict]]:
    entries = [e for e in best.values() if e["row"].get("kind") == "prefill"]

    def order(e):
        r = e["row"]
        key = r.get("key", "")
        rank = PREFILL_ORDER.index(key) if key in PREFILL_ORDER else len(PREFILL_ORDER)
        return (rank, key, r["D"], r["L"], r["dtype"])

    entries.sort(key=order)
    lines: list[str] = []
    summary: list[dict] = []
    for key in dict.fromkeys(e["row"].get("key", "") for e in entries):
        group = [e for e in entries if e["row"].get("key", "") == key]
        first = group[0]["row"]
        tg = first.get("target") or {}
        ratios = [e["row"]["target"]["ratio"] for e in group]
        met = sum(1 for e in group if e["row"]["target"].get("met"))
        summary.append(
            {
                "pattern": first["pattern"],
                "target": tg.get("text", ""),
                "rows": len(group),
                "met": met,
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
            }
        )
        lines += [
            f"### {first['pattern']} (target {tg.get('text', '')}): met on {met} of "
            f"{len(group)} rows, {_range(ratios)}",
            "",
            "| L | D | dtype | spattn ms (TF/s) | fastest anchor ms | ratio | met "
            "| band / dense TF/s | from |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for e in group:
            r = e["row"]
            t = r["target"]
            ours = r["impl"]["spattn"]
            bs = _band_cell(r)
            lines.append(
                f"| {r['L'] // 1024}K | {r['D']} | {r['dtype']} "
                f"| {ours['median_ms']:.3f} ({ours.get('tflops', 0):.0f}) "
                f"| {t.get('best_ms', 0):.3f} ({t.get('best_anchor')}) | {t['ratio']:.2f}x "
                f"| {_met(t.get('met'))} | {bs} | `{e['file']}` ({e['date'][:10]}) |"
            )
        lines.append("")
    return lines, summary


def decode_table(best: dict[str, dict]) -> tuple[list[str], list[dict]]:
    entries = [e for e in best.values() if e["row"].get("kind") == "decode"]
    entries.sort(key=lambda e: (e["row"]["pattern"], e["row"]["Lq"], e["row"]["cache"]))
    if not entries:
        return [], []
    r0 = entries[0]["row"]
    lines = [
        f"### Decode (B = {r0['batch']}, {r0['heads_q']} query heads over {r0['heads_kv']} KV "
        f"heads, D = {r0['D']}, {r0['dtype']}; CUDA-graph replays; targets: at least FA4's "
        "speed and 70% of the HBM bandwidth on the K/V bytes)",
        "",
        "| pattern | Lq | cache | spattn µs | FA4 µs | FA4 / spattn | met | K/V bandwidth | met "
        "| from |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary = []
    for e in entries:
        r = e["row"]
        ratio = r["ratio_vs_fa4"]
        bw = r.get("bandwidth") or {}
        fa = r["impl"].get("fa4", {}).get("median_ms")
        lines.append(
            f"| {r['pattern']} | {r['Lq']} | {r['cache'] // 1024}K "
            f"| {r['impl']['spattn']['median_ms'] * 1e3:.1f} "
            f"| {'' if fa is None else f'{fa * 1e3:.1f}'} | {ratio:.2f}x | {_met(ratio >= 1.0)} "
            f"| {bw.get('fraction', 0):.0%} | {_met(bw.get('met'))} "
            f"| `{e['file']}` ({e['date'][:10]}) |"
        )
        summary.append(
            {
                "pattern": r["pattern"],
                "Lq": r["Lq"],
                "cache": r["cache"],
                "ratio_vs_fa4": ratio,
                "bandwidth_fraction": bw.get("fraction"),
            }
        )
    return lines + [""], summary


def markdown(best: dict[str, dict], paths: list[str]) -> tuple[str, dict]:
    pre, pre_summary = prefill_tables(best)
    dec, dec_summary = decode_table(best)
    lines = [
        "# spattn beside FlashAttention-4 and cuDNN on the H200: the latest row of each target",
        "",
        "Each row is the latest `bench_hopper.py` measurement of it beside its anchors, in one "
        "process (the file and the date of the run are given; ratios are taken inside that "
        "run). Made by `python3 benchmarks/hopper_standing.py` from: "
        + ", ".join(f"`{os.path.basename(p)}`" for p in paths)
        + ".",
        "",
        "| pattern | target | rows met | ratio range |",
        "|---|---|---|---|",
    ]
    for s in pre_summary:
        lines.append(
            f"| {s['pattern']} | {s['target']} | {s['met']} of {s['rows']} "
            f"| {_range([s['ratio_min'], s['ratio_max']])} |"
        )
    if dec_summary:
        ratios = [s["ratio_vs_fa4"] for s in dec_summary]
        met = sum(1 for x in ratios if x >= 1.0)
        lines.append(f"| decode | >= 1.0x FA4 | {met} of {len(ratios)} | {_range(ratios)} |")
    lines += ["", *pre, *dec]
    files = [os.path.basename(p) for p in paths]
    return "\n".join(lines) + "\n", {"files": files, "prefill": pre_summary, "decode": dec_summary}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--md", help="write the tables to this file")
    ap.add_argument("--json", help="write the summary and the chosen rows to this file")
    ap.add_argument("--png", help="plot the ratios (bench_hopper.py's plot of one run)")
    args = ap.parse_args(argv)
    paths = args.files or sorted(
        p
        for p in glob.glob(os.path.join(_HERE, "results", "hopper_h200_*.json"))
        if not p.endswith("_standing.json")
    )
    best = latest_rows(paths)
    text, summary = markdown(best, paths)
    print(text)
    if args.md:
        with open(args.md, "w") as f:
            f.write(text)
    if args.png:
        # bench_hopper.plot draws a run's rows; here the chosen rows of several runs.
        import bench_hopper

        devices = sorted({e["device"] for e in best.values()})
        rows = [e["row"] for e in sorted(best.values(), key=_plot_order)]
        meta = {"device": " / ".join(devices) + " (latest row of each target)"}
        bench_hopper.plot({"meta": {**meta, "peak_bandwidth_TBps": 4.8}, "rows": rows}, args.png)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {**summary, "rows": [slim(rid, e) for rid, e in sorted(best.items())]}, f, indent=1
            )


def slim(rid: str, e: dict) -> dict:
    """The fields of a chosen row that the tables show, with where it comes from."""
    r = e["row"]
    out = {"id": rid, "file": e["file"], "date": e["date"], "pattern": r.get("pattern")}
    for k in ("L", "D", "dtype", "Lq", "cache", "batch", "heads_q", "heads_kv"):
        if k in r:
            out[k] = r[k]
    out["spattn_ms"] = r["impl"]["spattn"].get("median_ms")
    if r.get("kind") == "decode":
        out["ratio_vs_fa4"] = r.get("ratio_vs_fa4")
        out["bandwidth"] = r.get("bandwidth")
    else:
        t = r["target"]
        out.update({k: t.get(k) for k in ("text", "ratio", "met", "best_anchor", "best_ms")})
        out["band_efficiency"] = r.get("band_efficiency")
    return out


if __name__ == "__main__":
    main()
