"""Run a Triton Inference Server on a model repository: find it, start it, wait, stop it.

The server comes from the ``nvidia-pytriton`` wheel (``pip install 'spattn[serve]'``), which
carries ``tritonserver`` with its libraries and the python backend, or from a ``tritonserver``
on ``PATH`` (NVIDIA's containers, with every backend). :func:`start` binds it to 127.0.0.1 by
default, waits until ``/v2/health/ready`` answers, and returns a :class:`Server`;
:meth:`Server.stop` asks it to shut down (SIGTERM), then kills what is left of its process
group (the server and its python-backend stubs) after a grace period.

Python-backend models run in Triton's stub process, an embedded interpreter that must be the
same Python version as the packages it imports (numpy, onnxruntime). The wheel carries one stub
per Python version but none in its backend folder, where the python backend looks for it: the
server gets its own backend folder (:func:`backend_directory`, a cache folder holding the wheel's
python backend and the stub built for the running Python), and :func:`server_environment`
gives the stub this interpreter's ``libpython`` and package folders.

Examples
--------
>>> from spattn import serve
>>> with serve.start("model_repository") as server:  # doctest: +SKIP
...     print(server.endpoints["http"])
http://127.0.0.1:8000
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .errors import UserError

STUB_NAME = "triton_python_backend_stub"

__all__ = [
    "INSTALL_HINT",
    "ServerInstall",
    "Server",
    "find_server",
    "python_stub",
    "backend_directory",
    "server_environment",
    "repository_models",
    "server_command",
    "start",
    "free_port",
]

#: What to install when no server is found.
INSTALL_HINT = (
    "pip install 'nvidia-pytriton==0.7.0' (or `pip install spattn[serve]`; Linux x86-64, "
    "glibc >= 2.35), which carries tritonserver with the python backend, or run inside "
    "NVIDIA's tritonserver container (nvcr.io/nvidia/tritonserver), which has every backend"
)


@dataclass
class ServerInstall:
    """A ``tritonserver`` binary and what it needs to start."""

    binary: str
    #: ``"nvidia-pytriton 0.7.0"``, ``"PATH"`` or ``"given"``.
    source: str
    #: ``--backend-directory`` (None: the server's default, /opt/tritonserver/backends).
    backend_dir: str | None = None
    #: Folders prepended to ``LD_LIBRARY_PATH``.
    lib_dirs: list[str] = field(default_factory=list)
    #: ``python_backend_stubs/<major.minor>/`` of the wheel, or None.
    stubs_dir: str | None = None

    def backends(self) -> list[str] | None:
        """Backends found in the backend directory (None when it is the server's default)."""
        d = self.backend_dir or ("/opt/tritonserver/backends" if self.source != "given" else "")
        if not d or not Path(d).is_dir():
            return None
        return sorted(p.name for p in Path(d).iterdir() if p.is_dir())


def _pytriton() -> ServerInstall | None:
    spec = importlib.util.find_spec("pytriton")  # finds the folder without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    from importlib import metadata

    for loc in spec.submodule_search_locations:
        root = Path(loc) / "tritonserver"
        binary = root / "bin" / "tritonserver"
        if binary.is_file():
            try:
                version = metadata.version("nvidia-pytriton")
            except metadata.PackageNotFoundError:
                version = "?"
            libs = Path(loc).parent / "nvidia_pytriton.libs"
            return ServerInstall(
                binary=str(binary),
                source=f"nvidia-pytriton {version}",
                backend_dir=str(root / "backends"),
                lib_dirs=[str(libs)] if libs.is_dir() else [],
                stubs_dir=str(root / "python_backend_stubs"),
            )
    return None


def find_server(binary: str | None = None) -> ServerInstall | None:
    """The server to run: ``binary`` if given, else nvidia-pytriton's, else ``tritonserver`` on
    PATH; None when there is none."""
    if binary is not None:
        if not (Path(binary).is_file() and os.access(binary, os.X_OK)):
            raise UserError(f"{binary}: not an executable tritonserver")
        pyt = _pytriton()
        if pyt is not None and Path(binary).resolve() == Path(pyt.binary).resolve():
            return pyt
        return ServerInstall(binary=str(Path(binary).resolve()), source="given")
    pyt = _pytriton()
    if pyt is not None:
        return pyt
    on_path = shutil.which("tritonserver")
    if on_path:
        return ServerInstall(binary=on_path, source="PATH")
    return None


def python_stub(version: tuple[int, int] | None = None) -> str | None:
    """nvidia-pytriton's python-backend stub built for ``version`` (default: this Python)."""
    install = _pytriton()
    if install is None or install.stubs_dir is None:
        return None
    major, minor = version or sys.version_info[:2]
    stub = Path(install.stubs_dir) / f"{major}.{minor}" / STUB_NAME
    return str(stub) if stub.is_file() else None


def backend_directory(install: ServerInstall) -> str | None:
    """The ``--backend-directory`` for ``install``.

    For nvidia-pytriton: a cache folder (``$XDG_CACHE_HOME/spattn/tritonserver-backends/...``,
    one per wheel and interpreter) holding a copy of the wheel's backends, the stub for this
    Python in ``python/``, and a small virtual environment: ``bin/python3`` (a link to this
    interpreter), ``pyvenv.cfg`` and a ``.pth`` file. The stub's embedded interpreter ignores
    ``PYTHONPATH`` and locates itself by finding ``python3`` on ``PATH``;
    :func:`server_environment` puts ``bin/`` first there, so the stub's ``sys.path`` is this
    Python's standard library and this interpreter's package folders (numpy, onnxruntime),
    listed in the ``.pth`` file.
    Else ``install.backend_dir`` (the server's own stub and Python).

    Raises
    ------
    UserError
        nvidia-pytriton has no stub for this Python version.
    """
    if install.stubs_dir is None or install.backend_dir is None:
        return install.backend_dir
    stub = python_stub()
    if stub is None:
        have = sorted(p.name for p in Path(install.stubs_dir).iterdir() if p.is_dir())
        raise UserError(
            f"{install.source} has no python-backend stub for Python "
            f"{sys.version_info[0]}.{sys.version_info[1]} (it has {', '.join(have)}); run "
            "spattn from one of those Python versions"
        )
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    tag = install.source.replace(" ", "-").replace("/", "_")
    major, minor = sys.version_info[:2]
    key = hashlib.sha1(f"{install.binary}\0{sys.prefix}".encode()).hexdigest()[:10]
    root = base / "spattn" / "tritonserver-backends" / f"{tag}-py{major}.{minor}-{key}"
    for b in Path(install.backend_dir).iterdir():
        if not b.is_dir():
            continue
        for f in b.iterdir():
            dst = root / b.name / f.name
            if f.is_file() and not (dst.is_file() and dst.stat().st_size == f.stat().st_size):
                _write(dst, f.read_bytes(), 0o755)
    dst = root / "python" / STUB_NAME
    if not (dst.is_file() and dst.stat().st_size == Path(stub).stat().st_size):
        _write(dst, Path(stub).read_bytes(), 0o755)
    real = Path(getattr(sys, "_base_executable", "") or sys.executable).resolve()
    home = real.parent
    for name in ("python3", f"python{major}.{minor}", "python"):
        link = root / "bin" / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not (link.is_symlink() and Path(os.readlink(link)) == real):
            tmp = link.with_name(f".{name}.{os.getpid()}")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(real)
            os.replace(tmp, link)
    _write(
        root / "pyvenv.cfg",
        f"home = {home}\ninclude-system-site-packages = false\n"
        f"version = {'.'.join(map(str, sys.version_info[:3]))}\n".encode(),
    )
    site = root / "lib" / f"python{major}.{minor}" / "site-packages"
    _write(site / "spattn_serve.pth", ("\n".join(_package_paths()) + "\n").encode())
    return str(root)


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write atomically: a concurrent server never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _libpython_dir() -> str | None:
    """Folder of this interpreter's shared ``libpythonX.Y.so`` (the stub links against it)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    ldlib = sysconfig.get_config_var("LDLIBRARY") or ""
    if libdir and ldlib.endswith(".so") and (Path(libdir) / ldlib).exists():
        return str(libdir)
    major, minor = sys.version_info[:2]
    if libdir and list(Path(libdir).glob(f"libpython{major}.{minor}*.so*")):
        return str(libdir)
    return None


def _package_paths() -> list[str]:
    """This interpreter's package folders (site-packages and the like), without its stdlib."""
    paths = sysconfig.get_paths()
    stdlib = {
        os.path.realpath(p) for p in (paths.get("stdlib"), paths.get("platstdlib")) if p is not None
    }
    out: list[str] = []
    for p in sys.path:
        if not p or not os.path.isdir(p):
            continue
        real = os.path.realpath(p)
        if real in stdlib or any(real.startswith(s + os.sep) for s in stdlib):
            if "site-packages" not in real and "dist-packages" not in real:
                continue
        if real not in out:
            out.append(real)
    return out


def server_environment(
    install: ServerInstall, backend_dir: str | None = None, base: dict[str, str] | None = None
) -> dict[str, str]:
    """The server's environment: its libraries and this Python's ``libpython`` first on
    ``LD_LIBRARY_PATH``, and the python stub's environment (``backend_dir/bin``, see
    :func:`backend_directory`) first on ``PATH``."""
    env = dict(os.environ if base is None else base)
    lib = [*install.lib_dirs]
    py = _libpython_dir()
    if py is not None:
        lib.append(py)
    old = env.get("LD_LIBRARY_PATH")
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*lib, *([old] if old else [])])
    if backend_dir is not None and (Path(backend_dir) / "pyvenv.cfg").is_file():
        env["PATH"] = os.pathsep.join([str(Path(backend_dir) / "bin"), env.get("PATH", "")])
    for k in ("PYTHONHOME", "PYTHONPATH"):  # the stub's paths come from the pyvenv.cfg only
        env.pop(k, None)
    return env


