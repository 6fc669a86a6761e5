"""Markdown tables from a bench_hopper.py result: spattn against FA4, cuDNN and FlexAttention.

One row per prefill measurement (pattern, L, D, dtype): spattn's time and effective TF/s, each
anchor's time (``≠`` when its output did not match spattn's, ``err`` when it failed), the ratio
of the fastest matching anchor of the target to spattn, the target and whether it is met; then
the decode rows (CUDA-graph times, bandwidth against the device's peak), the mismatches and the
rows the run's budget left out.

    python3 benchmarks/summarize_hopper.py benchmarks/results/hopper_h200_full.json [--md OUT]
"""

from __future__ import annotations

import argparse
import json


def load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def unique_rows(data: dict) -> tuple[list[dict], list[str]]:
    """The result's rows, one per id (a repeated id: the later row, in the place of the first),
    and the repeated ids."""
    seen: dict = {}
    repeated = []
    for i, r in enumerate(data.get("rows", [])):
        rid = r.get("id", f"#{i}")
        if rid in seen:
            repeated.append(rid)
        seen[rid] = r
    return list(seen.values()), repeated


def _anchor(impl: dict, name: str, unit: str = "ms") -> str:
    t = impl.get(name)
    if t is None:
        return ""
    if "median_ms" not in t:
        return "err"
    v = t["median_ms"] if unit == "ms" else t["median_ms"] * 1e3
    cell = f"{v:.3f}" if unit == "ms" else f"{v:.1f}"
    if t.get("matches") is False:
        cell += " ≠"
    return cell


def _cudnn(impl: dict) -> str:
    if "cudnn_sdpa" in impl:
        return _anchor(impl, "cudnn_sdpa")
    if "cudnn_bsa" in impl:
        cell = _anchor(impl, "cudnn_bsa")
        return f"BSA {cell}" if cell else ""
    return _anchor(impl, "sdpa_cudnn")


def _met(flag) -> str:
    return "n/a" if flag is None else ("met" if flag else "**not met**")


def _band_cell(row: dict) -> str:
    """The band-efficiency cell of a prefill row: the band's TF/s over dense's, met or not."""
    be = row.get("band_efficiency")
    return "" if not be else f"{be['fraction']:.2f} ({_met(be['met'])})"


def prefill_table(data: dict) -> list[str]:
    rows = [r for r in data["rows"] if r.get("kind") == "prefill" and "L" in r]
    out = [
        "| pattern | L | D | dtype | spattn ms (TF/s) | FA4 | cuDNN | Flex | ratio vs best "
        "| target | met | band / dense |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        impl = r["impl"]
        ours = impl.get("spattn", {})
        if "median_ms" in ours:
            sp = f"{ours['median_ms']:.3f} ({ours.get('tflops', 0):.0f})"
        else:
            sp = "err"
        tg = r.get("target") or {}
        ratio = tg.get("ratio")
        rs = "-" if ratio is None else f"{ratio:.2f}x ({tg.get('best_anchor')})"
        bs = _band_cell(r)
        out.append(
            f"| {r['pattern']} | {r['L'] // 1024}K | {r['D']} | {r['dtype']} | {sp} "
            f"| {_anchor(impl, 'fa4')} | {_cudnn(impl)} | {_anchor(impl, 'flex')} | {rs} "
            f"| {tg.get('text', '')} | {_met(tg.get('met'))} | {bs} |"
        )
    return out


def decode_table(data: dict) -> list[str]:
    rows = [r for r in data["rows"] if r.get("kind") == "decode" and "cache" in r]
    peak = data.get("meta", {}).get("peak_bandwidth_TBps", 4.8)
    out = [
        "| pattern | Lq | cache | spattn µs (graph) | spattn µs (per call) | FA4 µs | FA4/spattn "
        f"| KV TB/s (of {peak}) | >= 70% | graph capture, replay == eager |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        impl = r["impl"]
        ours = impl.get("spattn", {})
        eager = ours.get("eager_ms")
        bw = r.get("bandwidth") or {}
        g = r.get("cuda_graph") or {}
        ratio = r.get("ratio_vs_fa4")
        fa = _anchor(impl, "fa4", "us")
        if fa and fa != "err":
            fa += f" ({impl['fa4'].get('timing', '')})"
        sp = _anchor(impl, "spattn", "us")
        out.append(
            f"| {r['pattern']} | {r['Lq']} | {r['cache'] // 1024}K | {sp} "
            f"| {'' if eager is None else f'{eager * 1e3:.1f}'} | {fa} "
            f"| {'-' if ratio is None else f'{ratio:.2f}x'} "
            f"| {bw.get('TBps', 0):.2f} ({bw.get('fraction', 0):.0%}) | {_met(bw.get('met'))} "
            f"| {g.get('captured')}, {g.get('replay_equals_eager')} |"
        )
    return out


def _decode_heading(data: dict) -> str:
    r = next((r for r in data["rows"] if r.get("kind") == "decode" and "batch" in r), None)
    if r is None:
        return "Decode:"
    return (
        f"Decode (B = {r['batch']}, {r['heads_q']} query heads over {r['heads_kv']} KV heads, "
        f"D = {r['D']}, {r['dtype']}; spattn's time is the CUDA-graph replay):"
    )


def markdown(data: dict) -> str:
    rows, repeated = unique_rows(data)
    data = {**data, "rows": rows}
    meta = data.get("meta", {})
    runs = meta.get("runs") or []
    commands = [f"Command: `{meta.get('command')}`"]
    if len(runs) > 1:
        commands = [f"Run {i}: `{r.get('command')}` ({r.get('date')})" for i, r in enumerate(runs)]
    lines = [
        f"Device: {meta.get('device')}; torch {meta.get('torch')}; "
        + ", ".join(f"{k} {v}" for k, v in sorted(meta.get("versions", {}).items())),
        *commands,
        "",
        "Prefill (B = 1; times in ms; ≠: output differs from spattn's, left out of the ratio):",
        "",
        *prefill_table(data),
        "",
        _decode_heading(data),
        "",
        *decode_table(data),
    ]
    mism = data.get("mismatches", [])
    if mism:
        lines += ["", "Mismatches:"]
        for m in mism:
            why = m.get("note") or "UNEXPECTED"
            lines.append(f"- {m['row']} {m['impl']}: max |diff| {m.get('max_abs_diff')} ({why})")
    failed = [r for r in data["rows"] if "failed" in r]
    errors = [
        (r.get("id"), n, t["error"])
        for r in data["rows"]
        for n, t in r.get("impl", {}).items()
        if "error" in t
    ]
    if failed or errors:
        lines += ["", "Errors:"]
        lines += [f"- {r.get('id')}: {r['failed']['error']}" for r in failed]
        lines += [f"- {rid} {n}: {e[:200]}" for rid, n, e in errors]
    if repeated:
        lines += ["", f"Rows repeated in the JSON (the last one shown): {', '.join(repeated)}"]
    skipped = data.get("skipped", [])
    if skipped:
        lines += ["", f"Skipped ({len(skipped)} rows, {skipped[0]['reason']}): "]
        lines.append(", ".join(s["row"] for s in skipped))
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", help="hopper_<tag>.json written by bench_hopper.py")
    ap.add_argument("--md", help="also write the tables to this file")
    args = ap.parse_args(argv)
    text = markdown(load(args.json))
    print(text, end="")
    if args.md:
        with open(args.md, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
