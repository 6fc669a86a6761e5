"""Llama 4's complex rotary embedding as real (cos, sin) pairs (convert_hf's ``_real_rotary``).

Llama 4 (``llama4_text``) rotates q and k by complex frequencies (torch.polar, view_as_complex),
which torch.onnx cannot export; convert_hf gives its rotary module and ``apply_rotary_emb`` a
real-pair form. These tests hold that form to the complex original: the frequencies, the rotated
q and k, the logits (with and without padding) and an ONNX export validated against eager.

The tiny config (tests/hf/hf_models.py's, changed) has no chunked-attention layer
(``attention_chunk_size=None``, both layers full) and RoPE in both layers
(``no_rope_layers=[1, 1]``), so every layer goes through the rotary.
"""

from __future__ import annotations

import copy
import types
from typing import Any

import pytest
import torch
from hf_models import CONFIGS, padded_batch

import spattn

transformers = pytest.importorskip("transformers")

from transformers.models.llama4 import modeling_llama4  # noqa: E402

ATOL = 2e-5  # logits, as tests/hf/test_torch_parity.py
FREQ_ATOL = 1e-6  # frequencies and rotated q, k: float32 rounding

# The matrix's Llama 4 config with RoPE on both layers and no chunked layer (its chunks are
# tested with the other families)
LLAMA4: dict[str, Any] = dict(
    CONFIGS["llama4_text"],
    no_rope_layers=[1, 1],
    attention_chunk_size=None,
    layer_types=["full_attention", "full_attention"],
)

# rope types of the rotary module: Llama 4 checkpoints use llama3; yarn's attention_scaling is
# not 1; dynamic updates inv_freq past max_position_embeddings (256) through dynamic_rope_update
ROPE = {
    "default": None,
    "llama3": dict(
        rope_type="llama3",
        rope_theta=500000.0,
        factor=8.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position_embeddings=64,
    ),
    "yarn": dict(
        rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=64
    ),
    "dynamic": dict(rope_type="dynamic", rope_theta=10000.0, factor=2.0),
}


def _config(**overrides: Any) -> Any:
    kw = copy.deepcopy(LLAMA4)
    kw.update(overrides)
    return transformers.AutoConfig.for_model("llama4_text", **kw)


def _pair(head: Any = None, **overrides: Any) -> tuple[Any, Any]:
    """(eager model, converted model) with the same random weights, in eval mode."""
    head = head or transformers.AutoModelForCausalLM
    torch.manual_seed(0)
    eager = head.from_config(_config(**overrides), attn_implementation="eager")
    ours = head.from_config(_config(**overrides), attn_implementation="eager")
    ours.load_state_dict(eager.state_dict())
    spattn.convert_hf(ours)
    return eager.eval(), ours.eval()


def _rotary(model: Any) -> Any:
    return getattr(model, "model", model).rotary_emb  # Llama4ForCausalLM or Llama4TextModel


