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
    OutputPath,
    Tolerance,
    build_from_factory,
    common_options,
    console,
    error_table,
    fmt,
    json_default,
    library_noise,
    parse_kwargs,
    pass_rule,
    write_file,
)


class _ExportCommand(click.Command):
    """Lists the built-in samples and their parameters at the end of --help (computed when help
    is shown: the samples import torch)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        with formatter.section("Built-in samples (SOURCE) and their -p parameters"):
            formatter.write_dl(sample_parameters())


def sample_parameters() -> list[tuple[str, str]]:
    """``[(sample, "first line of its docstring; KEY=default ...")]`` of the built-in samples."""
    import inspect as _inspect

    from ..models import SAMPLES

    rows = []
    for name, fn in SAMPLES.items():
        params = " ".join(
            f"{p.name}={p.default!r}"
            for p in _inspect.signature(fn).parameters.values()
            if p.default is not p.empty
        )
        first = (fn.__doc__ or "").strip().split("\n\n")[0]
        summary = " ".join(first.replace("``", "").split())
        rows.append((name, f"{summary} Parameters: {params}"))
    return rows


@click.command(
    cls=_ExportCommand,
    context_settings=CONTEXT,
    short_help="Export a PyTorch model to ONNX, validated against PyTorch.",
)
@click.argument("source")
@click.option(
    "-o",
    "--output",
    type=OutputPath(directory=None),
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
@click.option("--atol", type=Tolerance(), help="Absolute tolerance.  [default: per dtype, op spec]")
@click.option("--rtol", type=Tolerance(), help="Relative tolerance.  [default: per dtype, op spec]")
@click.option(
    "--report",
    "report_path",
    type=OutputPath(),
    help="JSON report to write.  [default: OUTPUT with .report.json]",
)
@click.option(
    "--input-names",
    metavar="NAME,...",
    help="Names of the graph inputs, one per tensor example input, in their order.  "
    "[default: forward's parameter names]",
)
@click.option(
    "--output-names",
    metavar="NAME,...",
    help="Names of the graph outputs.  [default: output, or output_0, output_1, ...]",
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
    input_names: str | None,
    output_names: str | None,
    threads: int | None,
    quiet: bool,
    as_json: bool,
    debug: bool,
) -> None:
    """Export a PyTorch model to ONNX with one spattn::SparseAttention node per attention.

    SOURCE is a built-in sample (listed below with its parameters) or a factory
    `package.module:function` (or `file.py:function`) that returns (model, example_inputs);
    example_inputs is a tuple of forward's positional inputs or a dict of keyword inputs.
    Graph inputs are named by --input-names (default: forward's parameter names), outputs by
    --output-names (default: output), dynamic axes batch_size (axis 0) and sequence_length
    (axis 1): the names a serving config (spattn triton-repo) uses. A Hugging Face model folder
    or hub id with --task writes OUTPUT/model.onnx with Optimum's names (see docs/hf.md).
    The export is checked (ONNX checker, shape inference) and validated against PyTorch through
    ONNX Runtime by default; the ONNX file and a JSON report are written either way, and the
    exit status is 1 when validation fails.

    \b
    Example:
      spattn export longformer_base -o encoder.onnx          # the quickstart's encoder, L 4096
      spattn export longformer_encoder -o encoder.onnx -p seq_len=1024 --dtype float16
      spattn export mypkg.models:build -o model.onnx --static-batch --atol 1e-4
      spattn export mypkg/models.py:build --input-names input_ids --output-names logits
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

        from .. import export as _export

        axes = _export.default_dynamic_axes(model, inputs, dynamic_batch, dynamic_seq)
        named = _export.named_inputs(model, inputs)[0]
        tensors = [t for _, t in named]
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
                    dynamic=bool(axes),
                    dynamic_axes=axes or None,
                    dtype=dtype,
                    opset=opset,
                    validate=False,
                    progress=False,  # the command's own bar shows the stages
                    input_names=_names(input_names, "--input-names"),
                    output_names=_names(output_names, "--output-names"),
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
                given = _names(input_names, "--input-names")
                aliases = dict(
                    zip([p for p, _ in named], given or [p for p, _ in named], strict=True)
                )
                feeds = feeds_from_tensors(specs, {aliases[p]: t for p, t in named})
                params_of = {v: k for k, v in aliases.items()}
                arg_names = [params_of.get(s.name, s.name) for s in specs]
                ref = runners.run_torch(
                    model, specs, feeds, [o.name for o in outs], dtype, arg_names=arg_names
                )
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
        "input_names": rep.input_names,
        "output_names": rep.output_names,
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
        "warnings": rep.warnings,
    }
    write_file(report_path, json.dumps(report, indent=2, default=json_default) + "\n", "--report")

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
        lines.append("validation: PyTorch (reference) vs ONNX Runtime CPU")
        lines.append(pass_rule(validation["atol"], validation["rtol"]))
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
    for w in rep.warnings:
        con.warn(w)
    con.result(report, "\n".join(lines))
    if validation is not None and not validation["passed"]:
        ctx.exit(1)


def _names(text: str | None, hint: str) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",")]
    if not all(names) or len(set(names)) != len(names):
        raise click.BadParameter(
            f"{text!r}: expected distinct comma-separated names (e.g. input_ids,attention_mask)",
            param_hint=hint,
        )
    return names
