"""Export a tiny random model of many Hugging Face families through ``spattn export``.

Question answered: which families of the installed transformers go through
``spattn export DIR --task T`` in one command and match the eager model (the export's own
validation: two shapes, one padded; decoders with ``text-generation-with-past``, left-padded,
with a past; encoders with ``feature-extraction``, right-padded), and which fail, with what
message? The test matrix (tests/hf) holds the families with a feature of their own; this sweep
covers more of them, each built from a small config with random weights (no download).

    python scripts/hf_family_sweep.py --out benchmarks/results/hf_family_sweep.json
    python scripts/hf_family_sweep.py --only llama gpt2      # a few families

Each family runs in its own process (the CLI). A family listed in ``EXPECTED_ERRORS`` must fail
with a message holding the given words: those are the models the op cannot run exactly, and the
sweep checks that their error says why. Exit status 1 when any family differs from what is
expected of it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_COMMON = dict(vocab_size=96, pad_token_id=0, bos_token_id=1, eos_token_id=2)
_DECODER = dict(
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    **_COMMON,
)
_MHA = {k: v for k, v in _DECODER.items() if k != "num_key_value_heads"}
# Multi-head latent attention (DeepSeek-V2/V3): a cache of the compressed latent (16 wide) and the
# rotary key part (8 wide), one head each
_MLA = dict(
    _DECODER,
    num_key_value_heads=4,
    q_lora_rank=None,
    kv_lora_rank=16,
    qk_rope_head_dim=8,
    qk_nope_head_dim=8,
    v_head_dim=16,
    n_routed_experts=4,
    num_experts_per_tok=2,
    moe_intermediate_size=32,
    first_k_dense_replace=1,
    n_group=1,
    topk_group=1,
)

# transformers model type -> config (decoders: AutoModelForCausalLM, task text-generation-with-past)
FAMILIES: dict[str, dict[str, Any]] = {
    "llama": _DECODER,
    "qwen2": _DECODER,
    "qwen3_moe": dict(
        _DECODER, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, head_dim=16
    ),
    "olmo2": _DECODER,
    "granite": _DECODER,
    "glm": dict(_DECODER, head_dim=16),
    "glm4": dict(_DECODER, head_dim=16),
    "helium": dict(_DECODER, head_dim=16),
    "smollm3": dict(_DECODER, no_rope_layers=[1, 0]),
    "gemma": dict(_DECODER, head_dim=16),
    "cohere": _DECODER,
    "nemotron": dict(_DECODER, head_dim=16),
    "seed_oss": dict(_DECODER, head_dim=16),
    "hunyuan_v1_dense": dict(_DECODER, head_dim=16),
    "arcee": _DECODER,
    "apertus": _DECODER,
    "ernie4_5": dict(_DECODER, head_dim=16),
    "deepseek_v3": _MLA,
    "gemma3n_text": dict(
        _DECODER,
        head_dim=16,
        sliding_window=5,
        layer_types=["sliding_attention", "full_attention"],
        num_kv_shared_layers=0,
        vocab_size_per_layer_input=96,
        hidden_size_per_layer_input=8,
        laurel_rank=4,
        altup_num_inputs=2,
        activation_sparsity_pattern=[0.0, 0.0],
        intermediate_size=[96, 96],
    ),
    "phi": _MHA,
    "stablelm": _DECODER,
    "gpt2": dict(n_embd=64, n_layer=2, n_head=4, n_positions=256, **_COMMON),
    "gpt_bigcode": dict(n_embd=64, n_layer=2, n_head=4, n_positions=256, **_COMMON),
    "gpt_neox": _MHA,
    "opt": dict(_MHA, ffn_dim=96, word_embed_proj_dim=64),
    "codegen": dict(n_embd=64, n_layer=2, n_head=4, rotary_dim=8, n_positions=256, **_COMMON),
    "gptj": dict(n_embd=64, n_layer=2, n_head=4, rotary_dim=8, n_positions=256, **_COMMON),
    "bloom": dict(hidden_size=64, n_layer=2, n_head=4, **_COMMON),
    "mpt": dict(d_model=64, n_heads=4, n_layers=2, **_COMMON),
    "falcon": dict(_MHA, alibi=True),
    "llama4_text": dict(
        _DECODER,
        head_dim=16,
        attention_chunk_size=8,
        num_local_experts=2,
        intermediate_size_mlp=96,
        no_rope_layers=[1, 1],
    ),
    "lfm2": dict(_DECODER, layer_types=["conv", "full_attention"]),
    "deepseek_v2": _MLA,  # the same layers; convert_hf makes its complex rotary real
    "qwen3_next": dict(
        _DECODER,
        layer_types=["linear_attention", "full_attention"],
        num_experts=2,
        num_experts_per_tok=1,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=32,
        head_dim=16,
        linear_key_head_dim=8,
        linear_value_head_dim=8,
        linear_num_key_heads=2,
        linear_num_value_heads=4,
    ),
    "jamba": dict(
        _DECODER,
        num_experts=2,
        attn_layer_period=2,
        attn_layer_offset=1,
        expert_layer_period=2,
        expert_layer_offset=1,
        mamba_d_state=8,
        mamba_dt_rank=8,
    ),
}

_ENCODER = dict(
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=256,
    vocab_size=96,
    pad_token_id=0,
)
# Encoders (AutoModel, task feature-extraction)
ENCODERS: dict[str, dict[str, Any]] = {
    "bert": _ENCODER,
    "roberta": dict(_ENCODER, pad_token_id=1),
    "xlm-roberta": dict(_ENCODER, pad_token_id=1),
    "camembert": dict(_ENCODER, pad_token_id=1),
    "electra": dict(_ENCODER, embedding_size=64),
    "ernie": _ENCODER,
    "distilbert": dict(dim=64, hidden_dim=96, n_layers=2, n_heads=4, vocab_size=96, pad_token_id=0),
    "deberta-v2": _ENCODER,
    "mpnet": _ENCODER,
    "roformer": _ENCODER,
}
FAMILIES.update(ENCODERS)

# Families the op cannot run exactly, and words their error must hold
EXPECTED_ERRORS: dict[str, list[str]] = {
    "bloom": ["AttentionInterface", "ALiBi"],
    "mpt": ["AttentionInterface", "ALiBi"],
    "falcon": ["AttentionInterface", "ALiBi"],
    "lfm2": ["['conv']", "text-generation"],
    "qwen3_next": ["['linear_attention']", "text-generation"],
    "jamba": ["AttentionInterface"],
    "deberta-v2": ["AttentionInterface"],
    "mpnet": ["AttentionInterface"],
    "roformer": ["AttentionInterface"],
}


def _machine() -> str:
    model = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _commit() -> str | None:
    """The repository's commit the sweep ran from (None outside a git checkout)."""
    r = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=Path(__file__).resolve().parent,
        capture_output=True,
        text=True,
    )
    return r.stdout.strip() or None if r.returncode == 0 else None


