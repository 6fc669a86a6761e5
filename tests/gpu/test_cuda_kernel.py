"""GPU tests of the CUDA kernel through the direct C entry (``spattn.capi``), against the oracle
``spattn.reference`` run in float64 on the same (already rounded) inputs.

Skipped with a reason when torch has no CUDA device or the library has no CUDA kernels.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from spattn import capi, reference  # noqa: E402
from spattn.tolerances import tolerance  # noqa: E402

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip("no CUDA device visible to torch", allow_module_level=True)
try:
    _lib = capi.find_library()
    _has_cuda = capi.has_cuda()
except (FileNotFoundError, OSError) as ex:
    _lib, _has_cuda = f"none ({ex})", False
if not _has_cuda:
    pytest.skip(
        f"no CUDA build of libspattn_kernels.so (found: {_lib}); "
        "build with -DSPATTN_CUDA=ON or set SPATTN_KERNELS_LIB",
        allow_module_level=True,
    )

DEV = "cuda"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


KERNELS = ["default", "ws", "wgmma", "mma"]


@pytest.fixture(autouse=True, params=KERNELS)
def kernel_choice(request, monkeypatch):
    """Every test runs with each CUDA kernel of the 16-bit types: the library's own choice, and
    each kernel forced with SPATTN_CUDA_KERNEL: the two Hopper kernels (warp-specialized "ws",
    one-warpgroup "wgmma") and the portable mma.sync kernel ("mma")."""
    if request.param == "default":
        monkeypatch.delenv("SPATTN_CUDA_KERNEL", raising=False)
    else:
        monkeypatch.setenv("SPATTN_CUDA_KERNEL", request.param)
    return request.param


def block_layout(hl, len_q, len_k, bs, k, seed, pad_frac=0.3):
    """Random block_indices [hl, ceil(Lq/bs), k] with -1 padding and duplicates."""
    g = np.random.default_rng(seed)
    nqb, nkb = -(-len_q // bs), -(-len_k // bs)
    bi = g.integers(0, nkb, size=(hl, nqb, k))
    bi[g.random(bi.shape) < pad_frac] = -1
    return torch.tensor(bi, dtype=torch.int32, device=DEV)


# name -> (attrs, block_indices spec (heads "1" or "hq", block count K) or None)
PATTERNS = {
    "dense": (dict(), None),
    "causal": (dict(causal=1), None),
    "sliding": (dict(window_left=37, window_right=37), None),
    "causal_sliding": (dict(causal=1, window_left=50), None),
    "longformer": (dict(window_left=32, window_right=32, num_global=5), None),
    "bigbird": (
        dict(block_size=16, window_left=16, window_right=16, num_global=32, num_random=2, seed=7),
        None,
    ),
    "bigbird_bs48": (
        dict(block_size=48, window_left=48, window_right=48, num_global=48, num_random=3, seed=3),
        None,
    ),
    "random_bs1": (dict(block_size=1, num_random=5, window_left=3, window_right=3, seed=11), None),
    "strided": (dict(window_left=23, causal=1, stride=24), None),
    "listed_shared": (dict(block_size=32), ("1", 3)),
    "listed_per_head": (dict(block_size=32, window_left=0, window_right=0), ("hq", 4)),
    "listed_random_bs100": (dict(block_size=100, num_random=1, seed=5, causal=1), ("hq", 2)),
    # Blocks that cover whole 64-key tiles: the register-masked path of the 64-row kernel.
    "bigbird_bs64": (
        dict(block_size=64, window_left=64, window_right=64, num_global=8, num_random=2, seed=5),
        None,
    ),
    "listed_bs128": (dict(block_size=128, window_left=5, window_right=5), ("hq", 2)),
    "huge_block": (dict(block_size=65536, num_random=1, window_left=10, window_right=10), None),
    "scale": (dict(scale=0.3, window_left=20, window_right=5), None),
    # Chunked attention (Llama 4): chunks shorter than a key tile, across several, and a band
    # bounded by chunks beside global tokens
    "chunked": (dict(causal=1, chunk_size=48), None),
    "chunked_long": (dict(causal=1, chunk_size=150), None),
    "chunked_band_global": (
        dict(chunk_size=40, window_left=25, window_right=25, num_global=3),
        None,
    ),
}

# (B, Lq, Lk, key_lengths or None)
SHAPES = {
    "sq200": (1, 200, 200, None),
    "q77k333_kl": (2, 77, 333, [333, 150]),
    "q333k77_kl": (2, 333, 77, [50, 77]),
}


def make_inputs(b, hq, hkv, lq, lk, d, dtype, seed):
    g = torch.Generator(device=DEV).manual_seed(seed)
    q = torch.randn(b, hq, lq, d, device=DEV, generator=g).to(dtype)
    k = torch.randn(b, hkv, lk, d, device=DEV, generator=g).to(dtype)
    v = torch.randn(b, hkv, lk, d, device=DEV, generator=g).to(dtype)
    return q, k, v


def oracle(q, k, v, attrs, key_lengths, bi, global_mask=None, key_starts=None, sinks=None):
    """The float64 oracle and its mask [B, Hq, Lq, Lk]. Invalid key lengths and block entries
    (the bad-value tests) are made valid first: the oracle rejects them, and the rows that read
    them must be NaN in the kernel's output, which the comparison leaves out."""
    lk = k.shape[2]
    if key_lengths is not None:
        key_lengths = key_lengths.clamp(0, lk)
    if bi is not None:
        nkb = -(-lk // attrs.get("block_size", 64))
        bi = torch.where((bi < -1) | (bi >= nkb), torch.full_like(bi, -1), bi)
    if key_starts is not None:
        hi = key_lengths if key_lengths is not None else torch.full_like(key_starts, lk)
        key_starts = torch.minimum(key_starts.clamp(min=0), hi)
    if sinks is not None:  # NaN / +inf sinks: the rows are NaN in the kernel, left out here
        sinks = torch.where(torch.isnan(sinks) | (sinks == float("inf")), -float("inf"), sinks)
    extra = dict(global_mask=global_mask, key_starts=key_starts, sinks=sinks)
    ref = reference.reference_attention(
        q, k, v, attrs, key_lengths, bi, compute_dtype=torch.float64, **extra
    )
    b, hq, lq = q.shape[:3]
    mask = reference.allowed_mask(
        attrs,
        lq,
        lk,
        hq,
        key_lengths,
        bi,
        device=q.device,
        global_mask=global_mask,
        key_starts=key_starts,
    )
    return ref, mask.expand(b, hq, lq, lk)


def run_case(
    attrs,
    bi_spec,
    b,
    hq,
    hkv,
    lq,
    lk,
    d,
    dtype,
    kl,
    seed=0,
    bad_rows=None,
    bi=None,
    extra=None,
    poison=None,
):
    """`extra`: the optional inputs global_mask, key_starts, sinks (CUDA tensors) by name.
    `poison(k, v, key_lengths, key_starts)`: the K and V the kernel gets instead (the oracle keeps
    the clean ones), e.g. NaN in the padding keys, which must change nothing."""
    extra = extra or {}
    q, k, v = make_inputs(b, hq, hkv, lq, lk, d, dtype, seed)
    key_lengths = torch.tensor(kl, dtype=torch.int32, device=DEV) if kl is not None else None
    if bi is None and bi_spec is not None:
        hl = 1 if bi_spec[0] == "1" else hq
        bi = block_layout(hl, lq, lk, attrs.get("block_size", 64), bi_spec[1], seed + 1)
    k_in, v_in = k, v
    if poison is not None:
        k_in, v_in = poison(k.clone(), v.clone(), key_lengths, extra.get("key_starts"))
    out = capi.CudaRunner()(q, k_in, v_in, attrs, key_lengths, bi, **extra)
    torch.cuda.synchronize()
    ref, mask = oracle(q, k, v, attrs, key_lengths, bi, **extra)
    got = out.double()
    atol, rtol = tolerance(dtype)
    bad = torch.zeros(b, hq, lq, dtype=torch.bool, device=DEV)
    if bad_rows is not None:
        bad = bad_rows
    # Rows that must be NaN are, the others are finite and within tolerance.
    assert torch.isnan(got[bad]).all(), "rows with bad input values must be NaN"
    good = ~bad
    g_ok, r_ok = got[good], ref[good]
    assert torch.isfinite(g_ok).all(), "non-finite values in the output (unwritten rows?)"
    err = (g_ok - r_ok).abs()
    lim = atol + rtol * r_ok.abs()
    worst = (err - lim).max().item() if err.numel() else -1.0
    assert worst <= 0, f"max |err| {err.max().item():.3e} beyond tolerance (excess {worst:.3e})"
    # Rows with no allowed key are exact zeros.
    empty = ~mask.any(-1) & good
    if empty.any():
        assert (got[empty] == 0).all(), "rows with no allowed key must be zeros"
    return out


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("gqa", [1, 4])
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_patterns(pattern, dtype, d, gqa, shape):
    attrs, bi_spec = PATTERNS[pattern]
    b, lq, lk, kl = SHAPES[shape]
    hkv = 2
    run_case(
        attrs,
        bi_spec,
        b,
        hkv * gqa,
        hkv,
        lq,
        lk,
        d,
        DTYPES[dtype],
        kl,
        seed=zlib.crc32(pattern.encode()) % 1000,
    )


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_global_rows_are_split(dtype):
    # Global query rows visit every key tile: the schedule splits them over several CTAs.
    attrs = dict(window_left=64, window_right=64, num_global=16)
    run_case(attrs, None, 1, 4, 2, 3000, 3000, 128, DTYPES[dtype], None, seed=3)


@pytest.mark.parametrize("num_global", [64, 100])
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("kernel", ["default", "ws"])
def test_global_row_pieces(kernel, d, num_global, monkeypatch):
    # Many query tiles: the bounded plan splits the tiles holding global query rows into pieces
    # (the warp-specialized kernel takes them head by head). With 64 global rows the pieces past
    # the band see no row of the second 64-row half of its tiles; with 100 both halves hold
    # global rows.
    if kernel != "default":
        monkeypatch.setenv("SPATTN_CUDA_KERNEL", kernel)
    attrs = dict(window_left=64, window_right=64, num_global=num_global)
    run_case(attrs, None, 1, 16, 4, 2200, 2200, d, torch.bfloat16, [2100], seed=8)


@pytest.mark.parametrize(
    "plan,attrs",
    [
        ("direct", dict(window_left=100, window_right=100)),
        ("bounded", dict(window_left=64, window_right=64, num_global=70)),
        (
            "bounded_bigbird",
            dict(
                block_size=64, window_left=64, window_right=64, num_global=64, num_random=2, seed=4
            ),
        ),
        # Global rows in both 64-row halves, blocks that split key tiles (token masks in shared
        # memory, per consumer).
        (
            "bounded_bs48",
            dict(
                block_size=48, window_left=48, window_right=48, num_global=100, num_random=2, seed=2
            ),
        ),
        ("counted", dict(window_left=40, causal=1, stride=96)),
    ],
)
@pytest.mark.parametrize("kernel", ["default", "ws"])
def test_many_items_per_cta(kernel, plan, attrs, monkeypatch):
    # Several times more work items than the persistent kernel has CTAs (one per SM): in planned
    # plans its CTAs claim the items after their first through the workspace's counter, with two
    # batches so that the pieces of one (batch, head) run beside another's whole tiles.
    if kernel != "default":
        monkeypatch.setenv("SPATTN_CUDA_KERNEL", kernel)
    run_case(attrs, None, 2, 8, 2, 5000, 5000, 128, torch.float16, [5000, 4321], seed=12)


@pytest.mark.parametrize("pattern", ["dense", "bigbird", "listed"])
def test_long_keys_several_windows(pattern):
    # Lk > 2048 key tiles: the visit list is built in several windows; few query tiles: split.
    lk = 140_000
    if pattern == "dense":
        attrs, bi = dict(), None
    elif pattern == "bigbird":
        attrs = dict(
            block_size=64, window_left=64, window_right=64, num_global=64, num_random=3, seed=1
        )
        bi = None
    else:
        attrs = dict(block_size=256, window_left=100, window_right=0)
        bi = block_layout(1, 70, lk, 256, 6, 4, pad_frac=0.0)
    run_case(attrs, None, 1, 2, 1, 70, lk, 64, torch.bfloat16, [lk - 1000], seed=5, bi=bi)


def test_causal_dense_long_few_tiles():
    # Decoding-like: short query over a long cache, causal, bottom-right aligned.
    run_case(dict(causal=1), None, 1, 8, 2, 5, 20_000, 128, torch.float16, None, seed=9)


# GQA row stacking (launch.cu, gqa_fold): short queries stack the query heads of a KV head into
# the rows of one tile, so K and V are read once per KV head. (B, Hq, Hkv, Lq, Lk, key_lengths):
# decode steps of GQA 32:8 (key lengths with an empty and a one-key batch), draft tokens, a group
# that fills a 64-row tile exactly, one that needs the 128-row tile (stacked by the
# warp-specialized kernel only) and an odd group size. Patterns that differ per head (random
# blocks, per-head block_indices) are not stacked: they run here all the same.
STACK_SHAPES = {
    "decode_32to8": (3, 32, 8, 1, 3000, [3000, 1234, 1]),
    "draft8_8to2": (2, 8, 2, 8, 1000, [1000, 700]),
    "fill64_16to2": (2, 16, 2, 4, 700, [700, 300]),
    "fill128_8to1": (1, 8, 1, 16, 900, None),
    "odd_6to2": (2, 6, 2, 5, 333, [333, 0]),
}
STACK_PATTERNS = [
    "causal",
    "chunked",
    "causal_sliding",
    "dense",
    "sliding",
    "longformer",
    "listed_shared",
    "listed_per_head",
    "bigbird",
    "strided",
]
STACK_FEATURES = {"none": (), "sinks": ("sinks",), "all": ("softcap", "sinks", "gmask", "kstart")}


@pytest.mark.parametrize("feature", list(STACK_FEATURES))
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("pattern", STACK_PATTERNS)
@pytest.mark.parametrize("shape", list(STACK_SHAPES))
def test_gqa_stacked_rows(shape, pattern, dtype, feature):
    b, hq, hkv, lq, lk, kl = STACK_SHAPES[shape]
    attrs, bi_spec = PATTERNS[pattern]
    features = STACK_FEATURES[feature]
    seed = zlib.crc32((shape + pattern + feature).encode()) % 997
    d = (32, 64, 96, 128)[seed % 4]  # every head dim the stacked rows run at
    extra = new_inputs(features, b, hq, lk, kl, seed)
    run_case(
        with_softcap(attrs, features),
        bi_spec,
        b,
        hq,
        hkv,
        lq,
        lk,
        d,
        DTYPES[dtype],
        kl,
        seed,
        extra=extra,
    )


# Decode steps over a long cache (stacked rows, the few-tiles bounded plan: every tile split
# into the same pieces, the pieces launched without the whole tiles' items, the combine kernel a
# programmatic dependent of the attention kernel): causal windows whose visit lists run from 1 to
# 12 key tiles (shorter than a piece, as long, longer), whole caches in several pieces, a batch
# with one key and one with none, with and without the optional inputs (global_mask takes the
# counted plan instead).
DECODE_WINDOWS = [0, 63, 64, 130, 250, 400, 520, 700, None]


@pytest.mark.parametrize("feature", ["none", "sinks_kstart", "all"])
@pytest.mark.parametrize("d", [32, 64, 96, 128])
@pytest.mark.parametrize("window", DECODE_WINDOWS)
def test_decode_visit_lengths(window, d, feature):
    attrs = dict(causal=1) if window is None else dict(causal=1, window_left=window)
    features = {"none": (), "sinks_kstart": ("sinks", "kstart"), "all": STACK_FEATURES["all"]}
    kl = [2100, 1, 1700, 0]
    seed = 31 + d + (window or 0)
    extra = new_inputs(features[feature], 4, 16, 2100, kl, seed)
    attrs = with_softcap(attrs, features[feature])
    run_case(attrs, None, 4, 16, 4, 1, 2100, d, torch.bfloat16, kl, seed, extra=extra)
    run_case(attrs, None, 4, 16, 4, 3, 2100, d, torch.float16, kl, seed + 1, extra=extra)


# Decode steps of Llama 4's chunked layers: chunks shorter than a key tile, around the split
# pieces' length, longer than the cache; left padding (key_starts) moves their origin.
@pytest.mark.parametrize("feature", ["none", "kstart", "all"])
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("chunk", [37, 64, 300, 1000, 8192])
def test_decode_chunked(chunk, d, feature):
    attrs = dict(causal=1, chunk_size=chunk)
    features = {"none": (), "kstart": ("kstart",), "all": STACK_FEATURES["all"]}
    kl = [2100, 1, 1700, 0]
    seed = 7 + d + chunk
    extra = new_inputs(features[feature], 4, 16, 2100, kl, seed)
    attrs = with_softcap(attrs, features[feature])
    run_case(attrs, None, 4, 16, 4, 1, 2100, d, torch.bfloat16, kl, seed, extra=extra)
    run_case(attrs, None, 4, 16, 4, 3, 2100, d, torch.float16, kl, seed + 1, extra=extra)


def _attention_kernels(fn, tmp_path):
    """(name, grid) of the attention kernels that fn launches (from the profiler's trace)."""
    import json

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(str(path))
    events = json.loads(path.read_text())["traceEvents"]
    return [
        (e["name"], tuple(e["args"]["grid"]))
        for e in events
        if e.get("cat") == "kernel" and "attention_kernel" in e.get("name", "")
    ]


def _attention_grids(fn, tmp_path):
    """The grids of the attention kernels that fn launches."""
    return [grid for _, grid in _attention_kernels(fn, tmp_path)]


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_gqa_rows_stack_into_one_tile_per_kv_head(dtype, kernel_choice, tmp_path):
    # A decode step over a short cache (the direct plan: one CTA per query tile): 2 x 2 KV heads
    # are 4 tiles, not the 2 x 8 of one tile per query head. Per-head random blocks are not
    # stacked: 16.
    b, hq, hkv, lk = 2, 8, 2, 512
    q, k, v = make_inputs(b, hq, hkv, 1, lk, 128, DTYPES[dtype], 3)
    runner = capi.CudaRunner()
    window = dict(causal=1, window_left=300)
    random = dict(block_size=64, window_left=64, window_right=64, num_random=1)
    assert _attention_grids(lambda: runner(q, k, v, window), tmp_path) == [(b * hkv, 1, 1)]
    assert _attention_grids(lambda: runner(q, k, v, random), tmp_path) == [(b * hq, 1, 1)]


def test_gqa_stacked_bad_values_give_nan_rows():
    # Bad values seen through stacked rows: a bad key length makes every head of its batch NaN; a
    # bad shared block entry every head's rows of its query block.
    b, hq, hkv, lq, lk, bs = 2, 8, 2, 6, 400, 32
    nkb = -(-lk // bs)
    bi = block_layout(1, lq, lk, bs, 3, 6, pad_frac=0.0)
    bad = torch.zeros(b, hq, lq, dtype=torch.bool, device=DEV)
    bad[1] = True  # key_lengths[1] > Lk
    case = (dict(block_size=bs, window_left=8), None, b, hq, hkv, lq, lk, 128, torch.bfloat16)
    run_case(*case, [lk, lk + 1], seed=6, bad_rows=bad, bi=bi)
    bi[0, 0, 1] = nkb + 2  # the only query block (Lq = 6 < 32): every row
    run_case(*case, None, seed=6, bad_rows=torch.ones_like(bad), bi=bi)


def test_gqa_stacked_cuda_graph_capture():
    # A decode step with the split-KV plan (few tiles, long rows) replays from a CUDA graph.
    attrs = dict(causal=1, window_left=4095)
    q, k, v = make_inputs(2, 32, 8, 1, 20_000, 128, torch.bfloat16, 8)
    extra = new_inputs(("sinks", "kstart"), 2, 32, 20_000, None, 8)
    first = eager_then_graph_replay(q, k, v, attrs, extra)
    ref, _ = oracle(q, k, v, attrs, None, None, **extra)
    atol, rtol = tolerance(torch.bfloat16)
    assert ((first.double() - ref).abs() <= atol + rtol * ref.abs()).all()


def test_rows_with_no_key_are_zero():
    attrs = dict(window_left=5, window_right=5)
    out = run_case(attrs, None, 3, 2, 2, 150, 150, 64, torch.float16, [0, 20, 150], seed=2)
    assert (out[0] == 0).all()


def test_bad_key_lengths_give_nan_rows():
    b, hq, lq, lk = 3, 2, 100, 120
    bad = torch.zeros(b, hq, lq, dtype=torch.bool, device=DEV)
    bad[0] = True
    bad[2] = True
    run_case(
        dict(window_left=10, window_right=10, num_global=3),
        None,
        b,
        hq,
        1,
        lq,
        lk,
        64,
        torch.bfloat16,
        [-3, 77, lk + 7],
        seed=4,
        bad_rows=bad,
    )


@pytest.mark.parametrize("hl", ["1", "hq"])
def test_bad_block_indices_give_nan_rows(hl):
    b, hq, lq, lk, bs = 2, 4, 200, 260, 32
    nkb = -(-lk // bs)
    h = 1 if hl == "1" else hq
    bi = block_layout(h, lq, lk, bs, 3, 6)
    bi[0, 2, 1] = nkb + 5  # query block 2: rows 64..95
    bi[h - 1, 5, 0] = -9  # query block 5: rows 160..191
    bad = torch.zeros(b, hq, lq, dtype=torch.bool, device=DEV)
    heads0 = slice(None) if h == 1 else slice(0, 1)
    heads1 = slice(None) if h == 1 else slice(hq - 1, hq)
    bad[:, heads0, 64:96] = True
    bad[:, heads1, 160:192] = True
    run_case(
        dict(block_size=bs, num_random=1),
        None,
        b,
        hq,
        2,
        lq,
        lk,
        128,
        torch.float16,
        None,
        seed=6,
        bad_rows=bad,
        bi=bi,
    )
    torch.cuda.synchronize()  # no sticky error: the context is still usable


def eager_then_graph_replay(q, k, v, attrs, extra=None):
    """Runs the call eagerly, then captures it in a CUDA graph on a side stream and replays it into
    the same (NaN-filled) output; asserts the replay equals the eager output bit for bit (no host
    synchronization, allocation or planning inside the call) and returns that output."""
    extra = extra or {}
    out = torch.full(q.shape[:3] + (v.shape[3],), float("nan"), dtype=q.dtype, device=DEV)
    kernel = capi.CudaRunner()
    kernel.prepare(q, k, v, out, attrs, **extra)()
    torch.cuda.synchronize()
    first = out.clone()
    out.fill_(float("nan"))
    s = torch.cuda.Stream()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(s):
        call = kernel.prepare(q, k, v, out, attrs, **extra)
        with torch.cuda.graph(graph, stream=s):
            call()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, first)
    return first


def test_cuda_graph_capture():
    # No host synchronization, allocation or planning inside the call: it can be captured.
    attrs = dict(block_size=64, window_left=64, window_right=64, num_global=64, num_random=2)
    q, k, v = make_inputs(1, 4, 2, 1000, 1000, 64, torch.bfloat16, 8)
    eager_then_graph_replay(q, k, v, attrs)


@pytest.mark.parametrize("d", [16, 48, 80, 160, 512])
def test_unsupported_head_dim_is_an_error(d):
    q, k, v = make_inputs(1, 2, 2, 10, 10, d, torch.float16, 0)
    with pytest.raises(RuntimeError, match=r"head dim.*32, 64, 96, 128, 256"):
        capi.CudaRunner()(q, k, v, {})


# ----------------------------------------------------------------------------------------------
# Head dims beyond 64 and 128, and the optional inputs global_mask, key_starts, sinks and the
# softcap attribute: alone, together, with the other components, every dtype, GQA, Lq != Lk.

NEW_DIMS_PATTERNS = [
    "dense",
    "causal_sliding",
    "longformer",
    "bigbird",
    "strided",
    "listed_per_head",
    "bigbird_bs64",
]


@pytest.mark.parametrize("d", [32, 96, 256])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("pattern", NEW_DIMS_PATTERNS)
def test_head_dims(pattern, dtype, d):
    attrs, bi_spec = PATTERNS[pattern]
    # One shape per case, all of them over the cases (Lq = Lk, Lq < Lk, Lq > Lk).
    shape = list(SHAPES)[(NEW_DIMS_PATTERNS.index(pattern) + d // 32 + len(dtype)) % len(SHAPES)]
    b, lq, lk, kl = SHAPES[shape]
    run_case(
        attrs,
        bi_spec,
        b,
        4,
        2,
        lq,
        lk,
        d,
        DTYPES[dtype],
        kl,
        seed=zlib.crc32(pattern.encode()) % 997,
    )


def global_mask_for(b, lk, seed, density=0.04):
    """A per-batch global_mask [B, Lk] int32: scattered tokens, the first and last key of
    batch 0, and a run of 70 tokens in batch 1 (several key tiles)."""
    g = np.random.default_rng(seed)
    gm = (g.random((b, lk)) < density).astype(np.int32) * g.integers(1, 5, size=(b, lk))
    gm[0, 0] = 1
    gm[0, lk - 1] = -3
    if b > 1:
        gm[1, lk // 3 : lk // 3 + 70] = 1
    return torch.tensor(gm, dtype=torch.int32, device=DEV)


def key_starts_for(kl, lk, seed):
    """key_starts [B] in [0, key_lengths[b]] (batch 0 starts at a partial tile)."""
    g = np.random.default_rng(seed)
    lens = kl if kl is not None else [lk] * 2
    ks = [int(g.integers(0, max(1, ln // 2))) if x else 0 for x, ln in enumerate(lens)]
    ks[0] = min(lens[0], 37 + int(g.integers(0, 20)))
    return ks


def new_inputs(features, b, hq, lk, kl, seed):
    """The extra inputs of the named features (softcap is an attribute: see with_softcap)."""
    extra = {}
    if "gmask" in features:
        extra["global_mask"] = global_mask_for(b, lk, seed)
    if "kstart" in features:
        ks = key_starts_for(kl, lk, seed)[:b]
        extra["key_starts"] = torch.tensor(ks, dtype=torch.int32, device=DEV)
    if "sinks" in features:
        g = torch.Generator().manual_seed(seed)
        sinks = torch.randn(hq, generator=g) * 2.0
        sinks[0] = 30.0  # a sink far above every score: that head's rows are nearly zero
        extra["sinks"] = sinks.to(device=DEV, dtype=torch.float32)
    return extra


def with_softcap(attrs, features):
    if "softcap" not in features:
        return attrs
    return {**attrs, "softcap": 2.5}  # low enough to bend most scores


FEATURES = {
    "softcap": ("softcap",),
    "sinks": ("sinks",),
    "gmask": ("gmask",),
    "kstart": ("kstart",),
    "all": ("softcap", "sinks", "gmask", "kstart"),
}
NEW_INPUT_PATTERNS = [
    "dense",
    "chunked",  # key_starts moves the chunks' origin
    "causal",
    "causal_sliding",
    "longformer",
    "bigbird",
    "strided",
    "listed_per_head",
    "bigbird_bs64",
]
NEW_INPUT_SHAPES = {
    "sq200": (2, 200, 200, None),
    "q77k333_kl": (2, 77, 333, [333, 150]),
    "q333k77_kl": (2, 333, 77, [50, 77]),
}


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("pattern", NEW_INPUT_PATTERNS)
@pytest.mark.parametrize("feature", list(FEATURES))
def test_new_inputs(feature, pattern, dtype):
    attrs, bi_spec = PATTERNS[pattern]
    # One shape per case, each shape over the cases of every feature and dtype.
    x = (
        list(FEATURES).index(feature)
        + NEW_INPUT_PATTERNS.index(pattern)
        + list(DTYPES).index(dtype)
    )
    b, lq, lk, kl = list(NEW_INPUT_SHAPES.values())[x % len(NEW_INPUT_SHAPES)]
    seed = zlib.crc32((feature + pattern).encode()) % 991
    features = FEATURES[feature]
    d = 64 if seed % 2 else 128
    extra = new_inputs(features, b, 4, lk, kl, seed)
    run_case(
        with_softcap(attrs, features),
        bi_spec,
        b,
        4,
        2,
        lq,
        lk,
        d,
        DTYPES[dtype],
        kl,
        seed,
        extra=extra,
    )


@pytest.mark.parametrize("d", [32, 96, 256])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("pattern", ["longformer", "bigbird", "causal"])
def test_new_inputs_head_dims(pattern, dtype, d):
    attrs, bi_spec = PATTERNS[pattern]
    b, lq, lk, kl = NEW_INPUT_SHAPES["q77k333_kl"]
    features = FEATURES["all"]
    extra = new_inputs(features, b, 8, lk, kl, d)
    run_case(
        with_softcap(attrs, features),
        bi_spec,
        b,
        8,
        2,
        lq,
        lk,
        d,
        DTYPES[dtype],
        kl,
        d,
        extra=extra,
    )


@pytest.mark.parametrize(
    "attrs",
    [
        dict(window_left=64, window_right=64),
        dict(window_left=64, window_right=64, num_global=16),
        dict(causal=1, window_left=300),
        dict(block_size=64, window_left=64, window_right=64, num_random=2, seed=3),
        dict(window_left=40, causal=1, stride=96),
    ],
    ids=["band", "band_global", "causal_band", "bigbird", "strided"],
)
@pytest.mark.parametrize("d", [64, 128, 256])
def test_global_mask_long_rows(d, attrs):
    # Global tokens anywhere in long rows: their query tiles visit every key tile, so the plans
    # split them into pieces (the sink enters once, in the combine); key_starts skips the key tiles
    # before it, and the partial one is masked.
    b, lq, lk = 2, 3000, 3000
    gm = torch.zeros(b, lk, dtype=torch.int32, device=DEV)
    gm[0, [5, 1000, 1001, 2999]] = 1
    gm[1, 1500:1600] = 7
    extra = {
        "global_mask": gm,
        "key_starts": torch.tensor([0, 333], dtype=torch.int32, device=DEV),
        "sinks": torch.linspace(-1, 3, 4, device=DEV),
    }
    run_case(attrs, None, b, 4, 2, lq, lk, d, torch.bfloat16, [3000, 2900], seed=21, extra=extra)


def test_global_mask_all_and_none():
    # Every token global (dense through the mask), and a present but all-zero mask (no
    # component from it; with the default windows the band is off: only what the rest allows).
    for fill in (1, 0):
        gm = torch.full((2, 300), fill, dtype=torch.int32, device=DEV)
        run_case(
            dict(window_left=10, window_right=10),
            None,
            2,
            2,
            1,
            300,
            300,
            64,
            torch.float16,
            None,
            seed=fill,
            extra={"global_mask": gm},
        )
        run_case(
            dict(),
            None,
            2,
            2,
            1,
            300,
            300,
            64,
            torch.float16,
            None,
            seed=fill,
            extra={"global_mask": gm},
        )


def test_key_starts_edges():
    # key_starts 0, at a tile boundary, inside a tile, equal to key_lengths (no valid key: zeros)
    # and equal to Lk.
    ks = torch.tensor([0, 64, 100, 150, 300], dtype=torch.int32, device=DEV)
    out = run_case(
        dict(window_left=50, window_right=50, num_global=3),
        None,
        5,
        2,
        2,
        300,
        300,
        64,
        torch.bfloat16,
        [300, 300, 250, 150, 300],
        seed=3,
        extra={"key_starts": ks, "sinks": torch.tensor([0.5, -0.5], device=DEV)},
    )
    assert (out[3] == 0).all() and (out[4] == 0).all()


def test_bad_key_starts_give_nan_rows():
    # key_starts outside [0, key_lengths[b]]: the GPU cannot report the value without a host
    # synchronization, so the rows of that batch are NaN (as for a bad key_lengths).
    b, hq, lq, lk = 3, 2, 100, 120
    bad = torch.zeros(b, hq, lq, dtype=torch.bool, device=DEV)
    bad[0] = True
    bad[2] = True
    run_case(
        dict(window_left=10, window_right=10),
        None,
        b,
        hq,
        1,
        lq,
        lk,
        64,
        torch.float16,
        [100, 120, 120],
        seed=4,
        bad_rows=bad,
        extra={"key_starts": torch.tensor([101, 5, -1], dtype=torch.int32, device=DEV)},
    )


def test_cuda_graph_capture_new_inputs():
    # The new inputs add no host synchronization: capture and replay give the same output.
    attrs = dict(window_left=64, window_right=64, softcap=20.0)
    q, k, v = make_inputs(2, 4, 2, 1500, 1500, 128, torch.bfloat16, 8)
    extra = new_inputs(("gmask", "kstart", "sinks"), 2, 4, 1500, None, 8)
    eager_then_graph_replay(q, k, v, attrs, extra)


def _kernel_names(fn):
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return {e.key for e in prof.key_averages()}


# (attributes, head dim, the default kernel on Hopper)
CHOICE_CASES = {
    "short-d64": (dict(window_left=100, window_right=100), 64, "ws"),
    "short-d128": (dict(window_left=100, window_right=100), 128, "ws"),
    "blocks-d128": (
        dict(block_size=64, window_left=64, window_right=64, num_random=1),
        128,
        "wgmma",
    ),
    "global-d128": (dict(window_left=100, window_right=100, num_global=4), 128, "ws"),
    "global-d64": (dict(window_left=100, window_right=100, num_global=4), 64, "wgmma"),
    "long-d64": (dict(window_left=600, window_right=600), 64, "ws"),
    "long-d128": (dict(window_left=600, window_right=600), 128, "ws"),
    # Head dim 256: the warp-specialized kernel for every pattern, short rows with random blocks
    # or global tokens included.
    "blocks-d256": (
        dict(block_size=64, window_left=64, window_right=64, num_random=1),
        256,
        "ws",
    ),
    "global-d256": (dict(window_left=100, window_right=100, num_global=4), 256, "ws"),
    "long-d256": (dict(window_left=600, window_right=600), 256, "ws"),
}


@pytest.mark.parametrize("case", list(CHOICE_CASES))
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_kernel_choice_runs_the_intended_kernel(dtype, case, kernel_choice):
    # The 16-bit types run a Hopper kernel on compute capability 9.0 unless the portable one is
    # asked for: by default the warp-specialized kernel, except the one-warpgroup kernel for short
    # rows (a band of at most 1024 keys) with random blocks, or with global tokens at head dim 64
    # (not at 256). A silent fallback would leave one untested.
    attrs, D, default = CHOICE_CASES[case]
    names = _kernel_names(
        lambda: run_case(attrs, None, 1, 2, 1, 300, 300, D, DTYPES[dtype], None, seed=1)
    )
    hopper = torch.cuda.get_device_capability() == (9, 0)
    ran = {
        "ws": any("ws_attention_kernel" in n for n in names),
        "wgmma": any("wgmma_attention_kernel" in n for n in names),
        "mma": any("mma_attention_kernel" in n and "wgmma" not in n for n in names),
    }
    want = "mma"
    if hopper:
        want = {"default": default, "ws": "ws", "wgmma": "wgmma"}.get(kernel_choice, "mma")
    assert ran[want] and sum(ran.values()) == 1, sorted(names)


@pytest.mark.parametrize("d", [32, 96, 256])
def test_kernel_choice_new_head_dims(d, kernel_choice):
    # Each Hopper kernel takes every head dim: D = 256 runs the warp-specialized kernel by default
    # and either Hopper kernel when asked for; D = 32 and 96 run the Hopper kernels of the padded
    # widths 64 and 128, chosen as for those.
    attrs = dict(window_left=100, window_right=100)
    names = _kernel_names(
        lambda: run_case(attrs, None, 1, 2, 1, 300, 300, d, torch.float16, None, seed=1)
    )
    hopper = torch.cuda.get_device_capability() == (9, 0)
    ran = {
        "ws": any("ws_attention_kernel" in n for n in names),
        "wgmma": any("wgmma_attention_kernel" in n for n in names),
        "mma": any("mma_attention_kernel" in n and "wgmma" not in n for n in names),
    }
    want = "mma"
    if hopper and kernel_choice != "mma":
        want = "wgmma" if kernel_choice == "wgmma" else "ws"
    assert ran[want] and sum(ran.values()) == 1, sorted(names)


# ---------------------------------------------------------------------------------------------
# Non-finite values (docs/op-spec.md): padding keys contribute nothing whatever their K and V
# hold; a NaN or +inf score among a row's allowed keys makes the row NaN; -inf weighs zero.


def poison_padding(values):
    """A poison for run_case: K and V rows of the padding keys (outside [key_starts[b],
    key_lengths[b])) set to `values` in turn (NaN, +inf, -inf), so that every row holds one."""

    def poison(k, v, key_lengths, key_starts):
        lk = k.shape[2]
        for bb in range(k.shape[0]):
            hi = int(key_lengths[bb]) if key_lengths is not None else lk
            lo = int(key_starts[bb]) if key_starts is not None else 0
            for j in [*range(0, lo), *range(hi, lk)]:
                x = values[j % len(values)]
                k[bb, :, j, :] = x
                v[bb, :, j, :] = x
        return k, v

    return poison


NONFINITE = (float("nan"), float("inf"), -float("inf"))

# (attrs, head dim): the kernels' full and partial tiles, register and shared-memory masks, the
# split plans (global rows), and the head dims with padded tiles.
PADDING_CASES = {
    "dense-d64": (dict(), 64),
    "causal-d128": (dict(causal=1), 128),
    "sliding-d96": (dict(window_left=37, window_right=37), 96),
    "longformer-d128": (dict(window_left=64, window_right=64, num_global=70), 128),
    "bigbird-d256": (PATTERNS["bigbird"][0], 256),
    "bigbird_bs64-d64": (PATTERNS["bigbird_bs64"][0], 64),
    "strided-d32": (PATTERNS["strided"][0], 32),
}


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", list(PADDING_CASES))
def test_padding_keys_nonfinite_contribute_nothing(case, dtype):
    # key_lengths and key_starts inside key tiles (the tiles that cross them are partial), and a
    # batch whose padding fills whole tiles; K and V of every padding key are NaN or +-inf. The
    # output equals the oracle's on clean inputs, every row finite.
    attrs, d = PADDING_CASES[case]
    b, lq, lk = 3, 300, 300
    kl = [300, 203, 130]
    extra = {"key_starts": torch.tensor([0, 37, 70], dtype=torch.int32, device=DEV)}
    if case.startswith("dense"):  # key_lengths alone: the kernels without the optional inputs
        extra = {}
    run_case(
        attrs,
        None,
        b,
        4,
        2,
        lq,
        lk,
        d,
        DTYPES[dtype],
        kl,
        seed=zlib.crc32(case.encode()) % 991,
        extra=extra,
        poison=poison_padding(NONFINITE),
    )


def test_padding_keys_nonfinite_long_rows():
    # Long rows split into pieces (global rows over 3000 keys) with NaN padding on both sides.
    gm = torch.zeros(2, 3000, dtype=torch.int32, device=DEV)
    gm[0, [5, 1000]] = 1
    for extra in ({}, {"key_starts": torch.tensor([0, 333], dtype=torch.int32, device=DEV)}):
        run_case(
            dict(window_left=64, window_right=64, num_global=64),
            None,
            2,
            4,
            2,
            3000,
            3000,
            128,
            torch.bfloat16,
            [2950, 2900],
            seed=31,
            extra=extra,
            poison=poison_padding(NONFINITE),
        )


# The warp-specialized kernel runs the long rows of head dims up to 128 with stages of two key
# tiles (WsKernel::kPairs, docs/kernels.md), the short ones with one; SPATTN_WS_PAIRS forces either
# form. Odd tile counts (the last stage's second tile is zeros), a tile a half does not see beside
# one it does, partial tiles in either slot of a pair, and NaN/inf padding keys in either slot.
WS_PAIRS_CASES = {
    "dense": (dict(), ()),  # key_lengths alone: the lean kernels
    "causal": (dict(causal=1), ()),
    "causal_window": (dict(causal=1, window_left=300), ("sinks",)),
    "band_global": (dict(window_left=100, window_right=100, num_global=5), FEATURES["all"]),
    "strided": (PATTERNS["strided"][0], ("sinks", "kstart")),
}


def _run_ws_pairs_case(case, d, seed):
    """WS_PAIRS_CASES[case] at head dim d in both 16-bit types, against the oracle."""
    attrs, features = WS_PAIRS_CASES[case]
    b, hq, hkv, lq, lk = 2, 4, 2, 1000, 1093  # 18 key tiles, the last one partial; Lq != Lk
    kl = [1093, 811]
    extra = new_inputs(features, b, hq, lk, kl, seed)
    for dtype in (torch.bfloat16, torch.float16):
        run_case(
            with_softcap(attrs, features),
            None,
            b,
            hq,
            hkv,
            lq,
            lk,
            d,
            dtype,
            kl,
            seed,
            extra=extra,
            poison=poison_padding(NONFINITE),
        )


@pytest.mark.parametrize("pairs", ["0", "1"])
@pytest.mark.parametrize("d", [32, 64, 96, 128])
@pytest.mark.parametrize("case", list(WS_PAIRS_CASES))
def test_ws_pairs_both_forms(case, d, pairs, monkeypatch):
    monkeypatch.setenv("SPATTN_WS_PAIRS", pairs)
    _run_ws_pairs_case(case, d, zlib.crc32(case.encode()) % 991 + d)


def _ws_form_of(name):
    """(kPairs, kParts) of a warp-specialized kernel's name (demangled or not), else None."""
    import re

    m = re.search(r"ws_attention_kernel<.*(true|false), (\d+)>", name)
    if m:
        return m.group(1) == "true", int(m.group(2))
    m = re.search(r"ws_attention_kernel.*Lb[01]ELb([01])ELi(\d+)E", name)
    return (m.group(1) == "1", int(m.group(2))) if m else None


def _ws_forms(case, attrs, d, hq, hkv, lq, seed, tmp_path):
    """(kPairs, kParts) of each warp-specialized kernel one call launches; the call's output is
    checked against the oracle (every row sees keys in these cases)."""
    q, k, v = make_inputs(1, hq, hkv, lq, 2048, d, torch.bfloat16, seed)
    runner = capi.CudaRunner()
    names = [n for n, _ in _attention_kernels(lambda: runner(q, k, v, attrs), tmp_path)]
    ref, _ = oracle(q, k, v, attrs, None, None)
    atol, rtol = tolerance(torch.bfloat16)
    out = runner(q, k, v, attrs).double()
    assert torch.allclose(out, ref, atol=atol, rtol=rtol), (case, (out - ref).abs().max().item())
    return [_ws_form_of(n) for n in names if "ws_attention_kernel" in n]


# (attrs, head dim, SPATTN_WS_PAIRS or None, whether the stages hold two key tiles[, (query
# heads, KV heads, Lq)]; 2 heads and Lq = Lk = 2048 when absent)
CAUSAL = dict(causal=1)
WS_PAIRS_CHOICES = {
    "dense_d64": (dict(), 64, None, True),
    "window2000_d32": (dict(causal=1, window_left=2000), 32, None, True),
    "band_d64": (dict(window_left=100, window_right=100), 64, None, False),
    "dense_d128": (dict(), 128, None, True),
    "dense_d96": (dict(), 96, None, True),
    "causal_d128": (CAUSAL, 128, None, True),
    "band_d128": (dict(window_left=100, window_right=100), 128, None, False),
    "strided_d64": (dict(causal=1, window_left=127, stride=128), 64, None, False),
    "strided_d128": (dict(causal=1, window_left=127, stride=128), 128, None, False),
    # Decoding without GQA stacking: at tile width 128 one consumer works, one tile per stage.
    "decode_d64": (CAUSAL, 64, None, True, (2, 2, 1)),
    "decode_d128": (CAUSAL, 128, None, False, (2, 2, 1)),
    "decode_d96_lq8": (CAUSAL, 96, None, False, (2, 2, 8)),
    "lq64_d128": (CAUSAL, 128, None, False, (2, 2, 64)),
    "lq65_d128": (CAUSAL, 128, None, True, (2, 2, 65)),
    # GQA 4:1 stacks 4 x 32 rows into one 128-row tile: both halves have rows.
    "stacked_lq32_d128": (CAUSAL, 128, None, True, (8, 2, 32)),
    "decode_d128_forced_on": (CAUSAL, 128, "1", True, (2, 2, 1)),
    "dense_d128_forced_off": (dict(), 128, "0", False),
    "dense_d256": (dict(), 256, None, False),
    "dense_d256_forced_on": (dict(), 256, "1", False),
    "dense_d64_forced_off": (dict(), 64, "0", False),
    "band_d64_forced_on": (dict(window_left=100, window_right=100), 64, "1", True),
}


@pytest.mark.parametrize("case", list(WS_PAIRS_CHOICES))
def test_ws_pairs_choice(case, monkeypatch, tmp_path):
    # Long rows at head dims up to 128 run the two-tile stages; short rows, strides, head dim 256
    # and, at head dims 96 and 128, calls whose rows fit one 64-row half run one tile per stage.
    # SPATTN_WS_PAIRS overrides at head dims up to 128 (256 has no two-tile form).
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the warp-specialized kernel runs on compute capability 9.0 only")
    attrs, d, env, want, *shape = WS_PAIRS_CHOICES[case]
    hq, hkv, lq = shape[0] if shape else (2, 2, 2048)
    monkeypatch.setenv("SPATTN_CUDA_KERNEL", "ws")
    if env is None:
        monkeypatch.delenv("SPATTN_WS_PAIRS", raising=False)
    else:
        monkeypatch.setenv("SPATTN_WS_PAIRS", env)
    forms = _ws_forms(case, attrs, d, hq, hkv, lq, 5, tmp_path)
    assert [f[0] for f in forms] == [want], forms


# (attrs, head dim, SPATTN_WS_PARTS or None, consumers, (query heads, KV heads, Lq)): three
# consumers (192-row tiles) at tile width 64 wherever the stages hold two key tiles.
WS_PARTS_CHOICES = {
    "dense_d64": (dict(), 64, None, 3, (2, 2, 2048)),
    "causal_window_gqa_d32": (dict(causal=1, window_left=1500), 32, None, 3, (8, 2, 2048)),
    "band_d64": (dict(window_left=100, window_right=100), 64, None, 2, (2, 2, 2048)),
    "strided_d64": (dict(causal=1, window_left=127, stride=128), 64, None, 2, (2, 2, 2048)),
    "dense_d128": (dict(), 128, None, 2, (2, 2, 2048)),
    "dense_d96": (dict(), 96, None, 2, (2, 2, 2048)),
    "dense_d64_forced_2": (dict(), 64, "2", 2, (2, 2, 2048)),
    "dense_d128_forced_3": (dict(), 128, "3", 2, (2, 2, 2048)),
    # Lq not a multiple of 192, one 192-row tile holding a GQA group's rows (4 x 40 = 160)
    "causal_lq1000_d64": (CAUSAL, 64, None, 3, (2, 2, 1000)),
    "stacked_lq40_d64": (CAUSAL, 64, None, 3, (8, 2, 40)),
}


@pytest.mark.parametrize("case", list(WS_PARTS_CHOICES))
def test_ws_parts_choice(case, monkeypatch, tmp_path):
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the warp-specialized kernel runs on compute capability 9.0 only")
    attrs, d, env, want, (hq, hkv, lq) = WS_PARTS_CHOICES[case]
    monkeypatch.setenv("SPATTN_CUDA_KERNEL", "ws")
    monkeypatch.delenv("SPATTN_WS_PAIRS", raising=False)
    if env is None:
        monkeypatch.delenv("SPATTN_WS_PARTS", raising=False)
    else:
        monkeypatch.setenv("SPATTN_WS_PARTS", env)
    forms = _ws_forms(case, attrs, d, hq, hkv, lq, 7, tmp_path)
    assert [f[1] for f in forms] == [want], forms


@pytest.mark.parametrize("parts", ["2", "3"])
@pytest.mark.parametrize("case", list(WS_PAIRS_CASES))
def test_ws_parts_both_counts(case, parts, monkeypatch):
    # Both consumer counts on every case of the two-tile stages (pairs forced, so the band and
    # the strided rows run three consumers too), Lq = 1000: the last 192-row tile is partial.
    monkeypatch.setenv("SPATTN_CUDA_KERNEL", "ws")
    monkeypatch.setenv("SPATTN_WS_PAIRS", "1")
    monkeypatch.setenv("SPATTN_WS_PARTS", parts)
    for d in (32, 64):
        _run_ws_pairs_case(case, d, zlib.crc32(case.encode()) % 991 + 7)


def signed_scores_inputs(b, h, lq, lk, d, dtype):
    """q and k whose products q.k are exactly -4, 0 or +4 (column 0 only), and random v."""
    q = torch.zeros(b, h, lq, d, dtype=dtype, device=DEV)
    k = torch.zeros(b, h, lk, d, dtype=dtype, device=DEV)
    i = torch.arange(lq, device=DEV)
    j = torch.arange(lk, device=DEV)
    q[:, :, :, 0] = torch.where(i % 3 == 0, 1.0, torch.where(i % 3 == 1, -1.0, 0.0)).to(dtype)
    # Keys [0, 60): -4; [60, 120): 0, and -4 on every seventh; from 120: +4 on every 23rd, else
    # -4. So a q = +1 row early on sees only -inf scores, later also 0, then +inf.
    kv = torch.where(
        j < 60,
        -4.0,
        torch.where(
            j < 120, torch.where(j % 7 == 0, -4.0, 0.0), torch.where(j % 23 == 0, 4.0, -4.0)
        ),
    )
    k[:, :, :, 0] = kv.to(dtype)
    g = torch.Generator(device=DEV).manual_seed(5)
    v = torch.randn(b, h, lk, d, device=DEV, generator=g).to(dtype)
    return q, k, v


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize(
    "attrs",
    [dict(), dict(window_left=30, window_right=30), dict(causal=1, window_left=100)],
    ids=["dense", "sliding", "causal_band"],
)
def test_infinite_scores(attrs, dtype):
    # scale = 3e38: q.k = +-4 gives a score beyond float32, +-inf; q.k = 0 gives 0. A row with an
    # allowed +inf score is NaN; -inf scores weigh zero, so the others are the mean of v over
    # their allowed keys with score 0, or zeros when every allowed score is -inf.
    b, h, lq, lk, d = 1, 2, 200, 200, 64
    q, k, v = signed_scores_inputs(b, h, lq, lk, d, DTYPES[dtype])
    attrs = {**attrs, "scale": 3e38}
    out = capi.CudaRunner()(q, k, v, attrs).double()
    torch.cuda.synchronize()
    mask = reference.allowed_mask(attrs, lq, lk, h, device=DEV).expand(b, h, lq, lk)
    qk = torch.einsum("bhid,bhjd->bhij", q.double(), k.double())
    nan_row = ((qk > 0) & mask).any(-1)
    zero_w = (qk == 0) & mask
    cnt = zero_w.sum(-1, keepdim=True)
    mean = torch.einsum("bhij,bhjd->bhid", zero_w.double(), v.double()) / cnt.clamp(min=1)
    assert nan_row.any() and (~nan_row).any()
    if attrs.get("window_left", -1) >= 0:  # a band: rows that see only -inf scores
        assert (cnt[..., 0][~nan_row] == 0).any()
    assert torch.isnan(out[nan_row]).all(), "rows with an allowed +inf score must be NaN"
    good = ~nan_row
    atol, rtol = tolerance(DTYPES[dtype])
    err = (out[good] - mean[good]).abs()
    assert (err <= atol + rtol * mean[good].abs()).all(), f"max |err| {err.max().item():.3e}"


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_infinite_scores_softcap(dtype):
    # With softcap, +-inf scores become +-softcap: every row finite, as the oracle says.
    b, h, lq, lk, d = 1, 2, 200, 200, 64
    q, k, v = signed_scores_inputs(b, h, lq, lk, d, DTYPES[dtype])
    attrs = dict(window_left=30, window_right=30, scale=3e38, softcap=5.0)
    out = capi.CudaRunner()(q, k, v, attrs).double()
    torch.cuda.synchronize()
    ref, _ = oracle(q, k, v, attrs, None, None)
    atol, rtol = tolerance(DTYPES[dtype])
    assert torch.isfinite(out).all()
    assert ((out - ref).abs() <= atol + rtol * ref.abs()).all()


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize(
    "attrs",
    [dict(), dict(window_left=40, window_right=40, num_global=8), PATTERNS["bigbird_bs64"][0]],
    ids=["dense", "longformer", "bigbird_bs64"],
)
def test_nan_query_rows(attrs, dtype):
    # A NaN query row has NaN scores for every allowed key: its output row is NaN, the other
    # rows (including the global rows, which meet it in their tiles) are as computed.
    b, h, lq, lk, d = 2, 2, 300, 300, 128
    q, k, v = make_inputs(b, h, h, lq, lk, d, DTYPES[dtype], 3)
    rows = [0, 5, 64, 130, 299]
    q_in = q.clone()
    q_in[0, 1, rows] = float("nan")
    out = capi.CudaRunner()(q_in, k, v, attrs).double()
    torch.cuda.synchronize()
    ref, _ = oracle(q, k, v, attrs, None, None)
    bad = torch.zeros(b, h, lq, dtype=torch.bool, device=DEV)
    bad[0, 1, rows] = True
    assert torch.isnan(out[bad]).all()
    atol, rtol = tolerance(DTYPES[dtype])
    g, r = out[~bad], ref[~bad]
    assert torch.isfinite(g).all() and ((g - r).abs() <= atol + rtol * r.abs()).all()


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_nonfinite_value_of_an_allowed_key(dtype):
    # +inf in one element of V of a key: rows that attend that key have that column non-finite;
    # every other column of every row is as computed.
    b, h, lq, lk, d = 1, 2, 200, 200, 64
    attrs = dict(window_left=20, window_right=20, num_global=2)
    q, k, v = make_inputs(b, h, h, lq, lk, d, DTYPES[dtype], 4)
    jbad, cbad = 100, 7
    v_in = v.clone()
    v_in[0, :, jbad, cbad] = float("inf")
    out = capi.CudaRunner()(q, k, v_in, attrs).double()
    torch.cuda.synchronize()
    ref, mask = oracle(q, k, v, attrs, None, None)
    hit = mask[..., jbad]  # rows that attend key jbad (all with a nonzero weight here)
    assert hit.any()
    assert (~torch.isfinite(out[..., cbad][hit])).all()
    cols = [c for c in range(d) if c != cbad]
    atol, rtol = tolerance(DTYPES[dtype])
    g, r = out[..., cols], ref[..., cols]
    assert torch.isfinite(g).all() and ((g - r).abs() <= atol + rtol * r.abs()).all()
