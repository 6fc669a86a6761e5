"""Models, inputs and backends for the ``spattn`` command line.

Loads ONNX files and model factories, makes or reads input feeds checked against the model's
inputs, runs PyTorch, ONNX Runtime (CPU and CUDA execution providers, our library registered)
and TensorRT (through :mod:`spattn.trt`), and compares outputs. Every problem a user can fix is
raised as :class:`UserError`, whose message says what is wrong and what to do.

torch is imported only where PyTorch runs; TensorRT only where an engine is built or run.

Examples
--------
>>> from spattn import backends
>>> model = backends.load_onnx("encoder.onnx")  # doctest: +SKIP
>>> specs = backends.input_specs(model)  # doctest: +SKIP
>>> feeds = backends.make_feeds(specs, batch=1, seq_len=256)  # doctest: +SKIP
>>> outs = backends.run_ort("encoder.onnx", feeds, specs)  # doctest: +SKIP
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BACKENDS",
    "UserError",
    "TensorSpec",
    "load_onnx",
    "input_specs",
    "output_specs",
    "spattn_node_info",
    "make_feeds",
    "load_feeds",
    "feeds_from_tensors",
    "load_factory",
    "parse_params",
    "backend_status",
    "run_backend",
    "run_torch",
    "compare_outputs",
    "model_float_dtype",
    "format_table",
]

#: Backends in the order ``spattn verify`` lists them.
BACKENDS = ("pytorch", "ort-cpu", "ort-cuda", "tensorrt")

TENSORRT_MISSING = (
    "TensorRT is not installed: on a machine with an NVIDIA GPU run `pip install tensorrt-cu13` "
    "(`tensorrt-cu12` for CUDA 12, or NVIDIA's TensorRT packages), then rebuild spattn there "
    "with `pip install .` "
    "so that libspattn_trt.so is built"
)
ORT_CUDA_MISSING = (
    "onnxruntime has no CUDA execution provider: on a machine with an NVIDIA GPU run "
    "`pip uninstall -y onnxruntime && pip install onnxruntime-gpu`"
)
SPATTN_CUDA_MISSING = (
    "the spattn libraries were built without CUDA: rebuild with `pip install .` on a machine "
    "where nvcc (CUDA 12 or newer) is on PATH"
)
TORCH_MISSING = "PyTorch is not installed: `pip install torch` (or `pip install 'spattn[torch]'`)"

_INT_ATTRIBUTES = (
    "window_left",
    "window_right",
    "causal",
    "num_global",
    "stride",
    "block_size",
    "num_random",
    "seed",
)
_KNOWN_ATTRIBUTES = {*_INT_ATTRIBUTES, "scale", "plugin_version", "plugin_namespace"}


class UserError(Exception):
    """A problem with the user's input or environment; the message says what to do.

    The command line prints it as one line and exits with status 1.
    """


# ---------------------------------------------------------------------------------- ONNX models
_ELEM_NAMES = {
    1: "float32",
    10: "float16",
    16: "bfloat16",
    11: "float64",
    6: "int32",
    7: "int64",
    9: "bool",
    2: "uint8",
    3: "int8",
    5: "int16",
    4: "uint16",
}
_NP_TYPES = {
    1: np.float32,
    10: np.float16,
    16: np.float32,
    11: np.float64,
    6: np.int32,
    7: np.int64,
    9: np.bool_,
    2: np.uint8,
    3: np.int8,
    5: np.int16,
    4: np.uint16,
}


@dataclass
class TensorSpec:
    """Name, element type and dims (ints, symbolic names or None) of a graph input or output."""

    name: str
    elem_type: int
    dims: list[Any] | None

    @property
    def dtype_name(self) -> str:
        """'float32', 'float16', 'bfloat16', 'int32', ..."""
        return _ELEM_NAMES.get(self.elem_type, f"onnx type {self.elem_type}")

    @property
    def is_float(self) -> bool:
        """True for float32, float16, bfloat16 and float64."""
        return self.elem_type in (1, 10, 16, 11)

    def shape_text(self) -> str:
        """The dims as ``[batch, seq, 64]`` (``?`` for unnamed dynamic dims)."""
        if self.dims is None:
            return "[unknown rank]"
        return "[" + ", ".join("?" if d is None else str(d) for d in self.dims) + "]"


def load_onnx(path: str | os.PathLike) -> Any:
    """Load an ONNX file, with one clear error for a missing or unreadable file.

    Raises
    ------
    UserError
        The file does not exist or is not an ONNX model.
    """
    import onnx

    p = Path(path)
    if not p.is_file():
        raise UserError(
            f"{path}: no such file; give the path of an .onnx model (make one with `spattn export`)"
        )
    try:
        return onnx.load(str(p))
    except Exception as e:  # protobuf's DecodeError and friends
        raise UserError(
            f"{path}: not an ONNX model ({type(e).__name__}: {e}); give an .onnx "
            "file written by `spattn export` or torch.onnx.export"
        ) from None


def input_specs(model: Any) -> list[TensorSpec]:
    """The graph inputs that are fed at run time (initializers excluded), in order."""
    from .schema import tensor_dims

    inits = {i.name for i in model.graph.initializer}
    return [
        TensorSpec(v.name, v.type.tensor_type.elem_type, tensor_dims(v.type))
        for v in model.graph.input
        if v.name not in inits
    ]


def output_specs(model: Any) -> list[TensorSpec]:
    """The graph outputs, in order."""
    from .schema import tensor_dims

    return [
        TensorSpec(v.name, v.type.tensor_type.elem_type, tensor_dims(v.type))
        for v in model.graph.output
    ]


def model_float_dtype(model: Any) -> str:
    """Name of the first floating-point input's type ('float32' when there is none)."""
    for s in input_specs(model):
        if s.elem_type in (1, 10, 16):
            return s.dtype_name
    return "float32"


