"""Generator of valid and invalid ``spattn::SparseAttention`` cases.

A case is regenerated from ``(seed, index)`` alone (``make_case``), so a child process that runs
cases and the parent that reports them agree without shipping arrays between them. Each case is
one model (built with ``onnx.helper`` directly, so invalid attributes can be written) plus its
inputs and what the contract says must happen: an output equal to the oracle's, or an error
naming the offending input or attribute by its docs/op-spec.md name.

Every invalid case breaks exactly one rule of docs/op-spec.md ("Errors", the size limits), so the
name its error must carry is known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from fuzz_spec import (
    ATTRS,
    FLOAT_ATTRS,
    FLOAT_TYPES,
    INPUT_NAMES,
    INT32_MAX,
    INT32_MIN,
    INT_ATTRS,
    MAX_LEN,
    NUMPY_OF_ONNX,
    round_to,
)
from onnx import TensorProto, helper

# Head dims the CUDA kernels take (docs/op-spec.md, "Backend support"); the CPU takes 1 ... 512.
CUDA_HEAD_DIMS = (32, 64, 96, 128, 256)
CPU_MAX_HEAD_DIM = 512


@dataclass
class Tensor:
    """One input: its ONNX element type and values (bfloat16 held as rounded float32)."""

    onnx_type: int
    array: np.ndarray

    @property
    def zeros_only(self) -> bool:
        return self.array.nbytes > (64 << 20)


@dataclass
class Case:
    index: int
    kind: str
    dtype: str
    inputs: list[Tensor | None]
    attrs: list[tuple[str, Any]]  # written as given: any ONNX attribute type
    expect: str  # "ok" or "error"
    names: tuple[str, ...] = ()  # an error must name one of these
    oracle_attrs: dict = field(default_factory=dict)  # complete, for "ok"
    threads: int = 1
    isolated: bool = False  # run in a process of its own (huge shapes)
    expect_zeros: bool = False  # "ok" with a known all-zero output (shape-only cases)
    # On backends that report bad values as NaN rows (CUDA), the rows that must be NaN.
    nan_rows: Any = None

    def describe(self) -> dict:
        ins = []
        for pos, t in enumerate(self.inputs):
            if t is None:
                ins.append(None)
                continue
            name = INPUT_NAMES[pos] if pos < len(INPUT_NAMES) else f"input {pos}"
            ins.append(
                {
                    "position": pos,
                    "name": name,
                    "type": TensorProto.DataType.Name(t.onnx_type),
                    "shape": list(t.array.shape),
                }
            )
        return {
            "index": self.index,
            "kind": self.kind,
            "dtype": self.dtype,
            "inputs": ins,
            "attributes": {n: _jsonable(v) for n, v in self.attrs},
            "expect": self.expect,
            "names": list(self.names),
            "threads": self.threads,
        }


def _jsonable(v: Any) -> Any:
    if isinstance(v, onnx.TensorProto):
        return {"TENSOR": onnx.numpy_helper.to_array(v).tolist()}
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    return v


# ---- the model ----


def graph_input_name(pos: int) -> str:
    # Graph tensor names unlike any input name of the spec: an error that names only the graph
    # tensor does not pass for one naming the input.
    return f"x{pos}"


def build_model(case: Case) -> onnx.ModelProto:
    names, vis = [], []
    for pos, t in enumerate(case.inputs):
        if t is None:
            names.append("")
            continue
        names.append(graph_input_name(pos))
        vis.append(helper.make_tensor_value_info(graph_input_name(pos), t.onnx_type, None))
    while names and names[-1] == "":
        names.pop()
    node = helper.make_node("SparseAttention", names, ["y0"], domain="spattn", name="fuzz_node")
    for name, value in case.attrs:
        node.attribute.append(helper.make_attribute(name, value))
    q = case.inputs[0] if case.inputs else None
    qtype = q.onnx_type if q is not None else TensorProto.FLOAT
    nodes = [node]
    if qtype == TensorProto.BFLOAT16:
        # numpy has no bfloat16: the graph hands the output back as float32 (exact).
        nodes.append(helper.make_node("Cast", ["y0"], ["y"], to=TensorProto.FLOAT))
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    else:
        node.output[0] = "y"
        out = helper.make_tensor_value_info("y", qtype, None)
    graph = helper.make_graph(nodes, "fuzz", vis, [out])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("spattn", 1)]
    )
    model.ir_version = 10
    return model


# ---- values ----


def _float_input(rng, shape, dtype: str, kind: str = "normal") -> Tensor:
    if kind == "int":  # exact dot products in float32 (large-logit cases)
        x = rng.integers(-4, 5, size=shape).astype(np.float32)
    elif kind == "positive":  # |q.k| >= 2.25: with scale 3e38 past float32's range in any order
        x = rng.uniform(1.5, 2.0, size=shape).astype(np.float32)
    elif kind == "negative":
        x = -rng.uniform(1.5, 2.0, size=shape).astype(np.float32)
    else:
        x = rng.standard_normal(shape).astype(np.float32)
    x = round_to(x, dtype)
    return Tensor(FLOAT_TYPES[dtype], np.asarray(x))


def _int32(a) -> Tensor:
    return Tensor(TensorProto.INT32, np.asarray(a, dtype=np.int32))


def _pick(rng, choices, p=None):
    return choices[int(rng.choice(len(choices), p=p))]


# ---- valid cases ----


@dataclass
class Config:
    """A valid call: dims, complete attributes, which attributes are written, optional inputs."""

    dtype: str
    b: int
    hq: int
    hkv: int
    lq: int
    lk: int
    d: int
    dv: int
    attrs: dict
    written: list[str]
    opt: dict  # input name -> Tensor
    qkv_kind: str = "normal"
    family: str = "dense"


def _valid_config(rng, provider: str) -> Config:
    dtype = _pick(rng, ["float32", "float16", "bfloat16"])
    b = int(rng.integers(1, 4))
    hkv = int(rng.integers(1, 4))
    hq = hkv * int(rng.integers(1, 4))
    lk = int(_pick(rng, [1, 2, 3, 5, 8, 16, 17, 31, 33, 48, 64, 65, 70]))
    lq = lk if rng.random() < 0.4 else int(rng.integers(1, 71))
    if provider == "cpu":
        d = int(_pick(rng, [1, 2, 3, 7, 8, 16, 31, 32, 64, 80, 128]))
        dv = d if rng.random() < 0.6 else int(_pick(rng, [1, 5, 16, 33, 64]))
        if rng.random() < 0.02:
            d = dv = CPU_MAX_HEAD_DIM
            lq, lk = min(lq, 8), min(lk, 8)
    else:
        d = dv = int(_pick(rng, list(CUDA_HEAD_DIMS)))
    attrs = {n: ATTRS[n].default for n in ATTRS}
    written: list[str] = []

    def put(name, value):
        attrs[name] = value
        written.append(name)

    family = _pick(
        rng,
        ["dense", "window", "longformer", "bigbird", "strided", "listed", "mixed", "extreme"],
    )
    if rng.random() < 0.4:
        put("causal", 1)
    if family in ("window", "longformer", "bigbird", "mixed"):
        put("window_left", int(_pick(rng, [-1, 0, 1, 3, int(rng.integers(0, lk + 2))])))
        put("window_right", int(_pick(rng, [-1, 0, 2, int(rng.integers(0, lk + 2))])))
    if family in ("longformer", "mixed"):
        put("num_global", int(rng.integers(0, 4)))
    if family in ("bigbird", "listed", "mixed") or rng.random() < 0.3:
        put("block_size", int(_pick(rng, [1, 2, 4, 7, 8, 16, 32, 64])))
    if family in ("bigbird", "mixed"):
        put("num_random", int(rng.integers(0, 4)))
        put("seed", int(rng.integers(0, INT32_MAX, endpoint=True)))
    if family in ("strided", "mixed"):
        put("stride", int(rng.integers(1, 9)))
        if attrs["window_left"] == -1 and rng.random() < 0.7:
            put("window_left", attrs["stride"] - 1)
    if family == "extreme":
        # Valid extremes: no arithmetic on them may overflow.
        for name in ("window_left", "window_right", "num_global", "stride", "seed"):
            if rng.random() < 0.5:
                put(name, INT32_MAX)
        if rng.random() < 0.3:
            put("block_size", 65536)
        if rng.random() < 0.3:
            # The largest num_random: the random-block work stays bounded by the work.
            put("num_random", 65536)
            hkv, hq = 1, int(rng.integers(1, 3))
        if rng.random() < 0.3:
            put("window_left", 0)
    # The exporter writes every INT attribute; hand-written models may omit any.
    if rng.random() < 0.3:
        for name in INT_ATTRS:
            if name not in written:
                written.append(name)
    if rng.random() < 0.5:
        scale = _pick(rng, [0.0, float(np.float32(rng.uniform(0.05, 1.5)))])
        put("scale", float(np.float32(scale)))
    if rng.random() < 0.25:
        put("softcap", float(np.float32(_pick(rng, [0.0, rng.uniform(0.5, 50.0)]))))
    if rng.random() < 0.2:
        put("chunk_size", int(_pick(rng, [0, int(rng.integers(1, 40)), INT32_MAX])))

    opt: dict[str, Tensor] = {}
    if rng.random() < 0.35:
        kl = rng.integers(0, lk + 1, size=b)
        if rng.random() < 0.5:
            kl[rng.integers(0, b)] = lk
        opt["key_lengths"] = _int32(kl)
    if rng.random() < 0.25:
        hi = opt["key_lengths"].array if "key_lengths" in opt else np.full(b, lk)
        opt["key_starts"] = _int32([int(rng.integers(0, h + 1)) for h in hi])
    bs = attrs["block_size"]
    if family in ("listed", "mixed") or rng.random() < 0.1:
        nqb, nkb = -(-lq // bs), -(-lk // bs)
        hl = _pick(rng, [1, hq])
        kcount = int(rng.integers(0, 5))
        bi = rng.integers(-1, nkb, size=(hl, nqb, kcount))
        opt["block_indices"] = _int32(bi)
    if family in ("longformer", "mixed") or rng.random() < 0.1:
        gm = (rng.random((b, lk)) < 0.1).astype(np.int64)
        gm *= _pick(rng, [1, -7, INT32_MAX, INT32_MIN])
        opt["global_mask"] = _int32(gm)
    if rng.random() < 0.2:
        s = (rng.standard_normal(hq) * 2).astype(np.float32)
        if rng.random() < 0.3:
            s[rng.integers(0, hq)] = -np.inf
        if rng.random() < 0.1:
            s[rng.integers(0, hq)] = 60.0  # a sink far above the scores: rows toward zero
        opt["sinks"] = Tensor(TensorProto.FLOAT, s)
    return Config(dtype, b, hq, hkv, lq, lk, d, dv, attrs, written, opt, family=family)


def _qkv(rng, c: Config) -> list[Tensor]:
    q = _float_input(rng, (c.b, c.hq, c.lq, c.d), c.dtype, c.qkv_kind)
    kind_k = c.qkv_kind
    k = _float_input(rng, (c.b, c.hkv, c.lk, c.d), c.dtype, kind_k)
    v = _float_input(rng, (c.b, c.hkv, c.lk, c.dv), c.dtype)
    return [q, k, v]


def _assemble(c: Config, qkv: list[Tensor]) -> list[Tensor | None]:
    ins: list[Tensor | None] = list(qkv)
    for name in INPUT_NAMES[3:8]:
        ins.append(c.opt.get(name))
    while ins and ins[-1] is None:
        ins.pop()
    return ins


def _case_from(index: int, kind: str, c: Config, ins, threads: int, **kw) -> Case:
    attrs = [(n, c.attrs[n]) for n in dict.fromkeys(c.written)]
    return Case(
        index=index,
        kind=kind,
        dtype=c.dtype,
        inputs=ins,
        attrs=attrs,
        expect=kw.pop("expect", "ok"),
        oracle_attrs=dict(c.attrs),
        threads=threads,
        **kw,
    )


def _nonfinite(rng, c: Config, qkv: list[Tensor]) -> str:
    """Puts NaN/inf into q, k or v (or huge scores) per D2-D4; returns the variant's name."""
    variant = _pick(rng, ["q_nan_row", "k_bad", "v_bad", "huge_scale_pos", "huge_scale_neg"])
    q, k, v = (t.array for t in qkv)
    bad = _pick(rng, [np.nan, np.inf, -np.inf])
    if variant == "q_nan_row":
        q[rng.integers(0, c.b), rng.integers(0, c.hq), rng.integers(0, c.lq)] = np.nan
    elif variant == "k_bad":
        for _ in range(int(rng.integers(1, 3))):
            k[rng.integers(0, c.b), rng.integers(0, c.hkv), rng.integers(0, c.lk), :] = bad
    elif variant == "v_bad":
        for _ in range(int(rng.integers(1, 3))):
            bb, hh, jj = rng.integers(0, c.b), rng.integers(0, c.hkv), rng.integers(0, c.lk)
            v[bb, hh, jj, rng.integers(0, c.dv)] = bad
    else:
        # scale * q.k beyond float32's range: +inf scores (rows NaN) or -inf (rows zero); q and
        # k of one sign so that no product cancels near the boundary.
        c.attrs["scale"] = float(np.float32(3e38))
        c.attrs["softcap"] = 0.0
        c.written = [n for n in c.written if n != "softcap"] + ["scale"]
        qkv[0] = _float_input(rng, q.shape, c.dtype, "positive")
        sign = "positive" if variant == "huge_scale_pos" else "negative"
        qkv[1] = _float_input(rng, k.shape, c.dtype, sign)
        if rng.random() < 0.3:
            c.attrs["softcap"] = float(np.float32(rng.uniform(1.0, 30.0)))
            c.written.append("softcap")
    return variant


