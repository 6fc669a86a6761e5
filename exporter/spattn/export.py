"""Export a PyTorch model with sparse attention to ONNX and validate it with ONNX Runtime."""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import re
import types
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import torch

from . import argcheck, schema, tolerances
from . import op as _op
from .compare import compare_outputs

__all__ = [
    "ExportReport",
    "export",
    "spattn_nodes",
    "check_model",
    "named_inputs",
    "default_dynamic_axes",
]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class ExportReport:
    """What :func:`export` wrote and how the ONNX Runtime run compared with PyTorch.

    Attributes
    ----------
    path : str
        The ``.onnx`` file written.
    num_spattn_nodes : int
        Number of ``spattn::SparseAttention`` nodes.
    nodes : list of dict
        Per node: ``name``, ``attributes``, ``inputs``, ``pattern`` (text).
    errors : dict of str to (float, float)
        Per validated output: ``(max abs error, max rel error)`` of ONNX Runtime against
        PyTorch. Keys are output indices (``"0"``, ``"1"``, ...), with ``" (inputs N)"`` added for
        the N-th ``validation_inputs``; ``nan`` where an output is missing, misshapen or not
        finite. Empty when not validated.
    passed : bool or None
        Every output within ``atol + rtol * |reference|`` elementwise; None when not validated.
    dtype : str
        Precision of the exported graph.
    atol, rtol : float or None
        The validation tolerances used.
    notes : list of str
        What the user should know (e.g. why validation was skipped).
    input_names, output_names : list of str
        The graph's input and output names (the serving contract).
    warnings : list of str
        Nodes that cannot run on the CUDA execution provider or TensorRT (their head dims),
        read from the kernels library (:mod:`spattn.support`).
    """

    path: str
    num_spattn_nodes: int
    nodes: list[dict[str, Any]] = field(default_factory=list)
    errors: dict[str, tuple[float, float]] = field(default_factory=dict)
    passed: bool | None = None
    dtype: str = "float32"
    atol: float | None = None
    rtol: float | None = None
    notes: list[str] = field(default_factory=list)
    input_names: list[str] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """Human-readable multi-line summary.

        Examples
        --------
        >>> print(report.summary())  # doctest: +SKIP
        """
        lines = [
            f"{self.path}: {self.num_spattn_nodes} spattn::SparseAttention node(s), "
            f"dtype {self.dtype}"
        ]
        for n in self.nodes:
            lines.append(f"  {n['name']}: {n['pattern']}")
        for name, (a, r) in self.errors.items():
            lines.append(f"  output {name}: max abs {a:.3g}, max rel {r:.3g}")
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  warning: {w}" for w in self.warnings]
        if self.passed is not None:
            lines.append(
                f"  validation {'passed' if self.passed else 'FAILED'}: "
                f"|onnxruntime - pytorch| <= {self.atol:g} + {self.rtol:g} * |pytorch| "
                f"{'for every element' if self.passed else 'fails for some element'}"
            )
        return "\n".join(lines)


def spattn_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The ``spattn::SparseAttention`` nodes of a model's main graph.

    Examples
    --------
    >>> spattn_nodes(onnx.load("model.onnx"))  # doctest: +SKIP
    """
    return [
        n for n in model.graph.node if n.domain == schema.DOMAIN and n.op_type == schema.OP_TYPE
    ]


def node_attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """A node's attributes as Python values."""
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _decode(v: Any) -> Any:
    return v.decode() if isinstance(v, bytes) else v


def check_model(model: onnx.ModelProto | str) -> onnx.ModelProto:
    """Run the full checker (custom domains included) and strict shape inference.

    Returns the model with inferred shapes.

    Examples
    --------
    >>> check_model("model.onnx")  # doctest: +SKIP
    """
    schema.register()
    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(str(model))
    onnx.checker.check_model(model, full_check=True, check_custom_domain=True)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True, check_type=True)


#: Names of the dynamic axes 0 and 1 of every tensor input (and of the outputs that share them).
BATCH_AXIS = "batch_size"
SEQUENCE_AXIS = "sequence_length"


def _cast(args: Any, dtype: torch.dtype | None) -> Any:
    def one(a: Any) -> Any:
        if dtype is not None and isinstance(a, torch.Tensor) and a.is_floating_point():
            return a.to(dtype)
        return a

    if isinstance(args, Mapping):
        return {k: one(v) for k, v in args.items()}
    return tuple(one(a) for a in args)


