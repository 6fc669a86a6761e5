"""PyTorch parity: attn_implementation="spattn" / converted models against HF eager attention.

Outputs are compared at the valid (non-padding) positions: padded query rows are never read by
valid tokens, and HF eager gives a fully masked row a uniform average where the op gives zeros.
"""

from __future__ import annotations

import pytest
import torch
from hf_models import CONFIGS, DECODERS, model_pair, needs_marks, padded_batch

import spattn
from spattn.hf.attention import layer_pattern

ATOL = 2e-5


def _max_diff(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    return float((a - b).abs()[mask.bool()].max())


def _lengths(model_type: str) -> tuple[int, list[int]]:
    # BigBird switches to dense attention at or below (5 + 2 r) * block_size = 36 tokens
    return (48, [48, 37]) if model_type == "big_bird" else (30, [30, 19])


def _cases() -> list:
    out = []
    for mt in sorted(CONFIGS):
        sides = ["none", "right"] + (["left"] if mt in DECODERS else [])
        for side in sides:
            out.append(pytest.param(mt, side, marks=needs_marks(mt, side), id=f"{mt}-{side}"))
    return out


@pytest.mark.parametrize(("model_type", "side"), _cases())
def test_parity_with_eager(model_type: str, side: str) -> None:
    eager, ours = model_pair(model_type)
    total, lengths = _lengths(model_type)
    if side == "none":
        lengths = [total, total]
    ids, mask = padded_batch(lengths, total, "left" if side == "left" else "right")
    kw = {}
    if model_type == "longformer":
        g = torch.zeros_like(mask)
        g[:, 0] = 1
        g[0, 5] = 1
        kw["global_attention_mask"] = g
    with torch.no_grad():
        a = eager(input_ids=ids, attention_mask=mask, **kw)[0]
        b = ours(input_ids=ids, attention_mask=mask, **kw)[0]
    assert a.shape == b.shape
    assert _max_diff(a, b, mask) <= ATOL


def test_softcap_matters_in_the_tiny_config() -> None:
    """The Gemma 2 softcap test is not vacuous: without the cap the eager outputs differ."""
    capped, _ = model_pair("gemma2_softcap")
    plain, _ = model_pair("gemma2_softcap", attn_logit_softcapping=None)
    plain.load_state_dict(capped.state_dict())
    ids, mask = padded_batch([30, 30], 30)
    with torch.no_grad():
        d = _max_diff(capped(input_ids=ids)[0], plain(input_ids=ids)[0], mask)
    assert d > 1e-3


@pytest.mark.parametrize("keep", [0, 1, 3])
def test_kv_shared_layers_with_kept_logits(keep: int) -> None:
    """Gemma 4 slices its inputs to the kept logits' positions before its KV-shared layers
    (what generate asks for): the converted model keeps its 2-D masks through that slicing,
    and its kept logits equal eager's."""
    import transformers

    eager, ours = model_pair("gemma4_text_kv_shared", head=transformers.AutoModelForCausalLM)
    ids, mask = padded_batch([30, 19], 30, "left")  # the last positions are valid ones
    with torch.no_grad():
        a = eager(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
        b = ours(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
    assert a.shape == b.shape and a.shape[1] == (keep or 30)
    assert _max_diff(a, b, mask[:, -a.shape[1] :]) <= ATOL  # the valid positions


@pytest.mark.parametrize(
    "model_type", ["qwen3_next", "gemma4_text_kv_shared", "deepseek_v2", "llama4_text"]
)
def test_generate_matches_eager(model_type: str) -> None:
    """generate in PyTorch with transformers' own cache: linear-attention states beside the KV
    cache (Qwen3-Next), KV-shared layers and their slicing to the last position (Gemma 4), the
    real rotary pairs (DeepSeek-V2), chunked layers whose cache drops keys (Llama 4, chunks of 4;
    left padding of 5 tokens, more than a chunk); left-padded prompts, greedy tokens equal to
    eager's."""
    import transformers

    eager, ours = model_pair(model_type, head=transformers.AutoModelForCausalLM)
    ids, mask = padded_batch([12, 7], 12, "left")
    kw = dict(max_new_tokens=10, min_new_tokens=10, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        a = eager.generate(input_ids=ids, attention_mask=mask, **kw)
        b = ours.generate(input_ids=ids, attention_mask=mask, **kw)
    assert a.shape == (2, 22) and torch.equal(a, b)


def test_spattn_really_runs_and_window_matters() -> None:
    """The parity above is not vacuous: the op is called, and an off-by-one window shows."""
    eager, ours = model_pair("mistral")
    ids, mask = padded_batch([30, 30], 30)
    calls = []
    import spattn.hf.attention as A

    real = A.sparse_attention

    def spy(*args, **kwargs):
        calls.append(args[3])
        return real(*args, **kwargs)

    A.sparse_attention = spy
    try:
        with torch.no_grad():
            ours(input_ids=ids, attention_mask=mask)
        assert len(calls) == 2 and calls[0].window_left == 4 and calls[0].causal

        def wider(*args, **kwargs):
            p = args[3]
            return real(
                args[0], args[1], args[2], p.replace(window_left=p.window_left + 1), **kwargs
            )

        A.sparse_attention = wider
        with torch.no_grad():
            bad = ours(input_ids=ids, attention_mask=mask)[0]
            good = eager(input_ids=ids, attention_mask=mask)[0]
        assert _max_diff(bad, good, mask) > 1e-3
    finally:
        A.sparse_attention = real


def test_bigbird_block_multiplicity_matters() -> None:
    """HF BigBird (eval) counts block 0 (1 + r) times; the generic Pattern.bigbird does not."""
    eager, ours = model_pair("big_bird")
    assert ours.attention_type == "block_sparse"
    ids, mask = padded_batch([48, 48], 48)
    with torch.no_grad():
        a = eager(input_ids=ids, attention_mask=mask)[0]
        b = ours(input_ids=ids, attention_mask=mask)[0]
    assert eager.attention_type == "block_sparse"
    assert _max_diff(a, b, mask) <= ATOL
    eager2, plain = model_pair("big_bird", num_random_blocks=0)
    with torch.no_grad():
        c = plain(input_ids=ids, attention_mask=mask)[0]
    assert _max_diff(a, c, mask) > 1e-3  # other weights/pattern: a different model


def test_layer_pattern_mapping() -> None:
    import types

    causal = types.SimpleNamespace(is_causal=True, config=types.SimpleNamespace())
    p = layer_pattern(causal, sliding_window=4096, scaling=0.125)
    assert (p.window_left, p.window_right, p.causal, p.scale) == (4095, -1, True, 0.125)
    bidir = types.SimpleNamespace(is_causal=False, config=types.SimpleNamespace(sliding_window=64))
    p = layer_pattern(bidir, sliding_window=65)  # ModernBERT: local_attention / 2 + 1
    assert (p.window_left, p.window_right, p.causal) == (64, 64, False)
    # a decoder switched to bidirectional through config.is_causal = False: |p - j| <= W
    flipped = types.SimpleNamespace(
        is_causal=True, config=types.SimpleNamespace(is_causal=False, sliding_window=16)
    )
    p = layer_pattern(flipped, sliding_window=16)
    assert (p.window_left, p.window_right, p.causal) == (16, 16, False)
    assert layer_pattern(causal).window_left == -1
    with pytest.raises(ValueError, match="sliding_window"):
        layer_pattern(causal, sliding_window=0)


def test_window_of_a_call_without_one_follows_the_mask() -> None:
    # layers that pass no sliding_window: the module's own window, else the config's rule
    import types

    from spattn.hf.attention import layer_window

    cfg = types.SimpleNamespace(
        sliding_window=8, layer_types=["sliding_attention", "full_attention"]
    )
    assert layer_window(types.SimpleNamespace(config=cfg, layer_idx=0)) == 8
    assert layer_window(types.SimpleNamespace(config=cfg, layer_idx=1)) is None
    # layer_types decide where the config has them (masking_utils follows them), else the
    # module's own window
    assert layer_window(types.SimpleNamespace(config=cfg, layer_idx=1, sliding_window=5)) is None
    untyped = types.SimpleNamespace(sliding_window=None)
    assert layer_window(types.SimpleNamespace(config=untyped, layer_idx=0, sliding_window=5)) == 5
    every = types.SimpleNamespace(sliding_window=8)  # no layer_types: every layer (PhiMoE)
    assert layer_window(types.SimpleNamespace(config=every, layer_idx=3)) == 8
    none = types.SimpleNamespace(sliding_window=None)
    assert layer_window(types.SimpleNamespace(config=none, layer_idx=0)) is None


def test_masks_the_op_cannot_express_are_errors() -> None:
    from transformers import masking_utils as mu

    from spattn.hf.attention import spattn_mask

    m = torch.ones(2, 6, dtype=torch.long)
    kw = dict(batch_size=2, q_length=6, kv_length=6, attention_mask=m)
    for ok in (mu.causal_mask_function, mu.sliding_window_causal_mask_function(3)):
        assert spattn_mask(mask_function=ok, **kw).dtype == torch.bool
    # A chunked layer's mask keeps its width even unpadded: the chunks are placed by it
    chunked = mu.chunked_causal_mask_function(4, torch.zeros(2, dtype=torch.long))
    assert spattn_mask(mask_function=chunked, **kw).shape == (2, 6)
    ones = spattn_mask(
        mask_function=chunked, **dict(kw, attention_mask=None, q_offset=3, kv_offset=3)
    )
    assert ones.dtype == torch.bool and ones.shape == (2, 9) and bool(ones.all())
    assert (
        spattn_mask(mask_function=mu.causal_mask_function, **dict(kw, attention_mask=None)) is None
    )
    bad = {
        "or_mask_function": mu.or_masks(mu.causal_mask_function, lambda b, h, q, k: k == 0),
        "packed sequences": mu.and_masks(
            mu.causal_mask_function, mu.packed_sequence_mask_function(torch.zeros(2, 6))
        ),
    }
    for what, fn in bad.items():
        with pytest.raises(NotImplementedError, match=what):
            spattn_mask(mask_function=fn, **kw)


def test_chunks_matter_in_the_tiny_config() -> None:
    """The Llama 4 parity is not vacuous: the converted model's chunked layer sets chunk_size,
    and without it (a causal call) the outputs differ from eager."""
    import spattn.hf.attention as A

    eager, ours = model_pair("llama4_text")
    ids, mask = padded_batch([30, 19], 30, "left")
    seen = []
    real_forward, real_chunk = A.sparse_attention, A.layer_chunk

    def spy(*args, **kwargs):
        seen.append((args[3].chunk_size, kwargs.get("key_starts")))
        return real_forward(*args, **kwargs)

    A.sparse_attention = spy
    try:
        with torch.no_grad():
            a = eager(input_ids=ids, attention_mask=mask)[0]
            b = ours(input_ids=ids, attention_mask=mask)[0]
        A.layer_chunk = lambda module: None
        with torch.no_grad():
            c = ours(input_ids=ids, attention_mask=mask)[0]
    finally:
        A.sparse_attention, A.layer_chunk = real_forward, real_chunk
    assert [s[0] for s in seen[:2]] == [4, 0]  # the chunked layer, then the full one
    assert seen[0][1].tolist() == [0, 11]  # the chunks start at the first real token
    assert _max_diff(a, b, mask) <= ATOL
    assert _max_diff(a, c, mask) > 1e-3


def test_chunk_key_starts_keep_the_chunks_of_a_cache_that_dropped_keys() -> None:
    """A chunked layer's cache keeps its last C - 1 keys: key_starts puts the chunk boundaries
    where the whole sequence has them, and marks invalid only keys of a chunk the queries left."""
    from spattn import Pattern, sparse_attention
    from spattn.hf.attention import chunk_key_starts

    c, total, lk, lq = 4, 23, 4, 1  # a decode step: 3 kept keys and the new one
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 2, total, 8, generator=g)
    k = torch.randn(3, 2, total, 8, generator=g)
    mask = torch.ones(3, total, dtype=torch.bool)
    mask[1, :2] = False  # left padding shorter than the dropped keys
    mask[2, :21] = False  # longer: the valid keys start inside the kept ones
    for end in range(lk + 1, total + 1):  # every step: the sequence's first `end` positions
        m = mask[:, :end]
        pad = (~m).int().cumsum(-1).eq(torch.arange(1, end + 1)).sum(-1)
        full = sparse_attention(
            q[:, :, :end], k[:, :, :end], k[:, :, :end], Pattern.chunked(c), key_starts=pad.int()
        )[:, :, -lq:]
        kept = slice(end - lk, end)
        from spattn.hf.attention import padding_inputs

        starts, lengths = padding_inputs(m, lk)
        ks = chunk_key_starts(m, lk, c, starts, lengths)
        extra = {} if ks is None else {"key_starts": ks}
        got = sparse_attention(
            q[:, :, end - lq : end],
            k[:, :, kept],
            k[:, :, kept],
            Pattern.chunked(c),
            key_lengths=lengths,
            **extra,
        )
        rows = m[:, -1]  # rows whose query is a real token
        torch.testing.assert_close(got[rows], full[rows], atol=1e-6, rtol=0)


def test_mask_with_holes_is_an_error() -> None:
    _, ours = model_pair("mistral")
    ids, mask = padded_batch([20, 20], 20)
    mask[1, 7] = 0
    with pytest.raises(ValueError, match="contiguous"), torch.no_grad():
        ours(input_ids=ids, attention_mask=mask)


def test_no_attention_converted_names_the_classes() -> None:
    model = torch.nn.Sequential(torch.nn.MultiheadAttention(8, 2))
    model.config = type("C", (), {"model_type": "toy"})()
    with pytest.raises(ValueError, match="MultiheadAttention"):
        spattn.convert_hf(model)


def test_import_registers_attn_implementation() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    assert "spattn" in AttentionInterface._global_mapping
    assert "spattn" in AttentionMaskInterface._global_mapping


def test_import_spattn_alone_registers_lazily() -> None:
    """``import spattn`` stays torch-free; transformers then knows "spattn" when it loads."""
    import subprocess
    import sys

    code = (
        "import sys, spattn\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
        "from transformers import AutoConfig, AutoModel\n"
        "cfg = AutoConfig.for_model('mistral', hidden_size=32, intermediate_size=32,"
        " num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, vocab_size=16)\n"
        "m = AutoModel.from_config(cfg, attn_implementation='spattn')\n"
        "assert m.config._attn_implementation == 'spattn'\n"
        "import torch\n"
        "m(input_ids=torch.ones(1, 4, dtype=torch.long), attention_mask=torch.ones(1, 4))\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("ok")