def _valid_case(index: int, rng, provider: str) -> Case:
    c = _valid_config(rng, provider)
    sub = "plain"
    r = rng.random()
    if r < 0.12:
        # Large logits with exact float32 dot products (integer q, k): float32 must still meet
        # its tolerance (exp(s - m) without cancellation).
        # Scores reach ~100: exp(s) overflows float32 unless the row maximum is subtracted,
        # while float32's own rounding of s stays far inside the tolerance.
        c.qkv_kind = "int"
        if provider == "cpu":
            c.d = min(c.d, 16)
        c.attrs["softcap"] = 0.0
        c.written = [n for n in c.written if n != "softcap"] + ["scale"]
        c.attrs["scale"] = float(np.float32(rng.uniform(0.5, 1.5) * min(1.0, 16 / c.d)))
        sub = "large_logits"
    qkv = _qkv(rng, c)
    if sub == "plain" and r < 0.32:
        sub = _nonfinite(rng, c, qkv)
    threads = int(_pick(rng, [1, 1, 2]))
    return _case_from(index, f"valid/{sub}/{c.family}", c, _assemble(c, qkv), threads)


# ---- invalid cases: one rule of the contract broken ----


def _wrong_typed(rng, spec) -> tuple[str, Any]:
    """A value of an ONNX attribute type other than the attribute's."""
    kinds = ["STRING", "INTS", "FLOATS", "TENSOR"]
    kinds.append("FLOAT" if spec.onnx_type == "INT" else "INT")
    kind = _pick(rng, kinds)
    if kind == "STRING":
        return kind, _pick(rng, [b"1", b"3", b"0.5", b"", b"abc"])
    if kind == "INTS":
        return kind, [int(x) for x in rng.integers(0, 4, size=int(rng.integers(1, 3)))]
    if kind == "FLOATS":
        return kind, [0.5, 1.0][: int(rng.integers(1, 3))]
    if kind == "TENSOR":
        return kind, helper.make_tensor("t", TensorProto.INT64, [1], [1])
    if kind == "FLOAT":
        return kind, float(_pick(rng, [0.0, 1.0, 3.0, 0.5]))
    return kind, int(_pick(rng, [0, 1, 2]))


