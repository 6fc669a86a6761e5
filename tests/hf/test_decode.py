"""Decode parity: samples/hf_decode.py (numpy + ONNX Runtime, the exported -with-past graph)
produces the same greedy tokens as ``model.generate`` with eager attention, for left-padded
prompts, and its sliding-window caches stay bounded by the window."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from conftest import make_config

from spattn.hf.export import export_hf, layer_windows

transformers = pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "hf_decode.py"


def _sample():
    spec = importlib.util.spec_from_file_location("hf_decode", SAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


PROMPTS = [[11, 12, 13, 14, 15, 16, 17], [21, 22, 23], [31, 32, 33, 34, 35]]


@pytest.mark.parametrize("model_type", ["mistral", "gemma3_text"])
def test_greedy_decode_matches_generate(model_type: str, tmp_path) -> None:
    torch.manual_seed(0)
    cfg = make_config(model_type, eos_token_id=None)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    model.eval().save_pretrained(tmp_path / "src")
    rep = export_hf(
        str(tmp_path / "src"),
        task="text-generation-with-past",
        output_dir=str(tmp_path / "out"),
        validate=False,
    )
    sample = _sample()
    new = 12
    got, info = sample.greedy_decode(sample.session(str(tmp_path / "out")), PROMPTS, new, pad_id=0)

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
    # the cache: sliding layers keep W - 1 = 4 keys whatever the length; full layers grow
    assert rep.num_spattn_nodes == cfg.num_hidden_layers
    windows = layer_windows(cfg)
    per_token = (
        2 * cfg.num_key_value_heads * (getattr(cfg, "head_dim", None) or 16) * 4 * len(PROMPTS)
    )
    total_len = ids.shape[1] + new - 1
    expect_last = sum(
        per_token * (total_len if w is None else min(total_len, w - 1)) for w in windows
    )
    assert info["cache_bytes"][-1] == expect_last
