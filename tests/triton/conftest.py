"""A real Triton Inference Server (nvidia-pytriton's tritonserver, python backend, CPU) on
exported samples: one per session, loopback only, free ports, model control explicit, every
wait bounded, and its whole process group killed at the end whatever happens."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from triton_helpers import (
    DECODER,
    ENCODER,
    READY_TIMEOUT_S,
    cli_run,
    free_ports,
    group_alive,
    require_server,
)

from spattn import serve
from spattn.runtime import ort_session


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    """The two samples exported by `spattn export` (dynamic batch and sequence axes)."""
    require_server()
    d = tmp_path_factory.mktemp("triton_models")
    out = {"enc": d / "enc.onnx", "dec": d / "dec.onnx"}
    cli_run("export", "longformer_encoder", "-o", out["enc"], *ENCODER, "--no-validate", "-q")
    cli_run("export", "gqa_decoder_block", "-o", out["dec"], *DECODER, "--no-validate", "-q")
    return out


@pytest.fixture(scope="session")
def repo(models, tmp_path_factory) -> Path:
    """Both samples as python-backend models: 2 CPU instances each, and a queue delay long
    enough that concurrent requests get batched."""
    root = tmp_path_factory.mktemp("triton_repo") / "repo"
    for name, path in models.items():
        cli_run(
            "triton-repo", path, "-o", root, "--name", name, "--backend", "python",
            "--kind", "cpu", "--instances", "2", "--threads", "1", "--max-batch-size", "8",
            "--max-queue-delay-us", "20000", "-q",
        )  # fmt: skip
    return root


@pytest.fixture(scope="session")
def server(repo, tmp_path_factory):
    """The running server; stopped at the end, and nothing of its process group left."""
    http, grpc, metrics = free_ports(3)
    log = tmp_path_factory.mktemp("triton_log") / "server.log"
    srv = serve.start(
        repo,
        http_port=http,
        grpc_port=grpc,
        metrics_port=metrics,
        model_control="explicit",
        load_models=["enc", "dec"],
        log=str(log),
        ready_timeout_s=READY_TIMEOUT_S,
    )
    try:
        yield srv
    finally:
        srv.stop(grace_s=15)
        alive = group_alive(srv.pid)
        if alive:  # pragma: no cover - stop() kills the group; make sure, then fail
            os.killpg(srv.pid, signal.SIGKILL)
        assert not alive, "processes of the server's group outlived stop()"


@pytest.fixture(scope="session")
def sessions(models):
    """Direct ONNX Runtime sessions with our library (CPU): the expected answers."""
    return {name: ort_session(str(path)) for name, path in models.items()}
