"""Run an exported model with spattn::SparseAttention nodes using only numpy and onnxruntime.

No torch, no spattn import: this is what a serving process needs. The custom-op library is found
with --lib, the SPATTN_ORT_LIB environment variable, or inside an installed spattn package.

    python samples/python/run_onnx.py model.onnx --seq-len 4096 [--lib path/libspattn_ort.so]
        [--provider CUDAExecutionProvider] [--output outputs.npz]
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import sys
import time

import numpy as np
import onnxruntime as ort


def find_library(explicit: str | None) -> str:
    """Locate libspattn_ort.so without importing the spattn package."""
    candidates = [explicit, os.environ.get("SPATTN_ORT_LIB")]
    spec = importlib.util.find_spec("spattn")
    if spec and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            candidates.append(os.path.join(root, "lib", "libspattn_ort.so"))
    here = os.path.dirname(os.path.abspath(__file__))
    build = os.path.join(here, "..", "..", "build", "*", "plugins", "libspattn_ort.so")
    candidates += sorted(glob.glob(build))
    for path in candidates:
        if path and os.path.isfile(path):
            return path
    sys.exit(
        "error: libspattn_ort.so not found: pass --lib, set SPATTN_ORT_LIB, or `pip install .`"
    )


def make_inputs(session: ort.InferenceSession, seq_len: int, batch: int) -> dict[str, np.ndarray]:
    """Deterministic random inputs; dynamic axes take batch (axis 0) or seq_len (the others)."""
    rng = np.random.default_rng(0)
    dtypes = {
        "tensor(float)": np.float32,
        "tensor(float16)": np.float16,
        "tensor(int32)": np.int32,
        "tensor(int64)": np.int64,
    }
    feeds = {}
    for inp in session.get_inputs():
        shape = [
            d if isinstance(d, int) else (batch if axis == 0 else seq_len)
            for axis, d in enumerate(inp.shape)
        ]
        dtype = dtypes.get(inp.type)
        if dtype is None:
            sys.exit(f"error: input {inp.name} has type {inp.type}; give it with your own script")
        if np.issubdtype(dtype, np.integer):
            feeds[inp.name] = np.full(shape, seq_len, dtype=dtype)  # e.g. key_lengths: no padding
        else:
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--lib", help="path of libspattn_ort.so")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--provider",
        default="CPUExecutionProvider",
        help="CPUExecutionProvider or CUDAExecutionProvider",
    )
    parser.add_argument("--output", help="save the outputs to this .npz file")
    args = parser.parse_args()

    options = ort.SessionOptions()
    options.register_custom_ops_library(find_library(args.lib))
    providers = [args.provider]
    if args.provider != "CPUExecutionProvider":
        providers.append("CPUExecutionProvider")
    session = ort.InferenceSession(args.model, options, providers=providers)
    if session.get_providers()[0] != args.provider:
        print(
            f"note: {args.provider} is not available here; running on {session.get_providers()[0]}"
        )
    feeds = make_inputs(session, args.seq_len, args.batch)
    session.run(None, feeds)  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        outputs = session.run(None, feeds)
        times.append(time.perf_counter() - start)
    finite = True
    for meta, value in zip(session.get_outputs(), outputs, strict=True):
        ok = bool(np.isfinite(value.astype(np.float32)).all())
        finite &= ok
        print(f"output {meta.name}: shape {list(value.shape)}, dtype {value.dtype}, finite {ok}")
    print(
        f"median run time: {1e3 * float(np.median(times)):.2f} ms over {args.repeats} runs "
        f"({session.get_providers()[0]})"
    )
    if args.output:
        names = [meta.name for meta in session.get_outputs()]
        np.savez(args.output, **dict(zip(names, outputs, strict=True)))
        print(f"outputs saved to {args.output}")
    if not finite:
        sys.exit("error: an output has NaN or infinite values")


if __name__ == "__main__":
    main()
