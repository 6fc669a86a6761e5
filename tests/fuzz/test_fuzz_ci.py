"""A seeded fuzz campaign on the CPU (ONNX Runtime CPU EP and our library) in CI.

Every case must be ``ok`` (the oracle's output) or ``clean_error`` (an error naming the offending
input or attribute); the test fails listing every other case with the command that reruns it.
``make fuzz`` runs the long campaign. The oracle's own checks come first: the spec's random-block
test vectors and the NaN/Inf rules on hand-made rows.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from fuzz_cases import make_case
from fuzz_driver import failed, run_fuzz
from fuzz_exec import Runner, classify, names_in
from fuzz_spec import ATTRS, oracle, random_draws

SEED = 19
CASES = 320


@pytest.mark.parametrize(
    "seed, h, qb, r, nkb, block",
    [
        (0, 0, 0, 0, 16, 14),
        (0, 0, 0, 1, 16, 11),
        (0, 1, 0, 0, 16, 11),
        (0, 0, 1, 0, 16, 11),
        (42, 3, 7, 1, 256, 95),
        (2147483647, 15, 1023, 2, 2048, 2000),
        (7, 0, 5, 0, 1, 0),
        (123, 2, 9, 3, 1000, 871),
    ],
)
def test_oracle_hash_matches_spec_vectors(seed, h, qb, r, nkb, block):
    assert int(random_draws(seed, h, qb, r + 1, nkb)[r]) == block


def _attrs(**kw):
    a = {n: s.default for n, s in ATTRS.items()}
    a.update(kw)
    return a


def test_oracle_nonfinite_rules():
    q = np.ones((1, 1, 3, 2), np.float32)
    k = np.ones((1, 1, 3, 2), np.float32)
    v = np.arange(6, dtype=np.float32).reshape(1, 1, 3, 2)
    # D2: padding (key 2) never contributes, NaN or not.
    k2 = k.copy()
    k2[0, 0, 2] = np.nan
    e = oracle(q, k2, v, _attrs(), key_lengths=np.array([2], np.int32))
    assert np.allclose(e.value[0, 0], [[1, 2]] * 3) and not e.must_nan.any()
    # D4: a NaN score of an allowed key: the row is NaN; a -inf score weighs zero.
    e = oracle(q, k2, v, _attrs())
    assert e.must_nan.all()
    k3 = k.copy()
    k3[0, 0, 0] = -np.inf
    e = oracle(q, k3, v, _attrs())
    assert not e.must_nan.any() and np.allclose(e.value[0, 0], [[3, 4]] * 3)
    # scale past float32's range: +inf scores make rows NaN; with softcap they are finite.
    e = oracle(q, k, v, _attrs(scale=3e38))
    assert e.must_nan.all()
    e = oracle(q, k, v, _attrs(scale=3e38, softcap=5.0))
    assert not e.must_nan.any() and np.allclose(e.value[0, 0], [[2, 3]] * 3)
    # D3 on tiled backends: an excluded valid key's NaN may make the row non-finite.
    v2 = v.copy()
    v2[0, 0, 0, 0] = np.inf
    e = oracle(q, k, v2, _attrs(causal=1, window_left=0), tiled=True)
    assert e.may_nonfinite[0, 0, 1:].all() and not e.may_nonfinite[0, 0, 0].any()
    assert e.must_nonfinite[0, 0, 0, 0] and not e.must_nonfinite[0, 0, 1:].any()
    # A row with no allowed key is zeros, sinks or not; a huge sink drives a row to zeros.
    e = oracle(q, k, v, _attrs(), key_lengths=np.array([0], np.int32))
    assert (e.value == 0).all()
    e = oracle(q, k, v, _attrs(), sinks=np.array([200.0], np.float32))
    assert np.abs(e.value).max() < 1e-30
    e = oracle(q, k, v, _attrs(), sinks=np.array([-math.inf], np.float32))
    assert np.allclose(e.value[0, 0], [[2, 3]] * 3)


def test_error_names_are_words():
    assert names_in("SparseAttention: key: batch size", ["key"])
    assert not names_in("SparseAttention: key_lengths: shape [B]", ["key"])
    assert not names_in("input parameter (x3) of operator", ["key_lengths"])
    assert names_in("SparseAttention: input 8: reserved", ["input 8"])


def test_gpu_bad_values_must_be_nan_rows():
    # On CUDA a bad value of key_lengths, block_indices or sinks gives NaN rows (docs/op-spec.md):
    # such an output counts as reporting the error; any affected row that is not NaN does not.
    for index in range(5, 2000):
        case = make_case(SEED, index, "cuda")
        if case.nan_rows is not None and case.nan_rows[0] == "batch":
            break
    b = case.nan_rows[1]
    shape = case.inputs[0].array.shape[:3] + case.inputs[2].array.shape[3:]
    out = np.zeros(shape, np.float32)
    out[b] = np.nan
    assert classify(case, out, None, "cuda")["outcome"] == "clean_error"
    out[b, 0, 0, 0] = 1.0
    assert classify(case, out, None, "cuda")["outcome"] == "accepted_invalid"
    assert classify(case, out, None, "cpu")["outcome"] == "accepted_invalid"


def test_runner_pins_crash_and_hang_on_their_cases(monkeypatch):
    # A child that dies on case 8 and one that stalls on case 11: each is pinned on its case,
    # and every other case of the batches still gets its own result.
    monkeypatch.setenv("SPATTN_FUZZ_SELFTEST", "crash:8,hang:11")
    runner = Runner(SEED, "cpu", timeout=20.0, batch_size=5)
    ids = list(range(5, 15))
    results = runner.run(ids, jobs=2)
    assert [r["index"] for r in results] == ids
    by = {r["index"]: r["outcome"] for r in results}
    assert by[8] == "crash" and "SIGSEGV" in results[3]["message"]
    assert by[11] == "hang"
    others = [o for i, o in by.items() if i not in (8, 11)]
    assert all(o not in ("crash", "hang", "harness_error") for o in others), by
    assert runner.batch_incidents == []


def test_fuzz_cpu_seeded(tmp_path):
    summary = run_fuzz(CASES, SEED, "cpu", jobs=2, out=tmp_path, timeout=30.0, quiet=True)
    assert summary["cases"] == CASES
    # Both kinds of case must have run: a campaign of only errors (or only outputs) proves
    # little.
    assert summary["outcomes"].get("ok", 0) >= CASES // 3
    assert summary["outcomes"].get("clean_error", 0) >= CASES // 10
    bad = failed(summary)
    lines = [
        f"{r['outcome']}: case {r['index']} {r.get('kind', '')}: "
        f"{str(r.get('message', r.get('note', '')))[:400]}"
        f"\n    rerun: python -m tests.fuzz.run --seed {SEED} --only {r['index']}"
        for r in bad
    ]
    assert not bad, f"{len(bad)} of {CASES} fuzz cases failed:\n" + "\n".join(lines)


def test_cuda_provider_unavailable_is_a_clear_error():
    import subprocess
    import sys
    from pathlib import Path

    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("the CUDA EP is available here: the campaign itself runs")
    repo = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "tests.fuzz.run", "--provider", "cuda", "--cases", "3"]
    p = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "--provider cuda needs ONNX Runtime's CUDA execution provider" in p.stderr
    assert "Traceback" not in p.stderr


def test_trt_nodes_carry_valid_sets_and_named_refusals(tmp_path):
    """The nodes file for the TensorRT harness: valid attribute sets and INT/FLOAT values the
    plugin must refuse by name, each parsed back to the case it came from."""
    import trt_nodes

    out = tmp_path / "nodes.txt"
    assert (
        trt_nodes.main(["--seed", "1", "--cases", "1200", "--max-nodes", "80", "-o", str(out)]) == 0
    )
    lines = out.read_text().split("\n")[:-1]
    assert len(lines) == 80
    refusals = [ln for ln in lines if " expect_error=" in ln]
    assert refusals and len(refusals) < len(lines)
    for ln in lines:
        tok = dict(t.split("=", 1) for t in ln.split()[1:])
        case = make_case(1, int(tok["model"].split("-")[1]), "cuda")
        assert tok["inputs"].startswith("111")
        written = {k.split(":")[0]: v for k, v in tok.items() if ":" in k}
        assert written.keys() == {n for n, _ in case.attrs}
        if "expect_error" in tok:
            assert case.expect == "error" and tok["expect_error"] in case.names
        else:
            assert case.expect == "ok"