def _split_inputs(example_inputs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(args, kwargs)`` from a tensor, a sequence of positional inputs or a dict of keyword
    inputs."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, Mapping):
        return (), dict(example_inputs)
    return tuple(example_inputs), {}


def named_inputs(
    model: torch.nn.Module, example_inputs: Any
) -> tuple[list[tuple[str, torch.Tensor]], bool]:
    """The tensor inputs of ``model(example_inputs)`` named by ``forward``'s parameters, in the
    order given (positional inputs, then keyword inputs in the dict's order: the order of the
    graph's inputs), and whether they could be named (else ``input_0``, ``input_1``, ...).

    Examples
    --------
    >>> from spattn.models import gqa_decoder_block
    >>> m, inputs = gqa_decoder_block(seq_len=8)
    >>> [n for n, _ in named_inputs(m, inputs)[0]]
    ['x', 'key_lengths']
    """
    args, kwargs = _split_inputs(example_inputs)
    try:
        sig = inspect.signature(model.forward)
        if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in sig.parameters.values()):
            raise TypeError("forward takes *args or **kwargs")
        sig.bind(*args, **kwargs)
    except (TypeError, ValueError):
        values = [*args, *kwargs.values()]
        tensors = [a for a in values if isinstance(a, torch.Tensor)]
        return [(f"input_{i}", t) for i, t in enumerate(tensors)], False
    params = list(sig.parameters)
    given = [*zip(params, args, strict=False), *kwargs.items()]
    return [(k, v) for k, v in given if isinstance(v, torch.Tensor)], True


def default_dynamic_axes(
    model: torch.nn.Module, example_inputs: Any, batch: bool = True, sequence: bool = True
) -> dict[str, dict[int, str]]:
    """``{input: {0: "batch_size", 1: "sequence_length"}}`` for every tensor input (axis 1 of
    inputs of rank >= 2), keyed by ``forward``'s parameter names.

    Examples
    --------
    >>> from spattn.models import gqa_decoder_block
    >>> m, inputs = gqa_decoder_block(seq_len=8)
    >>> default_dynamic_axes(m, inputs)
    {'x': {0: 'batch_size', 1: 'sequence_length'}, 'key_lengths': {0: 'batch_size'}}
    """
    out: dict[str, dict[int, str]] = {}
    for name, t in named_inputs(model, example_inputs)[0]:
        axes: dict[int, str] = {}
        if batch and t.dim() >= 1:
            axes[0] = BATCH_AXIS
        if sequence and t.dim() >= 2:
            axes[1] = SEQUENCE_AXIS
        if axes:
            out[name] = axes
    return out


def _axes_dict(name: str, axes: Any) -> dict[int, str]:
    if isinstance(axes, Mapping):
        return {int(k): str(v) for k, v in axes.items()}
    default = {0: BATCH_AXIS, 1: SEQUENCE_AXIS}
    return {int(a): default.get(int(a), f"{name}_dim{int(a)}") for a in axes}


def _dynamic_shapes_for(
    model: torch.nn.Module, example_inputs: Any, axes: Mapping[str, Mapping[int, str]]
) -> Any:
    """``dynamic_shapes`` for torch.onnx.export: the named axes of each input ``Dim.AUTO``."""
    auto = torch.export.Dim.AUTO
    named, by_name = named_inputs(model, example_inputs)
    args, kwargs = _split_inputs(example_inputs)
    per_input = {n: {a: auto for a in axes.get(n, {})} or None for n, _ in named}
    if by_name:
        sig = inspect.signature(model.forward)
        bound = sig.bind(*args, **kwargs).arguments
        return {k: per_input.get(k) for k in bound}
    it = iter(per_input.values())
    shapes = tuple(next(it) if isinstance(a, torch.Tensor) else None for a in args)
    if kwargs:
        return {
            **{f"input_{i}": s for i, s in enumerate(shapes)},
            **{k: next(it) if isinstance(v, torch.Tensor) else None for k, v in kwargs.items()},
        }
    return shapes


