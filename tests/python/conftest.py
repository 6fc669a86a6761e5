"""Shared helpers of the Python tests: the pattern families and input makers."""

from __future__ import annotations

import pytest
import torch

from spattn import Pattern


def families() -> dict[str, Pattern]:
    """One pattern per family (small sizes), exercising every component."""
    return {
        "dense": Pattern.dense(),
        "causal_dense": Pattern.dense(causal=True),
        "sliding_window": Pattern.sliding_window(5, 2),
        "causal_sliding_window": Pattern.causal_sliding_window(9),
        "longformer": Pattern.longformer(8, num_global=3),
        "bigbird": Pattern.bigbird(8, num_global_blocks=1, num_random=2, seed=5),
        "bigbird_exact": Pattern.bigbird(8, num_random=1, seed=2, exact_blocks=True),
        "strided": Pattern.strided(6),
        "strided_bidir": Pattern.strided(5, causal=False),
        "random_only": Pattern(num_random=2, block_size=16, seed=3),
        "chunked": Pattern.chunked(5),
        "chunked_bidir_global": Pattern(chunk_size=6, window_left=3, window_right=3, num_global=2),
        "mixed": Pattern(
            window_left=2,
            window_right=0,
            causal=True,
            num_global=4,
            stride=3,
            num_random=1,
            block_size=8,
            seed=11,
            scale=0.3,
        ),
    }


FAMILIES = families()


def make_qkv(b, hq, hkv, lq, lk, d=16, dv=None, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    dv = d if dv is None else dv
    q = torch.randn(b, hq, lq, d, generator=g).to(dtype)
    k = torch.randn(b, hkv, lk, d, generator=g).to(dtype)
    v = torch.randn(b, hkv, lk, dv, generator=g).to(dtype)
    return q, k, v


def listed_layout(heads, lq, lk, bs, k=3, seed=0):
    """A random listed layout [heads, ceil(lq/bs), k] with -1 padding and duplicates."""
    g = torch.Generator().manual_seed(seed)
    nqb, nkb = -(-lq // bs), -(-lk // bs)
    bi = torch.randint(-1, nkb, (heads, nqb, k), generator=g, dtype=torch.int32)
    return bi


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)
    yield
