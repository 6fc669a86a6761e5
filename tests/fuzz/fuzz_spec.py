"""What the fuzz harness knows of the op's contract, and its independent oracle.

The attribute rows (names, ONNX types, valid ranges) come from the spec's own table,
``spattn.attributes``; the size limits of docs/op-spec.md that the table does not carry are
written here. The oracle is a second implementation of docs/op-spec.md ("Semantics", "Numerics")
in numpy float64, written from the text and deliberately not importing ``spattn.reference``:
two implementations that agree are the point.

Non-finite values follow the contract's rules: padding keys never contribute; keys the pattern
excludes never contribute on the CPU backend and may turn a row non-finite on tiled backends
(CUDA); a NaN or ``+inf`` score of an allowed key makes the whole row NaN; a ``-inf`` score weighs
zero; a non-finite value of ``value`` at an allowed key makes the affected elements non-finite.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from onnx import TensorProto

from spattn.attributes import ATTRIBUTES, INPUTS

INT32_MAX = 2**31 - 1
INT32_MIN = -(2**31)
# Size limits of the contract: Lq and Lk at most 2^30, num_random at most 65536.
MAX_LEN = 2**30
ATTRIBUTE_HIGH_OVERRIDES = {"num_random": 65536}
FLT_MAX = float(np.finfo(np.float32).max)
FLT_MIN_NORMAL = float(np.finfo(np.float32).tiny)

INPUT_NAMES: tuple[str, ...] = tuple(i.name for i in INPUTS)
assert INPUT_NAMES[:8] == (
    "query",
    "key",
    "value",
    "key_lengths",
    "block_indices",
    "global_mask",
    "key_starts",
    "sinks",
), INPUT_NAMES


@dataclass(frozen=True)
class AttrSpec:
    name: str
    onnx_type: str  # "INT" or "FLOAT"
    default: float
    low: float | None
    high: float | None


def attribute_specs() -> dict[str, AttrSpec]:
    """The INT and FLOAT attributes of the op, with the contract's ranges."""
    out = {}
    for a in ATTRIBUTES:
        if a.onnx_type not in ("INT", "FLOAT"):
            continue
        high = ATTRIBUTE_HIGH_OVERRIDES.get(a.name, a.high)
        if a.high is not None and high is not None:
            high = min(high, a.high)
        out[a.name] = AttrSpec(a.name, a.onnx_type, a.default, a.low, high)
    return out


ATTRS = attribute_specs()
INT_ATTRS = tuple(n for n, a in ATTRS.items() if a.onnx_type == "INT")
FLOAT_ATTRS = tuple(n for n, a in ATTRS.items() if a.onnx_type == "FLOAT")

TOLERANCES_FILE = Path(__file__).resolve().parents[2] / "exporter" / "spattn" / "tolerances.json"


def tolerances() -> dict[str, tuple[float, float]]:
    """``{dtype name: (atol, rtol)}`` from the project's one tolerance table."""
    table = json.loads(TOLERANCES_FILE.read_text())
    return {k: (float(v["atol"]), float(v["rtol"])) for k, v in table.items()}


# ---- element types ----

FLOAT_TYPES = {
    "float32": TensorProto.FLOAT,
    "float16": TensorProto.FLOAT16,
    "bfloat16": TensorProto.BFLOAT16,
}
NUMPY_OF_ONNX = {
    TensorProto.FLOAT: np.float32,
    TensorProto.FLOAT16: np.float16,
    TensorProto.DOUBLE: np.float64,
    TensorProto.INT32: np.int32,
    TensorProto.INT64: np.int64,
    TensorProto.INT8: np.int8,
    TensorProto.UINT8: np.uint8,
    TensorProto.BOOL: np.bool_,
}
ONNX_TYPE_NAMES = {v: k for k, v in TensorProto.DataType.items()}