def _rename_values(graph: onnx.GraphProto, mapping: Mapping[str, str]) -> None:
    """Rename values (node inputs/outputs, graph outputs, value_info) in a graph and subgraphs."""
    for node in graph.node:
        for i, n in enumerate(node.input):
            if n in mapping:
                node.input[i] = mapping[n]
        for i, n in enumerate(node.output):
            if n in mapping:
                node.output[i] = mapping[n]
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                _rename_values(a.g, mapping)
            for g in a.graphs:
                _rename_values(g, mapping)
    for v in [*graph.output, *graph.value_info]:
        if v.name in mapping:
            v.name = mapping[v.name]


def _name_inputs(proto: onnx.ModelProto, aliases: Mapping[str, str]) -> None:
    """Rename the graph inputs from ``forward``'s parameter names (torch's) to ``aliases``'s."""
    inputs = [i.name for i in proto.graph.input]
    if not all(n in aliases for n in inputs):  # torch did not keep the parameter names
        mapping = dict(zip(inputs, aliases.values(), strict=False))
    else:
        mapping = {n: aliases[n] for n in inputs}
    mapping = {k: v for k, v in mapping.items() if k != v}
    if not mapping:
        return
    taken = {i.name for i in proto.graph.initializer} | {
        o for n in proto.graph.node for o in n.output
    }
    clash = [v for v in mapping.values() if v in taken]
    if clash:
        raise ValueError(f"input_names: {clash[0]!r} is already the name of a value of the graph")
    for i in proto.graph.input:
        i.name = mapping.get(i.name, i.name)
    _rename_values(proto.graph, mapping)


def _name_outputs(proto: onnx.ModelProto, names: Sequence[str] | None) -> None:
    outs = [o.name for o in proto.graph.output]
    if names is None:
        names = ["output"] if len(outs) == 1 else [f"output_{k}" for k in range(len(outs))]
    elif len(names) != len(outs):
        raise ValueError(
            f"output_names: the model has {len(outs)} output(s), got {len(names)} names"
        )
    taken = {i.name for i in proto.graph.input} | {i.name for i in proto.graph.initializer}
    clash = [n for n in names if n in taken]
    if clash:
        raise ValueError(f"output_names: {clash[0]!r} is already the name of an input or weight")
    _rename_values(proto.graph, {o: n for o, n in zip(outs, names, strict=True) if o != n})


def _name_axes(
    proto: onnx.ModelProto, axes: Mapping[str, Mapping[int, str]], aliases: Mapping[str, str]
) -> None:
    """Give the symbolic dims of the named axes their names, everywhere they appear."""
    values = {v.name: v for v in [*proto.graph.input, *proto.graph.output]}
    symbols: dict[str, str] = {}
    for key, spec in axes.items():
        name = aliases.get(key, key)
        if name not in values:
            raise ValueError(
                f"dynamic_axes: {key!r} is neither an input nor an output of the model "
                f"(inputs and outputs: {', '.join(values)})"
            )
        dims = values[name].type.tensor_type.shape.dim
        for axis, label in spec.items():
            if not 0 <= axis < len(dims):
                raise ValueError(f"dynamic_axes: {key!r} has rank {len(dims)}, no axis {axis}")
            d = dims[axis]
            if not d.dim_param:
                raise ValueError(
                    f"dynamic_axes: axis {axis} of {key!r} was exported static ({d.dim_value}): "
                    "the model fixes its size"
                )
            symbols.setdefault(d.dim_param, label)
    if not symbols:
        return
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, symbols)) + r")\b")
    for v in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for d in v.type.tensor_type.shape.dim:
            if d.dim_param:
                d.dim_param = pattern.sub(lambda m: symbols[m.group(1)], d.dim_param)


def _to_feed(t: torch.Tensor) -> Any:
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return ("bfloat16", t.view(torch.int16).numpy().view(np.uint16))
    return t.numpy()


