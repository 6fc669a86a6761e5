"""A new user's first hour (issue "A new user's first hour"): one test group per item."""

from __future__ import annotations

import json
import shutil

from cli_helpers import ENCODER_PARAMS, encoder_model, invoke, invoke_json


# ------------------------------------------------------------------------------ 1: verify
def test_verify_reuses_the_recorded_export_parameters():
    # The encoder was exported with non-default parameters (d_model=32, attention_window=8...);
    # verify --factory without -p rebuilds it with those, from encoder.report.json.
    enc = encoder_model()
    data = invoke_json("verify", enc, "--factory", "longformer_encoder")
    assert data["passed"] and data["reference"] == "pytorch"
    assert (
        data["factory_params"]["attention_window"] == 8 and data["factory_params"]["d_model"] == 32
    )
    assert any("factory parameters from" in n and "encoder.report.json" in n for n in data["notes"])
    assert any("node attributes match" in n for n in data["notes"])


def test_verify_names_the_attributes_that_differ_before_comparing_numbers():
    enc = encoder_model()
    r = invoke(
        "verify", enc, "--factory", "longformer_encoder", "-p", "attention_window=16", code=1
    )
    assert "does not match" in r.output and "window_left 4 (model) != 8 (factory)" in r.output
    assert "max abs err" not in r.output  # no numbers were compared


def test_verify_without_report_uses_given_parameters(tmp_path):
    enc = tmp_path / "copy.onnx"
    shutil.copy(encoder_model(), enc)  # no copy.report.json beside it
    data = invoke_json("verify", enc, "--factory", "longformer_encoder", *ENCODER_PARAMS)
    assert data["passed"] and not any("factory parameters from" in n for n in data["notes"])
    # The factory's defaults (d_model 64) cannot run this model: one clear line, not "a bug".
    r = invoke("verify", enc, "--factory", "longformer_encoder", code=1)
    assert "bug" not in r.output and r.output.count("\n") == 1


def test_verify_report_option(tmp_path):
    enc = tmp_path / "model.onnx"
    shutil.copy(encoder_model(), enc)
    rep = tmp_path / "elsewhere.json"
    shutil.copy(encoder_model().with_suffix(".report.json"), rep)
    data = invoke_json("verify", enc, "--factory", "longformer_encoder", "--report", rep)
    assert data["passed"] and data["factory_params"]["d_model"] == 32
    r = invoke(
        "verify", enc, "--factory", "longformer_encoder", "--report", tmp_path / "no.json", code=1
    )
    assert "no such file" in r.output
    rep.write_text(json.dumps({"other": 1}))
    r = invoke("verify", enc, "--factory", "longformer_encoder", "--report", rep, code=1)
    assert "is it a report of `spattn export`" in r.output


# ------------------------------------------------------------------------------ 2: names
_DICT_FACTORY = """
from spattn.models import gqa_decoder_block


def build():
    model, (x, lengths) = gqa_decoder_block(
        seq_len=24, d_model=32, num_heads=4, num_kv_heads=2, window=8, batch=2
    )
    return model, {"key_lengths": lengths, "x": x}  # keywords, not in forward's order
"""


def _dims(v):
    return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]


def test_export_names_inputs_outputs_and_axes_and_triton_uses_them(tmp_path):
    import onnx

    factory = tmp_path / "dict_factory.py"
    factory.write_text(_DICT_FACTORY)
    out = tmp_path / "named.onnx"
    data = invoke_json(
        "export",
        f"{factory}:build",
        "-o",
        out,
        "--input-names",
        "lengths,hidden_states",  # in the order of the example inputs
        "--output-names",
        "last_hidden_state",
    )
    assert data["validation"]["passed"]
    # the graph's inputs follow the example's order
    assert data["input_names"] == ["lengths", "hidden_states"]
    assert data["output_names"] == ["last_hidden_state"]
    g = onnx.load(str(out)).graph
    dims = {v.name: _dims(v) for v in [*g.input, *g.output]}
    assert dims == {
        "hidden_states": ["batch_size", "sequence_length", 32],
        "lengths": ["batch_size"],
        "last_hidden_state": ["batch_size", "sequence_length", 32],
    }
    repo = tmp_path / "repo"
    invoke("triton-repo", out, "-o", repo, "--kind", "cpu", "-q")
    config = (repo / "named" / "config.pbtxt").read_text()
    for name in ("hidden_states", "lengths", "last_hidden_state"):
        assert f'name: "{name}"' in config
    # verify maps the renamed inputs back onto forward's keywords
    v = invoke_json("verify", out, "--factory", f"{factory}:build")
    assert v["passed"] and v["reference"] == "pytorch"


