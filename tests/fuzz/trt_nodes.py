"""The fuzz campaign's attribute sets as a nodes file for the TensorRT plugin harness.

``python -m tests.fuzz.trt_nodes --seed 1 --cases 1500 --max-nodes 200 -o nodes.txt`` writes, in
the format of ``tests/trt/export_nodes.py``, one node per valid case (the harness builds, enqueues
and compares it with the CPU kernel in float32, float16 and bfloat16) and one per invalid INT or
FLOAT attribute value that TensorRT's ONNX parser would hand the plugin (out of range, or the
other of INT/FLOAT), marked ``expect_error=NAME``: the plugin must refuse it, naming the field.
Values of other ONNX types never reach a plugin (the parser passes only INT and FLOAT fields),
and INT values outside int32 cannot be written as an INT32 field, so those cases are left out.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from fuzz_cases import make_case  # noqa: E402

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _field(value: Any) -> tuple[str, str] | None:
    """(kind, text) of a value the parser passes as a field, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return ("i", str(value)) if INT32_MIN <= value <= INT32_MAX else None
    if isinstance(value, float):
        return "f", repr(value) if math.isfinite(value) else str(value).lower()
    return None


def node_line(case: Any) -> str | None:
    """The harness's line for ``case``, or None when the plugin cannot be handed it."""
    mask = "".join(
        "1" if i < len(case.inputs) and case.inputs[i] is not None else "0" for i in range(5)
    ).rstrip("0")
    if any(t is not None for t in case.inputs[5:]):
        return None  # the harness feeds inputs 0-4 per node (inputs 5-7 have checks of their own)
    expect = ""
    if case.kind.startswith("valid/plain") or case.kind.startswith("valid/large_logits"):
        pass
    elif case.kind.startswith("attribute/") and case.expect == "error":
        parts = case.kind.split("/")
        if len(parts) != 3 or parts[2] not in ("out_of_range", "as_INT", "as_FLOAT"):
            return None
        expect = f" expect_error={parts[1]}"
    else:
        return None
    if mask[:3] != "111":
        return None
    attrs = []
    for name, value in case.attrs:
        f = _field(value)
        if f is None:
            return None
        attrs.append(f"{name}:{f[0]}={f[1]}")
    return f"node model=fuzz-{case.index} name=fuzz_node_{case.index} inputs={mask}{expect} " + (
        " ".join(attrs)
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cases", type=int, default=1500)
    ap.add_argument("--max-nodes", type=int, default=200)
    ap.add_argument("-o", "--out", required=True)
    a = ap.parse_args(argv)
    lines: list[str] = []
    for i in range(5, a.cases):  # 0-4 are the size-limit cases (no attributes to test)
        line = node_line(make_case(a.seed, i, "cuda"))
        if line:
            lines.append(line)
        if len(lines) >= a.max_nodes:
            break
    Path(a.out).write_text("\n".join(lines) + "\n")
    bad = sum("expect_error=" in ln for ln in lines)
    print(f"{a.out}: {len(lines)} nodes ({len(lines) - bad} valid, {bad} invalid fields)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