def _max_diff(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    return float((a - b).abs()[mask.bool()].max())


@pytest.mark.parametrize("rope", sorted(ROPE))
def test_rotary_module_returns_the_complex_frequencies_as_real_pairs(rope: str) -> None:
    eager, ours = _pair(transformers.AutoModel, rope_parameters=ROPE[rope])
    pos = torch.arange(400).expand(2, -1)  # past max_position_embeddings: dynamic's update
    x = torch.zeros(1)
    with torch.no_grad():
        ref = _rotary(eager)(x, pos)
        got = _rotary(ours)(x, pos)
    assert ref.is_complex() and ref.shape == (2, 400, 8)
    assert not got.is_complex() and got.dtype == torch.float32 and got.shape == (2, 400, 8, 2)
    assert float((torch.view_as_real(ref) - got).abs().max()) <= FREQ_ATOL
    if rope == "yarn":  # the scaling is in the pairs, not only in the angles
        assert _rotary(ours).attention_scaling != 1.0
        assert float(got.norm(dim=-1).max()) == pytest.approx(_rotary(ours).attention_scaling)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_apply_rotary_emb_of_real_pairs_equals_the_complex_one(dtype: torch.dtype) -> None:
    eager, ours = _pair(transformers.AutoModel)
    pos = torch.arange(30).expand(2, -1)
    g = torch.Generator().manual_seed(0)
    # Llama 4 rotates before the transpose: q, k are [B, L, heads, head_dim]
    q = torch.randn(2, 30, 4, 16, generator=g).to(dtype)
    k = torch.randn(2, 30, 2, 16, generator=g).to(dtype)
    with torch.no_grad():
        cis = _rotary(eager)(q, pos)
        pairs = _rotary(ours)(q, pos)
    # convert_hf switched the module's function; complex frequencies still take the original
    apply = modeling_llama4.apply_rotary_emb
    assert getattr(apply, "_spattn_real_pairs", False)
    q_ref, k_ref = apply.__wrapped__(q, k, cis)
    q_got, k_got = apply(q, k, pairs)
    assert [t.dtype for t in (q_got, k_got)] == [dtype, dtype]
    assert torch.equal(apply(q, k, cis)[0], q_ref)
    tol = FREQ_ATOL if dtype == torch.float32 else 1e-2  # one bfloat16 step at |x| < 4
    assert float((q_ref - q_got).float().abs().max()) <= tol
    assert float((k_ref - k_got).float().abs().max()) <= tol
    # the test can fail: the conjugate rotation (sin's sign flipped, or real and imaginary
    # swapped in the pairing) is far from the original
    conj = pairs * torch.tensor([1.0, -1.0])
    assert float((apply(q, k, conj)[0] - q_ref).float().abs().max()) > 1e-1
    swapped = pairs.flip(-1)
    assert float((apply(q, k, swapped)[0] - q_ref).float().abs().max()) > 1e-1


@pytest.mark.parametrize("lengths", [[30, 30], [30, 19]], ids=["unpadded", "padded"])
def test_logits_match_eager(lengths: list[int]) -> None:
    eager, ours = _pair()
    assert ours._spattn_converted == 2 and ours.config._attn_implementation == "spattn"
    ids, mask = padded_batch(lengths, 30)
    with torch.no_grad():
        a = eager(input_ids=ids, attention_mask=mask).logits
        b = ours(input_ids=ids, attention_mask=mask).logits
    assert not _rotary(ours)(ids, torch.arange(30)[None]).is_complex()
    assert a.shape == b.shape
    assert _max_diff(a, b, mask) <= ATOL


def test_a_sign_flip_of_sin_changes_the_logits() -> None:
    # the logits comparison is not vacuous for the rotary: the converted model with conjugate
    # frequencies (the rotation the other way) is far from eager
    eager, ours = _pair()
    real = _rotary(ours).forward

    def conjugate(self: Any, x: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return real(x, position_ids) * torch.tensor([1.0, -1.0])

    _rotary(ours).forward = types.MethodType(conjugate, _rotary(ours))
    ids, mask = padded_batch([30, 19], 30)
    with torch.no_grad():
        a = eager(input_ids=ids, attention_mask=mask).logits
        b = ours(input_ids=ids, attention_mask=mask).logits
    assert _max_diff(a, b, mask) > 1e-3


def test_only_the_models_rotary_is_switched() -> None:
    # _real_rotary runs for every converted model: a family's function is switched only for a
    # model that holds that family's rotary modules
    from transformers.models.deepseek_v2 import modeling_deepseek_v2

    from spattn.hf.convert import _real_rotary

    llama4_before = modeling_llama4.apply_rotary_emb
    deepseek_before = modeling_deepseek_v2.apply_rotary_emb
    torch.manual_seed(0)
    mistral = transformers.AutoModel.from_config(
        transformers.AutoConfig.for_model("mistral", **CONFIGS["mistral"])
    )
    assert _real_rotary(mistral) == 0
    assert modeling_llama4.apply_rotary_emb is llama4_before
    _, ours = _pair(transformers.AutoModel)  # convert_hf switched the one rotary module
    assert _real_rotary(ours) == 1
    assert modeling_deepseek_v2.apply_rotary_emb is deepseek_before


def test_export_validates_against_eager(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from spattn.hf.export import export_hf

    torch.manual_seed(0)
    src = str(tmp_path / "src")
    transformers.AutoModelForCausalLM.from_config(_config()).save_pretrained(src)
    rep = export_hf(
        src, task="text-generation", output_dir=str(tmp_path / "out"), intra_op_threads=1
    )
    assert rep.passed, rep.summary()
    assert rep.num_spattn_nodes == 2
    assert len(rep.errors) >= 2  # both validation shapes ran, one padded


def test_export_without_the_real_rotary_is_the_complex_error(tmp_path, monkeypatch) -> None:
    # the real pairs are what makes the export above possible: without them torch.onnx meets
    # Llama 4's complex tensors
    pytest.importorskip("onnxruntime")
    import spattn.hf.convert as convert
    from spattn.hf.export import export_hf

    torch.manual_seed(0)
    src = str(tmp_path / "src")
    transformers.AutoModelForCausalLM.from_config(_config()).save_pretrained(src)
    monkeypatch.setattr(convert, "_real_rotary", lambda model: 0)
    with pytest.raises(NotImplementedError, match="complex-valued tensors"):
        export_hf(src, task="text-generation", output_dir=str(tmp_path / "out"), validate=False)
