"""The attributes and inputs of ``spattn::SparseAttention``, declared once (docs/op-spec.md).

Every Python layer that needs to know them reads this table: the ONNX schema (:mod:`.schema`:
registration, type/shape inference, error messages), the torch custom op's signature and its ONNX
translation (:mod:`.op`), :class:`~.patterns.Pattern` (fields, validation, ONNX attributes) and the
checks of :func:`~.functional.sparse_attention`. The C++ side declares the same attributes in
``kernels/include/spattn/attributes.h``; a test checks that the two tables agree.

Adding an attribute is one :class:`Attribute` row here (plus the C++ row and the backends'
semantics); adding an input is one :class:`Input` row, appended: input positions never change.

:data:`OP_PARAMS` is the order of the torch op ``spattn::sparse_attention``'s arguments: the
original inputs and attributes first, later additions appended, so positional calls written for
an older signature keep their meaning.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

__all__ = [
    "INT32_MAX",
    "MAX_LENGTH",
    "Attribute",
    "Input",
    "HeadDims",
    "OP_PARAMS",
    "ATTRIBUTES",
    "INPUTS",
    "TORCH_PARAMS",
    "PATTERN_ATTRIBUTES",
    "HEAD_DIMS",
    "attribute",
    "input_index",
    "defaults",
]

INT32_MAX = 2**31 - 1
# The largest Lq and Lk (docs/op-spec.md, Errors): every index computation stays far from int32's
# and int64's limits, and a sequence length this size is already beyond any model's.
MAX_LENGTH = 2**30


@dataclass(frozen=True)
class Attribute:
    """One node attribute.

    ``low``/``high`` bound the valid values (inclusive; ``None`` unbounded; FLOAT values must also
    be finite). ``expect`` says the valid values in words, for error messages.
    """

    name: str
    onnx_type: str  # "INT", "FLOAT" or "STRING"
    default: Any
    low: float | None
    high: float | None
    expect: str
    meaning: str
    # A field of Pattern and an argument of the torch op (else: read by TensorRT's parser only).
    pattern: bool = True
    # The exporter writes it even when it equals the default (else: only when it differs).
    always_written: bool = True
    # Written into the schema as the attribute's default. Off for scale (its default depends on
    # D) and for attributes written only when set: onnxscript fills schema defaults into every
    # node it builds, which would write them into every exported node.
    schema_default: bool = True
    # For STRING attributes: the value the exporter writes.
    export_value: Any = None
    # The allowed values of a STRING attribute (None: any).
    choices: tuple[Any, ...] | None = None

    @property
    def python_type(self) -> type:
        return {"INT": int, "FLOAT": float, "STRING": str}[self.onnx_type]

    def problem(self, value: Any) -> str | None:
        """The expectation ``value`` fails, in words (None when it is valid)."""
        if self.onnx_type == "STRING":
            if not isinstance(value, str) or (
                self.choices is not None and value not in self.choices
            ):
                return f"a string ({self.expect})"
            return None
        if self.onnx_type == "INT":
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                return f"an integer ({self.expect})"
        elif isinstance(value, bool) or not isinstance(value, numbers.Real):
            return f"a number ({self.expect})"
        elif not math.isfinite(float(value)):
            return self.expect
        if (self.low is not None and value < self.low) or (
            self.high is not None and value > self.high
        ):
            return self.expect
        return None

    def check(self, value: Any, where: str = "SparseAttention") -> Any:
        """``value`` as the attribute's Python type; ValueError naming the attribute if invalid.

        Examples
        --------
        >>> attribute("block_size").check(1.7)
        Traceback (most recent call last):
        ...
        ValueError: SparseAttention: block_size: expected an integer (in 1 ... 65536), got 1.7
        """
        why = self.problem(value)
        if why is not None:
            raise ValueError(f"{where}: {self.name}: expected {why}, got {value!r}")
        return self.python_type(value)


@dataclass(frozen=True)
class Input:
    """One node input. ``shape`` uses the spec's symbols (B, Hq, Hkv, Lq, Lk, D, Dv, ...)."""

    name: str
    dtype: str  # "T" (float32/float16/bfloat16, shared by query/key/value), "int32", "float32"
    shape: tuple[str, ...]
    required: bool
    meaning: str
    valid: str = ""  # the valid values, in words

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def onnx_type(self) -> str:
        return {"T": "T", "int32": "tensor(int32)", "float32": "tensor(float)"}[self.dtype]

    @property
    def position(self) -> int:
        return input_index(self.name)


@dataclass(frozen=True)
class HeadDims:
    """The head dims a backend takes: a list (``D == Dv`` required) or a range for each."""

    backend: str
    dims: tuple[int, ...] | None = None  # exactly these, with D == Dv
    max_dim: int | None = None  # else any 1 ... max_dim for D and Dv (None: any)

    def supports(self, d: int, dv: int) -> bool:
        if self.dims is not None:
            return d == dv and d in self.dims
        return self.max_dim is None or (d <= self.max_dim and dv <= self.max_dim)

    def describe(self) -> str:
        if self.dims is not None:
            return "D = Dv in {" + ", ".join(str(x) for x in self.dims) + "}"
        return "any D, Dv" if self.max_dim is None else f"D, Dv in 1 ... {self.max_dim}"


_I = Input
_A = Attribute

