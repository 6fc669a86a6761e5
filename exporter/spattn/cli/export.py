"""``spattn export``: a PyTorch model (sample or factory) to ONNX, validated against PyTorch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .. import runners
from ..compare import compare_outputs
from ..errors import UserError
from ..feeds import feeds_from_tensors
from ..modelio import input_specs, load_onnx, output_specs
from ..nodes import spattn_node_info
from ..text import format_table
from ._common import (
    CONTEXT,
    build_from_factory,
    common_options,
    console,
    error_table,
    fmt,
    json_default,
    library_noise,
    parse_kwargs,
)


@click.command(
    context_settings=CONTEXT,
    short_help="Export a PyTorch model to ONNX, validated against PyTorch.",
)
@click.argument("source")
@click.option(
    "-o",
    "--output",
    type=click.Path(),
    help="ONNX file to write (a folder for a Hugging Face model).  [default: SOURCE's name + "
    ".onnx]",
)
@click.option(
    "--task",
    type=click.Choice(
        [
            "feature-extraction",
            "fill-mask",
            "text-classification",
            "text-generation",
            "text-generation-with-past",
        ]
    ),
    help="Hugging Face task (SOURCE a model folder or hub id): writes OUTPUT/model.onnx.",
)
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Keyword argument for the factory (repeatable), e.g. -p seq_len=512.",
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float16", "bfloat16"]),
    default="float32",
    show_default=True,
    help="Precision of the exported graph.",
)
@click.option(
    "--opset",
    type=click.IntRange(min=18),
    default=18,
    show_default=True,
    help="Default-domain opset.",
)
@click.option(
    "--dynamic-batch/--static-batch",
    default=True,
    show_default=True,
    help="Axis 0 of every tensor input dynamic.",
)
@click.option(
    "--dynamic-seq/--static-seq",
    default=True,
    show_default=True,
    help="Axis 1 of every tensor input of rank >= 2 dynamic.",
)
@click.option(
    "--validate/--no-validate",
    default=True,
    show_default=True,
    help="Compare ONNX Runtime (our library) with PyTorch on the example inputs.",
)
@click.option("--atol", type=float, help="Absolute tolerance.  [default: per dtype, op spec]")
@click.option("--rtol", type=float, help="Relative tolerance.  [default: per dtype, op spec]")
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False),
    help="JSON report to write.  [default: OUTPUT with .report.json]",
)
@click.option("--threads", type=click.IntRange(min=1), help="ONNX Runtime intra-op threads.")
@common_options
@click.pass_context
def export(
    ctx: click.Context,
    source: str,
    output: str | None,
    task: str | None,
    params: tuple[str, ...],
    dtype: str,
    opset: int,
    dynamic_batch: bool,
    dynamic_seq: bool,
    validate: bool,
    atol: float | None,
    rtol: float | None,
    report_path: str | None,
    threads: int | None,
    quiet: bool,
    as_json: bool,
    debug: bool,
) -> None:
    """Export a PyTorch model to ONNX with one spattn::SparseAttention node per attention.

    SOURCE is a built-in sample (longformer_encoder, gqa_decoder_block), a factory
    `package.module:function` (or `file.py:function`) that returns (model, example_inputs), or a
    Hugging Face model folder / hub id with --task (see docs/hf.md).
    The export is checked (ONNX checker, shape inference) and validated against PyTorch through
    ONNX Runtime by default; the ONNX file and a JSON report are written either way, and the
    exit status is 1 when validation fails.

    \b
    Example:
      spattn export longformer_encoder -o encoder.onnx -p seq_len=1024 --dtype float16
      spattn export mypkg.models:build -o model.onnx --static-batch --atol 1e-4
      spattn export ./tiny_mistral --task text-generation-with-past -o mistral_onnx
    """
    con = console(ctx, quiet, as_json, debug)
    from ..hf.cli import is_hf_source, run_export_hf

    if task is not None or is_hf_source(source):
        with library_noise(con.debug):
            run_export_hf(
                ctx,
                con,
                source,
                task,
                output,
                dtype,
                opset,
                validate,
                atol,
                rtol,
                threads,
                report_path,
            )
        return
    from .. import tolerances

    kwargs = parse_kwargs(params)
    stem = source.rpartition(":")[2] if ":" in source else source
    output = output or f"{stem}.onnx"
    report_path = report_path or str(Path(output).with_suffix("")) + ".report.json"
    Path(output).parent.mkdir(parents=True, exist_ok=True)

    with library_noise(con.debug):
        model, inputs = build_from_factory(source, kwargs, con)
        import torch

        from .. import export as _export

        tensors = [a for a in inputs if isinstance(a, torch.Tensor)]
        shapes: Any = None
        if dynamic_batch or dynamic_seq:
            auto = torch.export.Dim.AUTO
            shapes = []
            for a in inputs:
                if not isinstance(a, torch.Tensor):
                    shapes.append(None)
                    continue
                d = {}
                if dynamic_batch and a.dim() >= 1:
                    d[0] = auto
                if dynamic_seq and a.dim() >= 2:
                    d[1] = auto
                shapes.append(d or None)
            shapes = tuple(shapes)
        stages = ["torch.onnx.export + ONNX checker"] + (
            ["validate (ONNX Runtime vs PyTorch)"] if validate else []
        )
        with con.bar(total=len(stages), desc="export", unit="stage") as bar:
            bar.set_postfix_str(stages[0])
            try:
                rep = _export.export(
                    model,
                    inputs,
                    output,
                    dynamic=bool(shapes),
                    dynamic_shapes=shapes,
                    dtype=dtype,
                    opset=opset,
                    validate=False,
                )
            except (ValueError, TypeError, RuntimeError) as e:
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise UserError(
                    f"exporting {source} failed: {first}; run with --debug for the full error"
                ) from e
            bar.update()
            proto = load_onnx(output)
            length = next((t.shape[1] for t in tensors if t.dim() >= 2), None)
            nodes = spattn_node_info(proto, length=length, require=False, path=output)
            if not nodes:
                raise UserError(
                    f"{source} exported without any spattn::SparseAttention node: its "
                    "attention is not spattn's; swap it first with "
                    "spattn.convert_transformer or spattn.swap_attention"
                )
            specs, outs = input_specs(proto), output_specs(proto)
            validation: dict[str, Any] | None = None
            notes: list[str] = []
            if validate:
                bar.set_postfix_str(stages[1])
                d_atol, d_rtol = tolerances.tolerance(dtype)
                a = d_atol if atol is None else atol
                r = d_rtol if rtol is None else rtol
                feeds = feeds_from_tensors(specs, tensors)
                ref = runners.run_torch(model, specs, feeds, [o.name for o in outs], dtype)
                try:
                    got = runners.OrtRunner(output, specs, "cpu", threads)(feeds)
                except UserError as e:
                    if dtype != "bfloat16":
                        raise
                    notes.append(f"not validated: {e}")
                    got = None
                if got is not None:
                    rows = compare_outputs(ref, got, a, r)
                    validation = {
                        "reference": "pytorch",
                        "backend": "ort-cpu",
                        "atol": a,
                        "rtol": r,
                        "outputs": rows,
                        "passed": all(x["passed"] for x in rows),
                    }
                bar.update()

    dyn = [n for n, on in (("batch", dynamic_batch), ("sequence", dynamic_seq)) if on]
    report: dict[str, Any] = {
        "ok": validation is None or validation["passed"],
        "onnx": output,
        "report": report_path,
        "source": source,
        "params": kwargs,
        "dtype": dtype,
        "opset": opset,
        "dynamic_axes": dyn,
        "inputs": [{"name": s.name, "dtype": s.dtype_name, "shape": s.dims} for s in specs],
        "outputs": [{"name": s.name, "dtype": s.dtype_name, "shape": s.dims} for s in outs],
        "num_spattn_nodes": len(nodes),
        "density_length": length,
        "nodes": [
            {
                "name": n["name"],
                "pattern": n["pattern"],
                "attributes": n["attributes"],
                "density": n["density"],
            }
            for n in nodes
        ],
        "validation": validation,
        "notes": notes + rep.notes,
    }
    Path(report_path).write_text(json.dumps(report, indent=2, default=json_default) + "\n")

    lines = [
        f"wrote {output}: {len(nodes)} spattn::SparseAttention node(s), {dtype}, opset "
        f"{opset}, dynamic axes: {', '.join(dyn) or 'none'}"
    ]
    lines.append(
        format_table(
            ["node", "pattern", f"density (L={length})"],
            [[n["name"], n["pattern"], fmt(n["density"], ".2%")] for n in nodes],
        )
    )
    if validation is not None:
        lines.append(
            f"validation: PyTorch vs ONNX Runtime CPU (atol {validation['atol']:g}, "
            f"rtol {validation['rtol']:g})"
        )
        lines.append(error_table([("ort-cpu", x) for x in validation["outputs"]]))
        lines.append(
            "PASSED"
            if validation["passed"]
            else "FAILED: ONNX Runtime differs from PyTorch beyond the tolerances"
        )
    elif not validate:
        lines.append("validation: skipped (--no-validate)")
    for n in report["notes"]:
        lines.append(f"note: {n}")
    lines.append(f"report: {report_path}")
    con.result(report, "\n".join(lines))
    if validation is not None and not validation["passed"]:
        ctx.exit(1)