def test_export_default_names_are_stable():
    import onnx

    g = onnx.load(str(encoder_model())).graph
    assert [i.name for i in g.input] == ["x"] and [o.name for o in g.output] == ["output"]
    assert _dims(g.input[0])[:2] == ["batch_size", "sequence_length"]


def test_export_name_options_bad_values(tmp_path):
    r = invoke("export", "longformer_encoder", "--input-names", "a,a", code=2)
    assert "distinct" in r.output
    r = invoke(
        "export", "longformer_encoder", "-o", tmp_path / "x.onnx", "--input-names", "a,b", code=1
    )
    assert "input_names: the model takes 1 tensor input(s) (x), got 2 names" in r.output


def test_python_export_keywords_names_and_axes(tmp_path):
    import onnx
    import pytest

    import spattn
    from spattn.models import gqa_decoder_block

    model, (x, lengths) = gqa_decoder_block(
        seq_len=16, d_model=32, num_heads=4, num_kv_heads=2, window=4, batch=2
    )
    rep = spattn.export(
        model,
        {"x": x, "key_lengths": lengths},
        tmp_path / "d.onnx",
        output_names=["y"],
        dynamic_axes={"x": {0: "batch", 1: "tokens"}, "key_lengths": {0: "batch"}},
    )
    assert rep.passed and rep.input_names == ["x", "key_lengths"] and rep.output_names == ["y"]
    g = onnx.load(str(tmp_path / "d.onnx")).graph
    assert _dims(g.input[0]) == ["batch", "tokens", 32] and _dims(g.output[0])[:2] == [
        "batch",
        "tokens",
    ]
    with pytest.raises(ValueError, match="'x' has rank 3, no axis 3"):
        spattn.export(model, (x, lengths), tmp_path / "e.onnx", dynamic_axes={"x": [0, 3]})
    with pytest.raises(ValueError, match="'hidden' is neither an input nor an output"):
        spattn.export(model, (x, lengths), tmp_path / "e.onnx", dynamic_axes={"hidden": [0]})
    with pytest.raises(ValueError, match="output_names: the model has 1 output"):
        spattn.export(model, (x, lengths), tmp_path / "f.onnx", output_names=["a", "b"])


