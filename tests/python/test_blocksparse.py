"""Block-sparse PyTorch path against the dense-mask reference, and its memory on long inputs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import FAMILIES, listed_layout, make_qkv

from spattn import Pattern
from spattn.blocksparse import block_sparse_attention, count_allowed
from spattn.reference import allowed_mask, reference_attention
from spattn.tolerances import assert_close

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (Lq, Lk, with key lengths): equal, Lq < Lk, Lq > Lk, not multiples of the block sizes, decode.
SHAPES = [(37, 37, True), (20, 45, False), (45, 20, True), (70, 70, False), (1, 33, True)]


def _diff(a: torch.Tensor, b: torch.Tensor) -> str:
    return f"max |diff| {(a.float() - b.float()).abs().max().item():.3g}"


def _torch_state() -> str:
    return (
        f"threads {torch.get_num_threads()}, default dtype {torch.get_default_dtype()}, "
        f"matmul precision {torch.get_float32_matmul_precision()}, "
        f"mkldnn {torch.backends.mkldnn.enabled}, "
        f"deterministic {torch.are_deterministic_algorithms_enabled()}"
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("ratio", [1, 2, 4])
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_blocksparse_matches_reference(name, ratio, dtype):
    pattern = FAMILIES[name]
    hq = 4
    for n, (lq, lk, padded) in enumerate(SHAPES):
        q, k, v = make_qkv(2, hq, hq // ratio, lq, lk, d=16, dv=12, dtype=dtype, seed=n)
        kl = torch.tensor([lk, lk // 3]) if padded else None
        want = reference_attention(q, k, v, pattern, key_lengths=kl)
        got = block_sparse_attention(q, k, v, pattern, key_lengths=kl, block_q=16)
        assert got.dtype == dtype and got.shape == want.shape
        try:
            assert_close(got, want, dtype, msg=f"{name} Lq={lq} Lk={lk}")
        except AssertionError as ex:
            # A float32 deviation of up to 5e-5 on a first call was once seen in about one full
            # run in five and never explained (its bound was loosened to 1e-4 then). The spec's
            # bound holds again; should it fail, the message carries what tells the causes apart:
            # whether the same call repeated matches, and torch's global numeric state.
            again = block_sparse_attention(q, k, v, pattern, key_lengths=kl, block_q=16)
            note = f"repeated call: {_diff(again, want)}; {_torch_state()}"
            raise AssertionError(f"{ex}\n{note}") from ex


@pytest.mark.parametrize("lq, lk", [(40, 40), (1, 41), (7, 41)])
def test_blocksparse_chunks_follow_each_batch_key_start(lq, lk):
    """Chunks start at each batch's key_starts: rows of different origins share a query block,
    and the block's candidates must hold every batch's chunk."""
    q, k, v = make_qkv(3, 4, 2, lq, lk, d=16, seed=4)
    ks = torch.tensor([0, 3, 9], dtype=torch.int32)
    for pattern in (Pattern.chunked(6), Pattern(chunk_size=8, window_left=5, window_right=2)):
        want = reference_attention(q, k, v, pattern, key_starts=ks)
        got = block_sparse_attention(q, k, v, pattern, key_starts=ks, block_q=16)
        assert_close(got, want, torch.float32, msg=str(pattern))
        origin0 = reference_attention(q, k, v, pattern, key_starts=torch.zeros_like(ks))
        assert (origin0[1:] - want[1:]).abs().max() > 1e-3  # the origin matters


@pytest.mark.parametrize("hl", [1, 4])
@pytest.mark.parametrize("base", ["block_layout", "bigbird", "windowed"])
def test_blocksparse_listed_blocks(hl, base):
    lq, lk, bs = 50, 61, 8
    bi = listed_layout(hl, lq, lk, bs, k=4, seed=hl)
    pattern = {
        "block_layout": Pattern.block_layout(bi, bs),
        "bigbird": Pattern.bigbird(bs, num_random=1),
        "windowed": Pattern(window_left=0, window_right=0, block_size=bs, causal=True),
    }[base]
    q, k, v = make_qkv(2, 4, 2, lq, lk)
    kl = torch.tensor([lk, 30])
    want = reference_attention(q, k, v, pattern, key_lengths=kl, block_indices=bi)
    for block_q in (4, 16, 128):
        got = block_sparse_attention(
            q, k, v, pattern, key_lengths=kl, block_indices=bi, block_q=block_q
        )
        assert_close(got, want, torch.float32)


@pytest.mark.parametrize("block_size", [1, 3, 200])
def test_blocksparse_block_sizes(block_size):
    pattern = Pattern(
        num_random=2,
        window_left=3,
        window_right=3,
        num_global=2,
        stride=7,
        block_size=block_size,
        seed=9,
    )
    q, k, v = make_qkv(1, 2, 1, 90, 90)
    assert_close(
        block_sparse_attention(q, k, v, pattern, block_q=32),
        reference_attention(q, k, v, pattern),
        torch.float32,
    )


def test_blocksparse_empty_rows_are_zero():
    q, k, v = make_qkv(2, 2, 2, 12, 6)
    kl = torch.tensor([6, 0])
    out = block_sparse_attention(q, k, v, Pattern.causal_sliding_window(3), key_lengths=kl)
    assert torch.all(out[:, :, :6] == 0) and torch.all(out[1] == 0)
    assert torch.isfinite(out).all() and out[0, :, 6:].abs().sum() > 0


def test_blocksparse_rejects_bad_inputs():
    q, k, v = make_qkv(1, 2, 2, 8, 8)
    with pytest.raises(ValueError, match="key_lengths"):
        block_sparse_attention(q, k, v, Pattern.dense(), key_lengths=torch.tensor([9]))
    with pytest.raises(ValueError, match="block_indices"):
        block_sparse_attention(q, k, v, Pattern.block_layout([[[5]]], 8))
    with pytest.raises(ValueError, match="query"):
        block_sparse_attention(q, k[:, :1].expand(1, 3, 8, 16), v, Pattern.dense())


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_count_allowed_matches_mask(name):
    pattern = FAMILIES[name]
    for lq, lk in [(37, 37), (20, 45), (45, 20)]:
        kl = torch.tensor([lk, lk // 2])
        want = int(allowed_mask(pattern, lq, lk, 3, kl).sum())
        assert count_allowed(pattern, lq, lk, 3, kl) == want


_LONG = textwrap.dedent(
    """
    import resource, sys, time, torch
    torch.set_num_threads(2)
    from spattn import Pattern
    from spattn.blocksparse import block_sparse_attention
    L, H, HKV, D = 65536, 4, 2, 64
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, H, L, D, generator=g)
    k = torch.randn(1, HKV, L, D, generator=g)
    v = torch.randn(1, HKV, L, D, generator=g)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.time()
    out = block_sparse_attention(q, k, v, Pattern.longformer(512, num_global=16))
    elapsed = time.time() - t0
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    # spot-check rows: a global row, band rows, the last row (dense reference on those rows)
    rows = torch.tensor([0, 15, 16, 40000, L - 1])
    kf = k.repeat_interleave(H // HKV, 1)
    vf = v.repeat_interleave(H // HKV, 1)
    s = torch.einsum("bhqd,bhkd->bhqk", q[:, :, rows], kf) / D ** 0.5
    j = torch.arange(L).view(1, -1)
    i = rows.view(-1, 1)
    m = ((i - j).abs() <= 256) | (j < 16) | (i < 16)
    s = s.masked_fill(~m, float("-inf"))
    ref = torch.softmax(s, -1) @ vf
    err = (out[:, :, rows] - ref).abs().max().item()
    print(f"{grown} {elapsed:.2f} {err:.3g}")
    """
)


def test_blocksparse_long_sequence_memory():
    """L = 65536 runs without an L x L allocation: peak RSS grows far less than L*L*4 bytes."""
    proc = subprocess.run(
        [sys.executable, "-c", _LONG], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    grown, elapsed, err = proc.stdout.split()
    L = 65536
    assert int(grown) < 1 << 30, f"peak RSS grew by {int(grown) / 2**20:.0f} MiB"
    assert int(grown) < L * L * 4 // 16
    assert float(err) < 1e-4
