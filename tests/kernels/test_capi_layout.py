"""spattn.capi.SpattnArgs mirrors ``spattn_args`` of kernels/include/spattn/c_api.h: a small C
program compiled against the header prints each field's offset and the struct's size."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from spattn.capi import SpattnArgs

REPO = Path(__file__).resolve().parents[2]
HEADER_DIR = REPO / "kernels" / "include"
# The struct's second version: fields appended (the header then defines SPATTN_ARGS_V1_SIZE).
V2 = ("global_mask", "key_starts", "sinks", "softcap")


def _compiler() -> str | None:
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return name
    return None


@pytest.mark.skipif(_compiler() is None, reason="no C compiler")
def test_ctypes_struct_matches_the_header(tmp_path):
    names = [f[0] for f in SpattnArgs._fields_]
    v1 = [n for n in names if n not in V2]
    lines = [f'printf("{n} %zu\\n", offsetof(spattn_args, {n}));' for n in v1]
    v2 = [f'printf("{n} %zu\\n", offsetof(spattn_args, {n}));' for n in names if n in V2]
    src = "\n".join(
        [
            "#include <stddef.h>",
            "#include <stdio.h>",
            '#include "spattn/c_api.h"',
            "int main(void) {",
            *lines,
            "#ifdef SPATTN_ARGS_V1_SIZE",
            *v2,
            'printf("sizeof %zu\\n", sizeof(spattn_args));',
            "#endif",
            "return 0;",
            "}",
        ]
    )
    (tmp_path / "layout.c").write_text(src)
    exe = tmp_path / "layout"
    build = subprocess.run(
        [_compiler(), "-I", str(HEADER_DIR), str(tmp_path / "layout.c"), "-o", str(exe)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    got = dict(
        line.split() for line in subprocess.check_output([str(exe)], text=True).split("\n") if line
    )
    for n in names:
        if n in V2 and n not in got:
            continue  # a header of the first version: the appended fields are not there yet
        assert int(got[n]) == getattr(SpattnArgs, n).offset, n
    if "sizeof" in got:
        assert int(got["sizeof"]) == ctypes.sizeof(SpattnArgs)