def round_bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (ties to even), returned as float32."""
    b = np.require(x, np.float32, "C").view(np.uint32).astype(np.uint64)
    r = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16
    out = r.astype(np.uint32).view(np.float32)
    return np.where(np.isnan(x), np.float32(np.nan), out).astype(np.float32)


def bfloat16_bits(x: np.ndarray) -> np.ndarray:
    """The bfloat16 bit patterns (uint16) of float32 values already rounded to bfloat16."""
    return (np.require(x, np.float32, "C").view(np.uint32) >> 16).astype(np.uint16)


def round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    """Values of ``x`` as the float type ``dtype`` holds them (bfloat16 kept as float32)."""
    if dtype == "bfloat16":
        return round_bfloat16(x.astype(np.float32))
    return x.astype(np.float16 if dtype == "float16" else np.float32)


# ---- the mask (docs/op-spec.md, "The mask") ----


def _mix32(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64) & 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    x ^= x >> 16
    return x


def random_draws(seed: int, h: int, qb: int, num_random: int, nkb: int) -> np.ndarray:
    """``random_block(seed, h, qb, r, nkb)`` for r = 0 ... num_random - 1, in order."""
    x = _mix32(np.array([seed + 0x9E3779B9], np.uint64))
    x = _mix32(x ^ np.uint64(h))
    x = _mix32(x ^ np.uint64(qb))
    r = np.arange(max(num_random, 0), dtype=np.uint64)
    x = _mix32(x ^ r)
    return (x % np.uint64(nkb)).astype(np.int64)


def random_blocks(seed: int, h: int, qb: int, num_random: int, nkb: int) -> np.ndarray:
    """The distinct random key blocks of query head ``h`` and query block ``qb``."""
    return np.unique(random_draws(seed, h, qb, num_random, nkb))


def allowed_mask(
    b_size: int,
    hq: int,
    lq: int,
    lk: int,
    attrs: dict,
    key_lengths: np.ndarray | None,
    key_starts: np.ndarray | None,
    block_indices: np.ndarray | None,
    global_mask: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(allowed [B, Hq, Lq, Lk], valid [B, Lk])``: the pattern with padding, and the padding."""
    wl, wr = int(attrs["window_left"]), int(attrs["window_right"])
    causal, g, s = int(attrs["causal"]), int(attrs["num_global"]), int(attrs["stride"])
    bs, r, seed = int(attrs["block_size"]), int(attrs["num_random"]), int(attrs["seed"])
    i = np.arange(lq, dtype=np.int64)[:, None]
    j = np.arange(lk, dtype=np.int64)[None, :]
    p = i + lk - lq
    lens = np.full(b_size, lk, np.int64) if key_lengths is None else key_lengths.astype(np.int64)
    starts = np.zeros(b_size, np.int64) if key_starts is None else key_starts.astype(np.int64)
    jj = np.arange(lk, dtype=np.int64)[None, :]
    valid = (jj >= starts[:, None]) & (jj < lens[:, None])  # [B, Lk]
    other_on = g > 0 or s > 0 or r > 0 or block_indices is not None or global_mask is not None
    c = int(attrs.get("chunk_size", 0))
    local_on = c > 0 or not (wl == -1 and wr == -1 and other_on)
    local = np.full((lq, lk), local_on)
    if wl != -1:
        local &= (p - j) <= wl
    if wr != -1:
        local &= (j - p) <= wr
    local_b = np.broadcast_to(local, (b_size, lq, lk)).copy()
    if c > 0:  # runs of c positions from each batch's key_starts
        s0 = starts[:, None, None]
        local_b &= np.floor_divide(p[None] - s0, c) == np.floor_divide(j[None] - s0, c)
    glob = (j < g) | ((p >= 0) & (p < g))  # [Lq, Lk]
    glob_b = np.broadcast_to(glob, (b_size, lq, lk)).copy()
    if global_mask is not None:
        gm = global_mask != 0  # [B, Lk]
        glob_b |= gm[:, None, :]
        pi = p[:, 0]
        inside = (pi >= 0) & (pi < lk)
        qglob = np.zeros((b_size, lq), bool)
        qglob[:, inside] = gm[:, pi[inside]]
        glob_b |= qglob[:, :, None]
    strided = ((p - j) % s == 0) if s > 0 else np.zeros((lq, lk), bool)
    pattern = (local_b | strided[None])[:, None] | glob_b[:, None]  # [B, 1, Lq, Lk]
    pattern = np.broadcast_to(pattern, (b_size, hq, lq, lk)).copy()
    nqb, nkb = -(-lq // bs), -(-lk // bs)
    kb = np.arange(lk) // bs
    extra = np.zeros((hq, lq, lk), bool)
    for qb in range(nqb):
        rows = slice(qb * bs, min(lq, (qb + 1) * bs))
        for h in range(hq):
            blocks = []
            if r > 0:
                blocks.append(random_blocks(seed, h, qb, r, nkb))
            if block_indices is not None:
                hl = h if block_indices.shape[0] == hq else 0
                e = block_indices[hl, qb].astype(np.int64)
                blocks.append(e[e != -1])
            if blocks:
                extra[h, rows] |= np.isin(kb, np.concatenate(blocks))[None, :]
    pattern |= extra[None]
    allowed = pattern & valid[:, None, None, :]
    if causal:
        allowed &= (j <= p)[None, None]
    return allowed, valid


# ---- the numerics (docs/op-spec.md, "Numerics", and the NaN/Inf rules) ----


@dataclass
class Expected:
    """What an output must be: ``value`` (float64) compared within the tolerance where
    ``check``; ``must_nan`` elements NaN; ``must_nonfinite`` elements NaN or +-inf;
    ``may_nonfinite`` elements either non-finite or the value."""

    value: np.ndarray
    must_nan: np.ndarray
    must_nonfinite: np.ndarray
    may_nonfinite: np.ndarray
    # op-spec's float32 large-score term: sqrt(D) * 2^-24 * M * max|v|, M = scale * max|q_i| *
    # max|k_j| (row norms, finite rows), added to float32's tolerance
    float32_extra: float = 0.0


def oracle(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    attrs: dict,
    key_lengths: np.ndarray | None = None,
    block_indices: np.ndarray | None = None,
    global_mask: np.ndarray | None = None,
    key_starts: np.ndarray | None = None,
    sinks: np.ndarray | None = None,
    tiled: bool = False,
) -> Expected:
    """The op's output on inputs already rounded to their type; ``attrs`` complete (defaults
    filled, ``scale``/``softcap`` as the float32 values a model stores). ``tiled``: the rules of
    tiled backends (an excluded valid key's non-finite K/V may make its row non-finite)."""
    b_size, hq, lq, d = q.shape
    _, hkv, lk, dv = v.shape
    allowed, valid = allowed_mask(
        b_size, hq, lq, lk, attrs, key_lengths, key_starts, block_indices, global_mask
    )
    scale = float(np.float32(attrs["scale"]))
    if scale == 0.0:
        scale = 1.0 / math.sqrt(d)
    softcap = float(np.float32(attrs["softcap"]))
    q64, k64, v64 = (np.asarray(x, np.float64) for x in (q, k, v))
    group = hq // hkv
    value = np.zeros((b_size, hq, lq, dv))
    must_nan = np.zeros(value.shape, bool)
    must_nonfinite = np.zeros(value.shape, bool)
    may_nonfinite = np.zeros(value.shape, bool)
    with np.errstate(all="ignore"):
        for b in range(b_size):
            for h in range(hq):
                kh = h // group
                kk, vv = k64[b, kh], v64[b, kh]
                bad_kv = ~(np.isfinite(kk).all(1) & np.isfinite(vv).all(1))  # [Lk]
                scores = (q64[b, h] @ kk.T) * scale  # [Lq, Lk]
                # Products left float32's range before the softmax: +-inf (NaN stays NaN).
                scores = np.where(np.abs(scores) > FLT_MAX, np.sign(scores) * np.inf, scores)
                if softcap > 0:
                    scores = softcap * np.tanh(scores / softcap)
                sink = None if sinks is None else float(sinks[h])
                for i in range(lq):
                    a = allowed[b, h, i]
                    s = scores[i]
                    if tiled:
                        excluded = valid[b] & ~a
                        excluded |= a & (s == -np.inf)
                        if (excluded & bad_kv).any():
                            may_nonfinite[b, h, i] = True
                    if not a.any():
                        continue
                    sa = s[a]
                    if (np.isnan(sa) | (sa == np.inf)).any():
                        must_nan[b, h, i] = True
                        continue
                    keep = a & (s > -np.inf)
                    if not keep.any():
                        continue
                    m = s[keep].max()
                    w = np.exp(s[keep] - m)
                    den = w.sum()
                    if sink is not None and sink != -np.inf:
                        den += math.exp(min(sink - m, 700.0))
                    # A key whose weight is below float32's normal range may weigh exactly 0
                    # in a float32 kernel (flushed or underflowed exp): a non-finite value there
                    # may or may not reach the row, so the row is checked without that key and
                    # a non-finite result is also accepted.
                    vk = vv[keep]
                    faint = (w < FLT_MIN_NORMAL) & ~np.isfinite(vk).all(1)
                    if faint.any():
                        may_nonfinite[b, h, i] = True
                        row = (w[~faint] @ vk[~faint]) / den
                    else:
                        row = (w @ vk) / den
                    value[b, h, i] = row
                    must_nonfinite[b, h, i] = ~np.isfinite(row)

    def _max_row_norm(x: np.ndarray) -> float:
        n = np.linalg.norm(np.where(np.isfinite(x), x, 0.0), axis=-1)
        return float(n.max()) if n.size else 0.0

    vmax = np.abs(np.where(np.isfinite(v64), v64, 0.0)).max() if v64.size else 0.0
    m_bound = scale * _max_row_norm(q64) * _max_row_norm(k64)
    extra = math.sqrt(q64.shape[-1]) * 2.0**-24 * m_bound * float(vmax)
    return Expected(value, must_nan, must_nonfinite, may_nonfinite, extra)


def compare(got: np.ndarray, exp: Expected, dtype: str) -> str | None:
    """None when ``got`` meets ``exp`` (tolerance of ``dtype``), else what differs, in words."""
    if got.shape != exp.value.shape:
        return f"output shape {list(got.shape)}, expected {list(exp.value.shape)}"
    atol, rtol = tolerances()[dtype]
    g = got.astype(np.float64)
    with np.errstate(all="ignore"):
        nan_bad = exp.must_nan & ~np.isnan(g)
        nonfin_bad = exp.must_nonfinite & np.isfinite(g)
        plain = ~(exp.must_nan | exp.must_nonfinite)
        if dtype == "float32":
            atol += exp.float32_extra
        close = np.isfinite(g) & (np.abs(g - exp.value) <= atol + rtol * np.abs(exp.value))
        loose = exp.may_nonfinite & ~np.isfinite(g)
        value_bad = plain & ~close & ~loose
    problems = []
    for what, bad in (
        ("must be NaN (D4: a NaN/+inf score of an allowed key)", nan_bad),
        ("must be non-finite (NaN/inf in value of an allowed key)", nonfin_bad),
        ("outside the tolerance", value_bad),
    ):
        n = int(bad.sum())
        if n:
            idx = tuple(int(x) for x in np.argwhere(bad)[0])
            want = "NaN" if exp.must_nan[idx] else f"{exp.value[idx]:.6g}"
            problems.append(
                f"{n} element(s) {what}; first at {list(idx)}: got {g[idx]:.6g}, expected {want}"
            )
    return "; ".join(problems) or None
