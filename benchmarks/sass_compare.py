"""Compares the sm_90a machine code (SASS) of two builds of libspattn_kernels.so, kernel by kernel.

Question answered: does a source change that should not change the compiled kernels (a refactor,
a helper, a comment) leave them as they were? For each kernel of either library it prints the
number of SASS instructions in each build and whether the instruction texts are identical,
identical once register numbers are masked (the same code, other register names), or how many
lines differ then. Needs cuobjdump and nvdisasm (CUDA toolkit, or the PyPI wheels
nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm) on PATH or in CUOBJDUMP / NVDISASM_PATH; no GPU.

    python benchmarks/sass_compare.py OLD/libspattn_kernels.so NEW/libspattn_kernels.so \
        [--arch sm_90a] [--match attention_kernel] [--rename FROM=TO ...]

--rename compares a kernel that only gained a template argument with its old self: FROM is
replaced by TO in the new library's names before they are matched (e.g. a new trailing bool,
`ELb0ELb0EEEv=ELb0EEEv`).
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import subprocess

_FUNC = re.compile(r"\s*Function : (\S+)")
_INSN = re.compile(r"\s*/\*[0-9a-f]+\*/\s*(.*?)\s*;")
_REG = re.compile(r"\bU?R\d+\b")


def sass(lib: str, arch: str) -> dict[str, list[str]]:
    """Instruction texts (no addresses, no encodings) of every function of `lib` for `arch`."""
    env = dict(os.environ)
    if "NVDISASM_PATH" in env:
        env["PATH"] = env["NVDISASM_PATH"] + os.pathsep + env.get("PATH", "")
    tool = env.get("CUOBJDUMP", "cuobjdump")
    out = subprocess.run(
        [tool, "-sass", "-arch", arch, lib], capture_output=True, text=True, env=env, check=True
    ).stdout
    funcs: dict[str, list[str]] = {}
    cur = None
    for line in out.splitlines():
        m = _FUNC.match(line)
        if m:
            cur = m.group(1)
            funcs[cur] = []
        elif cur is not None:
            m = _INSN.match(line)
            if m:
                funcs[cur].append(m.group(1))
    if not funcs:
        raise SystemExit(f"no {arch} code found in {lib} (is nvdisasm on PATH?)")
    return funcs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--arch", default="sm_90a")
    ap.add_argument("--match", default="attention_kernel", help="compare kernels whose name has it")
    ap.add_argument(
        "--rename",
        action="append",
        default=[],
        metavar="FROM=TO",
        help="replace FROM by TO in the new library's kernel names before matching (repeatable)",
    )
    args = ap.parse_args()
    a, b = sass(args.old, args.arch), sass(args.new, args.arch)
    for rule in args.rename:
        old, sep, new = rule.partition("=")
        if not sep or not old:
            raise SystemExit(f"--rename: FROM=TO, got {rule!r}")
        b = {name.replace(old, new): code for name, code in b.items()}
    same = 0
    for name in sorted(set(a) | set(b)):
        if args.match not in name:
            continue
        x, y = a.get(name), b.get(name)
        if x is None or y is None:
            print(f"only in {'new' if x is None else 'old'}: {name}")
            continue
        if x == y:
            verdict = "identical"
            same += 1
        else:
            xm = [_REG.sub("R", i) for i in x]
            ym = [_REG.sub("R", i) for i in y]
            if xm == ym:
                verdict = "identical but for register numbers"
            else:
                diff = sum(
                    1 for d in difflib.unified_diff(xm, ym, n=0, lineterm="") if d[:1] in "+-"
                )
                verdict = f"{diff} lines differ with registers masked"
        print(f"{len(x):6d} -> {len(y):6d}  {verdict:40s}  {name}")
    print(f"{same} kernels identical")


if __name__ == "__main__":
    main()
