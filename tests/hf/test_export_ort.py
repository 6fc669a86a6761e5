"""export_hf / ``spattn export DIR --task``: real ONNX files, run by ONNX Runtime with our library,
compared with the same model under attn_implementation="eager" (export_hf's own validation at two
shapes, one padded) and checked for names, axes and node counts.

``scripts/run-tests.sh`` (``make test``, CI) sets ``SPATTN_HF_FULL=1``: every family of
``FAMILIES`` is exported. An export takes up to a minute on two cores, so ``SPATTN_HF_FULL=0``
(or plain pytest) exports one model per feature of the op that the families use (sliding window +
KV cache: Mistral; softcap: Gemma 2; sinks and a mixture-of-experts: gpt-oss; per-input globals:
Longformer; listed blocks: BigBird) and skips the others, with that reason.
"""

from __future__ import annotations

import json
import os

import onnx
import pytest
import torch
from hf_models import CONFIGS, make_config

import spattn
from spattn.hf.export import cache_layers, export_hf

pytest.importorskip("onnxruntime")

FAMILIES = {
    # model_type: (task, head class, spattn nodes per layer)
    "mistral": ("text-generation-with-past", "AutoModelForCausalLM", 1),
    "qwen2": ("text-generation-with-past", "AutoModelForCausalLM", 1),
    "qwen3": ("text-generation", "AutoModelForCausalLM", 1),
    "cohere2": ("text-generation-with-past", "AutoModelForCausalLM", 1),
    "gemma2_softcap": ("text-generation-with-past", "AutoModelForCausalLM", 1),
    "gemma3_text": ("text-generation-with-past", "AutoModelForCausalLM", 1),
    "gemma4_text": ("text-generation-with-past", "AutoModelForCausalLM", 1),
    "phi3": ("text-generation-with-past", "AutoModelForCausalLM", 1),
    "gpt_neo": ("text-generation-with-past", "AutoModelForCausalLM", 1),
    "gpt_oss": ("text-generation-with-past", "AutoModelForCausalLM", 1),
    "starcoder2": ("text-generation-with-past", "AutoModelForCausalLM", 1),
    "mixtral": ("text-generation-with-past", "AutoModelForCausalLM", 1),
    "exaone4": ("text-generation-with-past", "AutoModelForCausalLM", 1),
    "phimoe": ("text-generation-with-past", "AutoModelForCausalLM", 1),
    "deepseek_v3": ("text-generation-with-past", "AutoModelForCausalLM", 1),
    "deepseek_v2": ("text-generation-with-past", "AutoModelForCausalLM", 1),
    "gpt2": ("text-generation-with-past", "AutoModelForCausalLM", 1),
    "gpt_neox": ("text-generation-with-past", "AutoModelForCausalLM", 1),
    "opt": ("text-generation-with-past", "AutoModelForCausalLM", 1),
    "gptj": ("text-generation-with-past", "AutoModelForCausalLM", 1),
    "glm4": ("text-generation-with-past", "AutoModelForCausalLM", 1),
    "smollm3": ("text-generation-with-past", "AutoModelForCausalLM", 1),
    "granite": ("text-generation-with-past", "AutoModelForCausalLM", 1),
    "gemma3n_text": ("text-generation-with-past", "AutoModelForCausalLM", 1),
    "stablelm": ("text-generation-with-past", "AutoModelForCausalLM", 1),
    "gemma4_text_kv_shared": ("text-generation-with-past", "AutoModelForCausalLM", 1),
    "gemma3n_text_kv_shared": ("text-generation-with-past", "AutoModelForCausalLM", 1),
    # chunked layers (chunk_size) beside a full one, the chunked cache keeping C - 1 keys
    "llama4_text": ("text-generation-with-past", "AutoModelForCausalLM", 1),
    # one layer in two is attention; the linear-attention state is no KV cache: no past
    "qwen3_next": ("text-generation", "AutoModelForCausalLM", 0.5),
    "modernbert": ("feature-extraction", "AutoModel", 1),
    "bert": ("feature-extraction", "AutoModel", 1),
    "distilbert": ("feature-extraction", "AutoModel", 1),
    "big_bird": ("feature-extraction", "AutoModel", 1),
    "longformer": ("feature-extraction", "AutoModel", 2),
}


