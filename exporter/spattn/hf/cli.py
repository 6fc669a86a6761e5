"""``spattn export MODEL_DIR_OR_ID --task TASK -o OUT_DIR``: the Hugging Face branch of ``export``.

``spattn export`` dispatches here when SOURCE is a folder holding a ``config.json``, a hub id
(``org/name`` with no ``:``) or when ``--task`` is given; python factories keep their path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

__all__ = ["is_hf_source", "run_export_hf", "TASK_CHOICES"]

TASK_CHOICES = (
    "feature-extraction",
    "fill-mask",
    "text-classification",
    "text-generation",
    "text-generation-with-past",
)


def is_hf_source(source: str) -> bool:
    """A ``save_pretrained`` folder, or a hub id ``org/name`` (never a ``module:function``)."""
    if os.path.isdir(source):
        return os.path.isfile(os.path.join(source, "config.json"))
    if ":" in source or source.endswith(".py") or os.path.exists(source):
        return False
    parts = source.split("/")
    return len(parts) == 2 and all(parts)


def run_export_hf(
    ctx: click.Context,
    con: Any,
    source: str,
    task: str | None,
    output: str | None,
    dtype: str,
    opset: int,
    validate: bool,
    atol: float | None,
    rtol: float | None,
    threads: int | None,
    report_path: str | None,
) -> None:
    """Run :func:`spattn.export_hf` for the CLI; exit status 1 when validation fails."""
    import json

    from ..errors import UserError

    if os.path.isdir(source) and not os.path.isfile(os.path.join(source, "config.json")):
        raise UserError(f"{source}: a Hugging Face model folder needs a config.json")
    if task is None:
        raise UserError(
            f"{source}: a Hugging Face model needs --task, one of {', '.join(TASK_CHOICES)}"
        )
    out_dir = output or (Path(source.rstrip("/")).name + "_onnx")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"-o {out_dir}: a Hugging Face export writes a folder, got a file")
    from .export import export_hf

    try:
        with con.bar(total=1, desc="export", unit="model") as bar:
            bar.set_postfix_str(
                "torch.onnx.export + validation" if validate else "torch.onnx.export"
            )
            rep = export_hf(
                source,
                task=task,
                output_dir=out_dir,
                dtype=dtype,
                validate=validate,
                opset=opset,
                atol=atol,
                rtol=rtol,
                intra_op_threads=threads,
            )
            bar.update()
    except (ValueError, NotImplementedError, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        hint = ""
        if isinstance(e, OSError) and not os.path.isdir(source):
            # a hub id that could not be resolved: offline, a typo, or a gated/private model
            hint = (
                "; a hub id needs the Hugging Face hub (or the model already in its cache, "
                "HF_HUB_CACHE); otherwise pass a folder written by save_pretrained"
            )
        raise UserError(f"exporting {source} failed: {first}{hint}") from e
    data = dict(rep.__dict__)
    data["ok"] = rep.passed is not False
    report_path = report_path or os.path.join(out_dir, "export_report.json")
    Path(report_path).write_text(json.dumps(data, indent=2) + "\n")
    con.result(data, rep.summary() + f"\nreport: {report_path}")
    if rep.passed is False:
        ctx.exit(1)
