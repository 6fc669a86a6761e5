"""``spattn inspect``: an ONNX model's spattn nodes, their patterns and densities; a mask plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import UserError
from ..modelio import constant_tensor, input_specs, load_onnx, output_specs
from ..nodes import DENSITY_MAX_WORK, count_work, spattn_node_info
from ..support import gpu_warnings
from ..text import format_table
from ._common import CONTEXT, MAX_LENGTH, OutputPath, common_options, console, fmt, library_noise

# The block-layout image of --plot above L = 1024 has this many blocks a side at most.
PLOT_MAX_BLOCKS = 4096


@click.command(
    context_settings=CONTEXT, short_help="List spattn nodes: pattern, density; plot a mask."
)
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "-L",
    "--length",
    type=click.IntRange(1, MAX_LENGTH),
    default=1024,
    show_default=True,
    help="Sequence length (Lq = Lk) for densities and the plot.",
)
@click.option(
    "--plot",
    "plot_path",
    type=OutputPath(),
    help="Write a PNG of one node's token mask (L <= 1024) or block layout.",
)
@click.option(
    "--node",
    "node_sel",
    default="0",
    show_default=True,
    help="Node to plot: its name or its index among the spattn nodes.",
)
@click.option(
    "--global-tokens",
    default="0",
    show_default=True,
    help="For a node with a global_mask input (per input, e.g. Longformer's "
    "global_attention_mask): the comma-separated positions the plot marks global.",
)
@click.option(
    "--key-length",
    type=click.IntRange(min=0),
    default=None,
    help="For a node with key_lengths: plot keys from this one on as padding.",
)
@common_options
@click.pass_context
def inspect(
    ctx: click.Context,
    model: str,
    length: int,
    plot_path: str | None,
    node_sel: str,
    global_tokens: str,
    key_length: int | None,
    quiet: bool,
    as_json: bool,
    debug: bool,
) -> None:
    """List the spattn::SparseAttention nodes of an ONNX model: pattern and density.

    Attributes are checked against the op spec; an invalid one is reported with the node's
    name. With --plot, the chosen node's token mask (or block layout for L > 1024) is written
    to a PNG: each allowed pair coloured by the component that allows it (legend), the density
    of what is drawn in the title. A node's global_mask and key_lengths are inputs, per input:
    the plot marks --global-tokens as global and, with --key-length, the keys from it on as
    padding.

    \b
    Example:
      spattn inspect encoder.onnx --length 4096
      spattn inspect encoder.onnx --length 512 --plot mask.png --node 1
    """
    con = console(ctx, quiet, as_json, debug)
    proto = load_onnx(model)
    nodes = spattn_node_info(proto, length=length, path=model)
    checker = "passed"
    try:
        from ..export import check_model

        with library_noise(con.debug):
            check_model(proto)
    except Exception as e:  # onnx raises ValidationError / InferenceError
        checker = "failed: " + " ".join(str(e).split())[:300]
        con.warn(f"the ONNX checker reports: {checker}")
    specs, outs = input_specs(proto), output_specs(proto)
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
                    "head_dim",
                    "head_dim_v",
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
        format_table(
            ["#", "node", "pattern", f"density (L={length})", "key_lengths", "block_indices"],
            [
                [
                    n["index"],
                    n["name"],
                    n["pattern"],
                    fmt(n["density"], ".2%")
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
        from ..patterns import Pattern

        layout = None
        bi = chosen["inputs"][4] if len(chosen["inputs"]) > 4 else ""
        if bi:
            layout = constant_tensor(proto, bi)
        bs = chosen["attributes"].get("block_size", 64)
        if layout is not None and layout.shape[1] != -(-length // bs):
            fits = layout.shape[1] * bs
            raise UserError(
                f"node {chosen['name']!r}: {chosen['density_note']}; plot it with --length {fits}"
            )
        pattern = Pattern.from_attributes(chosen["attributes"], block_indices=layout)
        tokens = _global_tokens(global_tokens, length) if chosen["global_mask"] else None
        if key_length is not None and not chosen["key_lengths"]:
            raise click.BadParameter(
                f"node {chosen['name']!r} has no key_lengths input", param_hint="--key-length"
            )
        if key_length is not None and key_length > length:
            raise click.BadParameter(
                f"expected at most --length ({length}), got {key_length}",
                param_hint="--key-length",
            )
        work = count_work(pattern, layout, length)
        if length > 1024 and (work > DENSITY_MAX_WORK or -(-length // bs) > PLOT_MAX_BLOCKS):
            raise click.BadParameter(
                f"{length} is too long to plot node {chosen['name']!r} (about {work:.2g} pairs "
                f"to visit, {-(-length // bs)} blocks a side; at most {DENSITY_MAX_WORK:.2g} "
                f"pairs and {PLOT_MAX_BLOCKS} blocks); give a smaller --length with --plot",
                param_hint="--length",
            )
        with con.bar(total=1, desc="plot", unit="png") as bar:
            try:
                Path(plot_path).parent.mkdir(parents=True, exist_ok=True)
                pattern.plot(length, plot_path, global_tokens=tokens, key_length=key_length)
            except OSError as e:
                raise UserError(f"--plot: cannot write {plot_path}: {e.strerror or e}") from None
            bar.update()
        if bi and layout is None:
            con.warn(
                f"node {chosen['name']!r}: block_indices is computed at run time; the plot "
                "shows the attributes' components only"
            )
        data["plot"] = {"path": plot_path, "node": chosen["name"]}
        lines.append(f"plot of node {chosen['name']!r} at L={length}: {plot_path}")
    for w in gpu_warnings(nodes):
        con.warn(w)
    con.result(data, "\n".join(lines))


def _global_tokens(text: str, length: int) -> list[int]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not all(t.isdigit() and int(t) < length for t in items):
        raise click.BadParameter(
            f"expected comma-separated positions in [0, {length}) (--length), got {text!r}",
            param_hint="--global-tokens",
        )
    return sorted({int(t) for t in items})


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
