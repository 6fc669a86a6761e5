"""`spattn serve` as a user runs it: a subprocess started, ready, stopped by SIGINT/SIGTERM with
nothing left behind; and its errors (no server, a backend the server lacks, a port in use)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from triton_helpers import READY_TIMEOUT_S, cli_run, free_ports, group_alive

from spattn import serve


def read_json(proc: subprocess.Popen, timeout: float) -> dict:
    """The JSON object `spattn serve --json` prints once the server is ready."""
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.rstrip() == "}":
            return json.loads("".join(lines))
    raise AssertionError(f"no JSON from spattn serve: {''.join(lines)!r}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_starts_and_stops_on_signal(repo, tmp_path, signum):
    http, grpc, metrics = free_ports(3)
    cmd = [
        sys.executable, "-m", "spattn.cli", "serve", str(repo), "--json",
        "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
        "--model-control-mode", "explicit", "--load-model", "enc",
        "--log-file", str(tmp_path / "server.log"), "--ready-timeout", str(READY_TIMEOUT_S),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid = None
    try:
        data = read_json(proc, READY_TIMEOUT_S + 30)
        pid = data["pid"]
        assert data["ok"] and data["endpoints"]["http"] == f"http://127.0.0.1:{http}"
        assert data["endpoints"]["grpc"] == f"127.0.0.1:{grpc}"
        with urllib.request.urlopen(
            f"{data['endpoints']['http']}/v2/health/ready", timeout=10
        ) as r:
            assert r.status == 200
        with urllib.request.urlopen(
            f"{data['endpoints']['http']}/v2/models/enc/ready", timeout=10
        ) as r:
            assert r.status == 200
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "error" not in err, err
        assert not group_alive(pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if pid is not None and group_alive(pid):
            os.killpg(pid, signal.SIGKILL)


def test_no_server_installed(repo, monkeypatch):
    monkeypatch.setattr(serve, "_pytriton", lambda: None)
    monkeypatch.setenv("PATH", "/nonexistent")
    out = cli_run("serve", repo, code=1)
    assert "no Triton Inference Server found" in out and "pip install 'nvidia-pytriton" in out
    out = cli_run("doctor", code=0)
    assert "tritonserver not found" in out


def test_doctor_reports_the_server():
    out = cli_run("doctor")
    line = next(t for t in out.splitlines() if t.strip().startswith("tritonserver"))
    assert "nvidia-pytriton 0.7.0" in line and "python" in line
    assert f"stub for Python {sys.version_info[0]}.{sys.version_info[1]}: yes" in line


def test_backend_the_server_lacks(models, tmp_path):
    repo = tmp_path / "repo"
    cli_run("triton-repo", models["enc"], "-o", repo, "--kind", "cpu", "-q")  # onnxruntime
    out = cli_run("serve", repo, code=1)
    assert "needs Triton's onnxruntime backend" in out and "--backend python" in out


def test_bad_repository_and_port_in_use(repo, tmp_path):
    out = cli_run("serve", tmp_path / "none", code=1)
    assert "no such model repository" in out
    (tmp_path / "empty").mkdir()
    assert "no model folder" in cli_run("serve", tmp_path / "empty", code=1)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = cli_run("serve", repo, "--http-port", port, code=1)
    assert f"http port {port} on 127.0.0.1 is in use" in out
    out = cli_run("serve", repo, "--load-model", "enc", code=2)
    assert "--model-control-mode explicit" in out


def test_print_command(repo):
    out = cli_run("serve", repo, "--print-command", "--http-port", "9000")
    assert "--http-address=127.0.0.1" in out and "--http-port=9000" in out
    assert f"--model-repository={repo.resolve()}" in out and "--backend-directory=" in out
