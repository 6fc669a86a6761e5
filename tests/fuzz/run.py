"""Fuzz ``spattn::SparseAttention`` through ONNX Runtime and our library.

    python -m tests.fuzz.run --cases 5000 --seed 1 --provider cpu --jobs 2 --out fuzz-out

Writes ``OUT/summary.json`` (counts per outcome and per case kind, every failure) and, for each
failure, a reproducer folder ``OUT/failures/case-<index>/`` (model.onnx, inputs.npz, case.json).
Exits 1 when any case failed. ``--only 12,40`` reruns cases of a seed; ``--replay FOLDER`` runs a
reproducer's model on its inputs and prints the output or the error. See tests/fuzz/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from fuzz_driver import failed, run_fuzz  # noqa: E402
from fuzz_exec import PROVIDERS, ProviderUnavailable, replay  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tests.fuzz.run", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--cases", type=int, default=1000, help="number of cases (default 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--provider", choices=PROVIDERS, default="cpu")
    ap.add_argument("--jobs", type=int, default=1, help="child processes at once")
    ap.add_argument("--out", type=Path, default=None, help="folder for summary.json + failures")
    ap.add_argument("--only", default=None, help="comma-separated case indices of the seed")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case before 'hang'")
    ap.add_argument("--batch-size", type=int, default=25, help="cases per child process")
    ap.add_argument("--replay", type=Path, default=None, help="run a reproducer folder")
    args = ap.parse_args(argv)
    if args.replay is not None:
        out, err = replay(args.replay, args.provider)
        print(err if err is not None else out)
        return 0
    only = None if args.only is None else [int(x) for x in args.only.split(",") if x]
    try:
        summary = run_fuzz(
            args.cases,
            args.seed,
            args.provider,
            args.jobs,
            args.out,
            only,
            args.timeout,
            args.batch_size,
        )
    except (ProviderUnavailable, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: summary[k] for k in ("cases", "outcomes", "seconds")}))
    for r in summary["failures"]:
        msg = r.get("message", "").replace("\n", " ")[:300]
        print(f"  {r['outcome']:>16}  case {r['index']:>6}  {r.get('kind', '?')}: {msg}")
    for inc in summary["batch_incidents"]:
        print(f"  batch incident at case {inc['index']}: {inc['how']} ({inc['note']})")
    return 1 if failed(summary) else 0


if __name__ == "__main__":
    sys.exit(main())
