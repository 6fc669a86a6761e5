"""Triton python-backend model that runs an ONNX model with ``spattn::SparseAttention`` nodes.

``spattn triton-repo --backend python`` copies this file to ``REPO/NAME/1/model.py``. It runs
inside Triton's python-backend stub, which imports numpy before this file: it needs only numpy
and onnxruntime (onnxruntime-gpu for ``KIND_GPU`` instances), never the spattn package, so the
repository works wherever those two are importable. What it runs comes from ``config.pbtxt``::

    parameters { key: "onnx_file"        value: { string_value: "model.onnx" } }        # in 1/
    parameters { key: "op_library"       value: { string_value: "libspattn_ort.so" } }  # in NAME/
    parameters { key: "intra_op_threads" value: { string_value: "0" } }  # 0: ONNX Runtime's default

Batching: Triton hands :meth:`TritonPythonModel.execute` a list of requests. Requests whose
inputs have the same shapes beyond axis 0 and the same dtypes are concatenated along axis 0 and
run at once; requests of other shapes run in their own group. Nothing is padded, so every
response is the model's answer for that request alone: sequences of different lengths are never
mixed in one run (padding without a key-length input would change the attention of every query).
Triton's dynamic batcher already groups only equal shapes for inputs without
``allow_ragged_batch``; the grouping here keeps that true for any scheduler.

A group whose run fails is run again request by request, so one bad request (for example a key
length beyond its sequence) gets the error and the others their answers.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class _Capsule:
    """A DLPack capsule as an object ``np.from_dlpack`` accepts (a CPU tensor)."""

    def __init__(self, capsule: Any) -> None:
        self.capsule = capsule

    def __dlpack__(self, **kwargs: Any) -> Any:
        return self.capsule

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)  # kDLCPU


def _to_numpy(tensor: Any) -> np.ndarray:
    """A request's tensor as numpy, through DLPack.

    The stub's own numpy conversion (``as_numpy``/``Tensor(name, array)``) reads numpy's
    structs with the layout of numpy 1.x and corrupts arrays under numpy 2; DLPack does not.
    """
    if tensor.is_cpu():
        return np.from_dlpack(_Capsule(tensor.to_dlpack()))
    return tensor.as_numpy()


# The python backend renames a DLPack capsule it consumed "used_dlpack"; the producer's (numpy's)
# capsule destructor looks for the standard "used_dltensor" and otherwise prints an error for
# every response. The name is restored after the hand-off (the bytes object lives forever).
_USED_NAME = b"used_dltensor"
_set_capsule_name = ctypes.pythonapi.PyCapsule_SetName
_set_capsule_name.argtypes = [ctypes.py_object, ctypes.c_char_p]
_set_capsule_name.restype = ctypes.c_int


def _to_triton(name: str, array: np.ndarray) -> Any:
    capsule = np.ascontiguousarray(array).__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    _set_capsule_name(capsule, _USED_NAME)
    return tensor


def _error(message: str) -> Any:
    code = getattr(getattr(pb_utils, "TritonError", None), "INVALID_ARG", None)
    if code is None:
        return pb_utils.TritonError(message)
    return pb_utils.TritonError(message, code)


class TritonPythonModel:
    """One model instance: one ONNX Runtime session with the spattn op library registered."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        folder = args["model_repository"]
        version = args.get("model_version") or "1"
        onnx_file = os.path.join(folder, version, params.get("onnx_file", "model.onnx"))
        library = os.path.join(folder, params.get("op_library", "libspattn_ort.so"))
        self.name = args.get("model_name", config.get("name", "model"))
        for what, path in (("ONNX model", onnx_file), ("spattn op library", library)):
            if not os.path.isfile(path):
                raise pb_utils.TritonModelException(f"{self.name}: {what} {path} does not exist")

        so = ort.SessionOptions()
        so.register_custom_ops_library(library)
        # Requests of one length reuse the arena's chunks instead of a newly planned block each
        # (spattn.runtime.SESSION_MEM_PATTERN says why; this file imports nothing of spattn).
        so.enable_mem_pattern = False
        threads = int(params.get("intra_op_threads", "0") or 0)
        if threads > 0:
            so.intra_op_num_threads = threads
        kind = args.get("model_instance_kind", "CPU").upper()
        if kind == "GPU":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise pb_utils.TritonModelException(
                    f"{self.name}: a KIND_GPU instance needs ONNX Runtime's CUDA execution "
                    "provider (pip install onnxruntime-gpu) and spattn built with CUDA; "
                    f"this onnxruntime has {', '.join(ort.get_available_providers())}. "
                    "Use KIND_CPU (spattn triton-repo --kind cpu) otherwise."
                )
            device = int(args.get("model_instance_device_id", "0") or 0)
            providers: list[Any] = [
                ("CUDAExecutionProvider", {"device_id": device}),
                "CPUExecutionProvider",
            ]
        else:
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(onnx_file, sess_options=so, providers=providers)
        if kind == "GPU" and self.session.get_providers()[0] != "CUDAExecutionProvider":
            raise pb_utils.TritonModelException(
                f"{self.name}: ONNX Runtime did not create the CUDA execution provider "
                f"(providers: {self.session.get_providers()})"
            )
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        self.batching = int(config.get("max_batch_size", 0)) > 0

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.outputs, feeds)

    def _feeds(self, request: Any) -> dict[str, np.ndarray]:
        feeds = {}
        for name in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(
                    f"{self.name}: input {name!r} is missing; the model takes "
                    f"{', '.join(map(repr, self.inputs))}"
                )
            feeds[name] = _to_numpy(tensor)
        return feeds

    def _responses(self, feeds: list[dict[str, np.ndarray]]) -> list[Any]:
        """Run requests of one group (equal shapes beyond axis 0) as one batch."""
        if len(feeds) == 1:
            outs = [self._run(feeds[0])]
        else:
            batched = {n: np.concatenate([f[n] for f in feeds], axis=0) for n in self.inputs}
            result = self._run(batched)
            sizes = [next(iter(f.values())).shape[0] for f in feeds]
            bounds = np.cumsum([0, *sizes])
            outs = [[o[bounds[i] : bounds[i + 1]] for o in result] for i in range(len(feeds))]
        return [
            pb_utils.InferenceResponse(
                output_tensors=[_to_triton(n, a) for n, a in zip(self.outputs, out, strict=True)]
            )
            for out in outs
        ]

    def _message(self, e: Exception) -> str:
        """ONNX Runtime's error without its wrapping: the node and the op's own message."""
        text = (str(e).strip().splitlines() or [type(e).__name__])[0]
        m = re.search(r"Name:'([^']*)' Status Message: (.*)", text)
        if m:
            text = f"node {m.group(1)}: {m.group(2)}"
        return f"{self.name}: {text}"

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        groups: dict[Any, list[int]] = {}
        feeds: dict[int, dict[str, np.ndarray]] = {}
        for i, request in enumerate(requests):
            try:
                feeds[i] = self._feeds(request)
            except ValueError as e:
                responses[i] = pb_utils.InferenceResponse(error=_error(str(e)))
                continue
            key = (
                tuple((n, a.shape[1:], a.dtype.str) for n, a in feeds[i].items())
                if self.batching
                else i
            )
            groups.setdefault(key, []).append(i)
        for members in groups.values():
            try:
                done = self._responses([feeds[i] for i in members])
            except Exception as e:
                if len(members) == 1:
                    done = [pb_utils.InferenceResponse(error=_error(self._message(e)))]
                else:  # find the request at fault: each one alone
                    done = [self.execute([requests[i]])[0] for i in members]
            for i, response in zip(members, done, strict=True):
                responses[i] = response
        return responses

    def finalize(self) -> None:
        self.session = None
