"""Bad option values of every command: a click-style error naming the option (exit 2), or one
clean line naming it (exit 1) for what only shows when writing; never a traceback or the
"looks like a bug" line."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import encoder_model, invoke, invoke_json, sparse_model


@pytest.fixture
def encoder():
    return encoder_model()


def _clean(result, *names):
    text = result.output
    assert "looks like a bug" not in text, text
    assert any(n in text for n in names), text
    return text


@pytest.fixture
def a_file(tmp_path):
    f = tmp_path / "plain_file"
    f.write_text("x")
    return f


def test_inspect_length_is_bounded_and_fast(tmp_path):
    model = sparse_model(tmp_path / "lf.onnx", window_left=256, window_right=256, num_global=1)
    # The band/global density has a closed form: 2^30 (the largest valid length) is counted.
    node = invoke_json("inspect", model, "--length", 2**30)["nodes"][0]
    # Rows far from the ends see 513 keys; the ends fewer; the global row and column add ~2 L.
    assert 510 / 2**30 < node["density"] < 516 / 2**30
    r = invoke("inspect", model, "--length", 2**30 + 1, code=2)
    _clean(r, "--length")
    r = invoke("inspect", model, "--length", 2**31, code=2)
    _clean(r, "--length")


def test_inspect_length_random_blocks_not_counted_past_the_limit(tmp_path):
    model = sparse_model(tmp_path / "bb.onnx", window_left=64, window_right=64, num_random=2)
    r = invoke("inspect", model, "--length", 2**30)
    assert "not counted at L=1073741824" in r.output
    r = invoke("inspect", model, "--length", 2**30, "--plot", tmp_path / "p.png", code=2)
    _clean(r, "--length")


def test_run_huge_seq_len_is_a_usage_error(encoder):
    r = invoke("run", encoder, "--seq-len", 2**40, code=2)
    _clean(r, "--seq-len")


def test_run_output_parent_is_a_file(encoder, a_file):
    r = invoke("run", encoder, "-o", a_file / "out.npz", code=2)
    _clean(r, "--output")


def test_run_output_in_proc_is_a_clean_error(encoder):
    r = invoke("run", encoder, "--repeat", 1, "--warmup", 0, "-o", "/proc/out.npz", code=1)
    _clean(r, "-o/--output")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_run_output_dev_full_fails_and_writes_no_npz_beside_it(encoder):
    before = os.path.exists("/dev/full.npz")
    r = invoke("run", encoder, "--repeat", 1, "--warmup", 0, "-o", "/dev/full", code=1)
    text = _clean(r, "-o/--output")
    assert "/dev/full" in text and "No space left" in text
    assert os.path.exists("/dev/full.npz") == before


def test_run_output_written_at_exactly_the_path(encoder, tmp_path):
    out = tmp_path / "outputs_without_suffix"
    invoke("run", encoder, "--repeat", 1, "--warmup", 0, "-o", out, "-q")
    with np.load(out) as z:
        assert z.files == ["output"] or len(z.files) >= 1
    assert not Path(str(out) + ".npz").exists()


def test_save_inputs_parent_is_a_file(encoder, a_file):
    r = invoke("run", encoder, "--save-inputs", a_file / "in.npz", code=2)
    _clean(r, "--save-inputs")


@pytest.mark.parametrize(
    "args, option",
    [
        (["run", "{enc}", "--seq-len", "0"], "--seq-len"),
        (["run", "{enc}", "--seq-len", str(2**30 + 1)], "--seq-len"),
        (["run", "{enc}", "--seq-len", "abc"], "--seq-len"),
        (["run", "{enc}", "--batch", str(2**31)], "--batch"),
        (["run", "{enc}", "--seed", "-1"], "--seed"),
        (["run", "{enc}", "--repeat", "0"], "--repeat"),
        (["run", "{enc}", "--warmup", "-1"], "--warmup"),
        (["run", "{enc}", "--threads", "0"], "--threads"),
        (["run", "{enc}", "-o", "{dir}"], "--output"),
        (["run", "{enc}", "-o", "{file}/x.npz"], "--output"),
        (["inspect", "{enc}", "--length", "0"], "--length"),
        (["inspect", "{enc}", "--length", "1.5"], "--length"),
        (["inspect", "{enc}", "--plot", "{file}/p.png"], "--plot"),
        (["inspect", "{enc}", "--plot", "{dir}"], "--plot"),
        (["verify", "{enc}", "--atol", "-1"], "--atol"),
        (["verify", "{enc}", "--rtol", "nan"], "--rtol"),
        (["verify", "{enc}", "--atol", "inf"], "--atol"),
        (["verify", "{enc}", "--seq-len", str(2**31)], "--seq-len"),
        (["export", "longformer_encoder", "--atol", "-1"], "--atol"),
        (["export", "longformer_encoder", "--rtol", "abc"], "--rtol"),
        (["export", "longformer_encoder", "--opset", "17"], "--opset"),
        (["export", "longformer_encoder", "-o", "{file}/m.onnx"], "--output"),
        (["export", "longformer_encoder", "--report", "{file}/r.json"], "--report"),
        (["export", "longformer_encoder", "--threads", "-3"], "--threads"),
        (["build", "{enc}", "-o", "{file}/e.plan"], "--output"),
        (["build", "{enc}", "--seq-len", f"1,1,{2**31}"], "--seq-len"),
        (["build", "{enc}", "--workspace-mb", "0"], "--workspace-mb"),
        (["bench", "-L", f"1,{2**31}"], "--lengths"),
        (["bench", "-L", "0"], "--lengths"),
        (["bench", "--heads", "0"], "--heads"),
        (["bench", "-o", "{file}/sub"], "--out"),
        (["bench", "-o", "{file}"], "--out"),
        (["triton-repo", "{enc}", "-o", "{file}/repo"], "--out"),
        (["triton-repo", "{enc}", "--max-batch-size", "-1"], "--max-batch-size"),
        (["serve", "{dir}", "--http-port", "0"], "--http-port"),
        (["serve", "{dir}", "--log-file", "{file}/log"], "--log-file"),
        (["serve", "{dir}", "--ready-timeout", "0"], "--ready-timeout"),
    ],
)
def test_bad_option_values_are_usage_errors_naming_the_option(
    args, option, encoder, tmp_path, a_file
):
    subst = {"{enc}": str(encoder), "{dir}": str(tmp_path), "{file}": str(a_file)}
    argv = []
    for a in args:
        for k, v in subst.items():
            a = a.replace(k, v)
        argv.append(a)
    r = invoke(*argv, code=2)
    _clean(r, option)
