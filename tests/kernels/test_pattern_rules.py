"""The shared pattern rules (kernels/include/spattn/pattern.h), checked in C++.

Compiles tests/kernels/test_pattern.cc against the header-only rules and runs it: the random-block
hash against the spec's test vectors, the interval form (row_mask) against the pair rule
(allowed), and the conservativeness of the tile classification every kernel relies on.
"""

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_pattern_rules_cpp(tmp_path):
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    assert cxx, "a C++ compiler is required to build spattn (and this test)"
    exe = tmp_path / "test_pattern"
    subprocess.run(
        [
            cxx,
            "-std=c++17",
            "-O1",
            # Signed overflow in the rules (lengths near 2^30, attributes near 2^31) traps; no
            # sanitizer runtime library is needed.
            "-fsanitize=signed-integer-overflow",
            "-fsanitize-undefined-trap-on-error",
            f"-I{ROOT / 'kernels' / 'include'}",
            str(ROOT / "tests" / "kernels" / "test_pattern.cc"),
            "-o",
            str(exe),
        ],
        check=True,
    )
    out = subprocess.run([str(exe)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().endswith(" 0 failed"), out.stdout
    passed = int(out.stdout.strip().splitlines()[-1].split()[0])
    assert passed > 1_000_000
