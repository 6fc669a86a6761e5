"""The ``spattn`` command line: export, inspect, run, build, verify, bench, doctor, triton-repo.

Every command validates its input, shows progress bars on long steps (``--quiet`` hides them,
``--json`` prints one JSON object instead of text), saves what it produces, and exits with
status 0 on success, 1 on a failure (a failed validation, a bad file, a missing backend) and 2
on a usage error. Problems are reported as one line saying what is wrong and what to do; a
traceback only with ``--debug``.

One module per command (``spattn/cli/<command>.py``); what several commands share (output,
failure handling, input options) is in ``spattn/cli/_common.py``.

Examples
--------
.. code-block:: bash

    spattn export longformer_encoder -o encoder.onnx
    spattn inspect encoder.onnx --length 4096 --plot mask.png
    spattn run encoder.onnx --seq-len 4096 --repeat 20
    spattn verify encoder.onnx --factory longformer_encoder
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from .. import __version__
from . import bench, build, doctor, export, inspect, run, triton_repo, verify
from ._common import CONTEXT, Group

__all__ = ["cli", "main"]


@click.group(cls=Group, context_settings=CONTEXT)
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


for _command in (
    export.export,
    inspect.inspect,
    run.run,
    build.build,
    verify.verify,
    bench.bench,
    doctor.doctor,
    triton_repo.triton_repo,
):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``spattn`` console script."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="spattn")
