"""ONNX model files: loading with clear errors, graph inputs and outputs as :class:`TensorSpec`.

Examples
--------
>>> from spattn import modelio
>>> model = modelio.load_onnx("encoder.onnx")  # doctest: +SKIP
>>> [s.name for s in modelio.input_specs(model)]  # doctest: +SKIP
['x']
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError

__all__ = [
    "ELEM_NAMES",
    "NUMPY_TYPES",
    "TensorSpec",
    "load_onnx",
    "input_specs",
    "output_specs",
    "model_float_dtype",
    "constant_tensor",
]

#: ONNX element type -> name.
ELEM_NAMES = {
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

#: ONNX element type -> numpy type of the arrays spattn feeds (bfloat16: float32 values).
NUMPY_TYPES = {
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
        return ELEM_NAMES.get(self.elem_type, f"onnx type {self.elem_type}")

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


def constant_tensor(model: Any, name: str) -> np.ndarray | None:
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
