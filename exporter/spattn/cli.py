"""The ``spattn`` command line: export, inspect, run, build, verify, bench, doctor, triton-repo,
serve.

Every command validates its input, shows progress bars on long steps (``--quiet`` hides them,
``--json`` prints one JSON object instead of text), saves what it produces, and exits with
status 0 on success, 1 on a failure (a failed validation, a bad file, a missing backend) and 2
on a usage error. Problems are reported as one line saying what is wrong and what to do; a
traceback only with ``--debug``.

Examples
--------
.. code-block:: bash

    spattn export longformer_encoder -o encoder.onnx
    spattn inspect encoder.onnx --length 4096 --plot mask.png
    spattn run encoder.onnx --seq-len 4096 --repeat 20
    spattn verify encoder.onnx --factory longformer_encoder
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

from . import __version__
from . import backends as bk
from .backends import UserError

__all__ = ["cli", "main"]

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# ------------------------------------------------------------------------------ output handling
class Console:
    """Where a command writes: text or one JSON object on stdout, notes and bars on stderr."""

    def __init__(self, quiet: bool = False, as_json: bool = False, debug: bool = False) -> None:
        self.quiet, self.json, self.debug = quiet, as_json, debug

    def info(self, msg: str) -> None:
        """A progress note (stderr; hidden by --quiet and --json)."""
        if not (self.quiet or self.json):
            click.echo(msg, err=True)

    def warn(self, msg: str) -> None:
        """A warning (stderr; hidden by --json, where it goes into the JSON object)."""
        if not self.json:
            click.echo(f"warning: {msg}", err=True)

    def bar(self, **kwargs: Any) -> Any:
        """A tqdm progress bar on stderr, off with --quiet or --json."""
        from tqdm.auto import tqdm

        kwargs.setdefault("leave", False)
        kwargs.setdefault("dynamic_ncols", True)
        return tqdm(file=sys.stderr, disable=self.quiet or self.json, **kwargs)

    def result(self, data: dict[str, Any], text: str) -> None:
        """The command's result: ``text`` on stdout, or ``data`` as JSON with --json."""
        if self.json:
            click.echo(json.dumps({"ok": True, **data}, indent=2, default=_json_default))
        elif text:
            click.echo(text)


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def _console(ctx: click.Context, quiet: bool, as_json: bool, debug: bool) -> Console:
    obj = ctx.ensure_object(dict)
    if not (debug or obj.get("debug")):
        try:  # ONNX Runtime logs its own copy of every error; ours is the one line
            import onnxruntime

            onnxruntime.set_default_logger_severity(4)
        except ImportError:
            pass
    obj["debug"] = obj.get("debug", False) or debug
    obj["json"] = obj.get("json", False) or as_json
    obj["quiet"] = obj.get("quiet", False) or quiet
    con = Console(obj["quiet"], obj["json"], obj["debug"])
    obj["console"] = con
    return con


