"""Bad arguments of the PyTorch path, Pattern and spattn.export: ValueError/TypeError naming the
argument (docs/op-spec.md, Errors), raised before any computation."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import spattn
import spattn.op  # noqa: F401 - registers torch.ops.spattn.sparse_attention
from spattn import Pattern, attributes, blocksparse

I32 = torch.int32


def q(lq=16, b=1, h=2, d=8, dtype=torch.float32):
    return torch.randn(b, h, lq, d, dtype=dtype)


def i32(*x):
    return torch.tensor(x, dtype=I32)


OP = torch.ops.spattn.sparse_attention
X = q()


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: OP(X, X, X, i32(17)), "key_lengths"),
        (lambda: OP(X, X, X, i32(-1)), "key_lengths"),
        (lambda: OP(X, X, X, torch.tensor([4])), "key_lengths"),  # int64: the node takes int32
        (lambda: OP(X, X, X, scale=-1.0), "scale"),
        (lambda: OP(X, X, X, scale=float("nan")), "scale"),
        (lambda: OP(X, X, X, softcap=-2.0), "softcap"),
        (lambda: OP(X.long(), X.long(), X.long()), "query"),
        (lambda: OP(X, X.half(), X), "key"),
        (lambda: OP(X, X, X, window_left=-2), "window_left"),
        (lambda: OP(X, X, X, causal=2), "causal"),
        (lambda: OP(X, X, X, block_size=0), "block_size"),
        (lambda: OP(X, X, X, seed=-1), "seed"),
        (lambda: OP(X, X, X, stride=-1), "stride"),
        (
            lambda: OP(X, X, X, num_random=attributes.attribute("num_random").high + 1),
            "num_random",
        ),
        (
            lambda: OP(X, X, X, None, torch.full((1, 4, 1), 4, dtype=I32), block_size=4),
            "block_indices",
        ),
        (
            lambda: OP(X, X, X, None, torch.full((1, 4, 1), -2, dtype=I32), block_size=4),
            "block_indices",
        ),
        (lambda: OP(X, X, X, None, torch.zeros(1, 3, 1, dtype=I32), block_size=4), "block_indices"),
        (
            lambda: OP(X, X, X, None, torch.zeros(1, 4, 1, dtype=torch.int64), block_size=4),
            "block_indices",
        ),
        (lambda: OP(X, X, X, global_mask=torch.zeros(1, 16, dtype=torch.bool)), "global_mask"),
        (lambda: OP(X, X, X, global_mask=torch.zeros(1, 15, dtype=I32)), "global_mask"),
        (lambda: OP(X, X, X, i32(5), key_starts=i32(6)), "key_starts"),
        (lambda: OP(X, X, X, key_starts=i32(-1)), "key_starts"),
        (lambda: OP(X, X, X, sinks=torch.tensor([float("nan"), 0.0])), "sinks"),
        (lambda: OP(X, X, X, sinks=torch.tensor([float("inf"), 0.0])), "sinks"),
        (lambda: OP(X, X, X, sinks=torch.zeros(2, dtype=torch.float64)), "sinks"),
        (lambda: OP(X, X, X, sinks=torch.zeros(3)), "sinks"),
        (lambda: OP(X, q(b=2), X), "key"),
        (lambda: OP(X, X, torch.randn(1, 2, 15, 8)), "value"),
        (lambda: OP(X, q(h=3), q(h=3)), "query"),
        (lambda: OP(torch.randn(1, 2, 0, 8), X, X), "query"),
    ],
)
def test_the_torch_op_checks_every_input(call, name):
    with pytest.raises(ValueError, match=f"SparseAttention: {name}: expected"):
        call()


def test_the_op_still_runs_valid_calls():
    out = OP(X, X, X, i32(10), key_starts=i32(2), sinks=torch.tensor([0.0, -float("inf")]))
    assert out.shape == (1, 2, 16, 8) and torch.isfinite(out).all()


def test_fake_tensors_are_checked_for_dtypes_shapes_and_the_length_limit():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        f = torch.empty(1, 2, 16, 8)
        assert OP(f, f, f, torch.empty(1, dtype=I32)).shape == (1, 2, 16, 8)  # no values yet
        with pytest.raises(ValueError, match="key_lengths: expected a tensor of dtype int32"):
            OP(f, f, f, torch.empty(1, dtype=torch.int64))
        big = torch.empty(1, 1, attributes.MAX_LENGTH + 1, 8)
        with pytest.raises(ValueError, match=r"query: expected Lq <= 2\^30"):
            OP(big, f[:, :1], f[:, :1])
        with pytest.raises(ValueError, match=r"key: expected Lk <= 2\^30"):
            OP(f[:, :1], big, big)


def test_sparse_attention_names_the_length_limit():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        big = torch.empty(1, 1, attributes.MAX_LENGTH + 1, 8)
        small = torch.empty(1, 1, 4, 8)
        with pytest.raises(ValueError, match="sparse_attention: key: expected Lk <= 2"):
            spattn.sparse_attention(small, big, big, Pattern.dense())


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"key_lengths": [17]}, "key_lengths"),
        ({"key_lengths": [-1]}, "key_lengths"),
        ({"scale": -1}, "scale"),
        ({"scale": True}, "scale"),
        ({"block_indices": [[[16]] * 16]}, "block_indices"),
        ({"sinks": [float("nan"), 0.0]}, "sinks"),
        ({"global_mask": torch.zeros(1, 3)}, "global_mask"),
    ],
)
def test_sparse_attention_names_bad_arguments(kwargs, name):
    p = Pattern.sliding_window(2).replace(block_size=1) if "block_indices" in kwargs else Pattern()
    with pytest.raises(ValueError, match=f"sparse_attention: {name}: expected"):
        spattn.sparse_attention(X, X, X, p, **kwargs)


def test_sparse_attention_rejects_integer_qkv():
    with pytest.raises(ValueError, match="query: expected dtype float32"):
        spattn.sparse_attention(X.long(), X.long(), X.long(), Pattern())


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: Pattern(block_size=1.7), "block_size"),
        (lambda: Pattern(seed=1.5), "seed"),
        (lambda: Pattern(window_left=True), "window_left"),
        (lambda: Pattern(block_size="abc"), "block_size"),
        (lambda: Pattern(num_random=attributes.attribute("num_random").high + 1), "num_random"),
        (lambda: Pattern.dense(causal=2), "causal"),
        (lambda: Pattern.sliding_window(True), "left"),
        (lambda: Pattern.sliding_window(1.5), "left"),
        (lambda: Pattern.sliding_window(2, "a"), "right"),
        (lambda: Pattern.sliding_window(2, causal="yes"), "causal"),
        (lambda: Pattern.causal_sliding_window(0), "window"),
        (lambda: Pattern.causal_sliding_window(2.0), "window"),
        (lambda: Pattern.longformer("abc"), "attention_window"),
        (lambda: Pattern.longformer(7), "attention_window"),
        (lambda: Pattern.longformer(8, 1.5), "num_global"),
        (lambda: Pattern.longformer(8, True), "num_global"),
        (lambda: Pattern.bigbird(1.7), "block_size"),
        (lambda: Pattern.bigbird(4, num_local_blocks=2), "num_local_blocks"),
        (lambda: Pattern.bigbird(4, num_global_blocks=-1), "num_global_blocks"),
        (lambda: Pattern.bigbird(4, num_random=True), "num_random"),
        (lambda: Pattern.bigbird(4, seed=-1), "seed"),
        (lambda: Pattern.bigbird(4, exact_blocks="x"), "exact_blocks"),
        (lambda: Pattern.bigbird(65536, num_global_blocks=2**16), "num_global_blocks"),
        (lambda: Pattern.strided(0), "stride"),
        (lambda: Pattern.strided(4, causal=None), "causal"),
        (lambda: Pattern.block_layout([[[0.5]]], block_size=4), "block_indices"),
        (lambda: Pattern.block_layout("abc", block_size=4), "block_indices"),
        (lambda: Pattern.block_layout([[[0]]], block_size=0), "block_size"),
        (lambda: Pattern.from_hf_sliding_window(1.5), "sliding_window"),
        (lambda: Pattern.from_hf_sliding_window(4, "x"), "legacy_flash_attn"),
        (lambda: Pattern.from_flash_attn_window((1.7, 0)), r"window_size\[0\]"),
        (lambda: Pattern.from_flash_attn_window((0, -3)), r"window_size\[1\]"),
        (lambda: Pattern.from_flash_attn_window(3), "window_size"),
        (lambda: Pattern.from_onnx_attention(1.7), "left_window_size"),
        (lambda: Pattern.from_onnx_attention(1, True), "right_window_size"),
        (lambda: Pattern.from_onnx_attention(1, 1, 5), "is_causal"),
        (lambda: Pattern.from_attributes([1]), "attrs"),
        (lambda: Pattern.dense().density(0), "lq"),
        (lambda: Pattern.dense().density(4, 2**30 + 1), "lk"),
        (lambda: Pattern.dense().token_mask(4, heads=0), "heads"),
    ],
)
def test_pattern_and_factories_name_the_bad_parameter(make, name):
    with pytest.raises(ValueError, match=f"Pattern: {name}: expected"):
        make()


def test_factories_take_numpy_integers_and_flags():
    p = Pattern.sliding_window(np.int64(3), causal=np.bool_(True))
    assert (p.window_left, p.window_right, p.causal) == (3, 3, True)
    assert Pattern.from_onnx_attention(3, 0, 1).causal is True


def test_band_density_closed_form_matches_the_pair_count():
    rng = random.Random(0)
    for _ in range(300):
        lq, lk = rng.randint(1, 40), rng.randint(1, 40)
        p = Pattern(
            window_left=rng.choice([-1, 0, 1, 3, 50]),
            window_right=rng.choice([-1, 0, 2, 50]),
            causal=rng.random() < 0.5,
            num_global=rng.choice([0, 0, 1, 3, 60]),
        )
        assert blocksparse.count_allowed_bands(p, lq, lk) == blocksparse.count_allowed(p, lq, lk)
    # Long segments take the linear closed form; the pair count checks it.
    for p in (Pattern.longformer(512, 3), Pattern.causal_sliding_window(700), Pattern.dense(True)):
        assert blocksparse.count_allowed_bands(p, 9000, 9500) == blocksparse.count_allowed(
            p, 9000, 9500
        )


def test_band_density_at_the_largest_length():
    d = Pattern.longformer(512, 1).density(attributes.MAX_LENGTH)
    assert 510 / 2**30 < d < 516 / 2**30


def test_translation_rejects_bad_attribute_values():
    with pytest.raises(ValueError, match="SparseAttention: window_right: expected"):
        spattn.op.onnx_translation(None, None, None, window_right=-7)


@pytest.fixture(scope="module")
def small_model():
    from spattn.models import gqa_decoder_block

    model, (x, lengths) = gqa_decoder_block()
    return model, (x, lengths)


@pytest.mark.parametrize(
    "kwargs, name, exc",
    [
        ({"atol": -1}, "atol", ValueError),
        ({"rtol": float("nan")}, "rtol", ValueError),
        ({"atol": "x"}, "atol", TypeError),
        ({"intra_op_threads": -3}, "intra_op_threads", ValueError),
        ({"intra_op_threads": 1.5}, "intra_op_threads", TypeError),
        ({"opset": 17}, "opset", ValueError),
        ({"opset": True}, "opset", TypeError),
        ({"dtype": "float64"}, "dtype", ValueError),
        ({"validate": "no"}, "validate", TypeError),
    ],
)
def test_export_checks_its_arguments_first(small_model, tmp_path, kwargs, name, exc):
    model, inputs = small_model
    with pytest.raises(exc, match=f"spattn.export: {name}: expected"):
        spattn.export(model, inputs, tmp_path / "m.onnx", **kwargs)
    assert not (tmp_path / "m.onnx").exists()


def test_export_checks_the_output_path(small_model, tmp_path):
    model, inputs = small_model
    (tmp_path / "f").write_text("x")
    cases = [
        (tmp_path / "missing" / "m.onnx", "does not exist"),
        (tmp_path / "f" / "m.onnx", "is a file, not a directory"),
        (tmp_path, "is a directory"),
    ]
    for path, why in cases:
        with pytest.raises(ValueError, match=f"spattn.export: path: .*{why}"):
            spattn.export(model, inputs, path)
