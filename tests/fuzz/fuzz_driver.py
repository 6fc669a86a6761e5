"""Runs a fuzz campaign: cases in child processes, a summary, reproducers for the failures."""

from __future__ import annotations

import json
import platform
import sys
import time
from collections import Counter
from pathlib import Path

from fuzz_exec import FAIL_OUTCOMES, Runner, check_provider, write_reproducer


def failed(summary: dict) -> list[dict]:
    """Every failure of a summary: the failing cases, then batch incidents."""
    return list(summary["failures"]) + [
        {"outcome": "batch_incident", **inc} for inc in summary["batch_incidents"]
    ]


def summarize(results: list[dict], incidents: list[dict], **meta) -> dict:
    outcomes = Counter(r["outcome"] for r in results)
    by_kind: dict[str, Counter] = {}
    for r in results:
        family = "/".join(r.get("kind", "?").split("/")[:2])
        by_kind.setdefault(family, Counter())[r["outcome"]] += 1
    failures = [r for r in results if r["outcome"] not in ("ok", "clean_error")]
    assert all(r["outcome"] in FAIL_OUTCOMES + ("harness_error",) for r in failures)
    return {
        **meta,
        "cases": len(results),
        "outcomes": dict(sorted(outcomes.items())),
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "failures": failures,
        "batch_incidents": incidents,
    }


def run_fuzz(
    cases: int,
    seed: int,
    provider: str = "cpu",
    jobs: int = 1,
    out: Path | None = None,
    only: list[int] | None = None,
    timeout: float = 60.0,
    batch_size: int = 25,
    quiet: bool = False,
) -> dict:
    """Runs the cases and returns the summary (also written under ``out`` when given)."""
    check_provider(provider)
    ids = only if only is not None else list(range(cases))
    runner = Runner(seed, provider, timeout=timeout, batch_size=batch_size)
    t0 = time.time()

    def progress(n: int) -> None:
        if not quiet:
            print(f"\r{n}/{len(ids)} cases", end="", file=sys.stderr, flush=True)

    results = runner.run(ids, jobs=jobs, progress=progress)
    if not quiet:
        print(file=sys.stderr)
    summary = summarize(
        results,
        runner.batch_incidents,
        command=" ".join(sys.argv),
        seed=seed,
        provider=provider,
        machine=platform.platform(),
        seconds=round(time.time() - t0, 1),
    )
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for r in summary["failures"]:
            try:
                r["reproducer"] = str(write_reproducer(seed, provider, r, out / "failures"))
            except Exception as e:  # a failing case is reported even when its files are not
                r["reproducer"] = f"not written: {e!r}"
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
