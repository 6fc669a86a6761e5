"""``spattn bench``: time and memory of the op against dense attention over lengths."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import UserError
from ._common import (
    CONTEXT,
    MAX_LENGTH,
    OutputPath,
    common_options,
    console,
    json_default,
    write_file,
)


@click.command(
    context_settings=CONTEXT,
    short_help="Time and memory of our op vs dense attention over lengths.",
)
@click.option(
    "-L",
    "--lengths",
    default="256,512,1024,2048",
    show_default=True,
    help="Comma-separated sequence lengths.",
)
@click.option("--heads", type=click.IntRange(1, 65536), default=8, show_default=True)
@click.option(
    "--kv-heads", type=click.IntRange(min=1), help="Key/value heads (GQA); [default: --heads]"
)
@click.option("--head-dim", type=click.IntRange(1, 65536), default=64, show_default=True)
@click.option("--batch", type=click.IntRange(1, MAX_LENGTH), default=1, show_default=True)
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
    type=OutputPath(directory=True),
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
    con = console(ctx, quiet, as_json, debug)
    from .. import bench as _bench

    try:
        ls = sorted({int(x) for x in lengths.split(",") if x.strip()})
    except ValueError:
        ls = []
    if not ls or ls[0] < 1 or ls[-1] > MAX_LENGTH:
        raise click.BadParameter(
            f"{lengths!r}: expected comma-separated lengths in 1 ... 2^30", param_hint="--lengths"
        )
    try:
        attributes = _bench.parse_attributes(attrs) if attrs else dict(_bench.DEFAULT_PATTERN)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--attr") from None
    cores = _cores()
    if threads > cores:
        con.warn(
            f"--threads {threads} is more than the {cores} CPU core(s) this process may use: "
            f"threads share cores and the CPU timings understate both ops; use --threads {cores}"
        )
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
    json_path, png_path = out / "bench.json", out / "bench.png"
    write_file(
        str(json_path), json.dumps(result, indent=2, default=json_default) + "\n", "-o/--out"
    )
    try:
        _bench.plot(result, str(png_path))
    except OSError as e:
        raise UserError(f"-o/--out: cannot write {png_path}: {e.strerror or e}") from None
    result["files"] = {"json": str(json_path), "plot": str(png_path)}
    text = _bench.table(result) + f"\nwrote {json_path} and {png_path}"
    con.result(result, text)


def _cores() -> int:
    """CPU cores this process may run on (its affinity, else the machine's count)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
