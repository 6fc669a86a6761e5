"""Export a PyTorch model with sparse attention to ONNX and validate it with ONNX Runtime."""

from __future__ import annotations

import os
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import torch

from . import op as _op
from . import schema, tolerances
from .compare import compare_outputs
from .patterns import Pattern

__all__ = ["ExportReport", "export", "spattn_nodes", "check_model"]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class ExportReport:
    """What :func:`export` wrote and how the ONNX Runtime run compared with PyTorch."""

    path: str
    num_spattn_nodes: int
    nodes: list[dict[str, Any]] = field(default_factory=list)
    errors: dict[str, tuple[float, float]] = field(default_factory=dict)
    passed: bool | None = None
    dtype: str = "float32"
    atol: float | None = None
    rtol: float | None = None
    notes: list[str] = field(default_factory=list)

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
        if self.passed is not None:
            lines.append(
                f"  validation {'passed' if self.passed else 'FAILED'} "
                f"(atol {self.atol}, rtol {self.rtol})"
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


def _dynamic_shapes(args: Sequence[Any]) -> tuple[Any, ...]:
    auto = torch.export.Dim.AUTO
    out: list[dict[int, Any] | None] = []
    for a in args:
        if isinstance(a, torch.Tensor) and a.dim() >= 2:
            out.append({0: auto, 1: auto})
        elif isinstance(a, torch.Tensor) and a.dim() == 1:
            out.append({0: auto})
        else:
            out.append(None)
    return tuple(out)


def _cast(args: Sequence[Any], dtype: torch.dtype | None) -> tuple[Any, ...]:
    if dtype is None:
        return tuple(args)
    return tuple(
        a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args
    )


def _to_feed(t: torch.Tensor) -> Any:
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return ("bfloat16", t.view(torch.int16).numpy().view(np.uint16))
    return t.numpy()


def export(
    model: torch.nn.Module,
    example_inputs: Sequence[Any],
    path: str | os.PathLike,
    dynamic: bool = True,
    dynamic_shapes: Any = None,
    dtype: str | torch.dtype | None = None,
    opset: int = 18,
    validate: bool = True,
    atol: float | None = None,
    rtol: float | None = None,
    validation_inputs: Sequence[Sequence[Any]] = (),
    intra_op_threads: int | None = None,
) -> ExportReport:
    """Export ``model`` to ONNX with one ``spattn::SparseAttention`` node per attention.

    Runs ``torch.onnx.export(dynamo=True)`` with the spattn translation, the full ONNX checker and
    strict shape inference, then (``validate=True``) compares ONNX Runtime with our custom-op
    library against PyTorch on the example inputs (and any ``validation_inputs``).

    Parameters
    ----------
    model : torch.nn.Module
        The model (put in eval mode).
    example_inputs : sequence
        Positional inputs of ``model.forward``.
    path : str or os.PathLike
        Where to write the ``.onnx`` file.
    dynamic : bool
        Make dims 0 (batch) and 1 (sequence) of every tensor input dynamic where the model allows
        it (``torch.export.Dim.AUTO``). Ignored when ``dynamic_shapes`` is given.
    dynamic_shapes : optional
        Passed to ``torch.onnx.export``.
    dtype : {'float32', 'float16', 'bfloat16'}, optional
        Cast the model and the floating-point inputs first.
    opset : int
        Default-domain opset (>= 18).
    validate : bool
        Compare ONNX Runtime (needs the built ``libspattn_ort``) with PyTorch.
    atol, rtol : float, optional
        Validation tolerances; default from :data:`spattn.tolerances.TOLERANCES`.
    validation_inputs : sequence of sequences
        More input tuples to validate with (e.g. other lengths, to exercise dynamic shapes).
    intra_op_threads : int, optional
        ONNX Runtime threads for the validation.

    Returns
    -------
    ExportReport

    Examples
    --------
    >>> from spattn.models import longformer_encoder
    >>> model, inputs = longformer_encoder()
    >>> report = export(model, inputs, "encoder.onnx")  # doctest: +SKIP
    >>> report.num_spattn_nodes, report.passed  # doctest: +SKIP
    (2, True)
    """
    if opset < 18:
        raise ValueError(f"opset: expected >= 18, got {opset}")
    schema.register()
    tdtype = _DTYPES[tolerances.dtype_name(dtype)] if dtype is not None else None
    model = model.eval()
    if tdtype is not None:
        model = model.to(tdtype)
    args = _cast(example_inputs, tdtype)
    if dynamic_shapes is None and dynamic:
        dynamic_shapes = _dynamic_shapes(args)
    path = str(path)
    with torch.no_grad():
        program = torch.onnx.export(
            model,
            args,
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
    onnx.save(proto, path)
    check_model(proto)

    nodes = spattn_nodes(proto)
    info = []
    for n in nodes:
        attrs = {k: _decode(v) for k, v in node_attributes(n).items()}
        listed = len(n.input) > 4 and n.input[4] != ""
        desc = Pattern.from_attributes(attrs).describe()
        info.append(
            {
                "name": n.name,
                "attributes": attrs,
                "inputs": list(n.input),
                "pattern": desc + (" + block_indices" if listed else ""),
            }
        )
    name = tolerances.dtype_name(tdtype) if tdtype is not None else "float32"
    report = ExportReport(path=path, num_spattn_nodes=len(nodes), nodes=info, dtype=name)
    if not validate:
        return report

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
    input_names = [i.name for i in session.get_inputs()]
    passed = True
    for case, inputs in enumerate([args, *[_cast(v, tdtype) for v in validation_inputs]]):
        with torch.no_grad():
            expected = model(*inputs)
        expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
        tensors = [a for a in inputs if isinstance(a, torch.Tensor)]
        feeds = {n: _to_feed(t) for n, t in zip(input_names, tensors, strict=False)}
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


class _CallableModule(types.ModuleType):
    """Importing the submodule ``spattn.export`` replaces the package attribute ``spattn.export``
    (the function) with this module; calling the module keeps ``spattn.export(...)`` working."""

    def __call__(self, *args: Any, **kwargs: Any) -> ExportReport:
        return export(*args, **kwargs)


def _make_module_callable() -> None:
    import sys

    sys.modules[__name__].__class__ = _CallableModule


_make_module_callable()
