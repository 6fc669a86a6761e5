"""``spattn triton-repo``: a Triton Inference Server model repository for an ONNX model."""

from __future__ import annotations

from pathlib import Path

import click

from ..modelio import load_onnx
from ..nodes import spattn_node_info
from ._common import CONTEXT, OutputPath, common_options, console


@click.command(
    "triton-repo",
    context_settings=CONTEXT,
    short_help="Write a Triton model repository (python, ONNX Runtime, TensorRT backends).",
)
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--out",
    "repo",
    type=OutputPath(directory=True),
    default="model_repository",
    show_default=True,
    help="Model repository folder (created).",
)
@click.option("--name", help="Model name in the repository.  [default: MODEL's file stem]")
@click.option(
    "--backend",
    "which",
    type=click.Choice(["onnxruntime", "tensorrt", "both", "python"]),
    default="onnxruntime",
    show_default=True,
    help="Triton backend(s) to write a model for (TensorRT: NAME_trt; both: onnxruntime and "
    "tensorrt). python: a model.py running ONNX Runtime with our library, for the "
    "tritonserver of nvidia-pytriton (`spattn serve`).",
)
@click.option(
    "--engine",
    type=click.Path(dir_okay=False),
    help="TensorRT engine for the tensorrt model (else built when TensorRT is usable).",
)
@click.option(
    "--max-batch-size",
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    help="Triton max_batch_size; 0 turns batching off.",
)
@click.option(
    "--preferred-batch-size",
    multiple=True,
    type=click.IntRange(min=1),
    help="Dynamic batcher preferred size (repeatable).",
)
@click.option(
    "--max-queue-delay-us",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="Dynamic batcher queue delay in microseconds.",
)
@click.option(
    "--kind",
    type=click.Choice(["gpu", "cpu", "auto"]),
    default=None,
    help="Instance kind: gpu, cpu, or auto (the server picks GPU where it has one, else CPU); "
    "the tensorrt model is always GPU.  [default: auto for --backend python, else gpu]",
)
@click.option(
    "--instances",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Model instances: in all (KIND_CPU) or on each GPU (KIND_GPU).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="python backend: ONNX Runtime intra-op threads per instance (0: its default).",
)
@click.option(
    "--server-path",
    help="Where the server sees the repository (e.g. /models in a "
    "container); library paths in config.pbtxt use it.  "
    "[default: the absolute path of --out]",
)
@click.option("--force", is_flag=True, help="Replace an existing model folder.")
@common_options
@click.pass_context
def triton_repo(
    ctx: click.Context,
    model: str,
    repo: str,
    name: str | None,
    which: str,
    engine: str | None,
    max_batch_size: int,
    preferred_batch_size: tuple[int, ...],
    max_queue_delay_us: int,
    kind: str | None,
    instances: int,
    threads: int,
    server_path: str | None,
    force: bool,
    quiet: bool,
    as_json: bool,
    debug: bool,
) -> None:
    """Write a Triton Inference Server model repository for an ONNX model with spattn nodes.

    The onnxruntime model gets config.pbtxt with `model_operations { op_library_filename }`
    naming libspattn_ort.so, copied beside it; the tensorrt model (NAME_trt) gets the engine and
    libspattn_trt.so, loaded by the server with `--backend-config=tensorrt,plugins=...`. Both use
    dynamic batching when the model's batch axis is dynamic. Each config.pbtxt is parsed back
    against Triton's model_config schema before the command succeeds.

    The python model (--backend python) runs the ONNX model with ONNX Runtime and our library
    in Triton's python backend (CPU, or the CUDA EP on KIND_GPU instances); it batches requests
    of equal shapes only, so each answer is exactly that request's. `spattn serve REPO` runs it.

    \b
    Example:
      spattn triton-repo encoder.onnx -o model_repository --max-batch-size 16
      spattn triton-repo encoder.onnx -o repo --backend python --kind cpu --instances 2
      spattn triton-repo encoder.onnx -o repo --backend both --engine encoder.plan \\
                         --server-path /models
    """
    con = console(ctx, quiet, as_json, debug)
    from .. import triton

    proto = load_onnx(model)
    spattn_node_info(proto, path=model)
    name = name or Path(model).stem
    if not triton.valid_model_name(name):
        raise click.BadParameter(
            f"{name!r}: use letters, digits, '_', '-' and '.'", param_hint="--name"
        )
    kind = kind or ("auto" if which == "python" else "gpu")
    opts = triton.RepoOptions(
        name=name,
        max_batch_size=max_batch_size,
        preferred_batch_sizes=list(preferred_batch_size),
        max_queue_delay_us=max_queue_delay_us,
        kind=kind,
        instances=instances,
        server_path=server_path,
        force=force,
        threads=threads,
    )
    backends_ = ["onnxruntime", "tensorrt"] if which == "both" else [which]
    with con.bar(total=len(backends_), desc="triton repository", unit="model") as bar:
        result = triton.write_repository(
            proto,
            model,
            repo,
            opts,
            backends_,
            engine=engine,
            warn=con.warn,
            info=con.info,
            progress=bar.update,
        )
    lines = [f"wrote Triton model repository {result['repository']}"]
    for m in result["models"]:
        batch = f"max {m['max_batch_size']}" if m["max_batch_size"] else "off"
        lines.append(
            f"  {m['name']} ({m['backend']}): {m['config']}; library {m['library']}; "
            f"batching {batch}"
        )
    lines.append(f"configs parsed back with {result['schema']}")
    for n in result["notes"]:
        lines.append(f"note: {n}")
    lines.append(f"start the server with: {result['command']}")
    con.result(result, "\n".join(lines))