def _constant_tensor(model: Any, name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant" and name in node.output:
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
    return None


def check_attributes(node: Any) -> dict[str, Any]:
    """A SparseAttention node's attributes as Python values, checked against docs/op-spec.md.

    Raises
    ------
    UserError
        An unknown attribute, an attribute of the wrong type or out of range.
    """
    from onnx import AttributeProto, helper

    label = f"node {node.name!r}" if node.name else "a SparseAttention node"
    what = "fix the model (docs/op-spec.md, Attributes) or re-export it with `spattn export`"
    attrs: dict[str, Any] = {}
    for a in node.attribute:
        if a.name not in _KNOWN_ATTRIBUTES:
            raise UserError(
                f"{label}: unknown attribute {a.name!r}; SparseAttention version 1 "
                f"has {', '.join(sorted(_KNOWN_ATTRIBUTES))}; {what}"
            )
        expected = (
            AttributeProto.INT
            if a.name in _INT_ATTRIBUTES
            else AttributeProto.FLOAT
            if a.name == "scale"
            else AttributeProto.STRING
        )
        if a.type != expected:
            raise UserError(
                f"{label}: {a.name}: expected an attribute of type "
                f"{AttributeProto.AttributeType.Name(expected)}, got "
                f"{AttributeProto.AttributeType.Name(a.type)}; {what}"
            )
        v = helper.get_attribute_value(a)
        attrs[a.name] = v.decode() if isinstance(v, bytes) else v
    checks = {
        "window_left": (lambda v: -1 <= v <= 2**31 - 1, "-1 or >= 0"),
        "window_right": (lambda v: -1 <= v <= 2**31 - 1, "-1 or >= 0"),
        "causal": (lambda v: v in (0, 1), "0 or 1"),
        "num_global": (lambda v: 0 <= v <= 2**31 - 1, ">= 0"),
        "stride": (lambda v: 0 <= v <= 2**31 - 1, ">= 0"),
        "num_random": (lambda v: 0 <= v <= 2**31 - 1, ">= 0"),
        "block_size": (lambda v: 1 <= v <= 65536, "1 ... 65536"),
        "seed": (lambda v: 0 <= v <= 2**31 - 1, "0 ... 2^31-1"),
        "scale": (lambda v: math.isfinite(v) and v >= 0.0, "finite and > 0 (0: 1/sqrt(D))"),
        "plugin_version": (lambda v: v == "1", '"1"'),
    }
    for name, (ok, expect) in checks.items():
        if name in attrs and not ok(attrs[name]):
            raise UserError(f"{label}: {name}: expected {expect}, got {attrs[name]!r}; {what}")
    return attrs


def spattn_node_info(
    model: Any, length: int | None = None, require: bool = True, path: str = "the model"
) -> list[dict[str, Any]]:
    """One dict per ``spattn::SparseAttention`` node: name, attributes, pattern, density.

    Parameters
    ----------
    model : onnx.ModelProto
        The model.
    length : int, optional
        Sequence length (``Lq = Lk``) at which to count the density; None skips it.
    require : bool
        Raise :class:`UserError` when the model has no spattn node.
    path : str
        The model's name in messages.
    """
    from . import schema

    nodes = [
        n for n in model.graph.node if n.domain == schema.DOMAIN and n.op_type == schema.OP_TYPE
    ]
    others = [n for n in model.graph.node if n.domain == schema.DOMAIN and n not in nodes]
    if others:
        raise UserError(
            f"{path}: node {others[0].name!r} has op type {others[0].op_type!r} in "
            "domain spattn; the only spattn op is SparseAttention"
        )
    if require and not nodes:
        raise UserError(
            f"{path} has no spattn::SparseAttention node: export the model with "
            "`spattn export` (or spattn.export) so that its attention becomes "
            "SparseAttention; for other models use onnxruntime or trtexec directly"
        )
    info = []
    for k, n in enumerate(nodes):
        attrs = check_attributes(n)
        if len(n.input) < 3 or any(not x for x in n.input[:3]):
            raise UserError(
                f"node {n.name!r}: query, key and value inputs are required; re-export the model"
            )
        if len(n.input) > 5:
            raise UserError(
                f"node {n.name!r}: input 5: reserved position, got {len(n.input)} "
                "inputs; SparseAttention version 1 takes at most 5"
            )
        bi_name = n.input[4] if len(n.input) > 4 and n.input[4] else None
        entry: dict[str, Any] = {
            "index": k,
            "name": n.name or f"#{k}",
            "attributes": attrs,
            "inputs": list(n.input),
            "outputs": list(n.output),
            "key_lengths": len(n.input) > 3 and bool(n.input[3]),
            "block_indices": None,
        }
        layout = None
        if bi_name is not None:
            layout = _constant_tensor(model, bi_name)
            entry["block_indices"] = (
                "constant " + str(list(layout.shape))
                if layout is not None
                else "computed at run time"
            )
        entry["pattern"] = _describe(attrs, layout, bi_name is not None)
        entry["density"] = None
        if length is not None:
            entry["density"], entry["density_note"] = _density(attrs, layout, bi_name, length)
        info.append(entry)
    return info


def _pattern(attrs: dict[str, Any], layout: Any = None) -> Any:
    from .patterns import Pattern

    try:
        return Pattern.from_attributes(attrs, block_indices=layout)
    except ValueError as e:
        raise UserError(f"{e}; fix the attribute (docs/op-spec.md, Attributes)") from None


def _describe(attrs: dict[str, Any], layout: Any, listed: bool) -> str:
    text = _pattern(attrs, layout).describe().split(": ", 1)[-1]
    if listed and layout is None:
        text += " + block_indices (run time)"
    return text


def _density(
    attrs: dict[str, Any], layout: Any, bi_name: str | None, length: int
) -> tuple[float | None, str]:
    if bi_name is not None and layout is None:
        return None, "block_indices computed at run time"
    p = _pattern(attrs, layout)
    if layout is not None:
        nqb = -(-length // p.block_size)
        if layout.ndim != 3 or layout.shape[1] != nqb:
            return None, (
                f"the constant layout has {layout.shape[1]} query blocks; it fits "
                f"Lq = {layout.shape[1] * p.block_size}, not {length}"
            )
    return float(p.density(length)), ""


# ---------------------------------------------------------------------------------- inputs
def parse_shape_overrides(items: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """``["x=1,128,64", "key_lengths=1"]`` -> ``{"x": (1, 128, 64), "key_lengths": (1,)}``.

    Raises
    ------
    ValueError
        A malformed item (the command line reports it as a usage error).
    """
    out: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, sep, dims = item.partition("=")
        if not sep:
            name, sep, dims = item.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) < 1:
            raise ValueError(f"{item!r}: expected NAME=D0,D1,... with dims >= 1 (e.g. x=1,256,64)")
        out[name] = shape
    return out


def _resolve_dims(
    specs: Sequence[TensorSpec], batch: int, seq_len: int, overrides: Mapping[str, tuple[int, ...]]
) -> dict[str, tuple[int, ...]]:
    symbols: dict[str, int] = {}
    for s in specs:  # explicit shapes also set the batch and sequence of the other inputs
        if s.name in overrides and s.dims:
            shape = overrides[s.name]
            if not isinstance(s.dims[0], int) and shape:
                batch = shape[0]
            if len(s.dims) >= 2 and len(shape) >= 2 and not isinstance(s.dims[1], int):
                seq_len = shape[1]
    for s in specs:  # symbols fixed by explicit shapes first
        if s.name in overrides and s.dims is not None:
            for d, v in zip(s.dims, overrides[s.name], strict=False):
                if isinstance(d, str):
                    symbols.setdefault(d, v)
    shapes: dict[str, tuple[int, ...]] = {}
    for s in specs:
        if s.name in overrides:
            shapes[s.name] = tuple(overrides[s.name])
            continue
        if s.dims is None:
            raise UserError(
                f"input {s.name!r} has no known rank; give its shape with "
                f"--shape {s.name}=D0,D1,... or its values with --inputs FILE.npz"
            )
        shape = []
        for axis, d in enumerate(s.dims):
            if isinstance(d, int) and d > 0:
                shape.append(d)
            elif isinstance(d, str) and d in symbols:
                shape.append(symbols[d])
            else:
                v = batch if axis == 0 else seq_len
                if isinstance(d, str):
                    symbols[d] = v
                shape.append(v)
        shapes[s.name] = tuple(shape)
    return shapes


def make_feeds(
    specs: Sequence[TensorSpec],
    batch: int = 1,
    seq_len: int = 128,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Deterministic inputs for a model: standard normal floats, integers = the sequence length.

    Dynamic dims take ``batch`` (axis 0) or ``seq_len`` (other axes); a symbolic dim shared by
    several inputs takes one value; an explicit shape in ``shapes`` sets the batch and sequence
    of the others. Integer inputs (``key_lengths``) hold the sequence length (axis 1 of the
    first floating-point input of rank >= 2): no padding. bfloat16 inputs are float32 arrays
    holding bfloat16 values.

    Examples
    --------
    >>> spec = TensorSpec("x", 1, ["batch", "seq", 8])
    >>> make_feeds([spec], batch=2, seq_len=16)["x"].shape
    (2, 16, 8)
    """
    shapes = _resolve_dims(specs, batch, seq_len, shapes or {})
    check_feeds(specs, {}, shapes=shapes)
    float_shapes = [shapes[s.name] for s in specs if s.is_float and len(shapes[s.name]) >= 2]
    fill = float_shapes[0][1] if float_shapes else seq_len
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for s in specs:
        shape = shapes[s.name]
        if s.is_float:
            x = rng.standard_normal(shape).astype(np.float32)
            feeds[s.name] = _round_to(x, s)
        elif s.elem_type == 9:
            feeds[s.name] = np.ones(shape, dtype=np.bool_)
        elif s.elem_type in _NP_TYPES:
            feeds[s.name] = np.full(shape, fill, dtype=_NP_TYPES[s.elem_type])
        else:
            raise UserError(
                f"input {s.name!r} has type {s.dtype_name}, which spattn cannot "
                "generate; give its values with --inputs FILE.npz"
            )
    return feeds


def _round_to(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if spec.elem_type == 16:  # bfloat16 values, kept as float32 (numpy has no bfloat16)
        from .runtime import to_bfloat16_bits

        return (to_bfloat16_bits(x).astype(np.uint32) << 16).view(np.float32)
    return x.astype(_NP_TYPES[spec.elem_type])


def check_feeds(
    specs: Sequence[TensorSpec],
    feeds: Mapping[str, np.ndarray],
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    source: str = "the inputs",
) -> None:
    """Check names, ranks, static dims, shared symbolic dims and dtype kinds.

    ``shapes`` (planned shapes) is checked instead of the arrays when given.

    Raises
    ------
    UserError
        Naming the input, what the model expects and what was given.
    """
    names = [s.name for s in specs]
    if shapes is None:
        missing = [n for n in names if n not in feeds]
        if missing:
            raise UserError(
                f"{source} lack input(s) {', '.join(map(repr, missing))}; the model "
                f"takes {', '.join(map(repr, names))}"
            )
        extra = [n for n in feeds if n not in names]
        if extra:
            raise UserError(
                f"{source} have array(s) {', '.join(map(repr, extra))} that the "
                f"model does not take; it takes {', '.join(map(repr, names))}"
            )
        shapes = {n: tuple(np.shape(feeds[n])) for n in names}
    symbols: dict[str, tuple[int, str]] = {}
    for s in specs:
        shape = shapes[s.name]
        expect = f"expected shape {s.shape_text()} ({s.dtype_name})"
        if s.dims is not None and len(shape) != len(s.dims):
            raise UserError(
                f"input {s.name!r}: {expect}, got {list(shape)} from {source}: rank "
                f"{len(shape)} instead of {len(s.dims)}"
            )
        for axis, (d, v) in enumerate(zip(s.dims or [], shape, strict=False)):
            if isinstance(d, int) and d > 0 and d != v:
                raise UserError(
                    f"input {s.name!r}: {expect}, got {list(shape)} from {source}: "
                    f"dim {axis} must be {d}"
                )
            if isinstance(d, str):
                if d in symbols and symbols[d][0] != v:
                    other_v, other = symbols[d]
                    raise UserError(
                        f"input {s.name!r}: dim {axis} ({d}) is {v} but input "
                        f"{other!r} has {d} = {other_v} in {source}; dims with one "
                        "name must agree"
                    )
                symbols.setdefault(d, (v, s.name))
        if s.name in feeds:
            a = np.asarray(feeds[s.name])
            if s.is_float != (a.dtype.kind == "f"):
                raise UserError(f"input {s.name!r}: {expect}, got dtype {a.dtype} from {source}")


def load_feeds(path: str | os.PathLike, specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Read inputs from an ``.npz`` file (one array per input name) and check them.

    Float arrays are cast to the input's type (bfloat16 inputs: rounded, kept as float32).
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(
            f"{path}: no such file; give an .npz with one array per model input "
            "(`spattn run --save-inputs FILE.npz` writes one)"
        )
    try:
        with np.load(str(p), allow_pickle=False) as z:
            feeds = {k: z[k] for k in z.files}
    except Exception as e:
        raise UserError(
            f"{path}: not a readable .npz file ({e}); write it with numpy.savez"
        ) from None
    check_feeds(specs, feeds, source=str(path))
    out = {}
    for s in specs:
        a = np.asarray(feeds[s.name])
        out[s.name] = (
            _round_to(a.astype(np.float32), s)
            if s.is_float
            else a.astype(_NP_TYPES.get(s.elem_type, a.dtype))
        )
    return out


def feeds_from_tensors(specs: Sequence[TensorSpec], tensors: Sequence[Any]) -> dict[str, Any]:
    """Map a model's example tensors (in ``forward`` order) onto the ONNX inputs, as numpy."""
    ts = [t for t in tensors if hasattr(t, "detach")]
    if len(ts) < len(specs):
        raise UserError(
            f"the factory gives {len(ts)} tensor input(s) but the ONNX model takes "
            f"{len(specs)}; is it the model this factory exported?"
        )
    feeds = {}
    for s, t in zip(specs, ts, strict=False):
        t = t.detach().cpu()
        a = t.float().numpy() if s.is_float else t.numpy()
        feeds[s.name] = _round_to(a, s) if s.is_float else a.astype(_NP_TYPES[s.elem_type])
    check_feeds(specs, feeds, source="the factory's example inputs")
    return feeds


# ---------------------------------------------------------------------------------- factories
def parse_params(items: Sequence[str]) -> dict[str, Any]:
    """``["seq_len=64", "name=abc"]`` -> ``{"seq_len": 64, "name": "abc"}`` (Python literals).

    Raises
    ------
    ValueError
        An item without ``=``.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"{item!r}: expected KEY=VALUE (e.g. seq_len=256)")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def resolve_factory(source: str) -> tuple[Any, str]:
    """The callable named by ``source``: a built-in sample, ``pkg.mod:function`` or
    ``file.py:function``; returns ``(callable, display name)``.

    Raises
    ------
    UserError
        When the module or function cannot be found; ``LookupError`` for an unknown sample name.
    """
    if ":" not in source:
        from .models import SAMPLES

        if source not in SAMPLES:
            raise LookupError(
                f"{source!r} is neither a built-in sample ({', '.join(SAMPLES)}) "
                "nor a factory package.module:function"
            )
        return SAMPLES[source], source
    mod_name, _, fn_name = source.rpartition(":")
    if mod_name.endswith(".py"):
        file = Path(mod_name)
        if not file.is_file():
            raise UserError(f"{mod_name}: no such file (from the factory {source!r})")
        spec = importlib.util.spec_from_file_location(file.stem, file)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            raise UserError(f"{mod_name}: importing it failed with {type(e).__name__}: {e}") from e
    else:
        try:
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            raise UserError(
                f"cannot import {mod_name!r} ({e}); put its folder on PYTHONPATH "
                "or install its package"
            ) from e
        except Exception as e:
            raise UserError(f"importing {mod_name!r} failed with {type(e).__name__}: {e}") from e
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise UserError(
            f"{mod_name!r} has no function {fn_name!r}; the factory must be "
            "package.module:function returning (model, example_inputs)"
        )
    return fn, source


def factory_parameters(fn: Any) -> list[str] | None:
    """Keyword parameters a factory accepts (None when it takes ``**kwargs``)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return [
        n for n, p in sig.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def load_factory(source: str, params: Mapping[str, Any] | None = None) -> tuple[Any, tuple]:
    """Call a model factory; returns ``(torch module in eval mode, example inputs tuple)``.

    Raises
    ------
    UserError
        Import failure, a factory error or a return value that is not ``(module, inputs)``.
    """
    import torch

    fn, name = resolve_factory(source)
    try:
        result = fn(**dict(params or {}))
    except (TypeError, ValueError) as e:
        raise UserError(f"the factory {name} failed: {e}; check the --param values") from e
    if (
        not isinstance(result, (tuple, list))
        or len(result) != 2
        or not isinstance(result[0], torch.nn.Module)
    ):
        raise UserError(
            f"the factory {name} must return (torch.nn.Module, example_inputs), got "
            f"{type(result).__name__}"
        )
    model, inputs = result
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    return model.eval(), tuple(inputs)


# ---------------------------------------------------------------------------------- backends
def backend_status(name: str) -> tuple[bool, str]:
    """``(usable, reason)`` for a backend; the reason of an unusable one says how to get it.

    Examples
    --------
    >>> backend_status("ort-cpu")  # doctest: +SKIP
    (True, '/.../libspattn_ort.so')
    """
    if name == "pytorch":
        if importlib.util.find_spec("torch") is None:
            return False, TORCH_MISSING
        return True, "torch " + _version("torch")
    if name in ("ort-cpu", "ort-cuda"):
        try:
            import onnxruntime as ort
        except ImportError:
            return False, "onnxruntime is not installed: `pip install onnxruntime`"
        from .runtime import library_path

        try:
            lib = library_path("ort")
        except FileNotFoundError:
            return False, (
                "libspattn_ort.so was not found: install spattn with `pip install .` "
                "from the repository root, or point SPATTN_LIB_DIR at its folder"
            )
        if name == "ort-cpu":
            return True, lib
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return False, ORT_CUDA_MISSING
        if not _spattn_has_cuda():
            return False, SPATTN_CUDA_MISSING
        return True, lib
    if name == "tensorrt":
        return tensorrt_status()
    raise ValueError(f"backend: expected one of {BACKENDS}, got {name!r}")


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def _spattn_has_cuda() -> bool:
    try:
        from . import capi

        return capi.has_cuda()
    except (OSError, FileNotFoundError, AttributeError):
        return False


def tensorrt_status() -> tuple[bool, str]:
    """``(usable, reason)`` for TensorRT with our plugin."""
    if importlib.util.find_spec("tensorrt") is None:
        return False, TENSORRT_MISSING
    try:
        trt = importlib.import_module(".trt", __package__)
    except ImportError as e:
        return False, f"this spattn has no TensorRT support (spattn.trt: {e}); update spattn"
    from .runtime import library_path

    try:
        lib = library_path("trt")
    except FileNotFoundError:
        return False, (
            "libspattn_trt.so was not built: rebuild spattn with `pip install .` on "
            "a machine with nvcc and TensorRT (headers: SPATTN_TRT_INCLUDE_DIR)"
        )
    try:
        res = trt.available()
    except Exception as e:  # a broken TensorRT install raises many kinds of errors
        return False, f"TensorRT cannot be used here: {e}"
    ok, why = res if isinstance(res, tuple) else (bool(res), "")
    if not ok:
        return False, why or "TensorRT is installed but not usable here (no GPU or driver?)"
    return True, lib


def tensorrt_module() -> Any:
    """:mod:`spattn.trt`, or :class:`UserError` with the way to get TensorRT."""
    ok, reason = tensorrt_status()
    if not ok:
        raise UserError(reason)
    return importlib.import_module(".trt", __package__)


def ort_feeds(specs: Sequence[TensorSpec], feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Feeds as :func:`spattn.runtime.run_ort` takes them (bfloat16 as ``("bfloat16", bits)``)."""
    from .runtime import to_bfloat16_bits

    out: dict[str, Any] = {}
    for s in specs:
        a = feeds[s.name]
        out[s.name] = ("bfloat16", to_bfloat16_bits(a)) if s.elem_type == 16 else a
    return out


class OrtRunner:
    """An ONNX Runtime session with our library; ``runner(feeds)`` returns ``{name: array}``.

    bfloat16 outputs come back as float32.
    """

    def __init__(
        self,
        model: Any,
        specs: Sequence[TensorSpec],
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        from . import runtime

        ok, reason = backend_status("ort-cuda" if device == "cuda" else "ort-cpu")
        if not ok:
            raise UserError(reason)
        proto, self.renamed = runtime._with_float_outputs(model)
        providers = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"]
            if device == "cuda"
            else ["CPUExecutionProvider"]
        )
        try:
            self.session = runtime.ort_session(proto, providers, intra_op_threads=threads)
        except Exception as e:  # onnxruntime's own exception types
            bf16 = any(s.elem_type == 16 for s in specs)
            raise UserError(_ort_message(e, device, bf16)) from e
        if device == "cuda" and self.session.get_providers()[0] != "CUDAExecutionProvider":
            raise UserError(
                "ONNX Runtime could not start its CUDA execution provider (no GPU, "
                "or a CUDA/cuDNN mismatch); run `spattn doctor`"
            )
        self.specs = list(specs)

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from . import runtime

        try:
            outs = runtime.run_ort(None, ort_feeds(self.specs, feeds), session=self.session)
        except Exception as e:
            raise UserError(_ort_message(e, "run")) from e
        return {self.renamed.get(k, k): v for k, v in outs.items()}


def _ort_message(e: Exception, where: str, bf16: bool = False) -> str:
    text = " ".join(str(e).split())
    if "NOT_IMPLEMENTED" in text and (bf16 or "bfloat16" in text.lower()):
        return (
            "ONNX Runtime's CPU provider has no bfloat16 kernels for some ops of this model "
            f"({text.split(' : ')[-1]}); run the bfloat16 model on CUDA (--backend ort-cuda) "
            "or export it in float32/float16"
        )
    if "SparseAttention" in text:
        i = text.find("SparseAttention:")
        detail = text[i:] if i >= 0 else text
        return f"ONNX Runtime rejected the model: {detail}"
    stage = "running the model" if where == "run" else "loading the model"
    return f"ONNX Runtime failed {stage}: {text}"


def run_torch(
    model: Any,
    specs: Sequence[TensorSpec],
    feeds: Mapping[str, np.ndarray],
    output_names: Sequence[str],
    dtype: str = "float32",
) -> dict[str, np.ndarray]:
    """Run a PyTorch model on the feeds (in ONNX input order); outputs as float32 numpy."""
    import torch

    tdtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    model = model.to(tdtype).eval()
    args = []
    for s in specs:
        t = torch.from_numpy(np.ascontiguousarray(feeds[s.name]))
        args.append(t.to(tdtype) if s.is_float else t)
    with torch.no_grad():
        out = model(*args)
    flat = _flatten(out)
    if len(flat) != len(output_names):
        raise UserError(
            f"the PyTorch model returns {len(flat)} tensor(s) but the ONNX model has "
            f"{len(output_names)} output(s); is it the model this factory exported?"
        )
    return {n: t.detach().float().cpu().numpy() for n, t in zip(output_names, flat, strict=True)}


def _flatten(x: Any) -> list[Any]:
    if hasattr(x, "detach"):
        return [x]
    if isinstance(x, Mapping):
        return [t for v in x.values() for t in _flatten(v)]
    if isinstance(x, (tuple, list)):
        return [t for v in x for t in _flatten(v)]
    return []


def run_tensorrt(
    engine: str, specs: Sequence[TensorSpec], feeds: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Run a TensorRT engine through :func:`spattn.trt.run_engine`; outputs as float32."""
    trt = tensorrt_module()
    if not Path(engine).is_file():
        raise UserError(f"{engine}: no such engine file; build one with `spattn build`")
    try:  # bfloat16 inputs are float32 arrays here; run_engine rounds them
        outs = trt.run_engine(engine, {s.name: feeds[s.name] for s in specs})
    except (RuntimeError, ValueError) as e:
        raise UserError(f"TensorRT failed: {' '.join(str(e).split())}") from e
    return {
        k: np.asarray(v).astype(np.float32)
        if np.asarray(v).dtype.kind == "f" or str(np.asarray(v).dtype) == "bfloat16"
        else np.asarray(v)
        for k, v in outs.items()
    }


def run_backend(
    name: str,
    model_path: str,
    specs: Sequence[TensorSpec],
    feeds: Mapping[str, np.ndarray],
    *,
    engine: str | None = None,
    threads: int | None = None,
) -> dict[str, np.ndarray]:
    """Run one ONNX-side backend (``ort-cpu``, ``ort-cuda`` or ``tensorrt``) once."""
    if name in ("ort-cpu", "ort-cuda"):
        runner = OrtRunner(model_path, specs, "cuda" if name == "ort-cuda" else "cpu", threads)
        return runner(feeds)
    if name == "tensorrt":
        if engine is None:
            raise UserError(
                "no TensorRT engine: build one with `spattn build MODEL.onnx -o "
                "ENGINE.plan` and pass it with --engine"
            )
        return run_tensorrt(engine, specs, feeds)
    raise ValueError(f"backend: expected ort-cpu, ort-cuda or tensorrt, got {name!r}")


# ---------------------------------------------------------------------------------- comparison
def compare_outputs(
    reference: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray], atol: float, rtol: float
) -> list[dict[str, Any]]:
    """Per-output max abs/rel error and pass/fail (``|got - ref| <= atol + rtol * |ref|``).

    Examples
    --------
    >>> rows = compare_outputs({"y": np.ones(3)}, {"y": np.ones(3)}, 1e-5, 1e-4)
    >>> rows[0]["passed"]
    True
    """
    from .tolerances import max_errors

    rows = []
    for name, ref in reference.items():
        row: dict[str, Any] = {
            "output": name,
            "max_abs": None,
            "max_rel": None,
            "passed": False,
            "note": "",
        }
        if name not in got:
            row["note"] = "output missing"
        else:
            g = np.asarray(got[name], dtype=np.float64)
            r = np.asarray(ref, dtype=np.float64)
            if g.shape != r.shape:
                row["note"] = f"shape {list(g.shape)} != reference {list(r.shape)}"
            elif not np.all(np.isfinite(g)):
                row["note"] = "non-finite values"
                row["max_abs"], row["max_rel"] = float("nan"), float("nan")
            else:
                row["max_abs"], row["max_rel"] = max_errors(g, r)
                row["passed"] = bool(np.all(np.abs(g - r) <= atol + rtol * np.abs(r)))
        rows.append(row)
    return rows


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width text table.

    Examples
    --------
    >>> print(format_table(["a", "b"], [[1, "x"]]))
    a  b
    -  -
    1  x
    """
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
