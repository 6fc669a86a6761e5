"""pytest plugin of scripts/sanitize.sh: the run must use the sanitized spattn libraries.

Before the tests: ``spattn.runtime.library_path`` resolves to the sanitized build
(``$SPATTN_SANITIZED_LIB_DIR``) and a sanitizer runtime is mapped. After them: every spattn
library mapped into the process is the sanitized one, and the ONNX Runtime library was loaded, so
the tests did exercise it. A failed check fails the run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_LIBS = ("libspattn_ort.so", "libspattn_kernels.so")


def _sanitized_dirs() -> list[Path]:
    value = os.environ.get("SPATTN_SANITIZED_LIB_DIR", "")
    dirs = [Path(d).resolve() for d in value.split(os.pathsep) if d]
    if not dirs:
        raise pytest.UsageError("SPATTN_SANITIZED_LIB_DIR is not set (run scripts/sanitize.sh)")
    return dirs


def _mapped() -> set[Path]:
    out = set()
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].startswith("/"):
                out.add(Path(parts[5].strip()))
    return out


def pytest_sessionstart(session: pytest.Session) -> None:
    from spattn.capi import find_library
    from spattn.runtime import library_path

    dirs = _sanitized_dirs()
    found = {
        "ort (runtime.library_path)": library_path("ort"),
        "kernels (runtime.library_path)": library_path("kernels"),
        "kernels (capi.find_library)": find_library(),
    }
    for what, path in found.items():
        p = Path(path).resolve()
        if p.parent not in dirs:
            raise pytest.UsageError(f"spattn {what} resolves to {p}, not the sanitized build")
    runtimes = [p for p in _mapped() if p.name.startswith(("libasan", "libtsan"))]
    if not runtimes:
        raise pytest.UsageError("no sanitizer runtime is loaded (LD_PRELOAD)")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    dirs = _sanitized_dirs()
    spattn_libs = sorted(p for p in _mapped() if p.name in _LIBS)
    problems = [f"{p} is not from the sanitized build" for p in spattn_libs if p.parent not in dirs]
    if not any(p.name == "libspattn_ort.so" for p in spattn_libs):
        problems.append("libspattn_ort.so was never loaded: the tests did not run it")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for p in spattn_libs:
        if reporter:
            reporter.write_line(f"sanitize: loaded {p}")
    if problems:
        for msg in problems:
            if reporter:
                reporter.write_line(f"sanitize: error: {msg}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