def _out_of_range(rng, spec) -> Any:
    if spec.onnx_type == "FLOAT":
        vals = [math.nan, math.inf, -math.inf, -0.5, -1e-3, -3e38]
        return float(_pick(rng, vals))
    vals = [INT32_MAX + 1, INT32_MIN - 1, 2**40, -(2**40)]
    if spec.low is not None:
        vals += [int(spec.low) - 1, int(spec.low) - 2]
    if spec.high is not None and spec.high < INT32_MAX:
        vals += [int(spec.high) + 1, int(spec.high) + 12345, INT32_MAX]
    return int(_pick(rng, vals))


def _invalid_attribute_case(index: int, rng, provider: str) -> Case:
    c = _valid_config(rng, provider)
    qkv = _qkv(rng, c)
    ins = _assemble(c, qkv)
    attrs = [(n, c.attrs[n]) for n in dict.fromkeys(c.written)]
    mode = _pick(rng, ["type", "range", "unknown"], p=[0.45, 0.45, 0.1])
    name = _pick(rng, list(INT_ATTRS + FLOAT_ATTRS))
    if mode == "unknown":
        # op-spec: unknown attributes are an error of the schema check (spattn verify); the
        # runtimes cannot list a node's attributes (ONNX Runtime reads them by name only,
        # TensorRT passes its fields), so they ignore them: the output is the one without it.
        extra = _pick(rng, ["window", "windowLeft", "block", "num_globals", "scaling", "cap"])
        case = _case_from(index, "attribute/unknown_ignored", c, ins, 1)
        case.attrs.append((extra, int(rng.integers(0, 3))))
        return case
    value: Any
    if mode == "type":
        tkind, value = _wrong_typed(rng, ATTRS[name])
        kind = f"attribute/{name}/as_{tkind}"
    else:
        value = _out_of_range(rng, ATTRS[name])
        kind = f"attribute/{name}/out_of_range"
    attrs = [(n, v) for n, v in attrs if n != name] + [(name, value)]
    return Case(index, kind, c.dtype, ins, attrs, "error", (name,), threads=1)


