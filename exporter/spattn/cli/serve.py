"""``spattn serve``: a Triton Inference Server on a model repository, until Ctrl-C."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ..errors import UserError
from ._common import CONTEXT, OutputPath, common_options, console, fail


@click.command(
    "serve",
    context_settings=CONTEXT,
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
    type=OutputPath(),
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

    from .. import serve

    con = console(ctx, quiet, as_json, debug)
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
    # Until the signals are forwarded (serve_forever), SIGTERM stops the server like Ctrl-C.
    old_term = _signal.signal(_signal.SIGTERM, _signal.default_int_handler)
    try:
        con.info(f"starting tritonserver on {repo}")
        try:
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
            fail(ctx, "interrupted before the server was ready (stopped)", code=130)
            return
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

        def announce() -> None:  # once SIGINT/SIGTERM are forwarded: then the world may know
            con.result(data, text)
            sys.stdout.flush()

        try:
            status, sig = serve.serve_forever(server, on_ready=announce)
        except KeyboardInterrupt:  # a signal just before the forwarding was in place
            status, sig = server.stop(), int(_signal.SIGINT)
    finally:
        _signal.signal(_signal.SIGTERM, old_term)
    if sig is None:
        fail(ctx, f"tritonserver exited with status {status}")
    con.info(f"tritonserver stopped (status {status})")