def common_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--quiet``, ``--json`` and ``--debug`` on a command."""
    fn = click.option("--debug", is_flag=True, help="Show tracebacks and the libraries' own logs.")(
        fn
    )
    fn = click.option(
        "--json", "as_json", is_flag=True, help="Print one machine-readable JSON object on stdout."
    )(fn)
    fn = click.option(
        "-q", "--quiet", is_flag=True, help="No progress bars or notes: results and errors only."
    )(fn)
    return fn


class _Group(click.Group):
    """Turns every failure into one line and exit status 1 (tracebacks only with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:
            obj = ctx.obj or {}
            if obj.get("debug"):
                raise
            if isinstance(e, UserError):
                msg = str(e)
            elif isinstance(e, MemoryError):
                msg = "out of memory; try a smaller --batch/--seq-len"
            else:
                first = (str(e).strip().splitlines() or [""])[0]
                msg = (
                    f"{type(e).__name__}: {first} (this looks like a bug or an unsupported "
                    "model; run again with --debug for the traceback)"
                )
            _fail(ctx, msg)


def _fail(ctx: click.Context, msg: str, code: int = 1) -> None:
    obj = ctx.obj or {}
    if obj.get("json"):
        click.echo(json.dumps({"ok": False, "error": msg}))
    click.echo(f"error: {msg}", err=True)
    ctx.exit(code)


@contextlib.contextmanager
def _library_noise(debug: bool) -> Iterator[None]:
    """Silence torch.onnx's logs and warnings unless --debug."""
    if debug:
        yield
        return
    loggers = [
        logging.getLogger(n)
        for n in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript", "torch._export")
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            for lg, lv in zip(loggers, levels, strict=True):
                lg.setLevel(lv)


def _fmt(x: Any, spec: str = ".3g") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and np.isnan(x):
        return "nan"
    return format(x, spec)


def _params(items: Sequence[str]) -> dict[str, Any]:
    try:
        return bk.parse_params(items)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--param") from None


def _shapes(items: Sequence[str], hint: str = "--shape") -> dict[str, tuple[int, ...]]:
    try:
        return bk.parse_shape_overrides(items)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=hint) from None


def _check_shape_names(shapes: dict[str, Any], specs: Sequence[bk.TensorSpec], hint: str) -> None:
    names = [s.name for s in specs]
    for n in shapes:
        if n not in names:
            raise click.BadParameter(
                f"the model has no input {n!r}; its inputs are {', '.join(map(repr, names))}",
                param_hint=hint,
            )


def _factory(source: str, params: dict[str, Any], con: Console) -> tuple[Any, tuple]:
    """Load a factory, turning an unknown sample name and bad params into usage errors."""
    try:
        fn, _ = bk.resolve_factory(source)
    except LookupError as e:
        raise click.BadParameter(str(e.args[0]), param_hint="SOURCE/--factory") from None
    accepted = bk.factory_parameters(fn)
    if accepted is not None:
        for k in params:
            if k not in accepted:
                raise click.BadParameter(
                    f"{k!r}: the factory {source} takes {', '.join(accepted) or 'no parameters'}",
                    param_hint="--param",
                )
    with con.bar(total=1, desc="build model", unit="model") as bar:
        model, inputs = bk.load_factory(source, params)
        bar.update()
    return model, inputs


# ------------------------------------------------------------------------------ the group
@click.group(cls=_Group, context_settings=_CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="spattn")
@click.option("--debug", is_flag=True, help="Tracebacks and library logs for every command.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """spattn: sparse-attention models from PyTorch to ONNX Runtime, TensorRT and Triton.

    \b
    Typical session:
      spattn doctor                                   # what is usable here
      spattn export longformer_encoder -o enc.onnx    # export + validate against PyTorch
      spattn inspect enc.onnx --plot mask.png         # patterns, densities, a mask plot
      spattn run enc.onnx --seq-len 4096              # ONNX Runtime with timing
      spattn verify enc.onnx --factory longformer_encoder
    Run `spattn COMMAND --help` for each command's options and an example.
    """
    ctx.ensure_object(dict)["debug"] = debug


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``spattn`` console script."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="spattn")


# ------------------------------------------------------------------------------ export
@cli.command(
    context_settings=_CONTEXT,
    short_help="Export a PyTorch model to ONNX, validated against PyTorch.",
)
@click.argument("source")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="ONNX file to write.  [default: SOURCE's name + .onnx]",
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

    SOURCE is a built-in sample (longformer_encoder, gqa_decoder_block) or a factory
    `package.module:function` (or `file.py:function`) that returns (model, example_inputs).
    The export is checked (ONNX checker, shape inference) and validated against PyTorch through
    ONNX Runtime by default; the ONNX file and a JSON report are written either way, and the
    exit status is 1 when validation fails.

    \b
    Example:
      spattn export longformer_encoder -o encoder.onnx -p seq_len=1024 --dtype float16
      spattn export mypkg.models:build -o model.onnx --static-batch --atol 1e-4
    """
    con = _console(ctx, quiet, as_json, debug)
    from . import tolerances

    kwargs = _params(params)
    stem = source.rpartition(":")[2] if ":" in source else source
    output = output or f"{stem}.onnx"
    report_path = report_path or str(Path(output).with_suffix("")) + ".report.json"
    Path(output).parent.mkdir(parents=True, exist_ok=True)

    with _library_noise(con.debug):
        model, inputs = _factory(source, kwargs, con)
        import torch

        from . import export as _export

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
            proto = bk.load_onnx(output)
            length = next((t.shape[1] for t in tensors if t.dim() >= 2), None)
            nodes = bk.spattn_node_info(proto, length=length, require=False, path=output)
            if not nodes:
                raise UserError(
                    f"{source} exported without any spattn::SparseAttention node: its "
                    "attention is not spattn's; swap it first with "
                    "spattn.convert_transformer or spattn.swap_attention"
                )
            specs, outs = bk.input_specs(proto), bk.output_specs(proto)
            validation: dict[str, Any] | None = None
            notes: list[str] = []
            if validate:
                bar.set_postfix_str(stages[1])
                d_atol, d_rtol = tolerances.tolerance(dtype)
                a = d_atol if atol is None else atol
                r = d_rtol if rtol is None else rtol
                feeds = bk.feeds_from_tensors(specs, tensors)
                ref = bk.run_torch(model, specs, feeds, [o.name for o in outs], dtype)
                try:
                    got = bk.OrtRunner(output, specs, "cpu", threads)(feeds)
                except UserError as e:
                    if dtype != "bfloat16":
                        raise
                    notes.append(f"not validated: {e}")
                    got = None
                if got is not None:
                    rows = bk.compare_outputs(ref, got, a, r)
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
    report = {
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
    Path(report_path).write_text(json.dumps(report, indent=2, default=_json_default) + "\n")

    lines = [
        f"wrote {output}: {len(nodes)} spattn::SparseAttention node(s), {dtype}, opset "
        f"{opset}, dynamic axes: {', '.join(dyn) or 'none'}"
    ]
    lines.append(
        bk.format_table(
            ["node", "pattern", f"density (L={length})"],
            [[n["name"], n["pattern"], _fmt(n["density"], ".2%")] for n in nodes],
        )
    )
    if validation is not None:
        lines.append(
            f"validation: PyTorch vs ONNX Runtime CPU (atol {validation['atol']:g}, "
            f"rtol {validation['rtol']:g})"
        )
        lines.append(_error_table([("ort-cpu", x) for x in validation["outputs"]]))
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


def _error_table(rows: Sequence[tuple[str, dict[str, Any]]]) -> str:
    return bk.format_table(
        ["backend", "output", "max abs err", "max rel err", "status"],
        [
            [
                b,
                r["output"],
                _fmt(r["max_abs"]),
                _fmt(r["max_rel"]),
                ("PASSED" if r["passed"] else "FAILED")
                + (f" ({r['note']})" if r.get("note") else ""),
            ]
            for b, r in rows
        ],
    )


# ------------------------------------------------------------------------------ inspect
@cli.command(
    context_settings=_CONTEXT, short_help="List spattn nodes: pattern, density; plot a mask."
)
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "-L",
    "--length",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Sequence length (Lq = Lk) for densities and the plot.",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    help="Write a PNG of one node's token mask (L <= 1024) or block layout.",
)
@click.option(
    "--node",
    "node_sel",
    default="0",
    show_default=True,
    help="Node to plot: its name or its index among the spattn nodes.",
)
@common_options
@click.pass_context
def inspect(
    ctx: click.Context,
    model: str,
    length: int,
    plot_path: str | None,
    node_sel: str,
    quiet: bool,
    as_json: bool,
    debug: bool,
) -> None:
    """List the spattn::SparseAttention nodes of an ONNX model: pattern and density.

    Attributes are checked against the op spec; an invalid one is reported with the node's
    name. With --plot, the chosen node's token mask (or block layout for L > 1024) is written
    to a PNG.

    \b
    Example:
      spattn inspect encoder.onnx --length 4096
      spattn inspect encoder.onnx --length 512 --plot mask.png --node 1
    """
    con = _console(ctx, quiet, as_json, debug)
    proto = bk.load_onnx(model)
    nodes = bk.spattn_node_info(proto, length=length, path=model)
    checker = "passed"
    try:
        from .export import check_model

        with _library_noise(con.debug):
            check_model(proto)
    except Exception as e:  # onnx raises ValidationError / InferenceError
        checker = "failed: " + " ".join(str(e).split())[:300]
        con.warn(f"the ONNX checker reports: {checker}")
    specs, outs = bk.input_specs(proto), bk.output_specs(proto)
    data: dict[str, Any] = {
        "model": model,
        "length": length,
        "checker": checker,
        "inputs": [{"name": s.name, "dtype": s.dtype_name, "shape": s.dims} for s in specs],
        "outputs": [{"name": s.name, "dtype": s.dtype_name, "shape": s.dims} for s in outs],
        "nodes": [
            {
                k: n[k]
                for k in (
                    "index",
                    "name",
                    "pattern",
                    "attributes",
                    "density",
                    "key_lengths",
                    "block_indices",
                    "inputs",
                    "outputs",
                )
            }
            for n in nodes
        ],
    }
    lines = [f"{model}: {len(nodes)} spattn::SparseAttention node(s); ONNX checker {checker}"]
    lines += [f"  input  {s.name}: {s.dtype_name} {s.shape_text()}" for s in specs]
    lines += [f"  output {s.name}: {s.dtype_name} {s.shape_text()}" for s in outs]
    lines.append(
        bk.format_table(
            ["#", "node", "pattern", f"density (L={length})", "key_lengths", "block_indices"],
            [
                [
                    n["index"],
                    n["name"],
                    n["pattern"],
                    _fmt(n["density"], ".2%")
                    + (f" ({n['density_note']})" if n.get("density_note") else ""),
                    "yes" if n["key_lengths"] else "no",
                    n["block_indices"] or "no",
                ]
                for n in nodes
            ],
        )
    )
    if plot_path:
        chosen = _select_node(nodes, node_sel)
        from .patterns import Pattern

        layout = None
        bi = chosen["inputs"][4] if len(chosen["inputs"]) > 4 else ""
        if bi:
            layout = bk._constant_tensor(proto, bi)
        if chosen.get("density_note") and layout is not None:
            fits = layout.shape[1] * chosen["attributes"].get("block_size", 64)
            raise UserError(
                f"node {chosen['name']!r}: {chosen['density_note']}; plot it with --length {fits}"
            )
        pattern = Pattern.from_attributes(chosen["attributes"], block_indices=layout)
        with con.bar(total=1, desc="plot", unit="png") as bar:
            Path(plot_path).parent.mkdir(parents=True, exist_ok=True)
            pattern.plot(length, plot_path)
            bar.update()
        if bi and layout is None:
            con.warn(
                f"node {chosen['name']!r}: block_indices is computed at run time; the plot "
                "shows the attributes' components only"
            )
        data["plot"] = {"path": plot_path, "node": chosen["name"]}
        lines.append(f"plot of node {chosen['name']!r} at L={length}: {plot_path}")
    con.result(data, "\n".join(lines))


def _select_node(nodes: list[dict[str, Any]], sel: str) -> dict[str, Any]:
    for n in nodes:
        if n["name"] == sel:
            return n
    if sel.lstrip("-").isdigit() and -len(nodes) <= int(sel) < len(nodes):
        return nodes[int(sel)]
    raise click.BadParameter(
        f"{sel!r} is neither a node name nor an index 0..{len(nodes) - 1}; "
        f"nodes: {', '.join(n['name'] for n in nodes)}",
        param_hint="--node",
    )


# ------------------------------------------------------------------------------ shared inputs
def _input_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--seed", type=int, default=0, show_default=True, help="Seed of generated inputs."
    )(fn)
    fn = click.option(
        "--shape",
        "shape_items",
        multiple=True,
        metavar="NAME=D0,D1,...",
        help="Shape of one generated input (repeatable).",
    )(fn)
    fn = click.option(
        "--seq-len",
        type=click.IntRange(min=1),
        default=128,
        show_default=True,
        help="Value of dynamic sequence axes of generated inputs.",
    )(fn)
    fn = click.option(
        "--batch",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        help="Value of dynamic batch axes (axis 0) of generated inputs.",
    )(fn)
    fn = click.option(
        "-i",
        "--inputs",
        "inputs_path",
        type=click.Path(dir_okay=False),
        help=".npz with one array per model input (else inputs are generated).",
    )(fn)
    return fn


def _feeds(
    specs: Sequence[bk.TensorSpec],
    inputs_path: str | None,
    batch: int,
    seq_len: int,
    shape_items: Sequence[str],
    seed: int,
) -> dict[str, np.ndarray]:
    shapes = _shapes(shape_items)
    _check_shape_names(shapes, specs, "--shape")
    if inputs_path:
        return bk.load_feeds(inputs_path, specs)
    return bk.make_feeds(specs, batch, seq_len, shapes, seed)


def _describe_feeds(feeds: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items())


# ------------------------------------------------------------------------------ run
@cli.command(
    context_settings=_CONTEXT,
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
@_input_options
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Where to save the outputs.  [default: MODEL with .outputs.npz]",
)
@click.option(
    "--save-inputs",
    type=click.Path(dir_okay=False),
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
    con = _console(ctx, quiet, as_json, debug)
    is_engine = Path(model).suffix in (".plan", ".engine", ".trt")
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
            specs = [bk.TensorSpec(k, _onnx_type(z[k].dtype), list(z[k].shape)) for k in z.files]
    else:
        proto = bk.load_onnx(model)
        bk.spattn_node_info(proto, path=model)
        specs = bk.input_specs(proto)
    if backend != "tensorrt":
        ok, reason = bk.backend_status(backend)
        if not ok:
            raise UserError(reason)
    feeds = _feeds(specs, inputs_path, batch, seq_len, shape_items, seed)
    if save_inputs:
        np.savez(save_inputs, **feeds)

    if backend == "tensorrt":
        bk.tensorrt_module()  # one clear line when TensorRT is missing
        if engine is None:
            raise click.BadParameter(
                "--backend tensorrt needs --engine ENGINE.plan (build it "
                "with `spattn build MODEL.onnx -o ENGINE.plan`)",
                param_hint="--engine",
            )

        def call() -> dict[str, np.ndarray]:
            return bk.run_tensorrt(engine, specs, feeds)
    else:
        with con.bar(total=1, desc="create session", unit="session") as bar:
            runner = bk.OrtRunner(model, specs, "cuda" if backend == "ort-cuda" else "cpu", threads)
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
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    np.savez(output, **outs)
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
    }
    lines = [
        f"{model} on {backend}; inputs: {_describe_feeds(feeds)}",
        bk.format_table(
            ["output", "shape", "dtype", "finite", "mean |x|"],
            [
                [o["name"], o["shape"], o["dtype"], o["finite"], _fmt(o["mean_abs"])]
                for o in out_info
            ],
        ),
        f"time per run: median {timing['median_ms']:.3f} ms, mean {timing['mean_ms']:.3f}, "
        f"min {timing['min_ms']:.3f}, p90 {timing['p90_ms']:.3f} ({repeat} runs after "
        f"{warmup} warm-up)",
        f"outputs saved to {output}",
    ]
    if backend == "tensorrt":
        lines.append("note: TensorRT times are of spattn.trt.run_engine calls (transfers included)")
    con.result(data, "\n".join(lines))
    if not all(o["finite"] for o in out_info):
        _fail(ctx, "an output has NaN or infinite values")


def _onnx_type(dtype: np.dtype) -> int:
    inv = {"float32": 1, "float16": 10, "float64": 11, "int32": 6, "int64": 7, "bool": 9}
    return inv.get(np.dtype(dtype).name, 1)


# ------------------------------------------------------------------------------ build
def _range(text: str, hint: str) -> tuple[int, int, int]:
    try:
        parts = [int(x) for x in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3 or not (1 <= parts[0] <= parts[1] <= parts[2]):
        raise click.BadParameter(
            f"{text!r}: expected MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX", param_hint=hint
        )
    return parts[0], parts[1], parts[2]


def profile_shapes(
    specs: Sequence[bk.TensorSpec],
    batch: tuple[int, int, int],
    seq: tuple[int, int, int],
    explicit: Sequence[dict[str, tuple[int, ...]]],
) -> list[dict[str, tuple[int, ...]]]:
    """min/opt/max shapes of every input: explicit ones, else dynamic axes from the ranges."""
    out = []
    for k in range(3):
        shapes = bk._resolve_dims(specs, batch[k], seq[k], explicit[k])
        out.append({n: tuple(int(d) for d in s) for n, s in shapes.items()})
    return out


@cli.command(
    context_settings=_CONTEXT, short_help="Build a TensorRT engine with the spattn plugin."
)
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
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
    con = _console(ctx, quiet, as_json, debug)
    if (fp16 or bf16) and strongly_typed:
        raise click.BadParameter(
            "--fp16/--bf16 apply to weakly typed networks; add "
            "--weakly-typed (or export the model in that dtype)",
            param_hint="--fp16/--bf16",
        )
    b, s = _range(batch_range, "--batch"), _range(seq_range, "--seq-len")
    explicit = [
        _shapes(x, h)
        for x, h in (
            (min_shapes, "--min-shapes"),
            (opt_shapes, "--opt-shapes"),
            (max_shapes, "--max-shapes"),
        )
    ]
    proto = bk.load_onnx(model)
    nodes = bk.spattn_node_info(proto, path=model)
    specs = bk.input_specs(proto)
    for e, h in zip(explicit, ("--min-shapes", "--opt-shapes", "--max-shapes"), strict=True):
        _check_shape_names(e, specs, h)
    mins, opts, maxs = profile_shapes(specs, b, s, explicit)
    for shapes in (mins, opts, maxs):
        bk.check_feeds(specs, {}, shapes=shapes, source="the profile")
    trt = bk.tensorrt_module()
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


# ------------------------------------------------------------------------------ verify
@cli.command(
    context_settings=_CONTEXT, short_help="Compare PyTorch, ORT CPU, ORT CUDA and TensorRT outputs."
)
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "--factory", help="Model factory or sample that made MODEL (adds PyTorch as the reference)."
)
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Keyword argument for the factory (repeatable).",
)
@_input_options
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
@click.option("--atol", type=float, help="Absolute tolerance.  [default: per dtype, op spec]")
@click.option("--rtol", type=float, help="Relative tolerance.  [default: per dtype, op spec]")
@click.option("--threads", type=click.IntRange(min=1), help="ONNX Runtime intra-op threads.")
@common_options
@click.pass_context
def verify(
    ctx: click.Context,
    model: str,
    factory: str | None,
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

    \b
    Example:
      spattn verify encoder.onnx --factory longformer_encoder
      spattn verify encoder.onnx --backends ort-cpu,ort-cuda --inputs in.npz
    """
    con = _console(ctx, quiet, as_json, debug)
    from . import tolerances

    kwargs = _params(params)
    if backend_list:
        wanted = [x.strip() for x in backend_list.split(",") if x.strip()]
        bad = [x for x in wanted if x not in bk.BACKENDS]
        if bad or not wanted:
            raise click.BadParameter(
                f"{backend_list!r}: choose from {','.join(bk.BACKENDS)}", param_hint="--backends"
            )
        if "pytorch" in wanted and not factory:
            raise click.BadParameter(
                "pytorch needs the model's factory: add --factory", param_hint="--backends"
            )
    else:
        wanted = [b for b in bk.BACKENDS if b != "pytorch" or factory]
    explicit = bool(backend_list)

    proto = bk.load_onnx(model)
    bk.spattn_node_info(proto, path=model)
    specs, outs = bk.input_specs(proto), bk.output_specs(proto)
    dtype = bk.model_float_dtype(proto)
    d_atol, d_rtol = tolerances.tolerance(dtype)
    atol = d_atol if atol is None else atol
    rtol = d_rtol if rtol is None else rtol

    usable: list[str] = []
    skipped: dict[str, str] = {}
    for b in wanted:
        ok, reason = bk.backend_status(b)
        if ok:
            usable.append(b)
        elif explicit:
            raise UserError(f"backend {b} is not usable here: {reason}")
        else:
            skipped[b] = reason

    torch_model, example = None, None
    if "pytorch" in usable:
        with _library_noise(con.debug):
            torch_model, example = _factory(factory, kwargs, con)
    generated = (
        shape_items
        or ctx.get_parameter_source("seq_len").name != "DEFAULT"
        or ctx.get_parameter_source("batch").name != "DEFAULT"
    )
    if example is not None and not inputs_path and not generated:
        feeds = bk.feeds_from_tensors(specs, example)
    else:
        feeds = _feeds(specs, inputs_path, batch, seq_len, shape_items, seed)
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
                with _library_noise(con.debug):
                    results[b] = bk.run_torch(
                        torch_model, specs, feeds, [o.name for o in outs], dtype
                    )
            elif b == "tensorrt" and engine is None:
                results[b] = _verify_trt_temp(model, specs, feeds, con)
            else:
                results[b] = bk.run_backend(b, model, specs, feeds, engine=engine, threads=threads)
            bar.update()
    ref_name = usable[0]
    ref = results[ref_name]
    rows: list[tuple[str, dict[str, Any]]] = []
    for b in usable[1:]:
        rows += [(b, r) for r in bk.compare_outputs(ref, results[b], atol, rtol)]
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
        "passed": passed,
    }
    lines = [
        f"{model} ({dtype}); inputs: {_describe_feeds(feeds)}",
        f"reference: {ref_name}; tolerance |err| <= {atol:g} + {rtol:g} * |ref|",
        _error_table(rows),
    ]
    lines += [f"skipped {b}: {why}" for b, why in skipped.items()]
    lines.append("PASSED" if passed else "FAILED")
    con.result(data, "\n".join(lines))
    if not passed:
        ctx.exit(1)


def _verify_trt_temp(
    model: str, specs: Sequence[bk.TensorSpec], feeds: dict[str, np.ndarray], con: Console
) -> dict[str, np.ndarray]:
    """Build a throw-away engine for exactly these input shapes and run it."""
    import tempfile

    trt = bk.tensorrt_module()
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
        return bk.run_tensorrt(plan, specs, feeds)


# ------------------------------------------------------------------------------ bench
@cli.command(
    context_settings=_CONTEXT,
    short_help="Time and memory of our op vs dense attention over lengths.",
)
@click.option(
    "-L",
    "--lengths",
    default="256,512,1024,2048",
    show_default=True,
    help="Comma-separated sequence lengths.",
)
@click.option("--heads", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--kv-heads", type=click.IntRange(min=1), help="Key/value heads (GQA); [default: --heads]"
)
@click.option("--head-dim", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "-a",
    "--attr",
    "attrs",
    multiple=True,
    metavar="NAME=VALUE",
    help="Pattern attribute of the op (repeatable).  [default: window_left=256 "
    "window_right=256 num_global=64]",
)
@click.option(
    "--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="cuda adds the CUDA EP and torch FlexAttention.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="ONNX Runtime intra-op threads (CPU).",
)
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--repeat", type=click.IntRange(min=1), default=5, show_default=True)
@click.option(
    "--dense-max",
    type=click.IntRange(min=1),
    default=8192,
    show_default=True,
    help="Longest length at which dense attention runs (it needs O(L^2) memory).",
)
@click.option(
    "--memory/--no-memory",
    default=True,
    show_default=True,
    help="Measure peak memory (one child process per point).",
)
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="bench",
    show_default=True,
    help="Folder for bench.json and bench.png.",
)
@common_options
@click.pass_context
def bench(
    ctx: click.Context,
    lengths: str,
    heads: int,
    kv_heads: int | None,
    head_dim: int,
    batch: int,
    attrs: tuple[str, ...],
    dtype: str,
    device: str,
    threads: int,
    warmup: int,
    repeat: int,
    dense_max: int,
    memory: bool,
    out_dir: str,
    quiet: bool,
    as_json: bool,
    debug: bool,
) -> None:
    """Time and memory of our op against dense attention over sequence lengths.

    On CPU: spattn::SparseAttention through ONNX Runtime against ONNX Runtime's own dense
    com.microsoft::MultiHeadAttention, same threads. On a GPU (--device cuda, or auto when the
    CUDA EP and the CUDA build are usable): also both on the CUDA EP, and torch FlexAttention
    with the same mask. Writes a table, bench.json and bench.png (time and memory against L).

    \b
    Example:
      spattn bench -L 1024,4096,16384 --threads 8
      spattn bench -L 4096,16384,65536 -a window_left=1023 -a causal=1 --device cuda --dtype float16
    """
    con = _console(ctx, quiet, as_json, debug)
    from . import bench as _bench

    try:
        ls = sorted({int(x) for x in lengths.split(",") if x.strip()})
    except ValueError:
        ls = []
    if not ls or ls[0] < 1:
        raise click.BadParameter(
            f"{lengths!r}: expected comma-separated lengths >= 1", param_hint="--lengths"
        )
    try:
        attributes = _bench.parse_attributes(attrs) if attrs else dict(_bench.DEFAULT_PATTERN)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--attr") from None
    kv = kv_heads or heads
    if heads % kv:
        raise click.BadParameter(
            f"--heads {heads} is not a multiple of --kv-heads {kv}", param_hint="--kv-heads"
        )
    cfg = _bench.BenchConfig(
        lengths=ls,
        heads=heads,
        kv_heads=kv,
        head_dim=head_dim,
        batch=batch,
        attributes=attributes,
        dtype=dtype,
        threads=threads,
        warmup=warmup,
        repeat=repeat,
        dense_max=dense_max,
        memory=memory,
    )
    result = _bench.run_benchmark(cfg, device=device, bar=con.bar, warn=con.warn)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / "bench.json", out / "bench.png"
    json_path.write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    _bench.plot(result, str(png_path))
    result["files"] = {"json": str(json_path), "plot": str(png_path)}
    text = _bench.table(result) + f"\nwrote {json_path} and {png_path}"
    con.result(result, text)


# ------------------------------------------------------------------------------ doctor
@cli.command(
    context_settings=_CONTEXT,
    short_help="Versions, libraries, usable backends, how to get the rest.",
)
@click.option(
    "--require",
    "required",
    multiple=True,
    type=click.Choice(list(bk.BACKENDS)),
    help="Exit with status 1 unless this backend is usable (repeatable).",
)
@common_options
@click.pass_context
def doctor(
    ctx: click.Context, required: tuple[str, ...], quiet: bool, as_json: bool, debug: bool
) -> None:
    """Versions, library locations and the backends usable here, with how to get the others.

    \b
    Example:
      spattn doctor
      spattn doctor --json --require ort-cpu
    """
    con = _console(ctx, quiet, as_json, debug)
    from . import doctor as _doctor

    report = _doctor.collect()
    con.result(report, _doctor.render(report))
    missing = [b for b in required if not report["backends"][b]["usable"]]
    if missing:
        _fail(ctx, "; ".join(f"{b} is not usable: {report['backends'][b]['how']}" for b in missing))


# ------------------------------------------------------------------------------ triton-repo
@cli.command(
    "triton-repo",
    context_settings=_CONTEXT,
    short_help="Write a Triton model repository (ONNX Runtime, TensorRT).",
)
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--out",
    "repo",
    type=click.Path(file_okay=False),
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
    type=click.Choice(["gpu", "cpu"]),
    default="gpu",
    show_default=True,
    help="Instance kind (onnxruntime model; the tensorrt model is always GPU).",
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
    kind: str,
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
    con = _console(ctx, quiet, as_json, debug)
    from . import triton

    proto = bk.load_onnx(model)
    bk.spattn_node_info(proto, path=model)
    name = name or Path(model).stem
    if not triton.valid_model_name(name):
        raise click.BadParameter(
            f"{name!r}: use letters, digits, '_', '-' and '.'", param_hint="--name"
        )
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


# ------------------------------------------------------------------------------ serve
@cli.command(
    "serve",
    context_settings=_CONTEXT,
    short_help="Run a Triton Inference Server on a model repository.",
)
@click.argument("repo", type=click.Path(file_okay=False))
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address the HTTP, gRPC and metrics endpoints bind to (0.0.0.0: every interface).",
)
@click.option("--http-port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=8001, show_default=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=8002, show_default=True)
@click.option(
    "--model-control-mode",
    type=click.Choice(["none", "explicit", "poll"]),
    default="none",
    show_default=True,
    help="none: load every model at start; explicit: load --load-model ones (default all) and "
    "take load/unload requests; poll: follow the repository's changes.",
)
@click.option("--load-model", multiple=True, help="Model to load at start (explicit mode).")
@click.option(
    "--server",
    "binary",
    type=click.Path(dir_okay=False),
    help="tritonserver binary.  [default: nvidia-pytriton's, else tritonserver on PATH]",
)
@click.option(
    "--ready-timeout",
    type=click.FloatRange(min=1),
    default=120.0,
    show_default=True,
    help="Seconds to wait for /v2/health/ready.",
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False),
    help="Write the server's log there.  [default: stderr]",
)
@click.option("--log-verbose", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--print-command",
    is_flag=True,
    help="Print the server command and its environment, and exit without starting it.",
)
@click.option(
    "--server-arg",
    "server_args",
    multiple=True,
    help="Extra tritonserver argument (repeatable), e.g. --server-arg=--allow-metrics=false.",
)
@common_options
@click.pass_context
def serve_cmd(
    ctx: click.Context,
    repo: str,
    host: str,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    model_control_mode: str,
    load_model: tuple[str, ...],
    binary: str | None,
    ready_timeout: float,
    log_file: str | None,
    log_verbose: int,
    print_command: bool,
    server_args: tuple[str, ...],
    quiet: bool,
    as_json: bool,
    debug: bool,
) -> None:
    """Run Triton Inference Server on REPO until Ctrl-C (or SIGTERM).

    The server is nvidia-pytriton's tritonserver (pip install 'spattn[serve]'; the python
    backend) or a tritonserver on PATH (NVIDIA's container; every backend). It binds to
    127.0.0.1 unless --host says otherwise; the endpoints are printed once it is ready.
    Ctrl-C stops it cleanly: the signal is forwarded, the server and its stubs are reaped.

    \b
    Example:
      spattn export longformer_encoder -o enc.onnx
      spattn triton-repo enc.onnx -o repo --backend python --kind cpu
      spattn serve repo
    """
    import signal as _signal

    from . import serve

    con = _console(ctx, quiet, as_json, debug)
    if load_model and model_control_mode != "explicit":
        raise click.BadParameter(
            "--load-model needs --model-control-mode explicit", param_hint="--load-model"
        )
    if print_command:
        install = serve.find_server(binary)
        if install is None:
            raise UserError(f"no Triton Inference Server found: {serve.INSTALL_HINT}")
        backend_dir = serve.backend_directory(install)
        cmd = serve.server_command(
            install,
            repo,
            host,
            http_port,
            grpc_port,
            metrics_port,
            model_control_mode,
            load_model,
            log_verbose=log_verbose,
            extra_args=server_args,
            backend_dir=backend_dir,
        )
        env = serve.server_environment(install, backend_dir)
        keys = ("PATH", "LD_LIBRARY_PATH")
        plan = {"command": cmd, "env": {k: env[k] for k in keys}, "server": install.source}
        text = " ".join(f"{k}={env[k]}" for k in keys) + " " + " ".join(cmd)
        con.result(plan, text)
        return
    if host not in ("127.0.0.1", "localhost", "::1"):
        con.warn(f"the endpoints are reachable from other machines through {host}")
    # SIGTERM while waiting for readiness stops the server like Ctrl-C.
    old_term = _signal.signal(_signal.SIGTERM, _signal.default_int_handler)
    try:
        con.info(f"starting tritonserver on {repo}")
        server = serve.start(
            repo,
            host=host,
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            model_control=model_control_mode,
            load_models=load_model,
            binary=binary,
            log=log_file,
            ready_timeout_s=ready_timeout,
            log_verbose=log_verbose,
            extra_args=server_args,
        )
    except KeyboardInterrupt:
        _fail(ctx, "interrupted before the server was ready (stopped)", code=130)
        return
    finally:
        _signal.signal(_signal.SIGTERM, old_term)
    data: dict[str, Any] = {
        "endpoints": server.endpoints,
        "pid": server.pid,
        "repository": str(Path(repo).resolve()),
        "command": server.command,
    }
    text = "\n".join(
        [
            f"tritonserver ready (pid {server.pid}), repository {data['repository']}",
            f"  HTTP     {server.endpoints['http']}",
            f"  gRPC     {server.endpoints['grpc']}",
            f"  metrics  {server.endpoints['metrics']}",
            "Ctrl-C stops it.",
        ]
    )
    con.result(data, text)
    sys.stdout.flush()
    status, sig = serve.serve_forever(server)
    if sig is None:
        _fail(ctx, f"tritonserver exited with status {status}")
    con.info(f"tritonserver stopped (status {status})")


if __name__ == "__main__":  # pragma: no cover
    main()
