"""``spattn run``: run a model with ONNX Runtime (CPU/CUDA) or TensorRT; outputs and timing."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from .. import runners
from ..errors import UserError
from ..modelio import TensorSpec, input_specs, load_onnx
from ..nodes import spattn_node_info
from ..text import format_table
from ._common import (
    CONTEXT,
    OutputPath,
    common_options,
    console,
    describe_feeds,
    fail,
    fmt,
    get_feeds,
    input_options,
    save_npz,
)


@click.command(
    context_settings=CONTEXT,
    short_help="Run with ONNX Runtime (CPU/CUDA) or TensorRT: outputs, timing.",
)
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "-b",
    "--backend",
    type=click.Choice(["ort-cpu", "ort-cuda", "tensorrt"]),
    default="ort-cpu",
    show_default=True,
    help="ONNX Runtime (CPU or CUDA EP, our library registered) or a TensorRT engine.",
)
@click.option(
    "--engine",
    type=click.Path(dir_okay=False),
    help="TensorRT engine (from `spattn build`) for --backend tensorrt.",
)
@input_options
@click.option(
    "-o",
    "--output",
    type=OutputPath(),
    help="Where to save the outputs.  [default: MODEL with .outputs.npz]",
)
@click.option(
    "--save-inputs",
    type=OutputPath(),
    help="Also save the inputs used, as .npz (reusable with --inputs).",
)
@click.option(
    "--warmup", type=click.IntRange(min=0), default=2, show_default=True, help="Untimed runs first."
)
@click.option(
    "--repeat", type=click.IntRange(min=1), default=10, show_default=True, help="Timed runs."
)
@click.option("--threads", type=click.IntRange(min=1), help="ONNX Runtime intra-op threads.")
@common_options
@click.pass_context
def run(
    ctx: click.Context,
    model: str,
    backend: str,
    engine: str | None,
    inputs_path: str | None,
    batch: int,
    seq_len: int,
    shape_items: tuple[str, ...],
    seed: int,
    output: str | None,
    save_inputs: str | None,
    warmup: int,
    repeat: int,
    threads: int | None,
    quiet: bool,
    as_json: bool,
    debug: bool,
) -> None:
    """Run a model with ONNX Runtime (CPU or CUDA) or TensorRT; save outputs, report timing.

    Inputs come from --inputs FILE.npz or are generated (dynamic axes from --batch and
    --seq-len; integer inputs such as key_lengths hold the sequence length). MODEL may be a
    TensorRT engine (.plan/.engine) when --inputs is given.

    \b
    Example:
      spattn run encoder.onnx --seq-len 4096 --repeat 20 -o out.npz
      spattn run encoder.onnx --backend ort-cuda --inputs in.npz
      spattn run encoder.onnx --backend tensorrt --engine encoder.plan
    """
    con = console(ctx, quiet, as_json, debug)
    is_engine = Path(model).suffix in (".plan", ".engine", ".trt")
    notes: list[str] = []
    proto = None
    if is_engine:
        backend, engine = "tensorrt", model
        if not Path(model).is_file():
            raise UserError(f"{model}: no such engine file; build one with `spattn build`")
        if not inputs_path:
            raise click.BadParameter(
                "running an engine file needs --inputs FILE.npz (or give "
                "the ONNX model with --engine)",
                param_hint="--inputs",
            )
        if not Path(inputs_path).is_file():
            raise UserError(
                f"{inputs_path}: no such file; give an .npz with one array per engine input"
            )
        with np.load(inputs_path) as z:
            specs = [TensorSpec(k, _onnx_type(z[k].dtype), list(z[k].shape)) for k in z.files]
    else:
        proto = load_onnx(model)
        if not spattn_node_info(proto, require=False, path=model):
            notes.append(
                f"{model} has no spattn::SparseAttention node: run as a plain ONNX model "
                "(a dense baseline, for instance)"
            )
        specs = input_specs(proto)
    if backend != "tensorrt":
        ok, reason = runners.backend_status(backend)
        if not ok:
            raise UserError(reason)
    feeds = get_feeds(specs, inputs_path, batch, seq_len, shape_items, seed, proto)
    if save_inputs:
        save_npz(save_inputs, feeds, "--save-inputs")

    if backend == "tensorrt":
        runners.tensorrt_module()  # one clear line when TensorRT is missing
        if engine is None:
            raise click.BadParameter(
                "--backend tensorrt needs --engine ENGINE.plan (build it "
                "with `spattn build MODEL.onnx -o ENGINE.plan`)",
                param_hint="--engine",
            )

        def call() -> dict[str, np.ndarray]:
            return runners.run_tensorrt(engine, specs, feeds)
    else:
        with con.bar(total=1, desc="create session", unit="session") as bar:
            runner = runners.OrtRunner(
                model, specs, "cuda" if backend == "ort-cuda" else "cpu", threads
            )
            bar.update()

        def call() -> dict[str, np.ndarray]:
            return runner(feeds)

    import time

    outs: dict[str, np.ndarray] = {}
    times: list[float] = []
    with con.bar(total=warmup + repeat, desc=f"run {backend}", unit="run") as bar:
        for k in range(warmup + repeat):
            t0 = time.perf_counter()
            outs = call()
            dt = time.perf_counter() - t0
            if k >= warmup:
                times.append(dt * 1e3)
            bar.update()
    output = output or str(Path(model).with_suffix("")) + ".outputs.npz"
    save_npz(output, outs, "-o/--output")
    t = np.asarray(times)
    timing = {
        "warmup": warmup,
        "repeat": repeat,
        "median_ms": float(np.median(t)),
        "mean_ms": float(t.mean()),
        "min_ms": float(t.min()),
        "max_ms": float(t.max()),
        "p90_ms": float(np.percentile(t, 90)),
    }
    out_info = [
        {
            "name": k,
            "shape": list(v.shape),
            "dtype": str(v.dtype),
            "finite": bool(np.all(np.isfinite(v))) if v.dtype.kind == "f" else True,
            "mean_abs": float(np.abs(v.astype(np.float64)).mean()) if v.size else 0.0,
        }
        for k, v in outs.items()
    ]
    data = {
        "model": model,
        "backend": backend,
        "inputs": {k: list(v.shape) for k, v in feeds.items()},
        "outputs": out_info,
        "outputs_file": output,
        "timing": timing,
        "notes": notes,
    }
    lines = [
        f"{model} on {backend}; inputs: {describe_feeds(feeds)}",
        format_table(
            ["output", "shape", "dtype", "finite", "mean |x|"],
            [
                [o["name"], o["shape"], o["dtype"], o["finite"], fmt(o["mean_abs"])]
                for o in out_info
            ],
        ),
        f"time per run: median {timing['median_ms']:.3f} ms, mean {timing['mean_ms']:.3f}, "
        f"min {timing['min_ms']:.3f}, p90 {timing['p90_ms']:.3f} ({repeat} runs after "
        f"{warmup} warm-up)",
        f"outputs saved to {output}",
    ]
    lines += [f"note: {n}" for n in notes]
    if backend == "tensorrt":
        lines.append("note: TensorRT times are of spattn.trt.run_engine calls (transfers included)")
    con.result(data, "\n".join(lines))
    if not all(o["finite"] for o in out_info):
        fail(ctx, "an output has NaN or infinite values")


def _onnx_type(dtype: np.dtype) -> int:
    inv = {"float32": 1, "float16": 10, "float64": 11, "int32": 6, "int64": 7, "bool": 9}
    return inv.get(np.dtype(dtype).name, 1)
