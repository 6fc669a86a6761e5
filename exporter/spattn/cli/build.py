"""``spattn build``: a TensorRT engine with the spattn plugin from an ONNX model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from .. import runners
from ..feeds import check_feeds, resolve_dims
from ..modelio import TensorSpec, input_specs, load_onnx
from ..nodes import spattn_node_info
from ._common import (
    CONTEXT,
    MAX_LENGTH,
    OutputPath,
    check_shape_names,
    common_options,
    console,
    parse_shapes,
)


def _range(text: str, hint: str) -> tuple[int, int, int]:
    try:
        parts = [int(x) for x in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3 or not (1 <= parts[0] <= parts[1] <= parts[2] <= MAX_LENGTH):
        raise click.BadParameter(
            f"{text!r}: expected MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX <= 2^30", param_hint=hint
        )
    return parts[0], parts[1], parts[2]


def profile_shapes(
    specs: Sequence[TensorSpec],
    batch: tuple[int, int, int],
    seq: tuple[int, int, int],
    explicit: Sequence[dict[str, tuple[int, ...]]],
) -> list[dict[str, tuple[int, ...]]]:
    """min/opt/max shapes of every input: explicit ones, else dynamic axes from the ranges."""
    out = []
    for k in range(3):
        shapes = resolve_dims(specs, batch[k], seq[k], explicit[k])
        out.append({n: tuple(int(d) for d in s) for n, s in shapes.items()})
    return out


@click.command(
    context_settings=CONTEXT, short_help="Build a TensorRT engine with the spattn plugin."
)
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=OutputPath(),
    help="Engine file.  [default: MODEL with .plan]",
)
@click.option(
    "--batch",
    "batch_range",
    default="1,1,8",
    show_default=True,
    help="MIN,OPT,MAX of dynamic batch axes.",
)
@click.option(
    "--seq-len",
    "seq_range",
    default="1,512,4096",
    show_default=True,
    help="MIN,OPT,MAX of dynamic sequence axes.",
)
@click.option(
    "--min-shapes",
    multiple=True,
    metavar="NAME=D0,D1,...",
    help="Explicit minimum shape of an input (repeatable), as trtexec.",
)
@click.option(
    "--opt-shapes",
    multiple=True,
    metavar="NAME=D0,D1,...",
    help="Explicit optimum shape of an input (repeatable).",
)
@click.option(
    "--max-shapes",
    multiple=True,
    metavar="NAME=D0,D1,...",
    help="Explicit maximum shape of an input (repeatable).",
)
@click.option(
    "--strongly-typed/--weakly-typed",
    default=True,
    show_default=True,
    help="Keep the ONNX types (strongly typed network).",
)
@click.option("--fp16", is_flag=True, help="Allow float16 tactics (weakly typed only).")
@click.option("--bf16", is_flag=True, help="Allow bfloat16 tactics (weakly typed only).")
@click.option(
    "--workspace-mb",
    type=click.IntRange(min=1),
    default=4096,
    show_default=True,
    help="Builder workspace limit.",
)
@click.option(
    "--timing-cache", type=click.Path(dir_okay=False), help="Timing cache file (read and updated)."
)
@common_options
@click.pass_context
def build(
    ctx: click.Context,
    model: str,
    output: str | None,
    batch_range: str,
    seq_range: str,
    min_shapes: tuple[str, ...],
    opt_shapes: tuple[str, ...],
    max_shapes: tuple[str, ...],
    strongly_typed: bool,
    fp16: bool,
    bf16: bool,
    workspace_mb: int,
    timing_cache: str | None,
    quiet: bool,
    as_json: bool,
    debug: bool,
) -> None:
    """Build a TensorRT engine with the spattn plugin from an ONNX model.

    Dynamic axes get an optimization profile from --batch and --seq-len (or explicit
    --min/--opt/--max-shapes). Needs TensorRT and libspattn_trt.so; without them the command
    says how to get them and exits with status 1.

    \b
    Example:
      spattn build encoder.onnx -o encoder.plan --batch 1,4,8 --seq-len 128,2048,8192
      spattn build encoder.onnx --min-shapes x=1,128,64 --opt-shapes x=4,2048,64 \\
                                --max-shapes x=8,8192,64
    """
    con = console(ctx, quiet, as_json, debug)
    if (fp16 or bf16) and strongly_typed:
        raise click.BadParameter(
            "--fp16/--bf16 apply to weakly typed networks; add "
            "--weakly-typed (or export the model in that dtype)",
            param_hint="--fp16/--bf16",
        )
    b, s = _range(batch_range, "--batch"), _range(seq_range, "--seq-len")
    explicit = [
        parse_shapes(x, h)
        for x, h in (
            (min_shapes, "--min-shapes"),
            (opt_shapes, "--opt-shapes"),
            (max_shapes, "--max-shapes"),
        )
    ]
    proto = load_onnx(model)
    nodes = spattn_node_info(proto, path=model)
    specs = input_specs(proto)
    for e, h in zip(explicit, ("--min-shapes", "--opt-shapes", "--max-shapes"), strict=True):
        check_shape_names(e, specs, h)
    mins, opts, maxs = profile_shapes(specs, b, s, explicit)
    for shapes in (mins, opts, maxs):
        check_feeds(specs, {}, shapes=shapes, source="the profile")
    trt = runners.tensorrt_module()
    output = output or str(Path(model).with_suffix(".plan"))
    con.info(f"building {output} from {model} ({len(nodes)} spattn node(s))")
    path = trt.build_engine(
        model,
        output,
        min_shapes=mins,
        opt_shapes=opts,
        max_shapes=maxs,
        strongly_typed=strongly_typed,
        fp16=fp16,
        bf16=bf16,
        workspace_mb=workspace_mb,
        timing_cache=timing_cache,
        progress=not (con.quiet or con.json),
    )
    data = {
        "model": model,
        "engine": str(path),
        "min_shapes": mins,
        "opt_shapes": opts,
        "max_shapes": maxs,
    }
    con.result(data, f"wrote TensorRT engine {path}\n  min {mins}\n  opt {opts}\n  max {maxs}")