def export(
    model: torch.nn.Module,
    example_inputs: Sequence[Any] | Mapping[str, Any] | torch.Tensor,
    path: str | os.PathLike,
    dynamic: bool = True,
    dynamic_shapes: Any = None,
    dtype: str | torch.dtype | None = None,
    opset: int = 18,
    validate: bool = True,
    atol: float | None = None,
    rtol: float | None = None,
    validation_inputs: Sequence[Any] = (),
    intra_op_threads: int | None = None,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_axes: Mapping[str, Mapping[int, str] | Sequence[int]] | None = None,
    progress: bool | None = None,
    verbose: bool = False,
) -> ExportReport:
    """Export ``model`` to ONNX with one ``spattn::SparseAttention`` node per attention.

    Runs ``torch.onnx.export(dynamo=True)`` with the spattn translation, the full ONNX checker and
    strict shape inference, then (``validate=True``) compares ONNX Runtime with our custom-op
    library against PyTorch on the example inputs (and any ``validation_inputs``) with
    :func:`spattn.compare.compare_outputs`.

    The graph's names are the model's serving contract: inputs are named by ``input_names``
    (default: ``forward``'s parameter names), outputs by ``output_names`` (default ``output``,
    or ``output_0``, ``output_1``, ... for several), and dynamic axes by ``dynamic_axes``
    (default: axis 0 ``batch_size`` and axis 1 ``sequence_length``), never by torch internals.

    Parameters
    ----------
    model : torch.nn.Module
        The model (put in eval mode).
    example_inputs : tuple, dict or tensor
        Positional inputs of ``model.forward`` (a tuple), keyword inputs (a dict: ``{"input_ids":
        ids, "attention_mask": mask}``) or one tensor.
    path : str or os.PathLike
        Where to write the ``.onnx`` file.
    dynamic : bool
        Make dims 0 (``batch_size``) and 1 (``sequence_length``) of every tensor input dynamic
        where the model allows it (``torch.export.Dim.AUTO``). Ignored when ``dynamic_axes`` or
        ``dynamic_shapes`` is given.
    dynamic_shapes : optional
        Passed to ``torch.onnx.export`` (the axes then keep torch's names unless ``dynamic_axes``
        names them).
    dtype : {'float32', 'float16', 'bfloat16'}, optional
        Cast the model and the floating-point inputs first.
    opset : int
        Default-domain opset (>= 18).
    validate : bool
        Compare ONNX Runtime (needs the built ``libspattn_ort``) with PyTorch.
    atol, rtol : float, optional
        Validation tolerances; default from :data:`spattn.tolerances.TOLERANCES`.
    validation_inputs : sequence
        More example inputs (tuples or dicts, like ``example_inputs``) to validate with (e.g.
        other lengths, to exercise dynamic shapes).
    intra_op_threads : int, optional
        ONNX Runtime threads for the validation.
    input_names : sequence of str, optional
        Names of the graph inputs, one per tensor input in ``forward``'s parameter order.
    output_names : sequence of str, optional
        Names of the graph outputs, one per output.
    dynamic_axes : dict, optional
        ``{input or output name: {axis: axis name}}`` (or ``{name: [axes]}``: axis 0 is
        ``batch_size``, axis 1 ``sequence_length``); the listed axes of inputs are made dynamic
        and every dim sharing one gets its name. Keys may be ``forward``'s parameter names or
        ``input_names``.
    progress : bool, optional
        A progress bar on stderr over the steps (export, check, validation), which take seconds
        to minutes; default: shown when stderr is a terminal.
    verbose : bool
        Keep torch.onnx's own logs and warnings (by default silenced: missing torchvision ops,
        deprecation notices of torch internals say nothing about this export).

    Returns
    -------
    ExportReport
        ``errors`` maps each output (``"0"``, ``"1"``, ...; ``"0 (inputs 1)"`` for the first
        ``validation_inputs``) to ``(max abs error, max rel error)`` against PyTorch.

    Raises
    ------
    ValueError
        Bad names (count, clash), an axis in ``dynamic_axes`` that the model fixes, opset < 18.

    Examples
    --------
    >>> from spattn.models import gqa_decoder_block
    >>> model, (x, lengths) = gqa_decoder_block()
    >>> report = export(model, {"x": x, "key_lengths": lengths}, "decoder.onnx",
    ...                 input_names=["hidden_states", "key_lengths"],
    ...                 output_names=["last_hidden_state"])  # doctest: +SKIP
    >>> report.input_names, report.output_names  # doctest: +SKIP
    (['hidden_states', 'key_lengths'], ['last_hidden_state'])
    """
    where = "spattn.export"
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{where}: model: expected a torch.nn.Module, got {type(model).__name__}")
    path = argcheck.output_path(where, "path", path)
    opset = argcheck.int_arg(where, "opset", opset, 18)
    dynamic = argcheck.bool_arg(where, "dynamic", dynamic)
    validate = argcheck.bool_arg(where, "validate", validate)
    atol = argcheck.tolerance_arg(where, "atol", atol)
    rtol = argcheck.tolerance_arg(where, "rtol", rtol)
    intra_op_threads = argcheck.threads_arg(where, "intra_op_threads", intra_op_threads)
    if dtype is not None and not isinstance(dtype, (str, torch.dtype)):
        raise TypeError(
            f"{where}: dtype: expected 'float32', 'float16', 'bfloat16' or a torch dtype, got "
            f"{dtype!r}"
        )
    schema.register()
    try:
        tdtype = _DTYPES[tolerances.dtype_name(dtype)] if dtype is not None else None
    except KeyError:
        raise ValueError(
            f"{where}: dtype: expected one of {', '.join(_DTYPES)}, got {dtype!r}"
        ) from None
    model = model.eval()
    if tdtype is not None:
        model = model.to(tdtype)
    example = _cast(_split_example(example_inputs), tdtype)
    args, kwargs = _split_inputs(example)
    named, _ = named_inputs(model, example)
    if input_names is not None:
        input_names = [str(n) for n in input_names]
        if len(input_names) != len(named):
            raise ValueError(
                f"input_names: the model takes {len(named)} tensor input(s) "
                f"({', '.join(n for n, _ in named)}), got {len(input_names)} names"
            )
    onnx_names = list(input_names) if input_names is not None else [n for n, _ in named]
    aliases = dict(zip([n for n, _ in named], onnx_names, strict=True))
    to_param = {v: k for k, v in aliases.items()}
    if dynamic_axes is not None:
        axes = {k: _axes_dict(k, v) for k, v in dynamic_axes.items()}
    elif dynamic_shapes is None and dynamic:
        axes = default_dynamic_axes(model, example)
    else:
        axes = {}
    if dynamic_shapes is None and axes:
        input_axes = {to_param.get(k, k): v for k, v in axes.items()}
        dynamic_shapes = _dynamic_shapes_for(model, example, input_axes)
    path = str(path)
    steps = ["torch.onnx.export", "ONNX checker", *(["validation"] if validate else [])]
    bar = _progress_bar(progress, len(steps))
    bar.set_postfix_str(steps[0])
    with torch.no_grad(), _quiet_torch(verbose):
        program = torch.onnx.export(
            model,
            args,
            kwargs=kwargs or None,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            opset_version=opset,
            custom_translation_table=_op.custom_translation_table(),
            verbose=False,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no ONNX program")
    proto = program.model_proto
    proto.ir_version = min(proto.ir_version, 10)
    _name_inputs(proto, aliases)
    _name_outputs(proto, output_names)
    _name_axes(proto, axes, aliases)
    onnx.save(proto, path)
    bar.update()
    bar.set_postfix_str(steps[1])
    check_model(proto)
    bar.update()

    nodes = spattn_nodes(proto)
    info = []
    for n in nodes:
        attrs = {k: _decode(v) for k, v in node_attributes(n).items()}
        from .modelio import constant_tensor
        from .nodes import has_input, node_label

        inputs = list(n.input)
        listed = has_input(inputs, "block_indices")
        layout = constant_tensor(proto, inputs[4]) if listed else None
        info.append(
            {
                "name": n.name,
                "attributes": attrs,
                "inputs": inputs,
                "pattern": node_label(attrs, inputs, layout, with_attributes=True),
            }
        )
    name = tolerances.dtype_name(tdtype) if tdtype is not None else "float32"
    report = ExportReport(
        path=path,
        num_spattn_nodes=len(nodes),
        nodes=info,
        dtype=name,
        input_names=[i.name for i in proto.graph.input],
        output_names=[o.name for o in proto.graph.output],
        warnings=_gpu_warnings(proto),
    )
    if not validate:
        bar.close()
        return report
    bar.set_postfix_str(steps[2])
    try:
        return _validate(
            model,
            proto,
            report,
            example,
            validation_inputs,
            onnx_names,
            tdtype,
            name,
            atol,
            rtol,
            intra_op_threads,
        )
    finally:
        bar.update()
        bar.close()


def _validate(
    model: torch.nn.Module,
    proto: onnx.ModelProto,
    report: ExportReport,
    example: Any,
    validation_inputs: Sequence[Any],
    onnx_names: list[str],
    tdtype: torch.dtype | None,
    name: str,
    atol: float | None,
    rtol: float | None,
    intra_op_threads: int | None,
) -> ExportReport:
    """Compare ONNX Runtime (our library) with PyTorch on the example and validation inputs."""
    from . import runtime

    d_atol, d_rtol = tolerances.tolerance(name)
    report.atol = d_atol if atol is None else atol
    report.rtol = d_rtol if rtol is None else rtol
    onnx_model, _ = runtime._with_float_outputs(proto)
    try:
        session = runtime.ort_session(onnx_model, intra_op_threads=intra_op_threads)
    except Exception as e:  # onnxruntime raises its own exception types
        if name == "bfloat16" and "NOT_IMPLEMENTED" in str(e):
            # ONNX Runtime's CPU provider lacks bfloat16 kernels for ordinary ops (MatMul...).
            report.notes.append(f"not validated: ONNX Runtime cannot run this bfloat16 model: {e}")
            return report
        raise
    session_inputs = [i.name for i in session.get_inputs()]
    passed = True
    cases = [example, *[_cast(_split_example(v), tdtype) for v in validation_inputs]]
    for case, inputs in enumerate(cases):
        c_args, c_kwargs = _split_inputs(inputs)
        with torch.no_grad():
            expected = model(*c_args, **c_kwargs)
        expected = [expected] if isinstance(expected, torch.Tensor) else _flatten(expected)
        tensors = dict(
            zip(onnx_names, [t for _, t in named_inputs(model, inputs)[0]], strict=False)
        )
        feeds = {n: _to_feed(tensors[n]) for n in session_inputs if n in tensors}
        got = list(runtime.run_ort(None, feeds, session=session).values())
        if len(got) != len(expected):
            raise RuntimeError(
                f"the ONNX model has {len(got)} output(s) but PyTorch returned {len(expected)}"
            )
        keys = [f"{k}" if case == 0 else f"{k} (inputs {case})" for k in range(len(got))]
        rows = compare_outputs(
            {k: e.detach().float().cpu().numpy() for k, e in zip(keys, expected, strict=True)},
            dict(zip(keys, got, strict=True)),
            report.atol,
            report.rtol,
        )
        for row in rows:
            report.errors[row["output"]] = (
                float("nan") if row["max_abs"] is None else row["max_abs"],
                float("nan") if row["max_rel"] is None else row["max_rel"],
            )
            passed = passed and row["passed"]
    report.passed = passed
    return report


def _progress_bar(progress: bool | None, total: int) -> Any:
    from tqdm.auto import tqdm

    disable = None if progress is None else not progress  # None: only on a terminal
    return tqdm(total=total, desc="spattn.export", unit="step", leave=False, disable=disable)


@contextlib.contextmanager
def _quiet_torch(verbose: bool) -> Iterator[None]:
    """torch.onnx's logs and warnings off, unless ``verbose``: they speak of torch internals."""
    if verbose:
        yield
        return
    names = ("torch.onnx", "torch._dynamo", "torch.export", "torch._export", "onnxscript")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)