# ------------------------------------------------------------------------------ 3: run
def _embedding_model(path, vocab=50):
    """input_ids [batch, seq] -> Gather over a [vocab, 8] table, and a key_lengths-like input."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.arange(vocab * 8, dtype=np.float32).reshape(vocab, 8), "t")
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])
    out = helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["batch", "seq", 8])
    graph = helper.make_graph(
        [helper.make_node("Gather", ["t", "input_ids"], ["emb"])], "g", [ids], [out], [table]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.save(model, str(path))
    return path


def test_run_generates_token_ids_inside_the_vocabulary(tmp_path):
    import numpy as np

    model = _embedding_model(tmp_path / "emb.onnx", vocab=50)
    inputs = tmp_path / "in.npz"
    data = invoke_json("run", model, "--seq-len", "300", "--repeat", "1", "--save-inputs", inputs)
    assert data["outputs"][0]["shape"] == [1, 300, 8] and data["outputs"][0]["finite"]
    ids = np.load(inputs)["input_ids"]
    assert ids.min() >= 0 and ids.max() < 50 and len(np.unique(ids)) > 10


def test_run_seq_len_on_a_static_model_is_a_usage_error(tmp_path):
    from cli_helpers import plain_model

    r = invoke("run", plain_model(tmp_path / "relu.onnx"), "--seq-len", "64", code=2)
    assert "--seq-len" in r.output and "no dynamic sequence axis" in r.output
    r = invoke("run", plain_model(tmp_path / "relu.onnx"), "--batch", "4", code=2)
    assert "--batch" in r.output and "no dynamic batch axis" in r.output


def test_run_refuses_a_float64_npz_for_a_float32_model(tmp_path):
    import numpy as np

    enc = encoder_model()
    bad = tmp_path / "f64.npz"
    np.savez(bad, x=np.zeros((1, 32, 32), np.float64))
    r = invoke("run", enc, "--inputs", bad, code=1)
    assert "the model takes float32" in r.output and "float64" in r.output
    good = tmp_path / "f32.npz"
    np.savez(good, x=np.zeros((1, 32, 32), np.float32))
    assert invoke_json("run", enc, "--inputs", good, "--repeat", "1")["outputs"][0]["finite"]


# ------------------------------------------------------------------------------ 4: doctor, bench
def test_doctor_require_json_is_one_object(monkeypatch):
    from spattn import runners

    real = runners.backend_status
    monkeypatch.setattr(
        runners,
        "backend_status",
        lambda b: (False, "not here: how to get it") if b == "tensorrt" else real(b),
    )
    r = invoke("doctor", "--require", "tensorrt", "--json", code=1)
    data = json.loads(r.stdout)  # exactly one JSON document on stdout
    assert data["ok"] is False and "tensorrt is not usable: not here" in data["error"]
    assert data["backends"]["tensorrt"]["how"] == "not here: how to get it"
    assert "error: tensorrt is not usable" in r.stderr


def test_tensorrt_missing_message_depends_on_the_plugin_library(monkeypatch):
    from spattn import runners, runtime

    monkeypatch.setattr(runtime, "library_path", lambda name="ort": "/opt/x/libspattn_trt.so")
    built = runners.tensorrt_missing()
    assert "rebuild" not in built and "/opt/x/libspattn_trt.so" in built
    assert "pip install tensorrt-cu13" in built

    def missing(name="ort"):
        raise FileNotFoundError(name)

    monkeypatch.setattr(runtime, "library_path", missing)
    assert "so that libspattn_trt.so is built" in runners.tensorrt_missing()


def test_bench_warns_when_threads_exceed_cores(tmp_path):
    from spattn.cli.bench import _cores

    args = ["bench", "-L", "32", "--heads", "1", "--head-dim", "8", "--repeat", "1"]
    args += ["--no-memory", "--device", "cpu", "-o", tmp_path, "--threads", _cores() + 1]
    r = invoke(*args)
    assert f"--threads {_cores() + 1} is more than the {_cores()} CPU core(s)" in r.stderr
    data = invoke_json(*args)
    assert any("CPU core(s)" in w for w in data["warnings"])


# ------------------------------------------------------------------------------ 5: pass rule
def test_export_and_verify_print_the_pass_rule():
    from cli_helpers import DECODER_PARAMS

    r = invoke(
        "export", "gqa_decoder_block", "-o", encoder_model().parent / "rule.onnx", *DECODER_PARAMS
    )
    assert "pass rule: |got - ref| <= 2e-05 + 0.0001 * |ref| for every element" in r.output
    assert "err/allowed" in r.output
    data = invoke_json("verify", encoder_model(), "--factory", "longformer_encoder")
    row = data["comparisons"][0]
    assert row["passed"] and 0 <= row["max_ratio"] <= 1


def test_compare_ratio_is_the_pass_rule():
    import numpy as np

    from spattn.compare import compare_outputs

    ref = np.array([0.0, 1e-7, 10.0])
    got = ref + np.array([1e-5, 1e-5, 5e-4])  # max rel error huge (near-zero ref), still passes
    row = compare_outputs({"y": ref}, {"y": got}, 2e-5, 1e-4)[0]
    assert row["passed"] and row["max_rel"] > 10 and row["max_ratio"] <= 1
    bad = compare_outputs({"y": ref}, {"y": ref + 3e-5}, 2e-5, 1e-4)[0]
    assert not bad["passed"] and bad["max_ratio"] > 1


# ------------------------------------------------------------------------------ 6: GPU support
def test_export_and_inspect_warn_about_head_dims_the_gpu_backends_refuse(tmp_path):
    from cli_helpers import sparse_model

    from spattn.attributes import HEAD_DIMS

    cuda = HEAD_DIMS["cuda"]
    # the tiny encoder has head dim 32 / 2 = 16, which no GPU backend takes
    enc = encoder_model()
    r = invoke("inspect", enc)
    assert "head dim 16 cannot run on the CUDA execution provider or TensorRT" in r.stderr
    assert f"(they take {cuda.describe()})" in r.stderr
    data = invoke_json("inspect", enc)
    assert data["nodes"][0]["head_dim"] == 16 and data["warnings"]
    report = json.loads(enc.with_suffix(".report.json").read_text())
    assert any("head dim 16" in w for w in report["warnings"])
    # a node whose head dim the GPU backends take (96, new with the D = 32 ... 256 kernels)
    model = sparse_model(tmp_path / "ok.onnx", window_left=2)
    import onnx

    m = onnx.load(str(model))
    for v in [*m.graph.input, *m.graph.output]:
        v.type.tensor_type.shape.dim[3].dim_value = 96
    onnx.save(m, str(model))
    assert invoke_json("inspect", model).get("warnings") is None


# ------------------------------------------------------------------------------ 9: README snippet
def test_readme_serving_snippet_runs_as_written(tmp_path):
    import re
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    snippet = next(b for b in blocks if "register_custom_ops_library" in b)
    shutil.copy(encoder_model(), tmp_path / "encoder.onnx")  # the file name the snippet uses
    check = "\nprint([i.name for i in session.get_inputs()])\n"
    proc = subprocess.run(
        [sys.executable, "-c", snippet + check],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "['x']" in proc.stdout


# ------------------------------------------------------------------------------ 12: Python API
def _tiny_decoder():
    from spattn.models import gqa_decoder_block

    return gqa_decoder_block(seq_len=16, d_model=32, num_heads=4, num_kv_heads=2, window=4)


def test_python_export_is_quiet_and_shows_progress(tmp_path, capfd):
    import spattn

    model, inputs = _tiny_decoder()
    rep = spattn.export(model, inputs, tmp_path / "a.onnx", progress=True)
    err = capfd.readouterr().err
    assert rep.passed
    assert "torchvision" not in err and "FutureWarning" not in err and "UserWarning" not in err
    # each step names itself when it starts (set_postfix_str refreshes the bar); the final "3/3"
    # frame is not asserted: tqdm skips frames closer than its mininterval before close
    assert "spattn.export" in err and "/3" in err
    assert all(step in err for step in ("torch.onnx", "validation")), err
    spattn.export(model, inputs, tmp_path / "b.onnx", progress=False, validate=False)
    assert "spattn.export" not in capfd.readouterr().err


def test_python_export_signature_and_report_fields_are_documented():
    import inspect

    import spattn
    from spattn.export import ExportReport

    params = inspect.signature(spattn.export).parameters
    assert list(params)[:3] == ["model", "example_inputs", "path"]
    assert {"input_names", "output_names", "dynamic_axes", "progress"} <= set(params)
    doc = " ".join(ExportReport.__doc__.split())
    assert "errors : dict of str to (float, float)" in doc
    assert "(max abs error, max rel error)" in doc


# ------------------------------------------------------------------------------ 13: C++ package
def test_cmake_install_gives_a_package_a_cpp_program_finds(tmp_path):
    import glob
    import shutil
    import subprocess
    from pathlib import Path

    import pytest

    repo = Path(__file__).resolve().parents[2]
    builds = sorted(glob.glob(str(repo / "build" / "*" / "CMakeCache.txt")))
    if not builds or shutil.which("cmake") is None:
        pytest.skip("no CMake build tree of this checkout (pip install -e . makes one)")
    build = Path(builds[0]).parent

    def sh(*cmd):
        proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (cmd, proc.stdout[-2000:], proc.stderr[-2000:])
        return proc.stdout

    sh("cmake", "-S", repo, "-B", build)  # regenerates the package files of this checkout
    prefix = tmp_path / "prefix"
    sh("cmake", "--install", build, "--prefix", prefix)
    root = next(p.parents[2] for p in prefix.rglob("include/spattn/c_api.h"))
    assert (root / "lib" / "cmake" / "spattn" / "spattnConfig.cmake").is_file()
    assert (root / "lib" / "libspattn_kernels.so").is_file()

    demo = tmp_path / "demo"
    sample = repo / "samples" / "cpp" / "package"
    sh("cmake", "-S", sample, "-B", demo, f"-DCMAKE_PREFIX_PATH={root}")
    sh("cmake", "--build", demo)
    out = sh(demo / "spattn_c_api_demo")
    assert "dense: max |spattn - softmax(QK^T/sqrt(D))V|" in out
    assert f"ONNX Runtime custom-op library: {root / 'lib' / 'libspattn_ort.so'}" in out
    assert "bad call rejected: SparseAttention: query:" in out

    if shutil.which("pkg-config") and shutil.which("cc"):  # the optional pkg-config file
        src = tmp_path / "v.c"
        src.write_text(
            "#include <spattn/c_api.h>\n#include <stdio.h>\n"
            'int main(void) { printf("%s\\n", spattn_version()); return 0; }\n'
        )
        env = {"PKG_CONFIG_PATH": str(root / "lib" / "pkgconfig"), "PATH": "/usr/bin:/bin"}
        flags = subprocess.run(
            ["pkg-config", "--cflags", "--libs", "spattn"], capture_output=True, text=True, env=env
        )
        assert flags.returncode == 0, flags.stderr
        sh("cc", src, "-o", tmp_path / "v", *flags.stdout.split())
        assert sh(tmp_path / "v").strip() == "0.1.0"


# ------------------------------------------------------------------------------ 14: other tools
def _docs_tools():
    from pathlib import Path

    return (Path(__file__).resolve().parents[2] / "docs" / "tools.md").read_text()


def test_docs_tools_ort_recipe_runs(tmp_path):
    import subprocess
    import sys

    doc = _docs_tools()
    for flag in ("--staticPlugins", "--dynamicPlugins", "--plugins", "Comparator"):
        assert flag in doc
    # ONNX Runtime's graph tools work on an exported model, with the axis names spattn gives it
    cmd = (
        "python -m onnxruntime.tools.make_dynamic_shape_fixed --dim_param batch_size --dim_value 1"
    )
    assert cmd in " ".join(doc.replace("\\\n", " ").split())
    fixed = tmp_path / "encoder_b1.onnx"
    subprocess.run(
        [sys.executable, *cmd.split()[1:], encoder_model(), fixed], check=True, timeout=300
    )
    data = invoke_json("run", fixed, "--seq-len", "40", "--repeat", "1")
    assert data["inputs"]["x"] == [1, 40, 32]
    # batch is fixed now: asking for another one is refused instead of ignored
    assert "no dynamic batch axis" in invoke("run", fixed, "--batch", "2", code=2).output


def test_docs_tools_polygraphy_comparator_with_our_session(tmp_path):
    import re
    import shutil

    import pytest

    pytest.importorskip("polygraphy")
    doc = _docs_tools()
    recipe = next(b for b in re.findall(r"```python\n(.*?)```", doc, re.S) if "Comparator" in b)
    # the ONNX Runtime half of the recipe as written; a second ONNX Runtime session (4 threads)
    # stands in for TensorRT where no GPU is present
    shutil.copy(encoder_model(), tmp_path / "encoder.onnx")
    ort_half = recipe.split("network = ")[0]
    code = ort_half + (
        "opts4 = ort.SessionOptions()\n"
        "opts4.register_custom_ops_library(library_path('ort'))\n"
        "opts4.intra_op_num_threads = 4\n"
        "other = ort.InferenceSession('encoder.onnx', opts4, providers=['CPUExecutionProvider'])\n"
        "runners = [OnnxrtRunner(session, name='a'), OnnxrtRunner(other, name='b')]\n"
        "results = Comparator.run(runners)\n"
        "ok = Comparator.compare_accuracy(results, "
        "compare_func=CompareFunc.simple(atol=2e-5, rtol=1e-4))\n"
        "assert bool(ok)\n"
    )
    code = code.replace(
        "from polygraphy.backend.trt import EngineFromNetwork, LoadPlugins, NetworkFromOnnxPath, "
        "TrtRunner\n",
        "",
    )
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(code, "docs/tools.md", "exec"), {})
    finally:
        os.chdir(cwd)


# ------------------------------------------------------------------------------ 11: samples
def test_export_help_lists_samples_and_their_parameters():
    out = invoke("export", "--help").output
    assert "Built-in samples (SOURCE) and their -p parameters" in out
    for text in ("longformer_encoder", "gqa_decoder_block", "longformer_base", "num_kv_heads=2"):
        assert text in out
    assert "attention_window=512" in out and "num_global=64" in out


def test_readme_command_line_exports_the_quickstart_model():
    import inspect
    import re
    from pathlib import Path

    from spattn.models import SAMPLES, longformer_base

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    sample = re.search(r"spattn export (\w+) -o encoder\.onnx", readme).group(1)
    assert sample == "longformer_base" and SAMPLES[sample] is longformer_base
    defaults = {k: p.default for k, p in inspect.signature(longformer_base).parameters.items()}
    quickstart = (Path(__file__).resolve().parents[2] / "samples" / "quickstart.py").read_text()
    assert f'"--d-model", type=int, default={defaults["d_model"]}' in quickstart
    assert f'"--heads", type=int, default={defaults["nhead"]}' in quickstart
    assert f'"--seq-len", type=int, default={defaults["seq_len"]}' in quickstart
    assert "Pattern.longformer(attention_window=512, num_global=64)" in quickstart
    assert (defaults["attention_window"], defaults["num_global"]) == (512, 64)


def test_longformer_base_exports_and_validates(tmp_path):
    data = invoke_json(
        "export", "longformer_base", "-o", tmp_path / "base.onnx", "-p", "seq_len=128"
    )
    assert data["validation"]["passed"] and data["num_spattn_nodes"] == 2
    assert data["inputs"][0]["shape"] == ["batch_size", "sequence_length", 512]
    assert not data["warnings"]  # head dim 64: CUDA and TensorRT take it


# ------------------------------------------------------------------------------ 7: demo numbers
def test_quickstart_reports_median_and_spread_of_paired_runs(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "samples" / "quickstart.py"
    args = ["--seq-len", "256", "--d-model", "64", "--heads", "4", "--layers", "1"]
    args += ["--repeats", "6", "--out", str(tmp_path)]
    proc = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "median of 6 paired runs" in out
    assert "middle half of the paired runs:" in out and "x to " in out


def _quickstart_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "samples" / "quickstart.py"
    spec = importlib.util.spec_from_file_location("quickstart_sample", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_speedup_summary_and_text_from_given_times():
    import numpy as np
    import pytest

    qs = _quickstart_module()
    sparse = np.array([100.0, 100.0, 200.0, 100.0, 50.0])
    dense = np.array([250.0, 200.0, 400.0, 300.0, 200.0])  # pair speedups 2.5, 2, 2, 3, 4
    s = qs.speedup_summary(sparse, dense)
    assert s["pairs"] == 5 and s["speedups"] == [2.5, 2.0, 2.0, 3.0, 4.0]
    assert s["speedup_median"] == 2.5  # the median pair, not median(dense) / median(sparse)
    assert (s["speedup_q1"], s["speedup_q3"]) == (2.0, 3.0)
    assert (s["sparse_ms_median"], s["dense_ms_median"]) == (100.0, 250.0)
    assert qs.speedup_text(s, threads=2).splitlines() == [
        "ONNX Runtime CPU, 2 threads, median of 5 paired runs:",
        "  spattn sparse encoder:     100.0 ms",
        "  dense encoder:             250.0 ms",
        "  speedup: 2.50x (middle half of the paired runs: 2.00x to 3.00x; whole encoder: "
        "projections and MLP included)",
    ]
    # Quartiles interpolate between pairs (numpy's linear rule): four pairs 1, 2, 3, 4.
    s4 = qs.speedup_summary(np.ones(4), np.array([1.0, 2.0, 3.0, 4.0]))
    assert (s4["speedup_q1"], s4["speedup_median"], s4["speedup_q3"]) == (1.75, 2.5, 3.25)
    with pytest.raises(ValueError, match="sparse_ms, dense_ms"):
        qs.speedup_summary(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="sparse_ms, dense_ms"):
        qs.speedup_summary(np.ones(0), np.ones(0))


# ------------------------------------------------------------------------------ 8: setup progress
def _setup_build_step(fake_build: str, venv: str) -> str:
    """The build step of `make setup` (from `make -n`), with the pip command replaced."""
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    text = subprocess.run(
        ["make", "-n", "setup", "-B", f"VENV={venv}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = text.replace("\\\n", " ").splitlines()
    banners = [ln for ln in lines if ln.startswith('echo "setup ')]
    assert [b.split()[2] for b in banners] == ["1/4:", "2/4:", "3/4:", "4/4:", "done:"]
    step = next(ln for ln in lines if 'pip install -v ".[test]"' in ln)
    return step.replace(f'{venv}/bin/python -m pip install -v ".[test]"', fake_build)


def test_setup_build_shows_progress_and_the_log_tail_on_failure(tmp_path):
    import shutil
    import subprocess

    import pytest

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = str(tmp_path / "venv")
    (tmp_path / "venv").mkdir()
    ok = (
        "printf 'noise\\n[1/2] Building CXX object a.o\\n[2/2] Linking x.so\\n"
        "Successfully installed spattn\\n'"
    )
    r = subprocess.run(["bash", "-c", _setup_build_step(ok, venv)], capture_output=True, text=True)
    assert r.returncode == 0
    assert r.stdout.splitlines() == [
        "[1/2] Building CXX object a.o",
        "[2/2] Linking x.so",
        "Successfully installed spattn",
    ]
    bad = "{ printf '[1/9] Building a.o\\nfatal error: cuda.h: No such file\\n'; exit 3; }"
    r = subprocess.run(["bash", "-c", _setup_build_step(bad, venv)], capture_output=True, text=True)
    assert r.returncode == 1 and "fatal error: cuda.h" in r.stdout  # the log's tail is shown
