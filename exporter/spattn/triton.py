"""Triton Inference Server model repositories for models with ``spattn::SparseAttention``.

:func:`write_repository` lays out::

    REPO/NAME/config.pbtxt          backend "onnxruntime", model_operations { op_library_filename }
    REPO/NAME/libspattn_ort.so      our ONNX Runtime library, copied
    REPO/NAME/1/model.onnx
    REPO/NAME_trt/config.pbtxt      platform "tensorrt_plan"
    REPO/NAME_trt/libspattn_trt.so  the TensorRT plugin, loaded with
                                    --backend-config=tensorrt,plugins=...
    REPO/NAME_trt/1/model.plan

with dynamic batching when the model's batch axis is dynamic. Every config.pbtxt is parsed back
with :func:`parse_config`: against Triton's own schema (``model_config.proto`` as shipped in the
``tritonclient`` package) when that package is installed, else against
``triton_model_config.proto`` beside this file, the subset of Triton's schema that spattn writes.

Examples
--------
>>> from spattn import triton
>>> config, schema = triton.parse_config('name: "m" backend: "onnxruntime" max_batch_size: 4')
>>> config.max_batch_size
4
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .modelio import TensorSpec, input_specs, output_specs
from .runners import TENSORRT_MISSING

__all__ = [
    "RepoOptions",
    "parse_config",
    "config_schema",
    "render_config",
    "write_repository",
    "valid_model_name",
    "SUBSET_PROTO",
]

#: The subset of Triton's model configuration schema that spattn writes.
SUBSET_PROTO = Path(__file__).with_name("triton_model_config.proto")

_TRITON_TYPES = {
    1: "TYPE_FP32",
    10: "TYPE_FP16",
    16: "TYPE_BF16",
    11: "TYPE_FP64",
    6: "TYPE_INT32",
    7: "TYPE_INT64",
    9: "TYPE_BOOL",
    2: "TYPE_UINT8",
    3: "TYPE_INT8",
    5: "TYPE_INT16",
    4: "TYPE_UINT16",
    12: "TYPE_UINT32",
    13: "TYPE_UINT64",
}


def valid_model_name(name: str) -> bool:
    """Triton model names are folder names: letters, digits, ``_``, ``-`` and ``.``."""
    return bool(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name))


# ------------------------------------------------------------------------------ schema
_SCALARS = {"string": 9, "int32": 5, "int64": 3, "uint64": 4, "bool": 8, "float": 2}


def _parse_proto(text: str) -> Any:
    """A FileDescriptorProto from the small proto3 subset used in triton_model_config.proto
    (top-level messages and enums, scalar/enum/message fields, ``repeated``)."""
    from google.protobuf import descriptor_pb2

    text = re.sub(r"//[^\n]*", "", text)
    fd = descriptor_pb2.FileDescriptorProto(
        name="spattn_triton_model_config.proto", syntax="proto3"
    )
    package = re.search(r"package\s+([\w.]+)\s*;", text)
    if package is None:
        raise ValueError("the model-config schema has no package statement")
    fd.package = package.group(1)
    enums = set()
    for m in re.finditer(r"enum\s+(\w+)\s*{([^}]*)}", text):
        e = fd.enum_type.add(name=m.group(1))
        enums.add(m.group(1))
        for v in re.finditer(r"(\w+)\s*=\s*(\d+)\s*;", m.group(2)):
            e.value.add(name=v.group(1), number=int(v.group(2)))
    for m in re.finditer(r"message\s+(\w+)\s*{([^}]*)}", text):
        msg = fd.message_type.add(name=m.group(1))
        for f in re.finditer(r"(repeated\s+)?([\w.]+)\s+(\w+)\s*=\s*(\d+)\s*;", m.group(2)):
            repeated, typ, name, num = f.groups()
            fld = msg.field.add(
                name=name, number=int(num), label=3 if repeated else 1, json_name=name
            )
            if typ in _SCALARS:
                fld.type = _SCALARS[typ]
                if repeated and typ != "string":
                    fld.options.packed = True
            elif typ in enums:
                fld.type, fld.type_name = 14, f".{fd.package}.{typ}"
            else:
                fld.type, fld.type_name = 11, f".{fd.package}.{typ}"
    return fd


_SCHEMA: tuple[Any, str] | None = None


def _triton_schema() -> Any | None:
    """``ModelConfig`` of Triton's own model_config.proto, from an installed tritonclient.

    The generated module is loaded by path: ``tritonclient.grpc``'s package import needs grpc,
    which the schema does not.
    """
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "grpc" / "model_config_pb2.py"
        if not path.is_file():
            continue
        try:
            mspec = importlib.util.spec_from_file_location("_spattn_triton_model_config", path)
            if mspec is None or mspec.loader is None:
                return None
            module = importlib.util.module_from_spec(mspec)
            mspec.loader.exec_module(module)
            return module.ModelConfig
        except Exception:  # a protobuf runtime the generated code refuses; use the subset
            return None
    return None


def config_schema() -> tuple[Any, str]:
    """``(ModelConfig message class, description of the schema it comes from)``."""
    global _SCHEMA
    if _SCHEMA is None:
        cls = _triton_schema()
        if cls is not None:
            from importlib import metadata

            try:
                v = metadata.version("tritonclient")
            except metadata.PackageNotFoundError:
                v = "?"
            _SCHEMA = (cls, f"Triton's model_config.proto (tritonclient {v})")
        else:
            from google.protobuf import descriptor_pool, message_factory

            pool = descriptor_pool.DescriptorPool()
            fd = _parse_proto(SUBSET_PROTO.read_text())
            pool.Add(fd)
            cls = message_factory.GetMessageClass(
                pool.FindMessageTypeByName(f"{fd.package}.ModelConfig")
            )
            _SCHEMA = (
                cls,
                f"spattn's subset of Triton's schema ({SUBSET_PROTO.name}; "
                "install tritonclient to check against the full schema)",
            )
    return _SCHEMA


def parse_config(text: str) -> tuple[Any, str]:
    """Parse a config.pbtxt against Triton's schema; returns ``(ModelConfig, schema name)``.

    Raises
    ------
    UserError
        The text does not parse (unknown field, wrong type) or breaks a rule Triton enforces
        when it loads the model (names, types, dims, batching).
    """
    from google.protobuf import text_format

    cls, schema = config_schema()
    try:
        config = text_format.Parse(text, cls())
    except text_format.ParseError as e:
        raise UserError(f"config.pbtxt does not parse against {schema}: {e}") from None
    problems = []
    if not config.name:
        problems.append("name is empty")
    if not (config.backend or config.platform):
        problems.append("neither backend nor platform is set")
    if config.max_batch_size < 0:
        problems.append("max_batch_size < 0")
    for kind, tensors in (("input", config.input), ("output", config.output)):
        if not tensors:
            problems.append(f"no {kind}")
        for t in tensors:
            if not t.name or t.data_type == 0:
                problems.append(f"{kind} {t.name!r}: name and data_type are required")
            if not len(t.dims):
                problems.append(
                    f"{kind} {t.name!r}: dims must not be empty (use dims: [ 1 ] "
                    "with reshape: { shape: [ ] })"
                )
            if any(d < -1 or d == 0 for d in t.dims):
                problems.append(f"{kind} {t.name!r}: dims must be -1 or >= 1")
    if config.HasField("dynamic_batching"):
        if config.max_batch_size == 0:
            problems.append("dynamic_batching needs max_batch_size > 0")
        for p in config.dynamic_batching.preferred_batch_size:
            if p > config.max_batch_size:
                problems.append(f"preferred_batch_size {p} > max_batch_size")
    if problems:
        raise UserError(f"config.pbtxt of {config.name!r} is invalid: {'; '.join(problems)}")
    return config, schema


# ------------------------------------------------------------------------------ writing
@dataclass
class RepoOptions:
    """Settings of the generated models."""

    name: str
    max_batch_size: int = 8
    preferred_batch_sizes: list[int] = field(default_factory=list)
    max_queue_delay_us: int = 100
    kind: str = "gpu"
    instances: int = 1
    server_path: str | None = None
    force: bool = False


def _dims_entry(spec: TensorSpec, batching: bool, what: str) -> str:
    if spec.dims is None:
        raise UserError(
            f"{what} {spec.name!r} has an unknown shape; Triton needs its rank: "
            "re-export the model (spattn export writes shapes)"
        )
    dims = [d if isinstance(d, int) and d > 0 else -1 for d in spec.dims]
    if batching:
        dims = dims[1:]
    if not dims:  # [batch] only: Triton's documented form for batch-only tensors
        return "dims: [ 1 ]\n    reshape: { shape: [ ] }"
    return "dims: [ " + ", ".join(str(d) for d in dims) + " ]"


def _tensor_block(specs: Sequence[TensorSpec], batching: bool, what: str) -> str:
    items = []
    for s in specs:
        if s.elem_type not in _TRITON_TYPES:
            raise UserError(f"{what} {s.name!r} has type {s.dtype_name}, which Triton cannot carry")
        items.append(
            f'  {{\n    name: "{s.name}"\n    data_type: {_TRITON_TYPES[s.elem_type]}\n'
            f"    {_dims_entry(s, batching, what)}\n  }}"
        )
    return f"{what} [\n" + ",\n".join(items) + "\n]"


def render_config(
    name: str,
    backend: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    opts: RepoOptions,
    batching: bool,
    library: str | None = None,
) -> str:
    """The text of one config.pbtxt.

    ``backend`` is ``"onnxruntime"`` (``library``: the op library path as the server sees it)
    or ``"tensorrt"`` (platform tensorrt_plan; the plugin is loaded by the server option).
    """
    lines = [f'name: "{name}"']
    if backend == "onnxruntime":
        lines += ['backend: "onnxruntime"', 'default_model_filename: "model.onnx"']
    else:
        lines += ['platform: "tensorrt_plan"', 'default_model_filename: "model.plan"']
    lines.append(f"max_batch_size: {opts.max_batch_size if batching else 0}")
    lines.append(_tensor_block(inputs, batching, "input"))
    lines.append(_tensor_block(outputs, batching, "output"))
    kind = "KIND_GPU" if backend == "tensorrt" or opts.kind == "gpu" else "KIND_CPU"
    lines.append(f"instance_group [\n  {{\n    count: {opts.instances}\n    kind: {kind}\n  }}\n]")
    if batching:
        pref = sorted({p for p in opts.preferred_batch_sizes if p <= opts.max_batch_size})
        body = []
        if pref:
            body.append("  preferred_batch_size: [ " + ", ".join(map(str, pref)) + " ]")
        body.append(f"  max_queue_delay_microseconds: {opts.max_queue_delay_us}")
        lines.append("dynamic_batching {\n" + "\n".join(body) + "\n}")
    if backend == "onnxruntime":
        lines.append(f'model_operations {{\n  op_library_filename: "{library}"\n}}')
    return "\n".join(lines) + "\n"


def _batching(specs: Sequence[TensorSpec], max_batch_size: int) -> tuple[bool, str]:
    if max_batch_size == 0:
        return False, "batching off (--max-batch-size 0)"
    fixed = [s.name for s in specs if not s.dims or isinstance(s.dims[0], int)]
    if fixed:
        return False, (
            f"batching off: axis 0 of {', '.join(fixed)} is not dynamic; export with "
            "a dynamic batch axis (spattn export --dynamic-batch) for dynamic batching"
        )
    return True, ""


def _copy_model(model_path: str, proto: Any, dest: Path) -> None:
    shutil.copyfile(model_path, dest)
    src_dir = Path(model_path).resolve().parent
    for init in proto.graph.initializer:
        if init.data_location == 1:  # EXTERNAL: copy the data file too
            loc = {e.key: e.value for e in init.external_data}.get("location")
            if loc and (src_dir / loc).is_file() and not (dest.parent / loc).exists():
                shutil.copyfile(src_dir / loc, dest.parent / loc)


def _prepare(folder: Path, force: bool) -> None:
    if folder.exists():
        if not force:
            raise UserError(f"{folder} already exists; pass --force to replace it")
        shutil.rmtree(folder)
    (folder / "1").mkdir(parents=True)


def write_repository(
    proto: Any,
    model_path: str,
    repo: str,
    opts: RepoOptions,
    backends: Sequence[str],
    engine: str | None = None,
    warn: Callable[[str], None] | None = None,
    info: Callable[[str], None] | None = None,
    progress: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Write the model folders, copy the libraries, and parse every config back.

    Returns a dict with ``repository``, ``models`` (name, backend, config, library,
    max_batch_size), ``schema``, ``notes`` and the server ``command``.

    Raises
    ------
    UserError
        A folder that exists (without ``force``), a library that is not built, TensorRT
        missing for a tensorrt model without ``engine``, or a config Triton would reject.
    """
    from .runtime import LIBRARY_FILES, library_path

    inputs, outputs = input_specs(proto), output_specs(proto)
    batching, why = _batching([*inputs, *outputs], opts.max_batch_size)
    notes = [why] if why else []
    if why and opts.max_batch_size and warn is not None:
        warn(why)
    root = Path(repo)
    server_root = opts.server_path or str(root.resolve())
    plan = {}
    if "onnxruntime" in backends:
        try:
            plan["onnxruntime"] = library_path("ort")
        except FileNotFoundError as e:
            raise UserError(str(e).splitlines()[0]) from None
    if "tensorrt" in backends:
        if engine is None:
            from .runners import tensorrt_status

            ok, reason = tensorrt_status()
            if not ok:
                raise UserError(
                    f"{reason}; or pass --engine ENGINE.plan built with "
                    "`spattn build` on a machine that has TensorRT"
                )
        elif not Path(engine).is_file():
            raise UserError(f"{engine}: no such engine file; build one with `spattn build`")
        try:
            plan["tensorrt"] = library_path("trt")
        except FileNotFoundError:
            raise UserError(
                f"{LIBRARY_FILES['trt']} was not found: {TENSORRT_MISSING}, or point "
                "SPATTN_LIB_DIR at the folder that holds it"
            ) from None
    root.mkdir(parents=True, exist_ok=True)
    models = []
    schema = ""
    for backend in backends:
        name = opts.name if backend == "onnxruntime" else f"{opts.name}_trt"
        folder = root / name
        _prepare(folder, opts.force)
        lib = Path(plan[backend])
        shutil.copyfile(lib, folder / lib.name)
        os.chmod(folder / lib.name, 0o755)
        if backend == "onnxruntime":
            _copy_model(model_path, proto, folder / "1" / "model.onnx")
        elif engine is not None:
            shutil.copyfile(engine, folder / "1" / "model.plan")
        else:
            from .runners import tensorrt_module

            if info is not None:
                info(f"building a TensorRT engine for {name}")
            mb = max(1, opts.max_batch_size)
            shapes = [
                {
                    s.name: tuple(
                        int(d) if isinstance(d, int) and d > 0 else (b if i == 0 else n)
                        for i, d in enumerate(s.dims or [])
                    )
                    for s in inputs
                }
                for b, n in ((1, 1), (max(1, mb // 2), 512), (mb, 4096))
            ]
            tensorrt_module().build_engine(
                model_path,
                str(folder / "1" / "model.plan"),
                min_shapes=shapes[0],
                opt_shapes=shapes[1],
                max_shapes=shapes[2],
            )
        text = render_config(
            name,
            backend,
            inputs,
            outputs,
            opts,
            batching,
            library=f"{server_root}/{name}/{lib.name}",
        )
        config, schema = parse_config(text)
        if config.name != folder.name:
            raise UserError(f"config name {config.name!r} differs from its folder {folder.name}")
        (folder / "config.pbtxt").write_text(text)
        models.append(
            {
                "name": name,
                "backend": backend,
                "config": str(folder / "config.pbtxt"),
                "library": str(folder / lib.name),
                "max_batch_size": opts.max_batch_size if batching else 0,
            }
        )
        if progress is not None:
            progress()
    command = f"tritonserver --model-repository={server_root}"
    if "tensorrt" in backends:
        command += (
            f' --backend-config=tensorrt,plugins="{server_root}/{opts.name}_trt/'
            f'{Path(plan["tensorrt"]).name}"'
        )
    return {
        "repository": str(root),
        "server_path": server_root,
        "models": models,
        "schema": schema,
        "notes": notes,
        "command": command,
    }
