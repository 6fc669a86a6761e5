"""``spattn doctor``: versions, libraries, usable backends and how to get the others."""

from __future__ import annotations

import click

from .. import runners
from ._common import CONTEXT, common_options, console


@click.command(
    context_settings=CONTEXT,
    short_help="Versions, libraries, usable backends, how to get the rest.",
)
@click.option(
    "--require",
    "required",
    multiple=True,
    type=click.Choice(list(runners.BACKENDS)),
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
    con = console(ctx, quiet, as_json, debug)
    from .. import doctor as _doctor

    report = _doctor.collect()
    missing = [b for b in required if not report["backends"][b]["usable"]]
    error = "; ".join(f"{b} is not usable: {report['backends'][b]['how']}" for b in missing)
    if missing:  # one JSON object either way: the report, marked failed
        report = {**report, "ok": False, "error": error}
    con.result(report, _doctor.render(report))
    if missing:
        click.echo(f"error: {error}", err=True)
        ctx.exit(1)
