"""Helpers shared by the commands: output (text, JSON, progress bars), failure handling,
options shared by several commands and the parsing of their values."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

from ..errors import UserError
from ..factories import factory_parameters, load_factory, parse_params, resolve_factory
from ..feeds import integer_roles, load_feeds, make_feeds, parse_shape_overrides
from ..modelio import TensorSpec
from ..text import format_table

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

#: The largest sequence length an option takes (Lq, Lk <= 2^30, docs/op-spec.md).
MAX_LENGTH = 2**30


class OutputPath(click.Path):
    """A path the command will create: not an existing directory (for a file), and no part of
    its parent is a file. Missing parent directories are created when the command writes."""

    def __init__(self, directory: bool | None = False) -> None:
        # directory None: either (a file, or a folder for a Hugging Face export)
        super().__init__(dir_okay=directory is not False, file_okay=directory is not True)
        self.directory = directory

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        value = super().convert(value, param, ctx)
        p = Path(value)
        if str(value) == "" or (self.directory is False and p.name in ("", ".", "..")):
            self.fail(f"{str(value)!r} is not a file name", param, ctx)
        for parent in p.parents:
            if parent.exists():
                if not parent.is_dir():
                    self.fail(
                        f"{str(value)!r}: {str(parent)!r} is a file, not a directory", param, ctx
                    )
                break
        return value


class Tolerance(click.ParamType):
    """A finite number >= 0."""

    name = "float"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        try:
            x = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not np.isfinite(x) or x < 0:
            self.fail(f"{value!r} is not a finite number >= 0", param, ctx)
        return x


def option_hint(ctx: click.Context | None, name: str, fallback: str) -> str:
    """How the user wrote option ``name`` (its flags, e.g. ``-o/--output``)."""
    if ctx is not None:
        for p in ctx.command.params:
            if p.name == name and isinstance(p, click.Option):
                return "/".join(p.opts)
    return fallback


def write_file(path: str, data: bytes | str, option: str) -> None:
    """Write ``data`` to exactly ``path`` (parents created); every OS error is a UserError
    naming ``option`` (a full disk, /dev/full, a read-only or virtual file system)."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.write(raw)
            f.flush()
    except OSError as e:
        raise UserError(f"{option}: cannot write {path}: {e.strerror or e}") from None


class Console:
    """Where a command writes: text or one JSON object on stdout, notes and bars on stderr."""

    def __init__(self, quiet: bool = False, as_json: bool = False, debug: bool = False) -> None:
        self.quiet, self.json, self.debug = quiet, as_json, debug
        self.warnings: list[str] = []

    def info(self, msg: str) -> None:
        """A progress note (stderr; hidden by --quiet and --json)."""
        if not (self.quiet or self.json):
            click.echo(msg, err=True)

    def warn(self, msg: str) -> None:
        """A warning (stderr; with --json, in the result's "warnings" list instead)."""
        self.warnings.append(msg)
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
            extra = {"warnings": self.warnings} if self.warnings and "warnings" not in data else {}
            click.echo(json.dumps({"ok": True, **data, **extra}, indent=2, default=json_default))
        elif text:
            click.echo(text)


def json_default(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def console(ctx: click.Context, quiet: bool, as_json: bool, debug: bool) -> Console:
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


class Group(click.Group):
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
            fail(ctx, msg)


def fail(ctx: click.Context, msg: str, code: int = 1) -> None:
    obj = ctx.obj or {}
    if obj.get("json"):
        click.echo(json.dumps({"ok": False, "error": msg}))
    click.echo(f"error: {msg}", err=True)
    ctx.exit(code)


@contextlib.contextmanager
def library_noise(debug: bool) -> Iterator[None]:
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


def fmt(x: Any, spec: str = ".3g") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and np.isnan(x):
        return "nan"
    return format(x, spec)


def parse_kwargs(items: Sequence[str]) -> dict[str, Any]:
    try:
        return parse_params(items)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--param") from None


def parse_shapes(items: Sequence[str], hint: str = "--shape") -> dict[str, tuple[int, ...]]:
    try:
        return parse_shape_overrides(items)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=hint) from None


def check_shape_names(shapes: dict[str, Any], specs: Sequence[TensorSpec], hint: str) -> None:
    names = [s.name for s in specs]
    for n in shapes:
        if n not in names:
            raise click.BadParameter(
                f"the model has no input {n!r}; its inputs are {', '.join(map(repr, names))}",
                param_hint=hint,
            )


def build_from_factory(source: str, params: dict[str, Any], con: Console) -> tuple[Any, Any]:
    """Load a factory, turning an unknown sample name and bad params into usage errors."""
    try:
        fn, _ = resolve_factory(source)
    except LookupError as e:
        raise click.BadParameter(str(e.args[0]), param_hint="SOURCE/--factory") from None
    accepted = factory_parameters(fn)
    if accepted is not None:
        for k in params:
            if k not in accepted:
                raise click.BadParameter(
                    f"{k!r}: the factory {source} takes {', '.join(accepted) or 'no parameters'}",
                    param_hint="--param",
                )
    with con.bar(total=1, desc="build model", unit="model") as bar:
        model, inputs = load_factory(source, params)
        bar.update()
    return model, inputs