def repository_models(repo: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The models of a repository (``name``, ``backend``), each config.pbtxt parsed against
    Triton's schema.

    Raises
    ------
    UserError
        Not a folder, no model in it, or a config.pbtxt Triton would reject.
    """
    from .triton import parse_config

    root = Path(repo)
    if not root.is_dir():
        raise UserError(
            f"{repo}: no such model repository; write one with `spattn triton-repo MODEL.onnx "
            f"-o {repo}`"
        )
    models = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        cfg = folder / "config.pbtxt"
        if not cfg.is_file():
            continue
        config, _ = parse_config(cfg.read_text())
        backend = config.backend or config.platform
        if backend == "tensorrt_plan":
            backend = "tensorrt"
        models.append({"name": config.name, "backend": backend})
    if not models:
        raise UserError(
            f"{repo}: no model folder with a config.pbtxt; write one with `spattn triton-repo`"
        )
    return models


def check_repository(install: ServerInstall, models: Sequence[dict[str, Any]]) -> None:
    """Refuse a repository this server cannot load, with what to do instead."""
    have = install.backends()
    for m in models:
        if have is not None and m["backend"] not in have:
            raise UserError(
                f"model {m['name']!r} needs Triton's {m['backend']} backend, which this server "
                f"({install.source}, {install.binary}) does not have (it has "
                f"{', '.join(have) or 'none'}); write a python-backend model with `spattn "
                "triton-repo MODEL.onnx --backend python`, or serve from NVIDIA's tritonserver "
                "container"
            )


def port_free(host: str, port: int) -> bool:
    """True when ``host:port`` can be bound now (as the server binds: connections of a
    stopped server in TIME_WAIT do not count)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free on ``host`` now (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def server_command(
    install: ServerInstall,
    repo: str | os.PathLike[str],
    host: str = "127.0.0.1",
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
    model_control: str = "none",
    load_models: Sequence[str] = (),
    exit_timeout_s: int = 10,
    log_verbose: int = 0,
    extra_args: Sequence[str] = (),
    backend_dir: str | None = None,
) -> list[str]:
    """The ``tritonserver`` command line (``backend_dir``: see :func:`backend_directory`)."""
    cmd = [
        install.binary,
        f"--model-repository={Path(repo).resolve()}",
        f"--http-address={host}",
        f"--http-port={http_port}",
        f"--grpc-address={host}",
        f"--grpc-port={grpc_port}",
        f"--metrics-address={host}",
        f"--metrics-port={metrics_port}",
        f"--model-control-mode={model_control}",
        f"--exit-timeout-secs={exit_timeout_s}",
        f"--log-verbose={log_verbose}",
    ]
    if backend_dir is not None:
        cmd.append(f"--backend-directory={backend_dir}")
    if model_control == "explicit":
        cmd += [f"--load-model={m}" for m in (load_models or ["*"])]
    return cmd + list(extra_args)


def _http_status(url: str, timeout: float) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (urllib.error.URLError, OSError):
        return None


#: Error lines a CPU-only machine always logs.
_HARMLESS = ("CudaDriverHelper has not been initialized",)


class Server:
    """A running ``tritonserver`` process group; a context manager that stops it on exit."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        host: str,
        ports: dict[str, int],
        command: list[str],
        log_path: str | None,
    ) -> None:
        self.proc = proc
        self.host = host
        self.ports = ports
        self.command = command
        self.log_path = log_path
        url_host = f"[{host}]" if ":" in host else host
        self.endpoints = {
            "http": f"http://{url_host}:{ports['http']}",
            "grpc": f"{url_host}:{ports['grpc']}",
            "metrics": f"http://{url_host}:{ports['metrics']}/metrics",
        }

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def ready(self, timeout: float = 2.0) -> bool:
        """``GET /v2/health/ready`` answers 200."""
        return _http_status(f"{self.endpoints['http']}/v2/health/ready", timeout) == 200

    def log_tail(self, lines: int = 30) -> str:
        """The server's error lines (model load failures and the like), else its last lines."""
        if not self.log_path or not Path(self.log_path).is_file():
            return ""
        text = Path(self.log_path).read_text(errors="replace").splitlines()
        errors = [
            t
            for t in text
            if (re.match(r"E\d{4} ", t) or t.startswith("error:"))
            and not any(n in t for n in _HARMLESS)
        ]
        return "\n".join((errors or text)[-lines:])

    def wait_ready(self, timeout: float) -> None:
        """Wait until the server is ready.

        Raises
        ------
        UserError
            The server exited (with the end of its log) or was not ready in ``timeout`` s.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                tail = self.log_tail()
                raise UserError(
                    f"tritonserver exited with status {self.proc.returncode} before it was "
                    "ready" + (f"; the end of its log:\n{tail}" if tail else "")
                )
            if self.ready(timeout=1.0):
                return
            time.sleep(0.2)
        tail = self.log_tail()
        self.stop()
        raise UserError(
            f"tritonserver was not ready after {timeout:g} s (stopped)"
            + (f"; the end of its log:\n{tail}" if tail else "")
        )

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the server process (not its stubs: it stops them itself)."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def stop(self, grace_s: float = 15.0) -> int:
        """SIGTERM, wait up to ``grace_s``, then SIGKILL the process group; reap the server.

        Returns the server's exit status (negative: the signal that ended it).
        """
        if self.running():
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left in the group (the server past its grace, orphaned stubs) is killed.
        self._kill_group()
        try:
            return int(self.proc.wait(timeout=10))
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL not delivered
            return -9

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(
    repo: str | os.PathLike[str],
    host: str = "127.0.0.1",
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
    model_control: str = "none",
    load_models: Sequence[str] = (),
    binary: str | None = None,
    log: str | IO[Any] | None = None,
    ready_timeout_s: float = 120.0,
    log_verbose: int = 0,
    extra_args: Sequence[str] = (),
    wait: bool = True,
) -> Server:
    """Start ``tritonserver`` on ``repo`` in its own process group and wait until it is ready.

    ``log``: a file path (the server's output is written there), an open file, or None
    (this process's stderr).

    Raises
    ------
    UserError
        No server installed (with what to install), a repository it cannot load, a port in
        use, or a server that exits or is not ready in ``ready_timeout_s``.
    """
    install = find_server(binary)
    if install is None:
        raise UserError(f"no Triton Inference Server found: {INSTALL_HINT}")
    check_repository(install, repository_models(repo))
    ports = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}
    if len(set(ports.values())) != 3:
        raise UserError(f"the HTTP, gRPC and metrics ports must differ: {ports}")
    for what, port in ports.items():
        if not port_free(host, port):
            raise UserError(f"{what} port {port} on {host} is in use; pass --{what}-port")
    backend_dir = backend_directory(install)
    cmd = server_command(
        install,
        repo,
        host,
        http_port,
        grpc_port,
        metrics_port,
        model_control,
        load_models,
        log_verbose=log_verbose,
        extra_args=extra_args,
        backend_dir=backend_dir,
    )
    env = server_environment(install, backend_dir)
    log_path: str | None = None
    out: Any
    if isinstance(log, (str, os.PathLike)):
        log_path = str(log)
        out = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
    elif log is None:
        out = sys.stderr
    else:
        out = log
        log_path = getattr(log, "name", None)
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    finally:
        if isinstance(log, (str, os.PathLike)):
            out.close()
    server = Server(proc, host, ports, cmd, log_path)
    if wait:
        try:
            server.wait_ready(ready_timeout_s)
        except BaseException:
            server.stop()
            raise
    return server


def serve_forever(
    server: Server, grace_s: float = 15.0, on_ready: Callable[[], None] | None = None
) -> tuple[int, int | None]:
    """Block until the server exits; SIGINT and SIGTERM are forwarded to it.

    ``on_ready`` is called once the signal handlers are in place (announce the server there:
    a signal sent by whoever read the announcement is then always forwarded).

    A second signal, or a server still running ``grace_s`` after the first, ends the process
    group with SIGKILL. Returns ``(the server's exit status, the signal received or None)``;
    the server is reaped and nothing of its process group is left.
    """
    received: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        received.append(signum)
        if len(received) == 1:
            server.signal(signum)
        else:
            server._kill_group()

    handled = (signal.SIGINT, signal.SIGTERM)
    old = {s: signal.signal(s, forward) for s in handled}
    try:
        if on_ready is not None:
            on_ready()
        first: float | None = None
        while True:
            try:
                server.proc.wait(timeout=0.25)
                break
            except subprocess.TimeoutExpired:
                pass
            if received and first is None:
                first = time.monotonic()
            if first is not None and time.monotonic() - first > grace_s:
                server._kill_group()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    status = server.stop(grace_s=0)
    return status, (received[0] if received else None)
