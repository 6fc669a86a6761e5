"""The one Python table of the op's attributes and inputs (spattn.attributes): it agrees with the
C++ table (kernels/include/spattn/attributes.h), and the schema, the torch op, the translation and
Pattern all derive from it."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from spattn import Pattern, attributes, schema
from spattn import op as spattn_op

ROOT = Path(__file__).resolve().parents[2]
HEADER = ROOT / "kernels" / "include" / "spattn" / "attributes.h"


def _c_number(text: str, macros: dict[str, float]) -> float:
    text = text.strip()
    if text in macros:
        return macros[text]
    return float(text.rstrip("fF"))


def parse_c_table() -> dict[str, dict]:
    """The rows ``X(TYPE, name, default, min, max, ...)`` of the C header's X-macro table."""
    src = HEADER.read_text()
    macros = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"#define\s+(\w+)\s+([-+0-9.eE]+)[fF]?\s*$", src, re.M)
    }
    rows = {}
    for m in re.finditer(r"^\s*X\((\w+),\s*(\w+),\s*([^,]+),\s*([^,]+),\s*([^,]+),", src, re.M):
        typ, name, default, lo, hi = m.groups()
        rows[name] = {
            "type": typ,
            "default": _c_number(default, macros),
            "low": _c_number(lo, macros),
            "high": _c_number(hi, macros),
        }
    return rows


def test_c_header_and_python_table_agree():
    assert HEADER.is_file(), f"{HEADER} is missing"
    c = parse_c_table()
    py = {a.name: a for a in attributes.PATTERN_ATTRIBUTES}
    assert len(c) >= 10, f"parsed only {sorted(c)} from {HEADER}"
    assert set(c) == set(py), (sorted(c), sorted(py))
    for name, row in c.items():
        a = py[name]
        assert row["type"] == a.onnx_type, name
        assert row["default"] == a.default, name
        assert row["low"] == a.low, name
        if a.high is None:  # FLOAT: any finite value; C writes FLT_MAX
            assert a.onnx_type == "FLOAT" and row["high"] >= 3.4e38, name
        else:
            assert row["high"] == a.high, name


def test_table_rows():
    names = [p.name for p in attributes.OP_PARAMS]
    assert len(names) == len(set(names))
    assert [i.name for i in attributes.INPUTS] == [
        "query",
        "key",
        "value",
        "key_lengths",
        "block_indices",
        "global_mask",
        "key_starts",
        "sinks",
    ]
    assert attributes.input_index("global_mask") == 5
    assert attributes.input_index("key_starts") == 6
    assert attributes.input_index("sinks") == 7
    sc = attributes.attribute("softcap")
    assert (sc.onnx_type, sc.default, sc.low, sc.always_written) == ("FLOAT", 0.0, 0.0, False)
    assert attributes.HEAD_DIMS["cuda"].supports(96, 96)
    assert not attributes.HEAD_DIMS["cuda"].supports(48, 48)
    assert not attributes.HEAD_DIMS["tensorrt"].supports(64, 128)
    assert attributes.HEAD_DIMS["cpu"].supports(48, 80)
    assert "256" in attributes.HEAD_DIMS["cuda"].describe()


def test_schema_derives_from_table():
    s = schema.make_schema()
    assert [i.name for i in s.inputs] == [i.name for i in attributes.INPUTS]
    assert set(s.attributes) == {a.name for a in attributes.ATTRIBUTES}
    for a in attributes.ATTRIBUTES:
        if a.schema_default:
            got = onnx.helper.get_attribute_value(s.attributes[a.name].default_value)
            got = got.decode() if isinstance(got, bytes) else got
            assert got == a.default, a.name
    for i, spec in zip(s.inputs, attributes.INPUTS, strict=True):
        optional = i.option == onnx.defs.OpSchema.FormalParameterOption.Optional
        assert optional == (not spec.required)
    assert "32, 64, 96, 128, 256" in s.doc


