"""Helpers of the Triton tests (not a conftest.py: other test folders have their own)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner

from spattn import serve
from spattn.cli import cli

#: Seconds: server start; one request; a model load.
READY_TIMEOUT_S = 90
REQUEST_TIMEOUT_S = 30

#: Longformer-style encoder (window 8, 2 global tokens): input x [B, L, 32], no key lengths.
ENCODER = ["-p", "d_model=32", "-p", "nhead=2", "-p", "num_layers=1", "-p", "attention_window=8"]
ENCODER += ["-p", "seq_len=32", "-p", "batch=1"]
#: Causal sliding-window GQA block: inputs x [B, L, 32] and key_lengths [B] (int32).
DECODER = ["-p", "d_model=32", "-p", "num_heads=4", "-p", "num_kv_heads=2", "-p", "window=8"]
DECODER += ["-p", "seq_len=24", "-p", "batch=2"]


def cli_run(*args: object, code: int = 0) -> str:
    """Run the CLI in-process, assert its exit status; returns its output."""
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == code, (result.output, result.exception)
    return result.output


def require_server() -> None:
    """Skip where no server is installed; in CI (CI set) a missing server fails."""
    if serve.find_server() is None:
        if os.environ.get("CI"):
            pytest.fail(f"no tritonserver in CI: {serve.INSTALL_HINT}")
        pytest.skip(f"no tritonserver: {serve.INSTALL_HINT}")


def encoder_feeds(rng: np.random.Generator, batch: int, length: int) -> dict[str, np.ndarray]:
    return {"x": rng.standard_normal((batch, length, 32), dtype=np.float32)}


def decoder_feeds(rng: np.random.Generator, batch: int, length: int) -> dict[str, np.ndarray]:
    return {
        "x": rng.standard_normal((batch, length, 32), dtype=np.float32),
        "key_lengths": rng.integers(1, length + 1, size=batch).astype(np.int32),
    }


def wire_shape(name: str, array: np.ndarray) -> list[int]:
    """The shape a client sends: key_lengths is [B, 1] on the wire (dims [1], reshaped to
    [B] for the model by the server)."""
    return [*array.shape, 1] if name == "key_lengths" else list(array.shape)


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(serve.free_port(host))
    return sorted(ports)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