def input_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--seed",
        type=click.IntRange(0, 2**32 - 1),
        default=0,
        show_default=True,
        help="Seed of generated inputs.",
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
        type=click.IntRange(1, MAX_LENGTH),
        default=128,
        show_default=True,
        help="Value of dynamic sequence axes of generated inputs.",
    )(fn)
    fn = click.option(
        "--batch",
        type=click.IntRange(1, MAX_LENGTH),
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


def get_feeds(
    specs: Sequence[TensorSpec],
    inputs_path: str | None,
    batch: int,
    seq_len: int,
    shape_items: Sequence[str],
    seed: int,
    proto: Any = None,
) -> dict[str, np.ndarray]:
    """The inputs of run/verify: from --inputs, else generated (integer inputs by their role in
    ``proto``). An explicit --batch/--seq-len that no input's dims can take is a usage error."""
    shapes = parse_shapes(shape_items)
    check_shape_names(shapes, specs, "--shape")
    if inputs_path:
        return load_feeds(inputs_path, specs)
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        _check_dynamic(ctx, specs, shapes)
    roles = integer_roles(proto) if proto is not None else None
    return make_feeds(specs, batch, seq_len, shapes, seed, roles=roles)


def _check_dynamic(
    ctx: click.Context, specs: Sequence[TensorSpec], shapes: dict[str, tuple[int, ...]]
) -> None:
    """--batch and --seq-len set dynamic dims only: on a model without any, they are an error
    instead of being ignored."""
    generated = [s for s in specs if s.name not in shapes and s.dims is not None]
    for option, axes in (("batch", [0]), ("seq_len", None)):
        if ctx.get_parameter_source(option) != click.core.ParameterSource.COMMANDLINE:
            continue
        dynamic = any(
            not (isinstance(d, int) and d > 0)
            for s in generated
            for i, d in enumerate(s.dims or [])
            if (i in axes if axes is not None else i > 0)
        )
        if not dynamic:
            flag = "--" + option.replace("_", "-")
            fixed = ", ".join(f"{s.name} {s.shape_text()}" for s in generated) or "none"
            raise click.BadParameter(
                f"has no effect: the model's generated inputs have no dynamic "
                f"{'batch' if option == 'batch' else 'sequence'} axis ({fixed}); export it "
                "with dynamic axes, or leave the option out",
                param_hint=flag,
            )


def describe_feeds(feeds: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items())


def pass_rule(atol: float, rtol: float) -> str:
    """The one pass rule, as export and verify print it above their error tables."""
    return (
        f"pass rule: |got - ref| <= {atol:g} + {rtol:g} * |ref| for every element "
        "(err/allowed <= 1); max rel err is relative to |ref| and large where ref is near 0"
    )


def error_table(rows: Sequence[tuple[str, dict[str, Any]]]) -> str:
    return format_table(
        ["backend", "output", "max abs err", "max rel err", "err/allowed", "status"],
        [
            [
                b,
                r["output"],
                fmt(r["max_abs"]),
                fmt(r["max_rel"]),
                fmt(r.get("max_ratio")),
                ("PASSED" if r["passed"] else "FAILED")
                + (f" ({r['note']})" if r.get("note") else ""),
            ]
            for b, r in rows
        ],
    )


def save_npz(path: str, arrays: Mapping[str, Any], option: str = "--output") -> None:
    """Write arrays as one ``.npz`` archive at exactly ``path`` (no suffix added: numpy would
    append ``.npz`` to a name, and ``/dev/full`` became ``/dev/full.npz``). The archive is built
    in memory and written once, so a write error of any kind is a UserError naming ``option``."""
    import io

    buf = io.BytesIO()
    np.savez(buf, **dict(arrays))
    write_file(path, buf.getvalue(), option)


def report_file(model: str) -> Path:
    """Where `spattn export` writes the report of MODEL by default (MODEL with .report.json)."""
    return Path(str(Path(model).with_suffix("")) + ".report.json")


def export_record(model: str, path: str | None) -> tuple[str, dict[str, Any], str] | None:
    """``(source, params, report file)`` recorded by `spattn export` for MODEL, or None.

    ``path`` names the report; without it, MODEL's default report is read when it exists.
    """
    p = Path(path) if path else report_file(model)
    if not p.is_file():
        if path:
            raise UserError(
                f"{path}: no such file; give the .report.json that `spattn export` wrote"
            )
        return None
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise UserError(
            f"{p}: not a readable JSON report ({e}); remove it or pass --report"
        ) from None
    source, params = data.get("source"), data.get("params")
    if not isinstance(source, str) or not isinstance(params, dict):
        raise UserError(f"{p}: has no source and params; is it a report of `spattn export`?")
    return source, params, str(p)
