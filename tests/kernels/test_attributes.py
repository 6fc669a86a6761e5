"""The op's attributes are declared once in C++ (kernels/include/spattn/attributes.h, an X-macro
table): the table agrees with the spec's attribute table (docs/op-spec.md) and, where the Python
package has its own table (spattn.attributes), with that one; and the C API struct derived from
it keeps the layout of its first version.
"""

from __future__ import annotations

import importlib
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEADER = ROOT / "kernels" / "include" / "spattn" / "attributes.h"
SPEC = ROOT / "docs" / "op-spec.md"

# X(TYPE, name, default, min, max, c_block, "expectation"), one per line.
ROW = re.compile(
    r'^\s*X\((FLOAT|INT),\s*(\w+),\s*([^,]+),\s*([^,]+),\s*([^,]+),\s*([123]),\s*"([^"]*)"\)'
)
MACROS = {"SPATTN_INT32_MAX_VALUE": 2**31 - 1, "SPATTN_FLOAT_MAX_VALUE": math.inf}


def _value(text: str, kind: str):
    text = text.strip()
    if text in MACROS:
        return MACROS[text]
    return float(text) if kind == "FLOAT" else int(text)


def c_attributes() -> dict[str, dict]:
    rows = {}
    for line in HEADER.read_text().splitlines():
        m = ROW.match(line)
        if m:
            kind, name, default, lo, hi, block, expect = m.groups()
            rows[name] = {
                "type": kind,
                "default": _value(default, kind),
                "low": _value(lo, kind),
                "high": _value(hi, kind),
                "c_block": int(block),
                "expect": expect,
            }
    return rows


def spec_attributes() -> dict[str, dict]:
    """The rows of the spec's "Attributes" table: name -> type, default text."""
    text = SPEC.read_text()
    section = text.split("## Attributes", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = {"type": cells[1], "default": cells[2].strip("`")}
    return rows


def test_header_parses():
    rows = c_attributes()
    # Every X( line of the table is a row (a line the pattern misses would drop an attribute).
    table = HEADER.read_text().split("#define SPATTN_ATTRIBUTES(X)", 1)[1].split("/*", 1)[0]
    assert len(rows) == table.count("X(") and len(rows) >= 10
    assert rows["softcap"] == {
        "type": "FLOAT",
        "default": 0.0,
        "low": 0.0,
        "high": math.inf,
        "c_block": 2,
        "expect": "a finite value >= 0 (0 off)",
    }
    # The attributes of the first C API struct come first, in their original order.
    first = [n for n, r in rows.items() if r["c_block"] == 1]
    assert first == [
        "scale",
        "window_left",
        "window_right",
        "causal",
        "num_global",
        "stride",
        "block_size",
        "num_random",
        "seed",
    ]


def test_header_matches_spec_table():
    c = c_attributes()
    spec = {n: r for n, r in spec_attributes().items() if r["type"] != "string"}
    assert set(c) == set(spec), (sorted(c), sorted(spec))
    for name, row in c.items():
        assert spec[name]["type"] == row["type"].lower(), name
        if name == "scale":  # 0 (the C default) selects 1/sqrt(D)
            assert spec[name]["default"] == "1/sqrt(D)"
        else:
            assert _value(spec[name]["default"], row["type"]) == row["default"], name


def test_header_matches_python_table():
    try:
        mod = importlib.import_module("spattn.attributes")
    except ImportError:
        pytest.skip("this tree's spattn has no attributes table (the spec table is checked)")
    py = {a.name: a for a in mod.ATTRIBUTES if a.onnx_type != "STRING"}
    c = c_attributes()
    assert set(py) == set(c), (sorted(py), sorted(c))
    for name, row in c.items():
        a = py[name]
        assert a.onnx_type == row["type"], name
        assert a.default == row["default"], name
        assert a.low == row["low"], name
        high = math.inf if a.high is None else a.high
        assert high == row["high"], name


def test_c_api_struct_layout(tmp_path):
    """spattn_args keeps the layout of its first version; the later fields follow it."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is required to build spattn (and this test)"
    fields = (
        "q k v o key_lengths block_indices dtype batch heads_q heads_kv len_q len_k head_dim "
        "head_dim_v bi_heads bi_k scale window_left window_right causal num_global stride "
        "block_size num_random seed stream workspace workspace_bytes num_threads global_mask "
        "key_starts sinks softcap reserved_v2_padding chunk_size"
    ).split()
    src = tmp_path / "layout.c"
    src.write_text(
        '#include <stdio.h>\n#include <stddef.h>\n#include "spattn/c_api.h"\nint main(void) {\n'
        + "".join(f'  printf("{f} %zu\\n", offsetof(spattn_args, {f}));\n' for f in fields)
        + '  printf("v1 %zu\\n", (size_t)SPATTN_ARGS_V1_SIZE);\n'
        + '  printf("size %zu\\n", sizeof(spattn_args));\n  return 0;\n}\n'
    )
    exe = tmp_path / "layout"
    subprocess.run(
        [cc, "-std=c99", f"-I{ROOT / 'kernels' / 'include'}", str(src), "-o", str(exe)], check=True
    )
    words = subprocess.check_output([str(exe)], text=True).split()
    out = {words[i]: int(words[i + 1]) for i in range(0, len(words), 2)}
    # LP64: six pointers, 10 int32 sizes, the float scale and 8 int32 attributes, then the
    # stream, workspace, workspace_bytes and num_threads of the first version (160 bytes).
    v1 = {"q": 0, "dtype": 48, "bi_k": 84, "scale": 88, "seed": 120, "stream": 128}
    v1 |= {"workspace_bytes": 144, "num_threads": 152}
    for name, off in v1.items():
        assert out[name] == off, (name, out[name], off)
    assert out["v1"] == 160 == out["global_mask"]
    assert out["key_starts"] == 168 and out["sinks"] == 176 and out["softcap"] == 184
    # The second version was 192 bytes, its last 4 padding: the third starts past them.
    assert out["reserved_v2_padding"] == 188 and out["chunk_size"] == 192
    assert out["size"] == 200


def test_head_dims_agree_with_the_python_table():
    """The CUDA head dims are listed once in C++ (params.h) and once in Python
    (spattn.attributes.HEAD_DIMS, read by the schema's docs and the export warnings)."""
    from spattn.attributes import HEAD_DIMS

    text = (ROOT / "kernels" / "include" / "spattn" / "params.h").read_text()
    m = re.search(r"#define SPATTN_CUDA_HEAD_DIMS\(X\)((?:\s*X\(\d+\))+)", text)
    assert m, "SPATTN_CUDA_HEAD_DIMS not found in params.h"
    cxx = tuple(int(x) for x in re.findall(r"X\((\d+)\)", m.group(1)))
    assert cxx == HEAD_DIMS["cuda"].dims == HEAD_DIMS["tensorrt"].dims
    cpu_max = int(re.search(r"kCpuMaxHeadDim = (\d+);", text).group(1))
    assert cpu_max == HEAD_DIMS["cpu"].max_dim
