"""The CUDA workspace size grows with every size of a call (no GPU needed: the size depends on
sizes and attributes only).

A TensorRT engine asks for the workspace once, for its profile's largest shape, and every call of
a smaller shape runs in it: a smaller call that needed more would write past the buffer. Decode
steps are where the layout differs most (stacked GQA rows, short partial results, more pieces for
few long tiles), so the grids hold them beside prefill shapes.
"""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")

from spattn import capi  # noqa: E402

try:
    _has_cuda = capi.has_cuda()
except (FileNotFoundError, OSError):
    _has_cuda = False
pytestmark = pytest.mark.skipif(not _has_cuda, reason="library built without the CUDA kernels")

BATCHES = [1, 2, 16, 64]
LQ = [1, 2, 4, 8, 16, 33, 64, 100, 128, 1000, 4096]
LK = [64, 1024, 1100, 4096, 32768, 131072]
PATTERNS = {
    "causal_window": dict(causal=1, window_left=4095),
    "causal": dict(causal=1),
    "dense": dict(),
    "band_global": dict(window_left=256, window_right=256, num_global=64),
    "bigbird": dict(block_size=64, window_left=64, window_right=64, num_global=64, num_random=2),
    # Llama 4's chunked layers: chunks shorter than a tile of keys and as long as the released 8192
    "chunked_small": dict(causal=1, chunk_size=40),
    "chunked": dict(causal=1, chunk_size=8192),
}


def _size(b, hq, hkv, lq, lk, d, attrs, dtype):
    # Only shapes, dtypes and pointers are read: one element expanded to the shape will do.
    one = torch.zeros(1, dtype=dtype)
    q = one.expand(b, hq, lq, d)
    k = one.expand(b, hkv, lk, d)
    return capi.cuda_workspace_size(q, k, k, **attrs)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("d", [64, 128, 256])
@pytest.mark.parametrize("heads", [(32, 8), (8, 8), (16, 2)])
@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_workspace_grows_with_every_size(pattern, heads, d, dtype):
    hq, hkv = heads
    attrs = PATTERNS[pattern]
    size = {
        (b, lq, lk): _size(b, hq, hkv, lq, lk, d, attrs, dtype)
        for b, lq, lk in itertools.product(BATCHES, LQ, LK)
    }
    axes = (BATCHES, LQ, LK)
    for key, got in size.items():
        for ax, values in enumerate(axes):
            x = values.index(key[ax])
            if x + 1 == len(values):
                continue
            bigger = list(key)
            bigger[ax] = values[x + 1]
            assert size[tuple(bigger)] >= got, (
                f"workspace of (B, Lq, Lk) = {tuple(bigger)} is {size[tuple(bigger)]} bytes, "
                f"less than {got} for {key}"
            )


@pytest.mark.parametrize("pattern", ["causal_window", "chunked"])
def test_decode_workspace_stays_small(pattern):
    # A stacked decode step (16 x 8 KV heads, 128 tiles) is sized by the floor of the partial
    # buffers: 2 x 512 pieces x 32 rows of 128 float32 columns and their (max, sum), plus the
    # small pieces (counts, items); unstacked, it would be sized for 512 tiles of 128 rows (67 MB).
    # A chunked layer's step (Llama 4, chunks of 8192) reads one chunk: the same bound.
    attrs = PATTERNS[pattern]
    got = _size(16, 32, 8, 1, 131072, 128, attrs, torch.bfloat16)
    rows = 2 * 512 * 32
    assert 0 < got <= rows * (128 * 4 + 8) + (1 << 20)
