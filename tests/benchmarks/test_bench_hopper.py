"""benchmarks/bench_hopper.py's bookkeeping, on the CPU (no GPU, no timing): the plans, the pair
counts, the block-sparse tensors of FA4 and cuDNN made from spattn's mask (checked against the
token mask), the window conversions, the decode byte count, the targets, and
summarize_hopper.py on a synthetic result.

benchmarks/ is a folder of scripts, not a package: the scripts are loaded from their paths.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import types

import pytest
import torch

from spattn import reference

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BENCH = os.path.join(ROOT, "benchmarks")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH, f"{name}.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bh = _load("bench_hopper")
summarize_hopper = _load("summarize_hopper")


def token_mask(pat, length):
    """spattn's mask of a benchmark pattern: bool [Hq, L, L]."""
    bi = pat.block_indices(length)
    return reference.allowed_mask(pat.attrs, length, length, pat.hq, block_indices=bi)[0]


# ----------------------------------------------------------------------------------------------
# Import and plans


def test_import_needs_no_anchor_package():
    # The anchors' packages are refused outright: importing the script and building a plan
    # must not touch them (they are imported inside the anchor functions).
    script = os.path.join(BENCH, "bench_hopper.py")
    code = f"""
import importlib.abc, importlib.util, sys
BLOCKED = ("flash_attn", "cudnn", "cutlass", "onnxruntime", "fa4_masks", "quack")
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("refused: " + name)
sys.meta_path.insert(0, Refuse())
spec = importlib.util.spec_from_file_location("bench_hopper", {script!r})
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
print(len(mod.build_plan("full")), sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["80", "[]"]


def test_quick_plan():
    rows = bh.build_plan("quick")
    prefill = [r for r in rows if r["kind"] == "prefill"]
    assert [r["pattern"] for r in prefill] == list(bh.PATTERNS)
    assert {(r["L"], r["D"], r["dtype"]) for r in prefill} == {(16384, 128, "bfloat16")}
    assert [r for r in rows if r["kind"] == "decode"] == [
        {"kind": "decode", "pattern": "decode_window4096", "cache": 32768, "lq": 1}
    ]


def test_full_plan_covers_the_matrix_in_priority_order():
    rows = bh.build_plan("full")
    prefill = [(r["pattern"], r["L"], r["D"], r["dtype"]) for r in rows if r["kind"] == "prefill"]
    want = {
        (p, length, d, dt)
        for p in bh.PATTERNS
        for dt in ("bfloat16", "float16")
        for d, lengths in (
            (64, (16384, 65536)),
            (128, (16384, 65536)),
            (96, (16384,)),
            (256, (16384,)),
        )
        for length in lengths
    }
    assert set(prefill) == want and len(prefill) == len(want) == 72
    decode = [(r["pattern"], r["cache"], r["lq"]) for r in rows if r["kind"] == "decode"]
    assert sorted(decode) == sorted(
        (p, c, lq) for p in bh.DECODE_PATTERNS for c in (32768, 131072) for lq in (1, 8)
    )
    # bf16 D=128 first (the README's rows), the decode rows next
    assert all(
        r["kind"] == "prefill" and (r["D"], r["dtype"]) == (128, "bfloat16") for r in rows[:12]
    )
    assert all(r["kind"] == "decode" for r in rows[12:20])
    # both lengths of one FA4 prefill variant are adjacent: the compiled kernel serves both
    # (the decode rows go by cache length instead, to share one K/V cache)
    variants = [bh.fa4_variant(r) for r in rows if r["kind"] == "prefill"]
    seen = set()
    for a, b in zip(variants, variants[1:], strict=False):
        if a != b:
            assert b not in seen, f"{b} comes back after other variants"
            seen.add(a)


def test_plan_filters():
    rows = bh.build_plan("full", only=["sliding256", "decode"], lengths=[65536], dims=[128])
    assert {(r["kind"], r.get("pattern")) for r in rows} >= {("prefill", "sliding256")}
    pre = [r for r in rows if r["kind"] == "prefill"]
    assert {(r["L"], r["D"]) for r in pre} == {(65536, 128)} and len(pre) == 2  # bf16, fp16
    assert len([r for r in rows if r["kind"] == "decode"]) == 8
    no_decode = bh.build_plan("full", only=["decode"], dims=[64])
    assert no_decode == []  # decode is D = 128
    caches = bh.build_plan("full", only=["decode_causal"], caches=[131072])
    assert [(r["pattern"], r["cache"]) for r in caches] == [("decode_causal", 131072)] * 2
    fp16 = bh.build_plan("full", dtypes=["float16"])
    assert fp16 and all(r["kind"] == "prefill" and r["dtype"] == "float16" for r in fp16)
    with pytest.raises(ValueError, match="unknown pattern 'bogus'"):
        bh.build_plan("full", only=["bogus"])
    with pytest.raises(ValueError, match="--plan"):
        bh.build_plan("medium")


def test_decode_head_dim_option(monkeypatch):
    # --decode-d runs the decode rows at another head dim (main sets DECODE_SHAPE from it); the
    # --D filter then keeps them at that head dim.
    assert bh.parse_args([]).decode_d == 128
    assert bh.parse_args(["--decode-d", "96"]).decode_d == 96
    with pytest.raises(SystemExit):
        bh.parse_args(["--decode-d", "80"])
    monkeypatch.setitem(bh.DECODE_SHAPE, "D", 96)
    rows = bh.build_plan("full", only=["decode"], dims=[96])
    assert len(rows) == 8 and all(r["kind"] == "decode" for r in rows)
    assert bh.build_plan("full", only=["decode"], dims=[128]) == []


def test_fa4_variants_ignore_lengths():
    variants = bh.fa4_variants(bh.build_plan("full"))
    ids = [v["id"] for v in variants]
    assert len(ids) == len(set(ids)) == 6 * 8 + 2
    decode = [v for v in variants if v["kind"] == "decode"]
    assert [(v["pattern"], v["lqs"]) for v in decode] == [
        ("decode_window4096", [1, 8]),
        ("decode_causal", [1, 8]),
    ]


def test_worker_assignment_spreads_the_first_variants():
    variants = bh.fa4_variants(bh.build_plan("full"))
    assign = [variants[i::12] for i in range(12)]
    assert [a[0]["id"] for a in assign] == [v["id"] for v in variants[:12]]


# ----------------------------------------------------------------------------------------------
# Pair counts and block counts


@pytest.mark.parametrize("key", list(bh.PATTERNS))
def test_pair_count_equals_the_token_mask(key):
    pat = bh.patterns()[key]
    length = 1024
    assert pat.pair_count(length, "cpu") == int(token_mask(pat, length).sum())
    if pat.layout is None:  # the count of bench_cuda.py's Pattern, evaluated another way
        plain = bh.Pattern(pat.name, pat.attrs, hq=pat.hq, hkv=pat.hkv)
        assert pat.pair_count(length, "cpu") == plain.pair_count(length, "cpu")


def test_block_counts_sum_the_token_mask_per_block():
    attrs = {"window_left": 5, "window_right": 2, "num_global": 3, "num_random": 2, "block_size": 8}
    rule = reference.MaskRule(attrs, 64, 64, 3)
    counts = bh.block_counts(rule, 16, 8, chunk=3 * 64 * 16)  # several chunks
    mask = reference.rule_mask(rule)[0]
    want = mask.reshape(3, 4, 16, 8, 8).sum(dim=(2, 4))
    assert torch.equal(counts, want.to(torch.int32))
    assert torch.equal(
        bh.coarsen(counts, 2, 4), mask.reshape(3, 2, 32, 2, 32).sum(dim=(2, 4)).int()
    )
    with pytest.raises(ValueError, match="multiples"):
        bh.block_counts(reference.MaskRule(attrs, 60, 64, 3), 16, 8)


def test_packed_indices():
    sel = torch.tensor([[False, True, False, True], [False, False, False, False], [True] * 4])
    cnt, idx = bh.packed_indices(sel)
    assert cnt.tolist() == [2, 0, 4] and cnt.dtype == idx.dtype == torch.int32
    assert idx.tolist() == [[1, 3, 0, 0], [0, 0, 0, 0], [0, 1, 2, 3]]
    cnt, idx = bh.packed_indices(torch.zeros(2, 5, dtype=torch.bool))
    assert cnt.tolist() == [0, 0] and idx.shape == (2, 1)


# ----------------------------------------------------------------------------------------------
# Block-sparse tensors against the token mask


def rebuild_fa4(pat, tensors, bq, bk, length):
    """The mask FA4 computes from its tensors: full blocks whole, the mask_mod in partial ones."""
    heads = tensors["mask_block_cnt"].shape[1]
    got = torch.zeros(heads, length, length, dtype=torch.bool)
    i = torch.arange(length).view(-1, 1)
    j = torch.arange(length).view(1, -1)
    params = pat.fa4["mask"]
    inner = None if params is None else bh.band_global_allowed(params, i, j)
    for h in range(heads):
        for m in range(length // bq):
            rows = slice(m * bq, (m + 1) * bq)
            for kind in ("full", "mask"):
                n = int(tensors[f"{kind}_block_cnt"][0, h, m])
                cols = tensors[f"{kind}_block_idx"][0, h, m, :n].tolist()
                assert cols == sorted(set(cols)), "ascending, no repeats"
                for c in cols:
                    span = slice(c * bk, (c + 1) * bk)
                    assert not got[h, rows, span].any(), "a block listed twice"
                    got[h, rows, span] = True if kind == "full" else inner[rows, span]
    return got


@pytest.mark.parametrize(
    "key, head_dim",
    [("sliding256_global64", 128), ("sliding256_global64", 256), ("bigbird", 128), ("block64", 64)],
)
def test_fa4_tensors_reproduce_the_token_mask(key, head_dim):
    pat = bh.patterns()[key]
    length = 1024
    bq, bk = bh.fa4_block_size(pat, head_dim)
    counts = bh.coarsen(pat.block_counts(length, "cpu"), bq // 64, bk // 64)
    tensors = bh.fa4_block_tensors(counts, bq, bk, has_mask_mod=pat.fa4["mask"] is not None)
    for name, t in tensors.items():
        assert t.dtype == torch.int32 and t.is_contiguous() and t.shape[0] == 1, name
    got = rebuild_fa4(pat, tensors, bq, bk, length)
    want = token_mask(pat, length)
    assert torch.equal(got.expand_as(want), want)
    if key == "block64":  # a block layout: nothing partial, no mask_mod needed
        assert int(tensors["mask_block_cnt"].sum()) == 0


def test_partial_blocks_without_mask_mod_are_refused():
    pat = bh.patterns()["bigbird"]
    counts = pat.block_counts(512, "cpu")
    with pytest.raises(ValueError, match="partial blocks without a mask_mod"):
        bh.fa4_block_tensors(counts, 64, 64, has_mask_mod=False)


def test_band_global_twin_at_unaligned_sizes():
    # global tokens that end inside a block, band edges in the middle of blocks: the partial
    # blocks of the band/global pattern are exactly its band/global predicate
    attrs = {"window_left": 7, "window_right": 3, "num_global": 5}
    rule = reference.MaskRule(attrs, 128, 128, 1)
    counts = bh.block_counts(rule, 32, 32)
    tensors = bh.fa4_block_tensors(counts, 32, 32, has_mask_mod=True)
    pat = bh.HopperPattern(
        "t", "t", attrs, hq=1, hkv=1, fa4={"mode": "sparse", "block": 32, "mask": (7, 3, 5)}
    )
    got = rebuild_fa4(pat, tensors, 32, 32, 128)
    assert torch.equal(got[0], reference.rule_mask(rule)[0, 0])


@pytest.mark.parametrize("key", ["sliding256_global64", "bigbird", "block64"])
def test_bsa_tensors_are_the_block_cover(key):
    pat = bh.patterns()[key]
    length = 1024
    counts = pat.block_counts(length, "cpu")
    idx, cnt = bh.bsa_tensors(counts, pat.hq)
    assert idx.shape[:3] == cnt.shape == (1, pat.hq, length // 64)
    assert idx.dtype == cnt.dtype == torch.int32
    cover = torch.zeros(pat.hq, length // 64, length // 64, dtype=torch.bool)
    for h in range(pat.hq):
        for m in range(length // 64):
            cover[h, m, idx[0, h, m, : cnt[0, h, m]].long()] = True
    assert torch.equal(cover, (counts > 0).expand_as(cover))
    mask = token_mask(pat, length)
    blocks = mask.reshape(pat.hq, length // 64, 64, length // 64, 64).any(dim=4).any(dim=2)
    assert torch.equal(cover, blocks)
    extra = bh.cover_extra_pairs(counts, 64, 64) * (pat.hq // counts.shape[0])
    covered = int(cover.sum()) * 64 * 64
    assert extra == covered - int(mask.sum())
    assert (extra == 0) == (key == "block64")  # only the block layout is exact at 64


# ----------------------------------------------------------------------------------------------
# Window conventions


def _fa4_mask(attrs, lq, lk):
    causal, (left, right) = bh.fa4_window(attrs)
    p = torch.arange(lq).view(-1, 1) + lk - lq  # FA4: bottom-right aligned
    j = torch.arange(lk).view(1, -1)
    m = torch.ones(lq, lk, dtype=torch.bool)
    if left is not None:
        m &= j >= p - left
    if right is not None:
        m &= j <= p + right
    if causal:
        m &= j <= p
    return m


@pytest.mark.parametrize(
    "attrs, lq, lk",
    [
        ({}, 40, 40),
        ({"window_left": 6, "window_right": 4}, 40, 40),
        ({"causal": 1, "window_left": 9}, 40, 40),
        ({"causal": 1, "window_left": 9}, 3, 40),  # decode: Lq < Lk
        ({"causal": 1}, 8, 40),
    ],
)
def test_fa4_window_is_spattns(attrs, lq, lk):
    want = reference.allowed_mask(attrs, lq, lk, 1)[0, 0]
    assert torch.equal(_fa4_mask(attrs, lq, lk), want)


@pytest.mark.parametrize(
    "attrs", [{}, {"window_left": 6, "window_right": 4}, {"causal": 1, "window_left": 9}]
)
def test_cudnn_bounds_are_spattns(attrs):
    left, right = bh.cudnn_bounds(attrs)
    n = 40
    i = torch.arange(n).view(-1, 1)
    j = torch.arange(n).view(1, -1)
    m = torch.ones(n, n, dtype=torch.bool)
    if left is not None:  # cuDNN: left bound lb keeps j > i - lb (lb keys including i)
        m &= j > i - left
    if right is not None:
        m &= j <= i + right
    assert torch.equal(m, reference.allowed_mask(attrs, n, n, 1)[0, 0])


def test_band_patterns_convert_as_documented():
    pats = bh.patterns()
    assert bh.fa4_window(pats["causal_window4096_gqa"].attrs) == (True, (4095, 0))
    assert bh.cudnn_bounds(pats["causal_window4096_gqa"].attrs) == (4096, 0)
    assert bh.fa4_window(pats["sliding256"].attrs) == (False, (256, 256))
    assert bh.cudnn_bounds(pats["sliding256"].attrs) == (257, 256)
    assert bh.fa4_window({}) == (False, (None, None)) and bh.cudnn_bounds({}) == (None, None)


@pytest.mark.parametrize(
    "flex, fp16, want",
    [
        ("d128", False, {("bigbird", 128, "bfloat16"), ("block64", 128, "bfloat16")}),
        (
            "targets",
            False,
            {
                ("bigbird", 128, "bfloat16"),
                ("bigbird", 64, "bfloat16"),
                ("block64", 128, "bfloat16"),
                ("block64", 64, "bfloat16"),
            },
        ),
        (
            "all",
            False,
            {
                (p, d, "bfloat16")
                for p in ("sliding256", "bigbird", "block64", "dense")
                for d in (64, 128)
            },
        ),
        (
            "d128",
            True,
            {("bigbird", 128, dt) for dt in ("bfloat16", "float16")}
            | {("block64", 128, dt) for dt in ("bfloat16", "float16")},
        ),
        ("none", True, set()),
    ],
)
def test_where_flex_runs(flex, fp16, want):
    bench = types.SimpleNamespace(args=types.SimpleNamespace(flex=flex, flex_fp16=fp16))
    got = set()
    for key in ("sliding256", "bigbird", "block64", "dense"):
        for d in (64, 128):
            for dt in ("bfloat16", "float16"):
                spec = {"pattern": key, "D": d, "dtype": dt}
                if bh.Bench.flex_wanted(bench, bh.PATTERNS[key], spec):
                    got.add((key, d, dt))
    # "dense" lists no flex anchor: the runner never asks there (its anchors decide first)
    assert {g for g in got if g[0] != "dense"} == {w for w in want if w[0] != "dense"}


# ----------------------------------------------------------------------------------------------
# Decode bytes, targets


def test_decode_kv_bytes():
    per_key = 16 * 8 * 128 * 2 * 2  # batch, KV heads, D, K and V, bf16
    assert bh.decode_kv_bytes(16, 8, 128, 32768, 1, 4096) == 4096 * per_key == 268435456
    assert bh.decode_kv_bytes(16, 8, 128, 32768, 8, 4096) == 4103 * per_key
    assert bh.decode_kv_bytes(16, 8, 128, 131072, 8) == 131072 * per_key
    assert bh.decode_kv_bytes(16, 8, 128, 2048, 1, 4096) == 2048 * per_key


def _row(impl, key="sliding256", **extra):
    return {
        "kind": "prefill",
        "key": key,
        "L": 16384,
        "D": 128,
        "dtype": "bfloat16",
        "impl": impl,
        **extra,
    }


def test_evaluate_target_uses_matching_anchors_only():
    target = bh.PATTERNS["sliding256"].target
    impl = {
        "spattn": {"median_ms": 0.2},
        "fa4": {"median_ms": 0.1, "matches": False},  # fastest, but not the same result
        "cudnn_sdpa": {"median_ms": 0.25, "matches": True},
        "flex": {"median_ms": 0.5, "matches": True},  # not an anchor of this target
    }
    res = bh.evaluate_target(_row(impl), target)
    assert res["best_anchor"] == "cudnn_sdpa" and res["ratio"] == pytest.approx(1.25)
    assert res["met"] is True  # 1.25 >= 1.1
    assert res["ratio_incl_mismatched"] == pytest.approx(0.5)
    impl["cudnn_sdpa"]["median_ms"] = 0.21
    assert bh.evaluate_target(_row(impl), target)["met"] is False
    none = bh.evaluate_target(_row({"spattn": {"median_ms": 0.2}, "fa4": {"error": "x"}}), target)
    assert none["ratio"] is None and none["met"] is None


def test_band_efficiency_against_dense():
    dense = _row({"spattn": {"tflops": 500.0}}, key="dense")
    band = _row({"spattn": {"tflops": 440.0}})
    res = bh.band_efficiency(band, [dense])
    assert res["fraction"] == pytest.approx(0.88) and res["met"] is True
    assert bh.band_efficiency(_row({"spattn": {"tflops": 400.0}}), [dense])["met"] is False
    other = _row({"spattn": {"tflops": 500.0}}, key="dense", D=64)
    assert bh.band_efficiency(band, [other]) is None


# ----------------------------------------------------------------------------------------------
# FlexAttention's BlockMask from the block counts (no create_block_mask compile)


@pytest.mark.parametrize("key", ["sliding256_global64", "bigbird", "block64"])
def test_flex_block_mask_equals_create_block_mask(key):
    from torch.nn.attention.flex_attention import create_block_mask

    pat = bh.patterns()[key]
    length = 1024
    fake = types.SimpleNamespace(_flex_masks={})
    ours = bh.Bench.flex_block_mask(fake, pat, length, "cpu")
    assert bh.Bench.flex_block_mask(fake, pat, length, "cpu") is ours  # per (pattern, L)
    heads = pat.hq if pat.head_dependent else None
    want = create_block_mask(
        pat.mask_mod(length, "cpu"), None, heads, length, length, device="cpu", BLOCK_SIZE=128
    )
    for name in (
        "kv_num_blocks",
        "kv_indices",
        "full_kv_num_blocks",
        "full_kv_indices",
        "q_num_blocks",
        "q_indices",
        "full_q_num_blocks",
        "full_q_indices",
    ):
        assert torch.equal(getattr(ours, name), getattr(want, name)), name
    assert ours.seq_lengths == (length, length) and ours.BLOCK_SIZE == (128, 128)


def test_flex_block_tensors_classify_blocks_by_the_token_mask():
    pat = bh.patterns()["bigbird"]
    length = 1024
    t = bh.flex_block_tensors(bh.coarsen(pat.block_counts(length, "cpu"), 2, 2), 128)
    mask = token_mask(pat, length).view(pat.hq, 8, 128, 8, 128)
    every, some = mask.all(dim=(2, 4)), mask.any(dim=(2, 4))
    for name, want in (("full_kv", every), ("kv", some & ~every)):
        cnt, idx = t[f"{name}_num_blocks"][0], t[f"{name}_indices"][0]
        assert idx.shape == (pat.hq, 8, 8) and idx.dtype == cnt.dtype == torch.int32
        for h in range(pat.hq):
            for m in range(8):
                listed = idx[h, m, : int(cnt[h, m])].tolist()
                assert listed == want[h, m].nonzero().flatten().tolist(), (name, h, m)
                assert sorted(idx[h, m].tolist()) == list(range(8))  # every block, once


# ----------------------------------------------------------------------------------------------
# summarize_hopper on a synthetic result


def synthetic():
    rows = [
        _row(
            {
                "spattn": {"median_ms": 4.07, "tflops": 540.0},
                "fa4": {"median_ms": 2.97, "matches": True},
            },
            key="dense",
            pattern="dense",
            target={
                "text": ">= 0.95x FA4",
                "ratio": 2.97 / 4.07,
                "best_anchor": "fa4",
                "met": False,
            },
        ),
        _row(
            {
                "spattn": {"median_ms": 0.22, "tflops": 311.0},
                "fa4": {"median_ms": 0.243, "matches": True},
                "cudnn_sdpa": {"median_ms": 0.218, "matches": False, "max_abs_diff": 0.5},
                "flex": {"error": "RuntimeError: boom"},
            },
            pattern="sliding ±256",
            target={"text": ">= 1.1x", "ratio": 1.1045, "best_anchor": "fa4", "met": True},
            band_efficiency={"fraction": 0.576, "met": False},
            id="prefill:sliding256:L16384:D128:bfloat16",
        ),
        _row(
            {"spattn": {"median_ms": 0.257}, "cudnn_bsa": {"median_ms": 0.481, "matches": True}},
            key="block64",
            pattern="block layout 64",
            target={"text": ">= 1.5x", "ratio": 1.87, "best_anchor": "cudnn_bsa", "met": True},
        ),
        {
            "kind": "decode",
            "key": "decode_window4096",
            "pattern": "causal window 4096",
            "batch": 16,
            "heads_q": 32,
            "heads_kv": 8,
            "D": 128,
            "dtype": "bfloat16",
            "Lq": 1,
            "cache": 32768,
            "impl": {
                "spattn": {"median_ms": 0.0175, "eager_ms": 0.031, "timing": "cuda_graph"},
                "fa4": {"median_ms": 0.021, "matches": True, "timing": "cuda_graph"},
            },
            "ratio_vs_fa4": 1.2,
            "bandwidth": {"TBps": 3.83, "fraction": 0.798, "met": True},
            "cuda_graph": {"captured": True, "replay_equals_eager": True},
        },
    ]
    return {
        "meta": {"device": "NVIDIA H200", "torch": "2.11", "command": "python3 x", "versions": {}},
        "rows": rows,
        "mismatches": [
            {
                "row": "prefill:sliding256:L16384:D128:bfloat16",
                "impl": "cudnn_sdpa",
                "max_abs_diff": 0.5,
            }
        ],
        "skipped": [{"row": "prefill:dense:L65536:D64:float16", "reason": "budget 450 s"}],
    }


def test_summarize_tables(tmp_path, capsys):
    path = tmp_path / "hopper_test.json"
    path.write_text(json.dumps(synthetic()))
    md = tmp_path / "out.md"
    summarize_hopper.main([str(path), "--md", str(md)])
    text = capsys.readouterr().out
    assert text == md.read_text()
    lines = text.splitlines()
    dense = next(ln for ln in lines if ln.startswith("| dense |"))
    assert "| 16K | 128 | bfloat16 | 4.070 (540) | 2.970 |" in dense
    assert "0.73x (fa4)" in dense and "**not met**" in dense
    sliding = next(ln for ln in lines if ln.startswith("| sliding ±256 |"))
    assert "| 0.243 | 0.218 ≠ | err | 1.10x (fa4) |" in sliding
    assert "| met | 0.58 (**not met**) |" in sliding
    block = next(ln for ln in lines if ln.startswith("| block layout 64 |"))
    assert "| BSA 0.481 |" in block and "1.87x (cudnn_bsa)" in block
    decode = next(ln for ln in lines if ln.startswith("| causal window 4096 |"))
    assert (
        "| 1 | 32K | 17.5 | 31.0 | 21.0 (cuda_graph) | 1.20x | 3.83 (80%) | met | True, True |"
        in decode
    )
    assert "Decode (B = 16, 32 query heads over 8 KV heads, D = 128, bfloat16;" in text
    assert "cudnn_sdpa: max |diff| 0.5 (UNEXPECTED)" in text
    assert "flex: RuntimeError: boom" in text
    assert "Skipped (1 rows, budget 450 s)" in text


def test_summarize_script_runs(tmp_path):
    path = tmp_path / "hopper_test.json"
    path.write_text(json.dumps(synthetic()))
    out = subprocess.run(
        [sys.executable, os.path.join(BENCH, "summarize_hopper.py"), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "| sliding ±256 | 16K |" in out.stdout


def test_plot_writes_a_png(tmp_path):
    data = synthetic()
    for r in data["rows"]:
        if r["kind"] == "prefill":
            r["target"]["min_ratio"] = 1.0
    data["rows"][-1]["key"] = "decode_window4096"
    path = tmp_path / "hopper.png"
    bh.plot(data, str(path))
    assert path.stat().st_size > 10000


# ----------------------------------------------------------------------------------------------
# --resume on synthetic results


def _done(spec, **extra):
    rid = bh.row_id(spec)
    if spec["kind"] == "decode":
        row = {"kind": "decode", "key": spec["pattern"], "impl": {"spattn": {"median_ms": 1.0}}}
    else:
        row = _row({"spattn": {"median_ms": 1.0, "tflops": 100.0}}, key=spec["pattern"])
        row.update(L=spec["L"], D=spec["D"], dtype=spec["dtype"], pattern=spec["pattern"])
    return {**row, "id": rid, **extra}


def earlier_result():
    """A quick-plan result stopped by its budget: rows 1-3 done (the third with an anchor
    error), row 4 failed, row 5 missing (killed), the rest listed as skipped."""
    plan = bh.build_plan("quick")
    ids = [bh.row_id(r) for r in plan]
    rows = [_done(plan[0]), _done(plan[1]), _done(plan[2])]
    rows[2]["impl"]["fa4"] = {"error": "RuntimeError: boom"}
    rows.append({"kind": "prefill", "key": plan[3]["pattern"], "id": ids[3], "impl": {}})
    rows[3]["failed"] = {"error": "OutOfMemoryError"}
    return {
        "meta": {
            "command": "python3 benchmarks/bench_hopper.py --plan quick --budget-s 20",
            "date": "2026-12-03 16:08:30",
            "plan": "quick",
            "plan_rows": ids,
            "elapsed_s": 25.0,
            "fa4_precompile": [{"id": "prefill:dense:bfloat16:128", "ok": True, "seconds": 9.9}],
        },
        "rows": rows,
        "skipped": [{"row": i, "reason": "budget 20.0 s"} for i in ids[5:]],
        "mismatches": [
            {"row": ids[0], "impl": "cudnn_sdpa", "max_abs_diff": 0.5},
            {"row": ids[2], "impl": "flex", "max_abs_diff": 0.7},
        ],
    }, plan


def test_resume_runs_the_skipped_and_missing_rows():
    old, plan = earlier_result()
    ids = [bh.row_id(r) for r in plan]
    run, keep = bh.resume_split(old, plan)
    assert [bh.row_id(r) for r in run] == ids[4:]
    assert [r["id"] for r in keep] == ids[:4]
    assert bh.row_errors(keep[2]) == ["fa4"] and bh.row_errors(keep[3]) == ["row"]
    assert bh.row_errors(keep[0]) == []
    run, keep = bh.resume_split(old, plan, errors=True)
    assert [bh.row_id(r) for r in run] == ids[2:]
    assert [r["id"] for r in keep] == ids[:2]
    # filters narrower than the earlier plan: only their rows run
    only = bh.build_plan("quick", only=["decode_window4096"])
    run, keep = bh.resume_split(old, only)
    assert [bh.row_id(r) for r in run] == [bh.row_id(only[0])] and len(keep) == 4


def test_resume_refuses_rows_of_another_plan():
    old, _ = earlier_result()
    with pytest.raises(ValueError, match="not in the earlier one .*--plan and filters"):
        bh.resume_split(old, bh.build_plan("full"))
    del old["meta"]["plan_rows"]
    with pytest.raises(ValueError, match="no meta.plan_rows"):
        bh.resume_split(old, bh.build_plan("quick"))


def test_resume_cli_errors(tmp_path, capsys):
    old, plan = earlier_result()
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    with pytest.raises(SystemExit, match="not in the earlier one"):
        bh.main(["--plan", "full", "--resume", str(path)])
    with pytest.raises(SystemExit, match="No such file"):
        bh.main(["--plan", "quick", "--resume", str(tmp_path / "none.json")])
    old["rows"] = [_done(r) for r in plan]
    path.write_text(json.dumps(old))
    with pytest.raises(SystemExit, match="no row left to run"):
        bh.main(["--plan", "quick", "--resume", str(path)])
    with pytest.raises(SystemExit):
        bh.parse_args(["--resume-errors"])
    assert "--resume-errors needs --resume PATH" in capsys.readouterr().err


def fake_bench(tmp_path, plan, resume):
    """A Bench without a GPU: its rows come from ``_done`` instead of measurements."""
    b = bh.Bench.__new__(bh.Bench)
    b.args = bh.parse_args(["--plan", "quick", "--budget-s", "1000", "--out", str(tmp_path)])
    b.t0, b.pool, b._kv, b.plan, b.run_index = time.time(), None, None, plan, 0
    b.path = str(tmp_path / "hopper_merged.json")
    meta = {"command": "python3 benchmarks/bench_hopper.py --plan quick --resume old.json"}
    meta.update(date="2026-12-04 10:00:00", plan="quick", plan_rows=[bh.row_id(r) for r in plan])
    b.data = {"meta": meta, "rows": [], "skipped": [], "mismatches": []}
    b.merge(*resume)
    b.prefill = b.decode = lambda spec: _done(spec, fresh=True)
    return b


def test_resume_writes_the_merged_result(tmp_path):
    old, plan = earlier_result()
    run, keep = bh.resume_split(old, plan, errors=True)
    b = fake_bench(tmp_path, run, (old, keep, "/x/old.json"))
    b.run()
    data = json.loads((tmp_path / "hopper_merged.json").read_text())
    ids = old["meta"]["plan_rows"]
    assert [r["id"] for r in data["rows"]] == ids  # every row once, in plan order
    assert [r.get("fresh", False) for r in data["rows"]] == [False] * 2 + [True] * (len(ids) - 2)
    assert [r["run"] for r in data["rows"]] == [0] * 2 + [1] * (len(ids) - 2)
    assert data["skipped"] == []
    assert [m["row"] for m in data["mismatches"]] == [ids[0]]  # row 3's went with it
    meta = data["meta"]
    assert meta["plan_rows"] == ids and meta["resumed_from"] == "/x/old.json"
    assert [r["command"] for r in meta["runs"]] == [old["meta"]["command"], meta["command"]]
    assert meta["runs"][0]["elapsed_s"] == 25.0 and "elapsed_s" in meta["runs"][1]
    assert meta["runs"][0]["fa4_precompile"][0]["seconds"] == 9.9  # the earlier run's compiles
    assert "fa4_precompile" not in meta["runs"][1]  # this run's: meta.fa4_precompile
    # resumed once more: the earlier runs stay, the new one is appended
    run2, keep2 = bh.resume_split(data, plan)
    assert run2 == [] and len(keep2) == len(ids)
    b2 = fake_bench(tmp_path, plan[:1], (data, keep2[1:], "/x/merged.json"))
    b2.run()
    data2 = json.loads((tmp_path / "hopper_merged.json").read_text())
    assert [r["run"] for r in data2["rows"]][:3] == [2, 0, 1]
    assert len(data2["meta"]["runs"]) == 3


def test_resume_keeps_skips_outside_this_run(tmp_path):
    old, plan = earlier_result()
    only = bh.build_plan("quick", only=["decode_window4096"])
    run, keep = bh.resume_split(old, only)
    b = fake_bench(tmp_path, run, (old, keep, "old.json"))
    b.data["meta"]["budget_s"] = 1000.0
    b.run()
    data = json.loads((tmp_path / "hopper_merged.json").read_text())
    left = [bh.row_id(r) for r in plan[5:] if r["kind"] == "prefill"]
    assert [s["row"] for s in data["skipped"]] == left
    assert bh.row_id(only[0]) in [r["id"] for r in data["rows"]]
    text = summarize_hopper.markdown(data)
    assert "Run 0: `python3 benchmarks/bench_hopper.py --plan quick --budget-s 20`" in text
    assert "Run 1: `python3 benchmarks/bench_hopper.py --plan quick --resume old.json`" in text


# ----------------------------------------------------------------------------------------------
# The summary of a result prints each row once


def test_summary_of_the_committed_decode_result_has_each_row_once():
    path = os.path.join(BENCH, "results", "hopper_h200_decode_pdl.json")
    data = summarize_hopper.load(path)
    ids = [r["id"] for r in data["rows"]]
    assert len(ids) == len(set(ids)) == 8
    text = summarize_hopper.markdown(data)
    lines = [ln for ln in text.splitlines() if ln.startswith(("| causal window", "| full causal"))]
    assert len(lines) == len(set(lines)) == 8
    assert "repeated" not in text


def test_summary_shows_a_repeated_row_once():
    data = synthetic()
    data["rows"][1]["impl"]["spattn"]["median_ms"] = 0.5
    again = json.loads(json.dumps(data["rows"][1]))
    again["impl"]["spattn"]["median_ms"] = 0.3
    data["rows"].append(again)
    text = summarize_hopper.markdown(data)
    sliding = [ln for ln in text.splitlines() if ln.startswith("| sliding ±256 |")]
    assert len(sliding) == 1 and "| 0.300 (311) |" in sliding[0]
    assert "Rows repeated in the JSON (the last one shown): " in text


# ----------------------------------------------------------------------------------------------
# FA4 precompilation: every variant accounted for before the first row, workers ended


def test_fa4_pool_waits_for_every_variant_and_ends_its_workers(tmp_path):
    variants = bh.fa4_variants(bh.build_plan("quick"))[:2]
    logs = []
    pool = bh.FA4Pool(variants, 1, str(tmp_path), logs.append)
    res = pool.wait_all(300.0, progress_s=1.0)
    assert [r["id"] for r in res] == [v["id"] for v in variants]
    for r in res:  # no GPU here: each variant fails in the worker, with its reason and time
        assert r["ok"] is False and "error" in r and r["seconds"] >= 0, r
    assert all(p.poll() is not None for p, _, _ in pool.procs)
    assert pool.results() == res
    assert any("FA4 precompile: 2/2 done (2 failed)" in ln for ln in logs), logs
    assert pool.close()[0]["not_ok"] == [v["id"] for v in variants]


def test_fa4_pool_timeout_kills_the_workers(tmp_path):
    variants = bh.fa4_variants(bh.build_plan("quick"))[:2]
    pool = bh.FA4Pool(variants, 2, str(tmp_path), lambda _: None)
    res = pool.wait_all(0.0)
    assert [r["error"] for r in res] == ["not compiled after waiting 0 s (worker killed)"] * 2
    assert all(p.poll() is not None for p, _, _ in pool.procs)
    pool.close()