OP_PARAMS: tuple[Input | Attribute, ...] = (
    _I("query", "T", ("B", "Hq", "Lq", "D"), True, "queries"),
    _I("key", "T", ("B", "Hkv", "Lk", "D"), True, "keys; Hq is a multiple of Hkv (GQA)"),
    _I("value", "T", ("B", "Hkv", "Lk", "Dv"), True, "values"),
    _I(
        "key_lengths",
        "int32",
        ("B",),
        False,
        "keys j >= key_lengths[b] are padding (right padding); absent: Lk",
        "in [0, Lk]",
    ),
    _I(
        "block_indices",
        "int32",
        ("Hl", "ceil(Lq / block_size)", "K"),
        False,
        "listed key blocks per query block; Hl in {1, Hq}; -1 pads",
        "in [-1, ceil(Lk / block_size))",
    ),
    _A("window_left", "INT", -1, -1, INT32_MAX, "-1 or >= 0", "keys up to this many positions "
       "before the query; -1 unbounded"),
    _A("window_right", "INT", -1, -1, INT32_MAX, "-1 or >= 0", "keys up to this many positions "
       "after the query; -1 unbounded"),
    _A("causal", "INT", 0, 0, 1, "0 or 1", "1: keys after the query position are never allowed"),
    _A("num_global", "INT", 0, 0, INT32_MAX, ">= 0", "the first G positions attend to all keys "
       "and are attended by all queries"),
    _A("stride", "INT", 0, 0, INT32_MAX, ">= 0", "Sparse Transformer strided component; 0 off"),
    _A("block_size", "INT", 64, 1, 65536, "in 1 ... 65536", "block edge for num_random and "
       "block_indices"),
    _A("num_random", "INT", 0, 0, 65536, "in 0 ... 65536", "BigBird random key blocks per query "
       "block and query head"),
    _A("seed", "INT", 0, 0, INT32_MAX, "in 0 ... 2^31-1", "seed of the random-block hash"),
    _A("scale", "FLOAT", 0.0, 0.0, None, "finite and > 0 (0: the default 1/sqrt(D))",
       "multiplies q.k before the softmax; absent or 0: 1/sqrt(D)", always_written=False,
       schema_default=False),
    _A("softcap", "FLOAT", 0.0, 0.0, None, "finite and >= 0 (0: off)", "> 0: after scaling, "
       "s = softcap * tanh(s / softcap); 0 off", always_written=False, schema_default=False),
    _I(
        "global_mask",
        "int32",
        ("B", "Lk"),
        False,
        "nonzero marks a global token of batch b: attended by every query, and (as a query at "
        "that position) attending every key",
        "any int32 (nonzero: global)",
    ),
    _I(
        "key_starts",
        "int32",
        ("B",),
        False,
        "keys j < key_starts[b] are padding (left padding); absent: 0",
        "in [0, key_lengths[b]] (key_lengths absent: [0, Lk])",
    ),
    _I(
        "sinks",
        "float32",
        ("Hq",),
        False,
        "per query head, a logit added to the softmax's denominator only",
        "not NaN",
    ),
    _A("chunk_size", "INT", 0, 0, INT32_MAX, ">= 0 (0: off)", "> 0: the local band stops at "
       "the query's chunk, runs of chunk_size positions counted from key_starts[b] (Llama 4's "
       "chunked attention); 0 off", always_written=False, schema_default=False),
    _A("plugin_version", "STRING", "1", None, None, "'1'", "read by TensorRT's ONNX parser only; "
       "ignored by the op", pattern=False, export_value="1", choices=("1",)),
    _A("plugin_namespace", "STRING", "", None, None, "a string", "read by TensorRT's ONNX parser "
       "only; the exporter writes 'spattn'", pattern=False, export_value="spattn"),
)  # fmt: skip

ATTRIBUTES: tuple[Attribute, ...] = tuple(p for p in OP_PARAMS if isinstance(p, Attribute))
INPUTS: tuple[Input, ...] = tuple(p for p in OP_PARAMS if isinstance(p, Input))
# The torch op's arguments, in order: every input and every pattern attribute.
TORCH_PARAMS: tuple[Input | Attribute, ...] = tuple(
    p for p in OP_PARAMS if isinstance(p, Input) or p.pattern
)
PATTERN_ATTRIBUTES: tuple[Attribute, ...] = tuple(a for a in ATTRIBUTES if a.pattern)
# The integer pattern attributes, in table order (the mask's parameters; scale and softcap are
# the FLOAT ones).
INT_ATTRIBUTES: tuple[str, ...] = tuple(a.name for a in PATTERN_ATTRIBUTES if a.onnx_type == "INT")

# The head dims each backend takes (docs/op-spec.md, Backend support).
HEAD_DIMS: dict[str, HeadDims] = {
    "pytorch": HeadDims("PyTorch reference / block-sparse path"),
    "cpu": HeadDims("ONNX Runtime CPU / C API CPU kernel", max_dim=512),
    "cuda": HeadDims("ONNX Runtime CUDA / C API CUDA kernel", dims=(32, 64, 96, 128, 256)),
    "tensorrt": HeadDims("TensorRT plugin", dims=(32, 64, 96, 128, 256)),
}

_BY_NAME = {p.name: p for p in OP_PARAMS}


def attribute(name: str) -> Attribute:
    """The attribute row called ``name`` (KeyError if there is none).

    Examples
    --------
    >>> attribute("softcap").default
    0.0
    """
    a = _BY_NAME[name]
    if not isinstance(a, Attribute):
        raise KeyError(name)
    return a


def input_index(name: str) -> int:
    """The position of input ``name`` in the node.

    Examples
    --------
    >>> input_index("sinks")
    7
    """
    for i, p in enumerate(INPUTS):
        if p.name == name:
            return i
    raise KeyError(name)


def defaults(pattern_only: bool = True) -> dict[str, Any]:
    """``{name: default}`` of the (pattern) attributes.

    Examples
    --------
    >>> defaults()["block_size"]
    64
    """
    return {a.name: a.default for a in ATTRIBUTES if a.pattern or not pattern_only}
