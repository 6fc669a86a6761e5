"""Build-side check of the TensorRT plugin with TensorRT for RTX (its ONNX parser and builder).

TensorRT for RTX shares TensorRT's plugin interfaces (IPluginV3, IPluginCreatorV3One, the
getCreators/setLoggerFinder entry points) but is a separate library (libtensorrt_rtx.so) whose
IPluginRegistry has no IPluginV2-era methods. This script checks, each step in a fresh process:

1. the three ways of loading the plugin: ``IPluginRegistry.load_library`` (getCreators), a plain
   ctypes load (the load-time registration), and both in one process;
2. for every exported model: the ONNX parser finds ``SparseAttention`` in namespace ``spattn``
   and adds a plugin layer with the right output shape and type; the builder builds an engine
   with a dynamic optimization profile; the runtime deserializes it (its runtime supports only
   some GPU architectures and may refuse this one: that is reported, not hidden).

usage: python rtx_build_check.py --plugin libspattn_trt.so --models DIR [--out result.txt]
(DIR holds the ``.onnx`` files of tests/trt/export_nodes.py). Needs the tensorrt_rtx package.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

_IMPORT = textwrap.dedent("""
    try:
        import tensorrt_rtx as trt
    except ImportError:
        import tensorrt_rtx_bindings as trt
""")

_LOAD = _IMPORT + textwrap.dedent("""
    import ctypes, json, sys
    mode, lib = sys.argv[1], sys.argv[2]
    reg = trt.get_plugin_registry()
    out = {"mode": mode}
    if mode in ("ctypes", "both"):
        ctypes.CDLL(lib)
        out["after_ctypes"] = reg.get_creator("SparseAttention", "1", "spattn") is not None
    if mode in ("load_library", "both"):
        out["load_library_handle"] = reg.load_library(lib) is not None
    c = reg.get_creator("SparseAttention", "1", "spattn")
    out["found"] = c is not None
    if c is not None:
        out["creator"] = [c.name, c.plugin_version, c.plugin_namespace]
        out["fields"] = [(f.name, str(f.type)) for f in c.field_names]
    print("RESULT " + json.dumps(out))
""")

_BUILD = _IMPORT + textwrap.dedent("""
    import json, sys
    model, lib = sys.argv[1], sys.argv[2]
    out = {"model": model, "trt_version": trt.__version__}
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    out["load_library"] = builder.get_plugin_registry().load_library(lib) is not None
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    out["parsed"] = bool(parser.parse_from_file(model))
    out["parser_errors"] = [str(parser.get_error(i)) for i in range(parser.num_errors)]
    print("RESULT " + json.dumps(out), flush=True)
    if not out["parsed"]:
        sys.exit(0)
    layers = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type == trt.LayerType.PLUGIN_V3:
            ins = [None if layer.get_input(j) is None else list(layer.get_input(j).shape)
                   for j in range(layer.num_inputs)]
            o = layer.get_output(0)
            layers.append({"name": layer.name, "inputs": ins, "output": list(o.shape),
                           "dtype": str(o.dtype)})
    out["plugin_layers"] = layers
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        shape = list(t.shape)
        # dims 0/1 dynamic (batch, sequence): 1..4 x 16..512, optimum at the exported shape-ish
        lo = [1 if d < 0 and k == 0 else 16 if d < 0 else d for k, d in enumerate(shape)]
        opt = [2 if d < 0 and k == 0 else 96 if d < 0 else d for k, d in enumerate(shape)]
        hi = [4 if d < 0 and k == 0 else 512 if d < 0 else d for k, d in enumerate(shape)]
        profile.set_shape(t.name, lo, opt, hi)
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    out["engine_bytes"] = 0 if plan is None else plan.nbytes
    print("RESULT " + json.dumps(out), flush=True)
    if plan is None:
        sys.exit(0)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(plan)
    out["deserialized"] = engine is not None
    print("RESULT " + json.dumps(out), flush=True)
""")


def _run(code: str, args: list[str], timeout: int = 600) -> tuple[dict, str, int]:
    p = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout
    )
    result: dict = {}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
    log = (p.stdout + p.stderr).strip().splitlines()
    tail = [ln for ln in log if not ln.startswith("RESULT ")][-12:]
    return result, "\n".join(tail), p.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plugin", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    lines: list[str] = []

    def say(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    version, _, rc = _run(
        _IMPORT + "print('RESULT ' + __import__('json').dumps({'v': trt.__version__}))", []
    )
    say(f"TensorRT for RTX {version.get('v', '(not importable)')}, plugin {a.plugin}")
    try:
        gpu = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        gpu = "(no nvidia-smi)"
    say(f"GPU: {gpu or '(none)'}")
    ok_all = True
    say("\n## Loading the plugin (fresh process each)")
    for mode in ("load_library", "ctypes", "both"):
        res, tail, rc = _run(_LOAD, [mode, a.plugin])
        found = res.get("found", False)
        ok_all &= found
        say(
            f"{mode:13s} rc={rc} found={found} "
            + json.dumps({k: v for k, v in res.items() if k not in ("mode", "fields")})
        )
        if res.get("fields"):
            say(f"  fields: {res['fields']}")
        if not found and tail:
            say(textwrap.indent(tail, "  | "))
    say("\n## ONNX parser and builder, per exported model (fresh process each)")
    models = sorted(f for f in os.listdir(a.models) if f.endswith(".onnx"))
    for m in models:
        res, tail, rc = _run(_BUILD, [os.path.join(a.models, m), a.plugin])
        say(
            f"{m}: rc={rc} parsed={res.get('parsed')} engine_bytes={res.get('engine_bytes')} "
            f"deserialized={res.get('deserialized')}"
        )
        for layer in res.get("plugin_layers", []):
            say(
                f"  plugin layer {layer['name']}: inputs {layer['inputs']} -> {layer['output']} "
                f"{layer['dtype']}"
            )
        if res.get("parser_errors"):
            say(f"  parser errors: {res['parser_errors']}")
        if tail and (rc != 0 or not res.get("deserialized")):
            say(textwrap.indent(tail, "  | "))
        ok_all &= bool(res.get("parsed")) and bool(res.get("engine_bytes"))
    say(f"\nparse + build with the plugin: {'OK' if ok_all else 'NOT OK'}")
    if a.out:
        with open(a.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