def _gpu_warnings(proto: onnx.ModelProto) -> list[str]:
    from .errors import UserError
    from .nodes import spattn_node_info
    from .support import gpu_warnings

    try:
        return gpu_warnings(spattn_node_info(proto, require=False))
    except UserError:  # an attribute the checker let through: reported by inspect/run
        return []


def _split_example(example_inputs: Any) -> Any:
    """A tensor becomes a 1-tuple; a dict stays a dict; any other sequence becomes a tuple."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, Mapping):
        return dict(example_inputs)
    return tuple(example_inputs)


def _flatten(x: Any) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, Mapping):
        return [t for v in x.values() for t in _flatten(v)]
    if isinstance(x, (tuple, list)):
        return [t for v in x for t in _flatten(v)]
    return []


class _CallableModule(types.ModuleType):
    """Importing the submodule ``spattn.export`` replaces the package attribute ``spattn.export``
    (the function) with this module; calling the module keeps ``spattn.export(...)`` working.
    The module's ``__signature__`` is :func:`export`'s, so ``help`` and IDEs show it."""

    def __call__(self, *args: Any, **kwargs: Any) -> ExportReport:
        return export(*args, **kwargs)


def _make_module_callable() -> None:
    import sys

    module = sys.modules[__name__]
    module.__class__ = _CallableModule
    module.__signature__ = inspect.signature(export)  # type: ignore[attr-defined]


_make_module_callable()