def test_torch_op_and_translation_derive_from_table():
    fn_schema = torch.ops.spattn.sparse_attention.default._schema
    want = [p.name for p in attributes.TORCH_PARAMS]
    assert [a.name for a in fn_schema.arguments] == want
    import inspect

    sig = inspect.signature(spattn_op.onnx_translation)
    assert list(sig.parameters) == want
    # The positions of the original arguments are kept (positional calls stay valid).
    assert want[:14] == [
        "query",
        "key",
        "value",
        "key_lengths",
        "block_indices",
        "window_left",
        "window_right",
        "causal",
        "num_global",
        "stride",
        "block_size",
        "num_random",
        "seed",
        "scale",
    ]


def test_pattern_fields_follow_table():
    fields = {f.name: f for f in dataclasses.fields(Pattern)}
    for a in attributes.PATTERN_ATTRIBUTES:
        assert a.name in fields
        default = fields[a.name].default
        if a.name == "scale":
            assert default is None
        else:
            assert default == a.default, a.name


@pytest.mark.parametrize(
    "field,value",
    [
        ("block_size", 1.7),
        ("block_size", 0),
        ("block_size", 65537),
        ("block_size", "abc"),
        ("seed", 1.5),
        ("seed", -1),
        ("seed", 2**31),
        ("window_left", True),
        ("window_left", -2),
        ("window_right", 2.0),
        ("window_right", 2**31),
        ("num_global", -1),
        ("stride", -3),
        ("num_random", 0.5),
        ("causal", 2),
        ("causal", "yes"),
        ("scale", -1.0),
        ("scale", math.nan),
        ("scale", math.inf),
        ("softcap", -1.0),
        ("softcap", math.nan),
        ("softcap", math.inf),
        ("softcap", "50"),
        ("softcap", True),
    ],
)
def test_pattern_rejects_invalid_fields(field, value):
    with pytest.raises(ValueError, match=rf"Pattern: {field}: expected .*got"):
        Pattern(**{field: value})


def test_pattern_softcap_and_numpy_values():
    p = Pattern.longformer(8, 1).replace(softcap=30)
    assert p.softcap == 30.0 and isinstance(p.softcap, float)
    a = p.attributes()
    assert a["softcap"] == 30.0
    assert Pattern.from_attributes(a) == p
    assert "softcap=30.0" in p.describe()
    assert "softcap" not in Pattern.longformer(8, 1).attributes()
    q = Pattern(block_size=np.int64(32), seed=np.int32(3), causal=np.bool_(True))
    assert (q.block_size, q.seed, q.causal) == (32, 3, True)
    assert isinstance(q.block_size, int)
    assert Pattern(causal=1).causal is True


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: Pattern.dense().density(0), "lq: expected >= 1"),
        (lambda: Pattern.dense().density(4, heads=0), "heads: expected >= 1"),
        (lambda: Pattern.dense().token_mask(4, lk=-2), "lk: expected >= 1"),
        (lambda: Pattern.dense().layout_at(2.5), "lq: expected an integer"),
        (lambda: Pattern.dense().block_layout_mask(8, block_size=0), "block_size: expected >= 1"),
        (lambda: Pattern.longformer("abc"), "attention_window: expected an integer"),
        (lambda: Pattern.longformer(3), "attention_window: expected an even number"),
        (lambda: Pattern.causal_sliding_window(2.5), "window: expected an integer"),
        (lambda: Pattern.strided("x"), "stride: expected an integer"),
        (lambda: Pattern.bigbird(1.5), "block_size: expected an integer"),
        (lambda: Pattern.bigbird(8, num_local_blocks=2), "num_local_blocks: expected an odd"),
        (lambda: Pattern.bigbird(8, num_global_blocks=-1), "num_global_blocks: expected >= 0"),
    ],
)
def test_pattern_methods_name_bad_arguments(call, match):
    with pytest.raises(ValueError, match="Pattern: " + match):
        call()