def _spattn() -> list[str]:
    return [sys.executable, "-m", "spattn"]


def run_family(name: str, work: Path, timeout_s: float) -> dict[str, Any]:
    import torch
    import transformers

    src, out = work / name, work / f"{name}_onnx"
    row: dict[str, Any] = {"family": name}
    try:
        cfg = transformers.AutoConfig.for_model(name, **FAMILIES[name])
        torch.manual_seed(0)
        head = transformers.AutoModel if name in ENCODERS else transformers.AutoModelForCausalLM
        head.from_config(cfg).save_pretrained(src)
    except Exception as e:  # noqa: BLE001 - a config this transformers cannot build
        row.update(outcome="not built", message=f"{type(e).__name__}: {e}".splitlines()[0])
        return row
    task = "feature-extraction" if name in ENCODERS else "text-generation-with-past"
    row["task"] = task
    cmd = [*_spattn(), "export", str(src), "--task", task, "-o", str(out)]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    row["seconds"] = round(time.time() - t0, 1)
    report = out / "export_report.json"
    if r.returncode == 0 and report.exists():
        rep = json.loads(report.read_text())
        main = "last_hidden_state" if name in ENCODERS else "logits"
        logits = [v for k, v in rep.get("errors", {}).items() if k.startswith(main)]
        row.update(
            outcome="passed" if rep.get("passed") else "validation failed",
            max_logits_error=max(logits) if logits else None,
            patterns=sorted(set(rep.get("patterns", []))),
        )
    else:
        lines = [ln for ln in (r.stdout + r.stderr).splitlines() if "error:" in ln]
        row.update(
            outcome="error",
            message=(
                lines[-1].split("error:", 1)[1].strip()
                if lines
                else (r.stderr.strip().splitlines() or ["?"])[-1]
            ),
        )
    want = EXPECTED_ERRORS.get(name)
    if want is None:
        row["as_expected"] = row["outcome"] == "passed"
    else:
        row["as_expected"] = row["outcome"] == "error" and all(
            w in row.get("message", "") for w in want
        )
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=sorted(FAMILIES), help="these families only")
    ap.add_argument("--out", help="write the rows and the command to this JSON file")
    ap.add_argument("--timeout-s", type=float, default=600.0, help="per family")
    a = ap.parse_args(argv)
    import transformers

    rows = []
    with tempfile.TemporaryDirectory(prefix="spattn_sweep_") as tmp:
        for name in a.only or sorted(FAMILIES):
            row = run_family(name, Path(tmp), a.timeout_s)
            rows.append(row)
            detail = row.get("message") or f"logits error {row.get('max_logits_error')}"
            mark = "ok " if row["as_expected"] else "BAD"
            print(f"{mark} {name:18s} {row['outcome']:18s} {detail[:160]}", flush=True)
    bad = [r["family"] for r in rows if not r["as_expected"]]
    print(f"{len(rows) - len(bad)} of {len(rows)} as expected" + (f"; not: {bad}" if bad else ""))
    if a.out:
        result = {
            "command": "python " + " ".join([os.path.relpath(__file__), *(argv or sys.argv[1:])]),
            "machine": _machine(),
            "transformers": transformers.__version__,
            "commit": _commit(),
            "rows": rows,
        }
        Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
