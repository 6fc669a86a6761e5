"""Decode parity: samples/hf_decode.py (numpy + ONNX Runtime, the exported -with-past graph)
produces the same greedy tokens as ``model.generate`` with eager attention, for left-padded
prompts, and its sliding-window caches stay bounded by the window."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
from hf_models import make_config

from spattn.hf.export import _kv_shapes, cache_layers, export_hf, layer_windows

transformers = pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "hf_decode.py"


def _sample():
    spec = importlib.util.spec_from_file_location("hf_decode", SAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


PROMPTS = [[11, 12, 13, 14, 15, 16, 17], [21, 22, 23], [31, 32, 33, 34, 35]]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny Mistral (sliding window 5) exported through the CLI, validated by default."""
    from click.testing import CliRunner

    from spattn.cli import cli

    tmp = tmp_path_factory.mktemp("mistral")
    torch.manual_seed(0)
    cfg = make_config("mistral", eos_token_id=None)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    model.eval().save_pretrained(tmp / "src")
    res = CliRunner().invoke(
        cli,
        [
            "export",
            str(tmp / "src"),
            "--task",
            "text-generation-with-past",
            "-o",
            str(tmp / "out"),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    out = res.stdout
    report = json.loads(out[out.index("{") :])
    return model, cfg, tmp / "out", report


def test_cli_export_validates(exported) -> None:
    _, cfg, out, report = exported
    assert report["passed"] is True and report["num_spattn_nodes"] == cfg.num_hidden_layers
    assert report["input_names"][:3] == ["input_ids", "attention_mask", "position_ids"]
    assert report["output_names"][0] == "logits"
    assert (out / "model.onnx").is_file() and (out / "config.json").is_file()
    # both validation shapes ran, one of them left-padded with a past
    assert any("left-padded" in k for k in report["errors"])


def test_cli_export_of_a_folder_needs_a_task(exported, tmp_path) -> None:
    from click.testing import CliRunner

    from spattn.cli import cli

    src = exported[2].parent / "src"
    res = CliRunner().invoke(cli, ["export", str(src), "-o", str(tmp_path / "o")])
    assert res.exit_code != 0 and "--task" in res.output


# Gemma 3: hybrid layers; Gemma 4: hybrid layers of different head dims; Qwen2-MoE and PhiMoE:
# windows only in their masks (layer_window), hybrid (Qwen2-MoE) and on every layer (PhiMoE);
# DeepSeek-V3: a cache of latents, not of keys and values; StableLM: converted without
# transformers' flag for registered attention; Llama 4: chunked layers whose cache keeps C - 1
# keys (12 new tokens cross three chunks of 4, the left padding of 4 a whole one)
@pytest.mark.parametrize(
    "model_type",
    [
        "mistral",
        "gemma3_text",
        "gemma4_text",
        "qwen2_moe",
        "phimoe",
        "deepseek_v3",
        "deepseek_v2",
        "stablelm",
        "gemma4_text_kv_shared",
        "gemma3n_text_kv_shared",
        "llama4_text",
    ],
)
def test_greedy_decode_matches_generate(model_type: str, exported, tmp_path) -> None:
    if model_type == "mistral":
        model, cfg, out, _ = exported
    elif os.environ.get("SPATTN_HF_FULL") != "1" and model_type != "llama4_text":
        pytest.skip(
            "set SPATTN_HF_FULL=1 to export more decoders (hybrid layers, mask-only windows)"
        )
    else:
        torch.manual_seed(0)
        cfg = make_config(model_type, eos_token_id=None)
        model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
        model.eval().save_pretrained(tmp_path / "src")
        export_hf(
            str(tmp_path / "src"),
            task="text-generation-with-past",
            output_dir=str(tmp_path / "out"),
            validate=False,
        )
        out = tmp_path / "out"
    sample = _sample()
    new = 12
    got, info = sample.greedy_decode(sample.session(str(out)), PROMPTS, new, pad_id=0)

    ids, mask = sample.left_pad(PROMPTS, 0)
    with torch.no_grad():
        ref = model.generate(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=0,
        )
    expected = ref[:, ids.shape[1] :].tolist()
    assert got == expected
    # the cache: sliding layers keep W - 1 keys whatever the length; full layers grow
    windows = layer_windows(cfg)
    no_window = ("deepseek_v3", "deepseek_v2", "stablelm")
    assert any(w is not None for w in windows) or model_type in no_window
    # per layer: (key heads x dim + value heads x dim) x 4 bytes per token and prompt (Gemma 4's
    # differ by layer; DeepSeek-V3 caches a latent and a rotary part of different widths)
    per_token = [(hk * dk + hv * dv) * 4 * len(PROMPTS) for (hk, dk), (hv, dv) in _kv_shapes(model)]
    total_len = ids.shape[1] + new - 1
    kv_layers = cache_layers(cfg)  # layers that reuse another's keys and values cache none
    expect_last = sum(
        per_token[i] * (total_len if windows[i] is None else min(total_len, windows[i] - 1))
        for i in kv_layers
    )
    assert info["cache_bytes"][-1] == expect_last