def _invalid_input_case(index: int, rng, provider: str) -> Case:
    c = _valid_config(rng, provider)
    qkv = _qkv(rng, c)
    q, k, v = qkv
    ins = _assemble(c, qkv)
    ft = FLOAT_TYPES[c.dtype]
    nan_rows = None

    def set_input(pos: int, t: Tensor | None) -> None:
        while len(ins) <= pos:
            ins.append(None)
        ins[pos] = t

    rule = _pick(
        rng,
        [
            "missing",
            "rank",
            "dtype",
            "dtype_mismatch",
            "empty",
            "batch",
            "heads",
            "head_dim",
            "unsupported_head_dim",
            "key_lengths",
            "block_indices",
            "global_mask",
            "key_starts",
            "sinks",
            "extra_input",
        ],
    )
    names: tuple[str, ...]
    if rule == "missing":
        pos = int(rng.integers(0, 3))
        if pos == 2:
            del ins[2:]  # two inputs: the node ends before value
        else:
            set_input(pos, None)
        names = (INPUT_NAMES[pos],)
    elif rule == "rank":
        pos = int(rng.integers(0, 3))
        a = ins[pos].array  # type: ignore[union-attr]
        a = a[0] if rng.random() < 0.5 else a[..., None]
        set_input(pos, Tensor(ft, np.require(a, requirements="C")))
        names = (INPUT_NAMES[pos],)
    elif rule == "dtype":
        bad = _pick(rng, [TensorProto.DOUBLE, TensorProto.INT32, TensorProto.INT8])
        for pos in range(3):
            a = ins[pos].array  # type: ignore[union-attr]
            set_input(pos, Tensor(bad, np.nan_to_num(a).astype(NUMPY_OF_ONNX[bad])))
        names = ("query",)
    elif rule == "dtype_mismatch":
        pos = int(rng.integers(1, 3))
        others = [t for t in ("float32", "float16", "bfloat16") if t != c.dtype]
        other = _pick(rng, others)
        a = ins[pos].array  # type: ignore[union-attr]
        set_input(pos, Tensor(FLOAT_TYPES[other], round_to(a.astype(np.float32), other)))
        names = (INPUT_NAMES[pos],)
    elif rule == "empty":
        dim = _pick(rng, ["B", "Hq", "Hkv", "Lq", "Lk", "D", "Dv"])
        where = {
            "B": [(0, 0), (1, 0), (2, 0)],
            "Hq": [(0, 1)],
            "Hkv": [(1, 1), (2, 1)],
            "Lq": [(0, 2)],
            "Lk": [(1, 2), (2, 2)],
            "D": [(0, 3), (1, 3)],
            "Dv": [(2, 3)],
        }[dim]
        for pos, axis in where:
            a = ins[pos].array  # type: ignore[union-attr]
            shape = list(a.shape)
            shape[axis] = 0
            set_input(pos, Tensor(ft, np.zeros(shape, a.dtype)))
        names = tuple(INPUT_NAMES[pos] for pos, _ in where)
        # A padding/global input sized from B or Lk would be a second violation: drop them.
        if dim in ("B", "Lk", "Hq", "Lq"):
            del ins[3:]
    elif rule == "batch":
        if c.b == 1:
            c.b = 2
        pos = int(rng.integers(1, 3))
        a = ins[pos].array  # type: ignore[union-attr]
        a = a[: c.b - 1] if a.shape[0] > 1 else np.concatenate([a, a])
        set_input(pos, Tensor(ft, np.require(a, requirements="C")))
        names = (INPUT_NAMES[pos],)
    elif rule == "heads":
        if rng.random() < 0.5 or c.hkv == 1:
            # Hq not a multiple of Hkv
            hkv = c.hkv if c.hkv > 1 else 2
            k2 = _float_input(rng, (c.b, hkv, c.lk, c.d), c.dtype)
            v2 = _float_input(rng, (c.b, hkv, c.lk, c.dv), c.dtype)
            hq = hkv + 1
            q2 = _float_input(rng, (c.b, hq, c.lq, c.d), c.dtype)
            ins = [q2, k2, v2]
            names = ("query",)
        else:
            a = v.array[:, :-1]
            set_input(2, Tensor(ft, np.require(a, requirements="C")))
            names = ("value",)
    elif rule == "head_dim":
        if rng.random() < 0.5:
            kk = _float_input(rng, (c.b, c.hkv, c.lk, c.d + 1), c.dtype)
            set_input(1, kk)
            names = ("key",)
        else:
            vv = _float_input(rng, (c.b, c.hkv, c.lk + 1, c.dv), c.dtype)
            set_input(2, vv)
            names = ("value",)
    elif rule == "unsupported_head_dim":
        if provider == "cpu":
            bad_d = int(_pick(rng, [CPU_MAX_HEAD_DIM + 1, 600, 1024]))
            other = 8
        else:
            bad_d = int(_pick(rng, [16, 48, 80, 100, 512]))
            other = bad_d
        lq, lk = min(c.lq, 4), min(c.lk, 4)
        which = _pick(rng, ["query", "value"]) if provider == "cpu" else "query"
        d, dv = (bad_d, other) if which == "query" else (other, bad_d)
        ins = [
            _float_input(rng, (1, 1, lq, d), c.dtype),
            _float_input(rng, (1, 1, lk, d), c.dtype),
            _float_input(rng, (1, 1, lk, dv), c.dtype),
        ]
        c.attrs = {n: ATTRS[n].default for n in ATTRS}
        c.written = []
        names = (which,) if provider == "cpu" else ("query", "value")
    elif rule == "key_lengths":
        ins[3:] = []
        how = _pick(rng, ["dtype", "rank", "length", "value"])
        kl = np.full(c.b, c.lk, np.int64)
        if how == "dtype":
            t = _pick(rng, [TensorProto.INT64, TensorProto.FLOAT])
            set_input(3, Tensor(t, kl.astype(NUMPY_OF_ONNX[t])))
        elif how == "rank":
            set_input(3, _int32(kl[None] if rng.random() < 0.5 else np.int32(c.lk)))
        elif how == "length":
            set_input(3, _int32(np.full(c.b + 1, c.lk)))
        else:
            bb = int(rng.integers(0, c.b))
            kl[bb] = _pick(rng, [-1, c.lk + 1, INT32_MIN, INT32_MAX])
            set_input(3, _int32(kl))
            nan_rows = ("batch", bb)
        names = ("key_lengths",)
    elif rule == "block_indices":
        bs = int(c.attrs["block_size"])
        if "block_size" not in c.written:
            c.written.append("block_size")
        nqb, nkb = -(-c.lq // bs), -(-c.lk // bs)
        how = _pick(rng, ["dtype", "rank", "heads", "qblocks", "value"])
        bi = np.zeros((1, nqb, 2), np.int64)
        if how == "dtype":
            set_input(4, Tensor(TensorProto.INT64, bi))
        elif how == "rank":
            set_input(4, _int32(bi[0] if rng.random() < 0.5 else bi[..., None]))
        elif how == "heads":
            hl = c.hq + 1 if c.hq > 1 else 2
            set_input(4, _int32(np.zeros((hl, nqb, 2))))
        elif how == "qblocks":
            set_input(4, _int32(np.zeros((1, nqb + int(_pick(rng, [1, -1])) or nqb + 1, 2))))
        else:
            qb = int(rng.integers(0, nqb))
            bi[0, qb, 1] = _pick(rng, [-2, nkb, nkb + 5, INT32_MAX, INT32_MIN])
            set_input(4, _int32(bi))
            nan_rows = ("qblock", qb, bs)
        names = ("block_indices",)
    elif rule == "global_mask":
        how = _pick(rng, ["dtype", "shape"])
        if how == "dtype":
            t = _pick(rng, [TensorProto.INT64, TensorProto.BOOL, TensorProto.FLOAT])
            set_input(5, Tensor(t, np.zeros((c.b, c.lk), NUMPY_OF_ONNX[t])))
        else:
            shape = _pick(rng, [(c.b, c.lk + 1), (c.b + 1, c.lk), (c.lk,), (c.b, c.lk, 1)])
            set_input(5, _int32(np.zeros(shape)))
        names = ("global_mask",)
    elif rule == "key_starts":
        how = _pick(rng, ["dtype", "shape", "value"])
        kl = ins[3].array if len(ins) > 3 and ins[3] is not None else None
        if how == "dtype":
            set_input(6, Tensor(TensorProto.INT64, np.zeros(c.b, np.int64)))
        elif how == "shape":
            set_input(6, _int32(np.zeros(_pick(rng, [(c.b + 1,), (c.b, 1), ()]))))
        else:
            ks = np.zeros(c.b, np.int64)
            bb = int(rng.integers(0, c.b))
            hi = c.lk if kl is None else int(kl[bb])
            ks[bb] = _pick(rng, [-1, hi + 1, INT32_MAX, INT32_MIN])
            set_input(6, _int32(ks))
            nan_rows = ("batch", bb)
        names = ("key_starts",)
    elif rule == "sinks":
        how = _pick(rng, ["dtype", "shape", "value"])
        s = np.zeros(c.hq, np.float32)
        if how == "dtype":
            t = _pick(rng, [TensorProto.FLOAT16, TensorProto.DOUBLE])
            set_input(7, Tensor(t, s.astype(NUMPY_OF_ONNX[t])))
        elif how == "shape":
            set_input(7, Tensor(TensorProto.FLOAT, np.zeros(_pick(rng, [(c.hq + 1,), (1, c.hq)]))))
            ins[7].array = ins[7].array.astype(np.float32)  # type: ignore[union-attr]
        else:
            hh = int(rng.integers(0, c.hq))
            s[hh] = _pick(rng, [np.nan, np.inf])
            set_input(7, Tensor(TensorProto.FLOAT, s))
            nan_rows = ("head", hh)
        names = ("sinks",)
    else:  # extra_input: position 8 is reserved
        while len(ins) < 8:
            ins.append(None)
        set_input(8, _int32(np.zeros(c.b)))
        names = ("input 8",)
    case = _case_from(index, f"input/{rule}", c, ins, 1, expect="error", names=names)
    case.nan_rows = nan_rows
    return case


# ---- shape-only cases at the size limits ----


def special_cases() -> list[dict]:
    """Shape-only cases of zeros at the size limits (their arrays are lazily zero pages: inputs
    that are never read cost no memory)."""
    return [
        # Lq just past the limit: rejected naming query before anything is allocated.
        dict(kind="huge/lq_over_limit", q=(1, 1, MAX_LEN + 1, 1), k=(1, 1, 1, 1), names=("query",)),
        dict(kind="huge/lk_over_limit", q=(1, 1, 1, 1), k=(1, 1, MAX_LEN + 1, 1), names=("key",)),
        dict(kind="huge/lq_2^31-1", q=(1, 1, INT32_MAX, 1), k=(1, 1, 1, 1), names=("query",)),
        # Lk at the limit with 4 valid keys: computed (zeros), no overflow in the bounds.
        dict(
            kind="huge/lk_at_limit_padded",
            q=(1, 1, 1, 1),
            k=(1, 1, MAX_LEN, 1),
            key_lengths=[4],
            attrs={"causal": 1, "window_left": 3},
        ),
        # Lk at the limit, a window at the end and the extreme attribute values.
        dict(
            kind="huge/lk_at_limit_window",
            q=(1, 1, 2, 1),
            k=(1, 1, MAX_LEN, 1),
            attrs={"window_left": 2, "window_right": 0, "num_global": 0, "stride": 0},
            key_starts=[MAX_LEN - 8],
        ),
    ]


def _special_case(index: int, spec: dict) -> Case:
    dtype = "float16"
    qs, ks = spec["q"], spec["k"]
    vs = ks[:3] + (1,)
    ins: list[Tensor | None] = [
        Tensor(TensorProto.FLOAT16, np.zeros(qs, np.float16)),
        Tensor(TensorProto.FLOAT16, np.zeros(ks, np.float16)),
        Tensor(TensorProto.FLOAT16, np.zeros(vs, np.float16)),
    ]
    if "key_lengths" in spec:
        ins.append(_int32(spec["key_lengths"]))
    if "key_starts" in spec:
        while len(ins) < 6:
            ins.append(None)
        ins.append(_int32(spec["key_starts"]))
    attrs = dict(spec.get("attrs", {}))
    full = {n: ATTRS[n].default for n in ATTRS}
    full.update(attrs)
    names = spec.get("names", ())
    return Case(
        index=index,
        kind=spec["kind"],
        dtype=dtype,
        inputs=ins,
        attrs=list(attrs.items()),
        expect="error" if names else "ok",
        names=tuple(names),
        oracle_attrs=full,
        threads=2,
        isolated=True,
        expect_zeros=not names,
    )


SPECIALS = special_cases()


def make_case(seed: int, index: int, provider: str = "cpu") -> Case:
    """Case ``index`` of the run with ``seed``: the first ones are the shape-only cases at the
    size limits, then a seeded mix of valid and invalid cases."""
    if index < len(SPECIALS):
        return _special_case(index, SPECIALS[index])
    rng = np.random.default_rng([seed, index])
    r = rng.random()
    if r < 0.55:
        return _valid_case(index, rng, provider)
    if r < 0.75:
        return _invalid_attribute_case(index, rng, provider)
    return _invalid_input_case(index, rng, provider)