def transformers_config(folder):
    import transformers

    return transformers.AutoConfig.from_pretrained(str(folder))


def save_tiny(model_type: str, head: str, path: str, **overrides) -> str:
    import transformers

    torch.manual_seed(0)
    cfg = make_config(model_type, **overrides)
    getattr(transformers, head).from_config(cfg).save_pretrained(path)
    return path


DEFAULT = {"longformer", "big_bird", "gpt_oss", "gemma2_softcap"}
FULL = os.environ.get("SPATTN_HF_FULL") == "1"


def _family(mt: str):
    marks = (
        []
        if FULL or mt in DEFAULT
        else [pytest.mark.skip(reason="set SPATTN_HF_FULL=1 to export every family")]
    )
    return pytest.param(mt, marks=marks, id=mt)


@pytest.mark.parametrize("model_type", [_family(m) for m in sorted(FAMILIES)])
def test_export_validates_against_eager(model_type: str, tmp_path) -> None:
    task, head, per_layer = FAMILIES[model_type]
    src = save_tiny(model_type, head, str(tmp_path / "src"))
    rep = export_hf(src, task=task, output_dir=str(tmp_path / "out"), intra_op_threads=1)
    assert rep.passed, rep.summary()
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    layers = (
        cfg.get("num_hidden_layers")
        or cfg.get("num_layers")
        or cfg.get("n_layer")
        or cfg.get("n_layers")
    )
    assert rep.num_spattn_nodes == per_layer * layers
    assert len(rep.errors) >= 2  # both validation shapes ran
    proto = onnx.load(rep.path, load_external_data=False)
    ins = [i.name for i in proto.graph.input]
    outs = [o.name for o in proto.graph.output]
    assert ins[:2] == ["input_ids", "attention_mask"]
    assert outs[0] == ("last_hidden_state" if task == "feature-extraction" else "logits")
    dims = {i.name: [d.dim_param for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    assert dims["input_ids"] == ["batch_size", "sequence_length"]
    if task == "text-generation-with-past":
        assert "past_key_values.0.key" in ins and "present.0.value" in outs
        assert dims["past_key_values.0.key"][2] == "past_sequence_length"
        # one past and one present per layer with a cache of its own (not the KV-sharing ones)
        kv_layers = cache_layers(transformers_config(tmp_path / "out"))
        assert len(kv_layers) == layers - (2 if model_type.endswith("_kv_shared") else 0)
        assert [n for n in outs if n.startswith("present.")] == [
            f"present.{i}.{kv}" for i in kv_layers for kv in ("key", "value")
        ]
        assert [n for n in ins if n.startswith("past_key_values.")] == [
            f"past_key_values.{i}.{kv}" for i in kv_layers for kv in ("key", "value")
        ]
    if model_type == "longformer":
        assert "global_attention_mask" in ins
    # _lean_graph: no RMSNorm left as x * Reciprocal(Sqrt(v)), and with a cache, each layer's
    # past-length Shape reads the first past of its window (one padding-range chain per window)
    assert not any(n.op_type == "Reciprocal" for n in proto.graph.node)
    if task == "text-generation-with-past":
        from spattn.hf.export import layer_windows

        windows = layer_windows(transformers_config(tmp_path / "out"))
        firsts = {
            f"past_key_values.{windows.index(w)}.{kv}" for w in windows for kv in ("key", "value")
        }
        read = {n.input[0] for n in proto.graph.node if n.op_type == "Shape"}
        assert {r for r in read if r.startswith("past_key_values.")} <= firsts


@pytest.mark.skipif(not FULL, reason="set SPATTN_HF_FULL=1 (two more exports)")
def test_export_fill_mask_and_classification(tmp_path) -> None:
    src = save_tiny("modernbert", "AutoModelForMaskedLM", str(tmp_path / "mlm"))
    rep = export_hf(src, task="fill-mask", output_dir=str(tmp_path / "o1"))
    assert rep.passed and rep.output_names == ["logits"]
    src = save_tiny("mistral", "AutoModelForSequenceClassification", str(tmp_path / "cls"))
    rep = export_hf(src, task="text-classification", output_dir=str(tmp_path / "o2"))
    assert rep.passed and rep.output_names == ["logits"]


@pytest.mark.skipif(not FULL, reason="set SPATTN_HF_FULL=1 (one more export)")
def test_export_float16(tmp_path) -> None:
    src = save_tiny("mistral", "AutoModelForCausalLM", str(tmp_path / "src"))
    rep = export_hf(
        src, task="text-generation-with-past", output_dir=str(tmp_path / "o"), dtype="float16"
    )
    assert rep.passed, rep.summary()
    proto = onnx.load(rep.path)
    assert proto.graph.input[3].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


@pytest.mark.skipif(not FULL, reason="set SPATTN_HF_FULL=1; test_decode checks the cache sizes")
def test_sliding_present_is_bounded_by_the_window(tmp_path) -> None:
    """present of a sliding layer holds at most W-1 keys; a full layer holds past + new."""
    import numpy as np

    from spattn import runtime

    src = save_tiny("qwen2", "AutoModelForCausalLM", str(tmp_path / "src"))
    rep = export_hf(
        src, task="text-generation-with-past", output_dir=str(tmp_path / "o"), validate=False
    )
    sess = runtime.ort_session(rep.path)
    # qwen2 tiny: layer 0 full, layer 1 sliding with window 6
    b, n, past = 2, 9, 0
    feeds = {
        "input_ids": np.full((b, n), 7, np.int64),
        "attention_mask": np.ones((b, n), np.int64),
        "position_ids": np.tile(np.arange(n), (b, 1)),
    }
    for i in range(2):
        for kv in ("key", "value"):
            feeds[f"past_key_values.{i}.{kv}"] = np.zeros((b, 2, past, 16), np.float32)
    out = runtime.run_ort(None, feeds, session=sess)
    assert out["present.0.key"].shape[2] == n
    assert out["present.1.key"].shape[2] == 5


@pytest.mark.skipif(not FULL, reason="set SPATTN_HF_FULL=1; test_decode exports through the CLI")
def test_cli_export_dispatches_a_model_folder(tmp_path) -> None:
    from click.testing import CliRunner

    from spattn.cli import cli

    src = save_tiny("mistral", "AutoModelForCausalLM", str(tmp_path / "tiny"))
    res = CliRunner().invoke(
        cli, ["export", src, "--task", "text-generation", "-o", str(tmp_path / "out"), "--quiet"]
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "model.onnx").is_file()
    assert (tmp_path / "out" / "config.json").is_file()
    res = CliRunner().invoke(cli, ["export", src, "-o", str(tmp_path / "o2")])
    assert res.exit_code != 0 and "--task" in res.output


def test_cli_exports_llama4_chunked_layers_with_a_cache(tmp_path) -> None:
    # Llama 4's chunked layers become chunk_size on their nodes; the cache of a chunked layer
    # keeps C - 1 keys like a window of C; validation (left-padded, with a past) passes
    from click.testing import CliRunner

    from spattn.cli import cli

    src = save_tiny("llama4_text", "AutoModelForCausalLM", str(tmp_path / "llama4"))
    res = CliRunner().invoke(
        cli,
        ["export", src, "--task", "text-generation-with-past", "-o", src + "_o", "--json"],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout[res.stdout.index("{") :])
    assert report["passed"] is True
    m = onnx.load(os.path.join(src + "_o", "model.onnx"))
    chunks = [
        next((a.i for a in n.attribute if a.name == "chunk_size"), 0)
        for n in m.graph.node
        if n.op_type == "SparseAttention"
    ]
    assert chunks == [4, 0]  # the chunked layer, then the full one


def test_multimodal_llama4_checkpoint_exports_its_language_model(tmp_path) -> None:
    # Llama 4's released checkpoints are multimodal (model_type "llama4"): a text task loads
    # their language model (AutoModelForCausalLM), whose chunked layers export as the text
    # family's; the vision encoder (complex rotary of its own) is not part of the graph
    import transformers

    vision = dict(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=48,
        image_size=28,
        patch_size=14,
        vision_output_dim=32,
        projector_input_dim=32,
        projector_output_dim=64,
    )
    cfg = transformers.Llama4Config(text_config=dict(CONFIGS["llama4_text"]), vision_config=vision)
    src = str(tmp_path / "scout_like")
    torch.manual_seed(0)
    transformers.Llama4ForConditionalGeneration(cfg).eval().save_pretrained(src)
    # the language model takes the checkpoint's weights, none left to a random init
    _, info = transformers.AutoModelForCausalLM.from_pretrained(src, output_loading_info=True)
    assert not info["missing_keys"], info["missing_keys"]
    rep = export_hf(src, task="text-generation-with-past", output_dir=str(tmp_path / "out"))
    assert rep.passed, rep.summary()
    assert rep.num_spattn_nodes == 2 and len(rep.errors) >= 2


def test_cache_export_of_a_model_with_other_layer_state_is_an_error(tmp_path) -> None:
    # LFM2's convolution layers keep a state between steps that the exported cache would drop
    import transformers

    kw = dict(CONFIGS["mistral"], layer_types=["conv", "full_attention"])
    kw.pop("sliding_window")
    src = str(tmp_path / "lfm2")
    cfg = transformers.AutoConfig.for_model("lfm2", **kw)
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(src)
    with pytest.raises(NotImplementedError, match=r"layer types \['conv'\].*'text-generation'"):
        export_hf(src, task="text-generation-with-past", output_dir=str(tmp_path / "o"))


def test_cache_export_of_qwen3_next_is_an_error(tmp_path) -> None:
    # converted (its class is not flagged for registered attention), but its linear-attention
    # layers keep a state of their own: the -with-past export names them
    src = save_tiny("qwen3_next", "AutoModelForCausalLM", str(tmp_path / "src"))
    with pytest.raises(
        NotImplementedError, match=r"layer types \['linear_attention'\].*'text-generation'"
    ):
        export_hf(src, task="text-generation-with-past", output_dir=str(tmp_path / "o"))


def test_export_of_a_model_without_convertible_attention_is_an_error(tmp_path) -> None:
    import transformers

    cfg = transformers.AutoConfig.for_model(
        "xlnet", d_model=32, n_layer=1, n_head=2, d_inner=64, vocab_size=64
    )
    transformers.AutoModel.from_config(cfg).save_pretrained(str(tmp_path / "xlnet"))
    with pytest.raises(ValueError, match="attention classes found: .*XLNetRelativeAttention"):
        export_hf(
            str(tmp_path / "xlnet"), task="feature-extraction", output_dir=str(tmp_path / "o")
        )


def test_complex_tensors_error_says_why(tmp_path, monkeypatch) -> None:
    # A model whose traced code holds complex tensors (DeepSeek-V2 without convert_hf's real
    # rotary pairs): torch.onnx cannot translate them, and the error says so instead of
    # torch.onnx's "this looks like a bug"
    import transformers

    import spattn.hf.convert as convert

    cfg = transformers.AutoConfig.for_model("deepseek_v2", **CONFIGS["deepseek_v2"])
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(str(tmp_path / "ds2"))
    monkeypatch.setattr(convert, "_real_rotary", lambda model: 0)
    with pytest.raises(NotImplementedError, match="complex-valued tensors.*view_as_complex"):
        export_hf(str(tmp_path / "ds2"), task="text-generation", output_dir=str(tmp_path / "o"))


def test_alibi_model_error_says_why(tmp_path) -> None:
    # BLOOM computes its attention (with ALiBi biases) in its own code: the error names both
    import transformers

    cfg = transformers.AutoConfig.for_model(
        "bloom", hidden_size=32, n_layer=1, n_head=2, vocab_size=64
    )
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(str(tmp_path / "bloom"))
    with pytest.raises(ValueError, match="BloomAttention.*AttentionInterface.*ALiBi.*'eager'"):
        export_hf(str(tmp_path / "bloom"), task="text-generation", output_dir=str(tmp_path / "o"))


def test_spattn_package_exposes_export_hf() -> None:
    assert spattn.export_hf is export_hf
