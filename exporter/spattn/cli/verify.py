"""``spattn verify``: PyTorch, ONNX Runtime CPU/CUDA and TensorRT compared on one input."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

from .. import runners
from ..compare import compare_outputs
from ..errors import UserError
from ..factories import example_tensors, model_patterns, torch_argument_names
from ..feeds import feeds_from_tensors
from ..modelio import TensorSpec, input_specs, load_onnx, model_float_dtype, output_specs
from ..nodes import pattern_differences, spattn_node_info
from ._common import (
    CONTEXT,
    Console,
    Tolerance,
    build_from_factory,
    common_options,
    console,
    describe_feeds,
    error_table,
    export_record,
    get_feeds,
    input_options,
    library_noise,
    parse_kwargs,
    pass_rule,
)


@click.command(
    context_settings=CONTEXT, short_help="Compare PyTorch, ORT CPU, ORT CUDA and TensorRT outputs."
)
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "--factory", help="Model factory or sample that made MODEL (adds PyTorch as the reference)."
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False),
    help="The export's .report.json, whose factory parameters --factory reuses.  "
    "[default: MODEL with .report.json, when it exists]",
)
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Keyword argument for the factory (repeatable).",
)
@input_options
@click.option(
    "--backends",
    "backend_list",
    help="Comma-separated subset of pytorch,ort-cpu,ort-cuda,tensorrt; a listed "
    "backend that is not usable is an error.  [default: all usable]",
)
@click.option(
    "--engine",
    type=click.Path(dir_okay=False),
    help="TensorRT engine to verify (else one is built when TensorRT is usable).",
)
@click.option("--atol", type=Tolerance(), help="Absolute tolerance.  [default: per dtype, op spec]")
@click.option("--rtol", type=Tolerance(), help="Relative tolerance.  [default: per dtype, op spec]")
@click.option("--threads", type=click.IntRange(min=1), help="ONNX Runtime intra-op threads.")
@common_options
@click.pass_context
def verify(
    ctx: click.Context,
    model: str,
    factory: str | None,
    report_path: str | None,
    params: tuple[str, ...],
    inputs_path: str | None,
    batch: int,
    seq_len: int,
    shape_items: tuple[str, ...],
    seed: int,
    backend_list: str | None,
    engine: str | None,
    atol: float | None,
    rtol: float | None,
    threads: int | None,
    quiet: bool,
    as_json: bool,
    debug: bool,
) -> None:
    """Compare PyTorch, ONNX Runtime CPU, ONNX Runtime CUDA and TensorRT on one input.

    The reference is PyTorch when --factory is given, else ONNX Runtime CPU. Every other usable
    backend is compared per output (max abs/rel error, PASSED/FAILED with the op spec's
    tolerances for the model's dtype); the exit status is 1 when any comparison fails.

    With --factory, the model is rebuilt with the parameters that `spattn export` recorded in
    MODEL's .report.json (a -p given here overrides one), and the attributes of MODEL's spattn
    nodes are compared with the patterns of the factory's model before any number: a
    difference is reported by node and attribute, with exit status 1.

    \b
    Example:
      spattn verify encoder.onnx --factory longformer_encoder
      spattn verify encoder.onnx --backends ort-cpu,ort-cuda --inputs in.npz
    """
    con = console(ctx, quiet, as_json, debug)
    from .. import tolerances

    kwargs = parse_kwargs(params)
    notes: list[str] = []
    recorded = export_record(model, report_path)
    if factory and recorded is not None:
        rec_source, rec_params, rec_file = recorded
        if rec_source == factory:
            kwargs = {**rec_params, **kwargs}
            if rec_params:
                shown = " ".join(f"{k}={v!r}" for k, v in rec_params.items())
                notes.append(f"factory parameters from {rec_file}: {shown}")
        else:
            notes.append(
                f"{rec_file} records the source {rec_source!r}, not {factory!r}; its "
                "parameters are not used"
            )
    if backend_list:
        wanted = [x.strip() for x in backend_list.split(",") if x.strip()]
        bad = [x for x in wanted if x not in runners.BACKENDS]
        if bad or not wanted:
            raise click.BadParameter(
                f"{backend_list!r}: choose from {','.join(runners.BACKENDS)}",
                param_hint="--backends",
            )
        if "pytorch" in wanted and not factory:
            raise click.BadParameter(
                "pytorch needs the model's factory: add --factory", param_hint="--backends"
            )
    else:
        wanted = [b for b in runners.BACKENDS if b != "pytorch" or factory]
    explicit = bool(backend_list)

    proto = load_onnx(model)
    nodes = spattn_node_info(proto, path=model)
    specs, outs = input_specs(proto), output_specs(proto)
    dtype = model_float_dtype(proto)
    d_atol, d_rtol = tolerances.tolerance(dtype)
    atol = d_atol if atol is None else atol
    rtol = d_rtol if rtol is None else rtol

    usable: list[str] = []
    skipped: dict[str, str] = {}
    for b in wanted:
        ok, reason = runners.backend_status(b)
        if ok:
            usable.append(b)
        elif explicit:
            raise UserError(f"backend {b} is not usable here: {reason}")
        else:
            skipped[b] = reason

    torch_model, example = None, None
    if "pytorch" in usable and factory:
        with library_noise(con.debug):
            torch_model, example = build_from_factory(factory, kwargs, con)
        patterns = model_patterns(torch_model)
        if not patterns:
            notes.append(
                "the factory's model has no module with a spattn Pattern: node attributes "
                "not compared"
            )
        else:
            diffs = pattern_differences(nodes, patterns)
            if diffs:
                raise UserError(
                    f"the model built by {factory} does not match {model}: "
                    + "; ".join(diffs)
                    + "; give the export's parameters with -p KEY=VALUE (or --report FILE)"
                )
            notes.append(f"node attributes match the factory's patterns ({len(patterns)} node(s))")
    generated = (
        shape_items
        or ctx.get_parameter_source("seq_len") != click.core.ParameterSource.DEFAULT
        or ctx.get_parameter_source("batch") != click.core.ParameterSource.DEFAULT
    )
    arg_names = None
    if torch_model is not None:
        arg_names = torch_argument_names(torch_model, example, specs)
    if example is not None and not inputs_path and not generated:
        feeds = feeds_from_tensors(specs, example_tensors(torch_model, example, specs))
    else:
        feeds = get_feeds(specs, inputs_path, batch, seq_len, shape_items, seed, proto)
    if len(usable) < 2:
        have = usable[0] if usable else "no backend"
        raise UserError(
            f"nothing to compare: only {have} is usable here; "
            + ("" if factory else "add --factory to compare with PyTorch, or ")
            + "see `spattn doctor` for how to get "
            + (", ".join(skipped) or "the other backends")
        )

    results: dict[str, dict[str, np.ndarray]] = {}
    with con.bar(total=len(usable), desc="verify", unit="backend") as bar:
        for b in usable:
            bar.set_postfix_str(b)
            if b == "pytorch":
                with library_noise(con.debug):
                    results[b] = runners.run_torch(
                        torch_model, specs, feeds, [o.name for o in outs], dtype, arg_names
                    )
            elif b == "tensorrt" and engine is None:
                results[b] = _verify_trt_temp(model, specs, feeds, con)
            else:
                results[b] = runners.run_backend(
                    b, model, specs, feeds, engine=engine, threads=threads
                )
            bar.update()
    ref_name = usable[0]
    ref = results[ref_name]
    rows: list[tuple[str, dict[str, Any]]] = []
    for b in usable[1:]:
        rows += [(b, r) for r in compare_outputs(ref, results[b], atol, rtol)]
    passed = all(r["passed"] for _, r in rows)
    data = {
        "ok": passed,
        "model": model,
        "dtype": dtype,
        "atol": atol,
        "rtol": rtol,
        "reference": ref_name,
        "inputs": {k: list(v.shape) for k, v in feeds.items()},
        "comparisons": [{"backend": b, **r} for b, r in rows],
        "skipped": skipped,
        "factory_params": kwargs if factory else None,
        "notes": notes,
        "passed": passed,
    }
    lines = [
        f"{model} ({dtype}); inputs: {describe_feeds(feeds)}",
        f"reference: {ref_name}",
        pass_rule(atol, rtol),
        error_table(rows),
    ]
    lines += [f"skipped {b}: {why}" for b, why in skipped.items()]
    lines += [f"note: {n}" for n in notes]
    lines.append("PASSED" if passed else "FAILED")
    con.result(data, "\n".join(lines))
    if not passed:
        ctx.exit(1)


def _verify_trt_temp(
    model: str, specs: Sequence[TensorSpec], feeds: dict[str, np.ndarray], con: Console
) -> dict[str, np.ndarray]:
    """Build a throw-away engine for exactly these input shapes and run it."""
    import tempfile

    trt = runners.tensorrt_module()
    shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    with tempfile.TemporaryDirectory() as tmp:
        plan = str(Path(tmp) / "verify.plan")
        con.info("building a TensorRT engine for these shapes (pass --engine to reuse one)")
        trt.build_engine(
            model,
            plan,
            min_shapes=shapes,
            opt_shapes=shapes,
            max_shapes=shapes,
            progress=not (con.quiet or con.json),
        )
        return runners.run_tensorrt(plan, specs, feeds)
