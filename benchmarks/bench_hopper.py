"""spattn on Hopper against the strongest Hopper attention kernels, in one process, one run.

Question answered: is spattn's CUDA kernel the fastest attention on an H100/H200 for the patterns
it exists for, and where is it not? Every anchor runs on the same inputs as spattn in the same
process, and its output is compared with spattn's (maximum absolute difference stored; a
difference beyond twice the dtype's tolerance of docs/op-spec.md is a MISMATCH, printed and kept
in the JSON, and the anchor is then left out of the ratios).

Prefill (B = 1, 16 heads; the causal window: 32 query heads over 8 KV heads), bf16 and fp16,
L = 16K and 64K, D = 64 and 128 (D = 96 and 256 at 16K). Patterns and anchors:

  dense                   FA4, cuDNN SDPA (pygraph), torch SDPA (cuDNN backend)
  causal_window4096_gqa   FA4 window_size=(4095, 0), cuDNN SDPA band (left bound 4096, right 0)
  sliding256              FA4 window_size=(256, 256), cuDNN SDPA band (left bound 257, right 256)
  sliding256_global64     FA4 block-sparse (128 blocks, mask_mod band + global; D = 256: 128 x 64),
                          cuDNN block-sparse attention (64 blocks), FlexAttention (BlockMask 128)
  bigbird                 block size 64, band +-64, 64 global tokens, 2 random blocks per query
                          block and head: FA4 block-sparse (64 blocks + mask_mod), cuDNN BSA, Flex
  block64                 a pure 64-block layout (neighbours qb-1..qb+1 as block_indices, block 0
                          global row and column, 2 random blocks per query block and head): FA4
                          block-sparse (64 blocks, no mask_mod), cuDNN BSA, Flex

The block-sparse tensors of FA4 and cuDNN come from spattn's own mask (spattn.reference.MaskRule)
counted per block: FA4 gets full blocks and partial ones (a mask_mod inside those), cuDNN's
block-sparse attention has no token mask, so on the token-level patterns it runs the 64-block
cover (more pairs than spattn: its output is expected to differ, and the row says so).
FlexAttention compiles once per pattern and shape: it runs on the block patterns of the targets
at D = 128 (``--flex targets``: at every D; ``--flex all``: on every sparse pattern), in bf16
unless ``--flex-fp16``.

Decode (the Hugging Face with-past shape): Lq = 1 and 8, batch 16, 32 query heads over 8 KV
heads, D = 128, bf16, caches of 32K and 128K keys, causal window 4096 and full causal, spattn
against FA4's flash_attn_func on the same cache (bottom-right aligned causal + window_size, the
same positions as spattn's p(i) = i + Lk - Lq). spattn's direct launch is captured in a CUDA graph,
replayed, compared with the eager output bitwise, and timed; the bandwidth is counted on the K
and V bytes the pattern must read.

Targets (ratio = best matching anchor's time / spattn's time): dense >= 0.95 x FA4; causal
window >= 1.0 x FA4 and cuDNN; sliding +-256 >= 1.1 x the faster of FA4 and cuDNN; +-256 + 64
global, BigBird-like and the block layout >= 1.5 x the fastest of FA4 block-sparse, cuDNN
block-sparse and Flex; bands (sliding, causal window) at least 85% of spattn's own dense TF/s
(same L, D, dtype); decode at least 70% of the H200's 4.8 TB/s.

Timings: CUDA events around a batch of back-to-back calls (enough to fill about 5 ms, at most
50), median of ``--iters`` batches after ``--warmup`` calls, so that host work per call (FA4's
Python, a ctypes launch) is hidden when the GPU is the bottleneck; the first call (JIT
compilation included) is timed separately. Decode: the same, plus per synchronized call
(``time_callable`` of bench_cuda.py) and per CUDA-graph replay (the primary decode time).
Effective TF/s = 4 * Hq * D * allowed pairs / time.

Setup is never timed with the columns: every column of a row is set up (built, JIT-compiled,
called once, compared) before any is timed, and each row records its seconds of setup per column
(``setup_s``: block counts, inputs, then each column's build and first call; the entries also
keep ``setup_s`` and ``first_call_s`` apart). FlexAttention's BlockMask is made from the block
counts (``BlockMask.from_kv_blocks``, once per pattern and length), not by
``create_block_mask(_compile=True)``, which compiles its whole construction on every call.

FlashAttention-4 compiles each variant (seconds to tens of seconds): ``--fa4-workers N``
compiles the run's FA4 variants in N worker processes (FA4's persistent cache in a fresh
temporary folder) and the run waits for all of them, logging its progress, before the first row;
each variant's compile time (or why it failed or was given up after ``--fa4-wait-s``, default
600 s) goes into ``meta.fa4_precompile``, and the workers are ended before any timing. A variant
not precompiled is compiled by the main process during its row's setup. ``--fa4-overlap`` (the
old way) measures while the workers compile: a faster start, but every column of the rows
measured meanwhile is slowed. ``--fa4-workers 0`` compiles in the main process.

The JSON is rewritten after every row; ``--budget-s`` stops starting rows after that many
seconds from the start, precompilation included (default: quick 170, full 450; the rows left
are listed as skipped). ``--resume PATH`` completes an earlier result of the same plan (same
``--plan`` and filters, or narrower ones): its rows are kept, the rows it lists as skipped or
lacks (a run killed mid-way) are run (with ``--resume-errors`` also the rows where the row or a
column errored), and the merged result is written (rows in plan order, ``meta.runs`` lists every
run's command). The full plan runs its rows by priority: bf16 D = 128 (16K, 64K), the decode
rows, bf16 D = 64, fp16 D = 128, fp16 D = 64, then D = 96 and 256 at 16K; the last groups are
the first to be cut.

Durations below are estimates, not measurements of this version: FA4 precompilation of the
full plan's 50 variants took 19-31 s per worker with 12 workers in the first H200 run (plus
start-up); a prefill row takes about 1-5 s once compiled (the first row longer: cuDNN and FA4
load), a FlexAttention row adds its compilation for the shape, a 128K decode row allocates a
16 GB cache.

    # environment on the GPU machine (packages staged in /tmp/site, see the device notes)
    export PYTHONPATH=/tmp/site:/tmp/site/nvidia_cutlass_dsl/dsl_packages:$PWD/exporter:$PWD
    python3 benchmarks/bench_hopper.py --plan quick        # estimate 1-2 min: 16K D 128 bf16
    python3 benchmarks/bench_hopper.py --plan full         # estimate 6-10 min; 450 s may cut it
    python3 benchmarks/bench_hopper.py --plan full --resume benchmarks/results/hopper_h200_full.json
    python3 benchmarks/bench_hopper.py --plan full --only dense sliding256 --L 16384 --D 64
    python3 benchmarks/bench_hopper.py --plan full --dtypes float16 --ort  # + ONNX Runtime CUDA EP
    python3 benchmarks/summarize_hopper.py benchmarks/results/hopper_h200_full.json

Writes hopper_<tag>.json (command, device, versions, every row), hopper_<tag>.png (ratio
against the best anchor per pattern, a line at each target) and hopper_<tag>.md (the tables of
summarize_hopper.py) in ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from bench_cuda import Pattern, time_callable  # noqa: E402

from spattn import reference  # noqa: E402
from spattn.bench import require_cuda  # noqa: E402
from spattn.tolerances import TOLERANCES  # noqa: E402

H200_PEAK_TBPS = 4.8
BAND_MIN_FRACTION = 0.85
DECODE_MIN_FRACTION = 0.70
BASE_BLOCK = 64  # the block of the counts every block-sparse structure is derived from
DEVICE = "cuda"

# ----------------------------------------------------------------------------------------------
# Patterns


def block64_layout(length: int) -> torch.Tensor:
    """``block_indices`` ``[1, nqb, 3]`` (int32, CPU): query block ``qb`` lists key blocks
    ``qb-1, qb, qb+1`` (-1 outside the sequence); Lq == Lk."""
    nqb = -(-length // BASE_BLOCK)
    qb = torch.arange(nqb).view(-1, 1)
    cols = qb + torch.tensor([-1, 0, 1]).view(1, -1)
    cols = torch.where((cols >= 0) & (cols < nqb), cols, torch.full_like(cols, -1))
    return cols.to(torch.int32).unsqueeze(0)


class HopperPattern(Pattern):
    """bench_cuda's Pattern plus an optional ``block_indices`` layout, the block counts every
    block-sparse anchor is built from, and what each anchor runs for this pattern."""

    def __init__(
        self,
        key,
        name,
        attrs,
        hq=16,
        hkv=16,
        *,
        layout=None,
        fa4=None,
        anchors=(),
        target=None,
        band=False,
    ):
        head_dependent = int(attrs.get("num_random", 0)) > 0 or layout is not None
        super().__init__(name, attrs, hq=hq, hkv=hkv, head_dependent=head_dependent)
        self.key = key
        self.layout = layout
        self.fa4 = fa4 or {"mode": "dense"}
        self.anchors = tuple(anchors)
        self.target = target
        self.band = band
        self._counts = {}

    def block_indices(self, length, device="cpu"):
        return None if self.layout is None else self.layout(length).to(device)

    def rule(self, length, device):
        bi = self.block_indices(length)
        return reference.MaskRule(
            self.attrs, length, length, self.hq, block_indices=bi, device=device
        )

    def mask_mod(self, L, device):
        rule = self.rule(L, device)

        def mod(b, h, q, kv):
            return rule.allowed(q, kv, h)

        return mod

    def block_counts(self, length, device):
        """Allowed pairs per (head, 64-query block, 64-key block); heads = Hq when the mask
        depends on the head, else 1 (cached per length and device)."""
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        key = (length, str(dev))
        if key not in self._counts:
            self._counts[key] = block_counts(self.rule(length, dev), BASE_BLOCK, BASE_BLOCK)
        return self._counts[key]

    def pair_count(self, L, device):
        """Exact allowed pairs summed over the query heads (from the block counts)."""
        counts = self.block_counts(L, device)
        return int(counts.sum(dtype=torch.int64)) * (self.hq // counts.shape[0])


_BLOCK_TARGET = {
    "anchors": ["fa4", "cudnn_bsa", "flex"],
    "min_ratio": 1.5,
    "text": ">= 1.5x fastest of FA4 block-sparse, cuDNN BSA, Flex",
}


def patterns() -> dict[str, HopperPattern]:
    """The prefill patterns, in the order of the plan."""
    pats = [
        HopperPattern(
            "dense",
            "dense",
            {},
            fa4={"mode": "dense"},
            anchors=("fa4", "cudnn_sdpa", "sdpa_cudnn"),
            target={"anchors": ["fa4"], "min_ratio": 0.95, "text": ">= 0.95x FA4"},
        ),
        HopperPattern(
            "causal_window4096_gqa",
            "causal window 4096, GQA 32:8",
            {"causal": 1, "window_left": 4095},
            hq=32,
            hkv=8,
            fa4={"mode": "window"},
            anchors=("fa4", "cudnn_sdpa", "flex"),
            target={
                "anchors": ["fa4", "cudnn_sdpa"],
                "min_ratio": 1.0,
                "text": ">= 1.0x FA4 and cuDNN",
            },
            band=True,
        ),
        HopperPattern(
            "sliding256",
            "sliding ±256",
            {"window_left": 256, "window_right": 256},
            fa4={"mode": "window"},
            anchors=("fa4", "cudnn_sdpa", "flex"),
            target={
                "anchors": ["fa4", "cudnn_sdpa"],
                "min_ratio": 1.1,
                "text": ">= 1.1x faster of FA4/cuDNN",
            },
            band=True,
        ),
        HopperPattern(
            "sliding256_global64",
            "±256 + 64 global",
            {"window_left": 256, "window_right": 256, "num_global": 64},
            fa4={"mode": "sparse", "block": 128, "mask": (256, 256, 64)},
            anchors=("fa4", "cudnn_bsa", "flex"),
            target=_BLOCK_TARGET,
        ),
        HopperPattern(
            "bigbird",
            "BigBird-like (bs 64, ±64, 64 global, 2 random)",
            {
                "block_size": 64,
                "window_left": 64,
                "window_right": 64,
                "num_global": 64,
                "num_random": 2,
            },
            fa4={"mode": "sparse", "block": 64, "mask": (64, 64, 64)},
            anchors=("fa4", "cudnn_bsa", "flex"),
            target=_BLOCK_TARGET,
        ),
        HopperPattern(
            "block64",
            "block layout 64 (qb-1..qb+1, block 0 global, 2 random)",
            {"block_size": 64, "num_global": 64, "num_random": 2},
            layout=block64_layout,
            fa4={"mode": "sparse", "block": 64, "mask": None},
            anchors=("fa4", "cudnn_bsa", "flex"),
            target=_BLOCK_TARGET,
        ),
    ]
    return {p.key: p for p in pats}


PATTERNS = patterns()
DECODE_PATTERNS = {
    "decode_window4096": {
        "name": "causal window 4096",
        "attrs": {"causal": 1, "window_left": 4095},
    },
    "decode_causal": {"name": "full causal", "attrs": {"causal": 1}},
}
DECODE_SHAPE = {"batch": 16, "heads_q": 32, "heads_kv": 8, "D": 128, "dtype": "bfloat16"}
FLEX_ALL = ("causal_window4096_gqa", "sliding256", "sliding256_global64", "bigbird", "block64")


# ----------------------------------------------------------------------------------------------
# Block structure: counts of allowed pairs per block, and the anchors' tensors made from them.


def block_counts(rule, bq: int, bk: int, chunk: int = 1 << 27) -> torch.Tensor:
    """int32 ``[heads, Lq / bq, Lk / bk]``: allowed pairs per block of ``rule`` (a
    ``spattn.reference.MaskRule``), evaluated on its device a band of query rows at a time;
    ``heads`` is ``rule.heads`` when the mask depends on the head, else 1."""
    lq, lk, dev = rule.lq, rule.lk, rule.device
    if lq % bq or lk % bk:
        raise ValueError(f"block_counts: Lq={lq}, Lk={lk} must be multiples of {bq}, {bk}")
    heads = rule.heads if rule.head_dependent else 1
    h = torch.arange(heads, device=dev).view(-1, 1, 1) if rule.head_dependent else None
    j = torch.arange(lk, device=dev).view(1, 1, -1)
    rows = max(bq, (chunk // (heads * lk)) // bq * bq)
    out = torch.empty(heads, lq // bq, lk // bk, dtype=torch.int32, device=dev)
    for i0 in range(0, lq, rows):
        i1 = min(lq, i0 + rows)
        i = torch.arange(i0, i1, device=dev).view(1, -1, 1)
        a = rule.allowed(i, j, h).expand(heads, i1 - i0, lk)
        c = a.reshape(heads, (i1 - i0) // bq, bq, lk // bk, bk).sum(dim=(2, 4), dtype=torch.int32)
        out[:, i0 // bq : i1 // bq] = c
    return out


def coarsen(counts: torch.Tensor, fq: int, fk: int) -> torch.Tensor:
    """Counts of blocks ``fq`` x ``fk`` times larger (sums of the small blocks)."""
    h, m, n = counts.shape
    if m % fq or n % fk:
        raise ValueError(f"coarsen: {m} x {n} blocks do not group by {fq} x {fk}")
    return counts.view(h, m // fq, fq, n // fk, fk).sum(dim=(2, 4), dtype=torch.int32)


def block_classes(counts: torch.Tensor, bq: int, bk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(full, partial) bool masks of the blocks: every pair allowed, some but not all."""
    full = counts == bq * bk
    return full, (counts > 0) & ~full


def packed_indices(sel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The selected columns of each row of ``sel`` (bool ``[..., N]``) as (count int32
    ``[...]``, ascending column indices int32 ``[..., W]``), W = max(1, most selected); entries
    past a row's count are 0."""
    cnt = sel.sum(dim=-1, dtype=torch.int32)
    width = max(1, int(cnt.max())) if cnt.numel() else 1
    order = torch.argsort((~sel).to(torch.int8), dim=-1, stable=True)[..., :width]
    keep = torch.arange(width, device=sel.device) < cnt.unsqueeze(-1)
    idx = torch.where(keep, order, torch.zeros_like(order))
    return cnt.contiguous(), idx.to(torch.int32).contiguous()


def fa4_block_size(pat: HopperPattern, head_dim: int) -> tuple[int, int]:
    """FA4's sparse blocks: on SM90 the key block must equal its tile_n (64 for D = 256)."""
    b = pat.fa4["block"]
    if b == 64:
        return 64, 64
    return (128, 128) if head_dim <= 128 else (128, 64)


def fa4_block_tensors(counts: torch.Tensor, bq: int, bk: int, has_mask_mod: bool) -> dict:
    """FA4's BlockSparseTensorsTorch fields from counts at ``bq`` x ``bk``: batch 1, heads as
    the counts'. Partial blocks need a mask_mod; without one they would run unmasked."""
    full, partial = block_classes(counts, bq, bk)
    if not has_mask_mod and bool(partial.any()):
        raise ValueError("partial blocks without a mask_mod: FA4 would compute them whole")
    mcnt, midx = packed_indices(partial)
    fcnt, fidx = packed_indices(full)
    return {
        "mask_block_cnt": mcnt.unsqueeze(0),
        "mask_block_idx": midx.unsqueeze(0),
        "full_block_cnt": fcnt.unsqueeze(0),
        "full_block_idx": fidx.unsqueeze(0),
    }


def bsa_tensors(counts: torch.Tensor, heads_q: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cuDNN block-sparse attention's (q2k_block_index ``[1, Hq, M, W]``, q2k_block_nums
    ``[1, Hq, M]``): every block with an allowed pair (the cover)."""
    cnt, idx = packed_indices(counts > 0)
    h, m = cnt.shape
    cnt = cnt.unsqueeze(0).expand(1, heads_q, m).contiguous()
    idx = idx.unsqueeze(0).expand(1, heads_q, m, idx.shape[-1]).contiguous()
    return idx, cnt


def cover_extra_pairs(counts: torch.Tensor, bq: int, bk: int) -> int:
    """Pairs a block-granular kernel computes beyond the mask (per count head)."""
    nz = counts > 0
    return int(nz.sum(dtype=torch.int64)) * bq * bk - int(counts.sum(dtype=torch.int64))


def flex_block_tensors(counts: torch.Tensor, block: int) -> dict:
    """FlexAttention's ``BlockMask.from_kv_blocks`` arguments from counts at ``block`` x
    ``block`` (batch 1, heads as the counts'): partial blocks (the mask_mod runs in them) and
    full ones. Index rows keep every key block (the packed ones first, ascending), the width
    that BlockMask's own transposition into q-indices expects."""
    full, partial = block_classes(counts, block, block)
    out = {}
    for name, sel in (("kv", partial), ("full_kv", full)):
        cnt = sel.sum(dim=-1, dtype=torch.int32)
        idx = torch.argsort((~sel).to(torch.int8), dim=-1, stable=True).to(torch.int32)
        out[f"{name}_num_blocks"] = cnt.unsqueeze(0).contiguous()
        out[f"{name}_indices"] = idx.unsqueeze(0).contiguous()
    return out


def band_global_allowed(params, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """The FA4 mask_mod of fa4_masks.band_global_mask, on index tensors (its Python twin)."""
    left, right, first = params
    return ((j >= i - left) & (j <= i + right)) | (i < first) | (j < first)


def fa4_window(attrs: dict) -> tuple[bool, tuple]:
    """(causal, window_size) of flash_attn_func for a band of spattn attributes: FA4's
    ``p - left <= j <= p + right`` is spattn's window (docs/op-spec.md, window conventions)."""
    causal = bool(attrs.get("causal", 0))
    wl, wr = int(attrs.get("window_left", -1)), int(attrs.get("window_right", -1))
    left = wl if wl >= 0 else None
    right = 0 if causal else (wr if wr >= 0 else None)
    return causal, (left, right)


def cudnn_bounds(attrs: dict) -> tuple:
    """(diagonal_band_left_bound, diagonal_band_right_bound) of cuDNN SDPA (top-left aligned,
    Lq == Lk): the left bound counts the visible keys including the query (spattn's window_left
    + 1), the right bound the keys after it; None = unbounded."""
    wl, wr = int(attrs.get("window_left", -1)), int(attrs.get("window_right", -1))
    left = wl + 1 if wl >= 0 else None
    right = 0 if attrs.get("causal", 0) else (wr if wr >= 0 else None)
    return left, right


def decode_kv_bytes(batch, heads_kv, head_dim, cache, lq, window=None, elem_bytes=2) -> int:
    """Bytes of K and V a decode step must read: every key of the cache (full causal), or the
    union of the Lq queries' windows of ``window`` keys each (``min(window + Lq - 1, cache)``)."""
    keys = cache if window is None else min(window + lq - 1, cache)
    return batch * heads_kv * keys * head_dim * 2 * elem_bytes


# ----------------------------------------------------------------------------------------------
# The plan: which rows, in which order (most important first; the rows of one FA4 variant
# adjacent, so that a compiled variant serves both lengths).

FULL_GROUPS = [
    ("bfloat16", 128, (16384, 65536)),
    "decode",
    ("bfloat16", 64, (16384, 65536)),
    ("float16", 128, (16384, 65536)),
    ("float16", 64, (16384, 65536)),
    ("bfloat16", 96, (16384,)),
    ("bfloat16", 256, (16384,)),
    ("float16", 96, (16384,)),
    ("float16", 256, (16384,)),
]
QUICK_GROUPS = [("bfloat16", 128, (16384,)), "decode_quick"]
DECODE_CACHES = (32768, 131072)
DECODE_LQ = (1, 8)


def decode_rows(quick: bool) -> list[dict]:
    if quick:
        return [{"kind": "decode", "pattern": "decode_window4096", "cache": 32768, "lq": 1}]
    rows = []
    for cache in DECODE_CACHES:  # one K/V cache per length, shared by its rows
        for key in DECODE_PATTERNS:
            for lq in DECODE_LQ:
                rows.append({"kind": "decode", "pattern": key, "cache": cache, "lq": lq})
    return rows


def build_plan(plan="quick", only=None, lengths=None, dims=None, dtypes=None, caches=None):
    """The rows of a run, in order: dicts with kind "prefill" (pattern, L, D, dtype) or
    "decode" (pattern, cache, lq). Filters keep the rows they name; ``only`` takes prefill
    pattern keys, decode keys, or "decode" for every decode row."""
    if plan not in ("quick", "full"):
        raise ValueError(f"--plan: quick or full, got {plan!r}")
    known = set(PATTERNS) | set(DECODE_PATTERNS) | {"decode"}
    for name in only or ():
        if name not in known:
            raise ValueError(
                f"--only: unknown pattern {name!r} (known: {', '.join(sorted(known))})"
            )
    rows = []
    for group in QUICK_GROUPS if plan == "quick" else FULL_GROUPS:
        if isinstance(group, str):
            for r in decode_rows(group == "decode_quick"):
                keep = not only or "decode" in only or r["pattern"] in only
                keep = keep and (not dims or DECODE_SHAPE["D"] in dims)
                keep = keep and (not dtypes or DECODE_SHAPE["dtype"] in dtypes)
                keep = keep and (not caches or r["cache"] in caches)
                if keep:
                    rows.append(r)
            continue
        dtype, d, ls = group
        if (dims and d not in dims) or (dtypes and dtype not in dtypes):
            continue
        for key in PATTERNS:
            if only and key not in only:
                continue
            for length in ls:
                if lengths and length not in lengths:
                    continue
                rows.append(
                    {"kind": "prefill", "pattern": key, "L": length, "D": d, "dtype": dtype}
                )
    return rows


def row_id(spec: dict) -> str:
    if spec["kind"] == "decode":
        return f"decode:{spec['pattern']}:cache{spec['cache']}:lq{spec['lq']}"
    return f"prefill:{spec['pattern']}:L{spec['L']}:D{spec['D']}:{spec['dtype']}"


def fa4_variant(spec: dict) -> str:
    """The FA4 kernel variant of a row (FA4's compile key ignores the sequence lengths)."""
    if spec["kind"] == "decode":
        return f"decode:{spec['pattern']}"
    return f"prefill:{spec['pattern']}:{spec['dtype']}:{spec['D']}"


def fa4_variants(rows: list[dict]) -> list[dict]:
    """The distinct FA4 variants of the rows, in the order the rows first need them."""
    out: dict[str, dict] = {}
    for r in rows:
        vid = fa4_variant(r)
        if vid not in out:
            v = {"id": vid, "kind": r["kind"], "pattern": r["pattern"]}
            if r["kind"] == "prefill":
                v.update(D=r["D"], dtype=r["dtype"])
            else:
                v["lqs"] = []
            out[vid] = v
        if r["kind"] == "decode" and r["lq"] not in out[vid]["lqs"]:
            out[vid]["lqs"].append(r["lq"])
    return list(out.values())


# ----------------------------------------------------------------------------------------------
# Resuming an earlier result


def row_errors(row: dict) -> list[str]:
    """What errored in a result row: ``"row"`` when the row itself failed, else the names of
    the columns that recorded an error."""
    if "failed" in row:
        return ["row"]
    return [n for n, t in row.get("impl", {}).items() if isinstance(t, dict) and "error" in t]


def resume_split(old: dict, plan: list[dict], errors: bool = False):
    """(rows of ``plan`` to run, rows of ``old`` to keep) when completing the earlier result
    ``old``: the plan's rows that ``old`` lists as skipped or lacks (a run stopped by its
    budget or killed), and with ``errors`` those whose row or some column errored. Every row
    of ``plan`` must belong to the earlier plan (``meta.plan_rows``)."""
    old_plan = old.get("meta", {}).get("plan_rows")
    if not old_plan:
        raise ValueError("--resume: the earlier result has no meta.plan_rows to resume")
    known = set(old_plan)
    ids = [row_id(r) for r in plan]
    extra = [i for i in ids if i not in known]
    if extra:
        raise ValueError(
            f"--resume: {len(extra)} rows of this plan are not in the earlier one (first: "
            f"{extra[0]}); give the earlier command's --plan and filters"
        )
    done: dict = {}
    for r in old.get("rows", []):  # a repeated id: the later row stands
        done[r.get("id")] = r
    run = [
        spec
        for spec, rid in zip(plan, ids, strict=True)
        if rid not in done or (errors and row_errors(done[rid]))
    ]
    again = {row_id(s) for s in run}
    keep = [r for rid, r in done.items() if rid not in again]
    return run, keep


def run_summary(meta: dict) -> dict:
    """What ``meta.runs`` keeps of one run."""
    keys = ("command", "date", "commit", "device", "elapsed_s", "budget_s", "resumed_from")
    keys += ("fa4_precompile_s", "fa4_precompile")
    return {k: meta[k] for k in keys if k in meta}


def order_rows(rows: list[dict], plan_ids: list[str]) -> list[dict]:
    """Rows in plan order (ids outside the plan last, in their order)."""
    pos = {rid: i for i, rid in enumerate(plan_ids)}
    return sorted(rows, key=lambda r: pos.get(r.get("id"), len(pos)))


# ----------------------------------------------------------------------------------------------
# Timing and comparison


def time_batched(fn, warmup=3, iters=10, target_ms=5.0, max_reps=50) -> dict:
    """Median time per call (ms) of batches of back-to-back calls, CUDA events around each
    batch; the batch size fills about ``target_ms`` of device time (at most ``max_reps``)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    fn()
    e.record()
    e.synchronize()
    est = max(s.elapsed_time(e), 1e-3)
    reps = max(1, min(max_reps, int(target_ms / est)))
    events = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(reps):
            fn()
        e.record()
        events.append((s, e))
    torch.cuda.synchronize()
    times = [a.elapsed_time(b) / reps for a, b in events]
    return {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "n": len(times),
        "calls_per_batch": reps,
        "timing": "batched",
    }


def capture_graph(make_fn, reps: int):
    """A CUDA graph of ``reps`` back-to-back calls. ``make_fn()`` runs on the capture stream
    (a launch that binds its stream when prepared, like spattn's direct call, binds that one)
    and returns the callable; returns (graph, the last call's return value)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn = make_fn()
        for _ in range(2):
            fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    out = None
    with torch.cuda.stream(s), torch.cuda.graph(graph, stream=s):
        for _ in range(reps):
            out = fn()
    torch.cuda.synchronize()
    return graph, out


def time_replay(graph, reps: int, iters: int) -> dict:
    graph.replay()
    torch.cuda.synchronize()
    events = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        graph.replay()
        e.record()
        events.append((s, e))
    torch.cuda.synchronize()
    times = [a.elapsed_time(b) / reps for a, b in events]
    return {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "n": len(times),
        "calls_per_graph": reps,
    }


def compare(got: torch.Tensor, ref: torch.Tensor, dtype) -> dict:
    """Max |got - ref| and whether every element is within twice the dtype's tolerance
    (docs/op-spec.md: both outputs carry their own rounding)."""
    atol, rtol = TOLERANCES[dtype]
    diff = (got.float() - ref.float()).abs()
    finite = bool(torch.isfinite(got).all())
    bound = 2 * atol + 2 * rtol * ref.float().abs()
    max_abs = float(diff.max()) if finite else float("nan")
    ok = finite and bool((diff <= bound).all())
    return {"max_abs_diff": max_abs, "matches": ok, "tolerance": [2 * atol, 2 * rtol]}


def _error(ex: BaseException) -> dict:
    tb = traceback.format_exc().strip().splitlines()
    return {"error": f"{type(ex).__name__}: {str(ex)[:600]}", "trace": "\n".join(tb[-12:])}


def tflops(pairs_total: int, head_dim: int, ms: float) -> float:
    return 4.0 * head_dim * pairs_total / (ms * 1e-3) / 1e12


# ----------------------------------------------------------------------------------------------
# Targets


def evaluate_target(row: dict, target: dict) -> dict:
    """Ratio of the fastest matching anchor of the target to spattn (>1: spattn faster)."""
    res = {"text": target["text"], "min_ratio": target["min_ratio"], "anchors": target["anchors"]}
    ours = row["impl"].get("spattn", {}).get("median_ms")
    timed = [
        (row["impl"][n]["median_ms"], n)
        for n in target["anchors"]
        if "median_ms" in row["impl"].get(n, {})
    ]
    ok = [(t, n) for t, n in timed if row["impl"][n].get("matches")]
    res["ratio"] = res["best_anchor"] = res["met"] = None
    if ours and ok:
        best_ms, best = min(ok)
        res.update(best_anchor=best, best_ms=best_ms, ratio=best_ms / ours)
        res["met"] = res["ratio"] >= target["min_ratio"]
    if ours and timed:  # every anchor that ran, whatever its output: for the record
        res["ratio_incl_mismatched"] = min(timed)[0] / ours
    return res


def band_efficiency(row: dict, rows: list[dict]) -> dict | None:
    """spattn's TF/s on a band against its own dense TF/s at the same L, D, dtype."""
    dense = next(
        (
            r
            for r in rows
            if r.get("kind") == "prefill"
            and r["key"] == "dense"
            and (r["L"], r["D"], r["dtype"]) == (row["L"], row["D"], row["dtype"])
        ),
        None,
    )
    mine = row["impl"].get("spattn", {}).get("tflops")
    theirs = None if dense is None else dense["impl"].get("spattn", {}).get("tflops")
    if not mine or not theirs:
        return None
    frac = mine / theirs
    return {
        "band_tflops": mine,
        "dense_tflops": theirs,
        "fraction": frac,
        "min_fraction": BAND_MIN_FRACTION,
        "met": frac >= BAND_MIN_FRACTION,
    }


# ----------------------------------------------------------------------------------------------
# Anchors (imported lazily: the module imports without flash_attn, cudnn or onnxruntime)


@functools.cache
def _fa4_mask_mod(params):
    import fa4_masks

    return fa4_masks.band_global_mask(*params)


def fa4_prefill(pat: HopperPattern, q4, k4, v4):
    """(call, description) of FA4 on [B, L, H, D] inputs; the call returns [B, L, Hq, D]."""
    from flash_attn.cute import flash_attn_func

    mode = pat.fa4["mode"]
    if mode == "dense":
        return (lambda: flash_attn_func(q4, k4, v4)[0]), "flash_attn_func(q, k, v)"
    if mode == "window":
        causal, window = fa4_window(pat.attrs)

        def call():
            return flash_attn_func(q4, k4, v4, causal=causal, window_size=window)[0]

        return call, f"flash_attn_func(q, k, v, causal={causal}, window_size={window})"
    from flash_attn.cute.block_sparsity import BlockSparseTensorsTorch

    length, head_dim = q4.shape[1], q4.shape[3]
    bq, bk = fa4_block_size(pat, head_dim)
    counts = coarsen(pat.block_counts(length, q4.device), bq // BASE_BLOCK, bk // BASE_BLOCK)
    params = pat.fa4["mask"]
    tensors = fa4_block_tensors(counts, bq, bk, has_mask_mod=params is not None)
    bst = BlockSparseTensorsTorch(**tensors, block_size=(bq, bk))
    mask_mod = None if params is None else _fa4_mask_mod(tuple(params))

    def sparse_call():
        return flash_attn_func(q4, k4, v4, mask_mod=mask_mod, block_sparse_tensors=bst)[0]

    note = f"block_sparse_tensors {bq}x{bk} from spattn's mask"
    note += "" if params is None else f", mask_mod band/global {tuple(params)} in partial blocks"
    return sparse_call, f"flash_attn_func(q, k, v, {note})"


def fa4_decode(attrs: dict, q4, k4, v4):
    from flash_attn.cute import flash_attn_func

    causal, window = fa4_window(attrs)

    def call():
        return flash_attn_func(q4, k4, v4, causal=causal, window_size=window)[0]

    return (
        call,
        f"flash_attn_func(q[B,Lq,Hq,D], k/v[B,Lk,Hkv,D], causal={causal}, window_size={window})",
    )


_CUDNN_HANDLE = {}


def cudnn_sdpa(q, k, v, attrs):
    """cuDNN SDPA through cudnn-frontend's pygraph, built once; the call executes it."""
    import cudnn

    dev = q.device
    if dev not in _CUDNN_HANDLE:
        _CUDNN_HANDLE[dev] = cudnn.create_handle()
    handle = _CUDNN_HANDLE[dev]
    cudnn.set_stream(handle=handle, stream=torch.cuda.current_stream(dev).cuda_stream)
    io = {torch.bfloat16: cudnn.data_type.BFLOAT16, torch.float16: cudnn.data_type.HALF}[q.dtype]
    g = cudnn.pygraph(
        handle=handle,
        io_data_type=io,
        intermediate_data_type=cudnn.data_type.FLOAT,
        compute_data_type=cudnn.data_type.FLOAT,
    )
    qt, kt, vt = g.tensor_like(q), g.tensor_like(k), g.tensor_like(v)
    left, right = cudnn_bounds(attrs)
    kwargs = {"generate_stats": False, "attn_scale": 1.0 / math.sqrt(q.shape[-1])}
    if left is not None or right is not None:
        kwargs["diagonal_alignment"] = cudnn.diagonal_alignment.TOP_LEFT
        if left is not None:
            kwargs["diagonal_band_left_bound"] = left
        if right is not None:
            kwargs["diagonal_band_right_bound"] = right
    o_t, _ = g.sdpa(name="sdpa", q=qt, k=kt, v=vt, **kwargs)
    out = torch.empty(q.shape[:3] + v.shape[3:], dtype=q.dtype, device=dev)
    o_t.set_output(True).set_dim(list(out.shape)).set_stride(list(out.stride())).set_data_type(io)
    g.validate()
    g.build_operation_graph()
    g.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    g.check_support()
    g.build_plans()
    ws = torch.empty(max(1, g.get_workspace_size()), dtype=torch.uint8, device=dev)
    pack = {qt: q, kt: k, vt: v, o_t: out}

    def call():
        g.execute(pack, ws, handle=handle)
        return out

    desc = "cudnn.pygraph.sdpa" + (
        "" if left is None and right is None else f" TOP_LEFT band left={left} right={right}"
    )
    return call, desc


def cudnn_bsa(pat: HopperPattern, q, k, v):
    from cudnn.block_sparse_attention import block_sparse_attention_forward

    counts = pat.block_counts(q.shape[2], q.device)
    idx, cnt = bsa_tensors(counts, pat.hq)

    def call():
        res = block_sparse_attention_forward(
            q, k, v, idx, q2k_block_nums=cnt, sparse_block_size=64, layout="bhsd", kv_splits="auto"
        )
        return res["o_tensor"]

    return call, "block_sparse_attention_forward(..., sparse_block_size=64, kv_splits='auto')"


# ----------------------------------------------------------------------------------------------
# FA4 compilation in worker processes


class FA4Pool:
    """Worker processes compiling FA4 variants into FA4's persistent cache (a fresh folder);
    the main process loads each variant from there when its row needs it."""

    def __init__(self, variants, workers, cache_dir, log):
        self.variants = {v["id"]: v for v in variants}
        self.dir = os.path.join(cache_dir, "done")
        os.makedirs(self.dir, exist_ok=True)
        self.procs = []
        self.log = log
        self.final: list[dict] | None = None
        assign = [variants[i::workers] for i in range(workers)]
        for w, mine in enumerate(a for a in assign if a):
            spec = os.path.join(cache_dir, f"worker{w}.json")
            with open(spec, "w") as f:
                json.dump(mine, f)
            logf = open(os.path.join(cache_dir, f"worker{w}.log"), "w")  # noqa: SIM115
            cmd = [sys.executable, os.path.abspath(__file__), "--fa4-compile-worker", spec]
            cmd += ["--worker-out", self.dir]
            p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=os.environ.copy())
            self.procs.append((p, [v["id"] for v in mine], logf))
        log(f"FA4: {len(variants)} variants compiling in {len(self.procs)} worker processes")

    def _path(self, vid):
        return os.path.join(self.dir, vid.replace(":", "_") + ".json")

    def wait(self, vid, timeout_s):
        """Wait for the worker compiling ``vid``; returns its result dict or None."""
        owner = next((p for p, ids, _ in self.procs if vid in ids), None)
        if owner is None:
            return None
        t0 = time.time()
        while time.time() - t0 < timeout_s:
            done = self._done(vid)
            if done is not None:
                return done
            if owner.poll() is not None and self._done(vid) is None:
                return {"id": vid, "ok": False, "error": f"worker exited with {owner.returncode}"}
            time.sleep(0.2)
        return {"id": vid, "ok": False, "error": f"not compiled after waiting {timeout_s} s"}

    def wait_all(self, timeout_s: float, progress_s: float = 10.0) -> list[dict]:
        """Wait until every variant is compiled, failed, or ``timeout_s`` has passed, then end
        the workers (killed if still compiling), so that no compilation and no worker's GPU
        context overlaps a timed row. Returns one result per variant (``seconds``: its
        compile time in the worker; a variant not done says why)."""
        t0 = time.time()
        last = t0
        while True:
            pending = [v for v in self.variants if self._done(v) is None]
            alive = [p for p, ids, _ in self.procs if p.poll() is None]
            if not pending or not alive or time.time() - t0 >= timeout_s:
                break
            if time.time() - last >= progress_s:
                last = time.time()
                self.log(self.progress(time.time() - t0))
            time.sleep(0.2)
        waited = time.time() - t0
        out = []
        for p, ids, _ in self.procs:
            killed = p.poll() is None
            if killed:
                p.kill()
            p.wait()
            for vid in ids:
                res = self._done(vid)
                if res is None:
                    why = (
                        f"not compiled after waiting {timeout_s:.0f} s (worker killed)"
                        if killed
                        else f"worker exited with {p.returncode} before this variant"
                    )
                    res = {"id": vid, "ok": False, "error": why}
                out.append(res)
        order = list(self.variants)
        out.sort(key=lambda r: order.index(r["id"]))
        self.final = out
        self.log(self.progress(waited) + " (workers ended)")
        for r in out:
            if not r.get("ok"):
                self.log(f"  FA4 {r['id']}: {str(r.get('error'))[:200]}; compiled in-row instead")
        return out

    def progress(self, elapsed: float) -> str:
        res = self.results()
        bad = sum(1 for r in res if not r.get("ok"))
        slow = max(res, key=lambda r: r.get("seconds", 0.0), default=None)
        text = f"FA4 precompile: {len(res)}/{len(self.variants)} done ({bad} failed)"
        text += f", {elapsed:.0f} s"
        if slow is not None and "seconds" in slow:
            text += f"; slowest {slow['id']} {slow['seconds']:.1f} s"
        return text

    def results(self):
        if self.final is not None:
            return self.final
        return [r for r in (self._done(v) for v in self.variants) if r is not None]

    def close(self) -> list[dict]:
        """Stop the workers still running (the run is over); the tails of the logs of the
        workers that failed a variant or did not finish."""
        tails = []
        for p, ids, logf in self.procs:
            running = p.poll() is None
            if running:
                p.kill()
                p.wait()
            logf.close()
            failed = [i for i in ids if not (self._done(i) or {}).get("ok")]
            if failed:
                with open(logf.name, errors="replace") as f:
                    text = f.read()
                tails.append(
                    {"pid": p.pid, "killed": running, "not_ok": failed, "log_tail": text[-3000:]}
                )
        return tails

    def _done(self, vid):
        if os.path.exists(self._path(vid)):
            with open(self._path(vid)) as f:
                return json.load(f)
        return None


def _fa4_worker_inputs(v, dev):
    g = torch.Generator(device=dev).manual_seed(7)
    dtype = getattr(torch, v.get("dtype", DECODE_SHAPE["dtype"]))
    if v["kind"] == "prefill":
        pat = PATTERNS[v["pattern"]]
        length, d = 1024, v["D"]  # FA4's compile key holds no length; >1 query tile as at 16K
        shapes = [(1, length, pat.hq, d), (1, length, pat.hkv, d), (1, length, pat.hkv, d)]
        q4, k4, v4 = (torch.randn(s, device=dev, dtype=dtype, generator=g) for s in shapes)
        return [fa4_prefill(pat, q4, k4, v4)[0]]
    calls = []
    sh = DECODE_SHAPE
    k4 = torch.randn(2, 8192, sh["heads_kv"], sh["D"], device=dev, dtype=dtype, generator=g)
    v4 = torch.randn_like(k4)
    for lq in v["lqs"]:
        q4 = torch.randn(2, lq, sh["heads_q"], sh["D"], device=dev, dtype=dtype, generator=g)
        calls.append(fa4_decode(DECODE_PATTERNS[v["pattern"]]["attrs"], q4, k4, v4)[0])
    return calls


def worker_main(spec_path: str, out_dir: str) -> int:
    with open(spec_path) as f:
        variants = json.load(f)
    parent = os.getppid()
    for v in variants:
        if os.getppid() != parent:  # the main process is gone
            return 1
        t0 = time.perf_counter()
        res = {"id": v["id"], "pid": os.getpid()}
        try:
            for call in _fa4_worker_inputs(v, DEVICE):
                call()
            torch.cuda.synchronize()
            res["ok"] = True
        except Exception as ex:
            res.update(ok=False, **_error(ex))
        res["seconds"] = time.perf_counter() - t0
        print(json.dumps(res), flush=True)
        path = os.path.join(out_dir, v["id"].replace(":", "_") + ".json")
        with open(path + ".tmp", "w") as f:
            json.dump(res, f)
        os.replace(path + ".tmp", path)
    return 0


# ----------------------------------------------------------------------------------------------
# Rows


class Bench:
    def __init__(self, args, rows, resume=None):
        from spattn.capi import CudaRunner, find_library

        try:
            lib = find_library()
        except FileNotFoundError as ex:
            lib = f"not found: {ex}"
        self.args = args
        self.t0 = time.time()
        self.kernel = CudaRunner()
        self.flex = None
        self._flex_masks: dict = {}
        self.pool: FA4Pool | None = None
        self._kv = None  # the decode K/V cache of one length, shared by its rows
        self.plan = rows
        os.makedirs(args.out, exist_ok=True)
        self.path = os.path.join(args.out, f"hopper_{args.tag}.json")
        self.data = {"meta": self.meta(lib), "rows": [], "skipped": [], "mismatches": []}
        self.run_index = 0
        if resume is not None:
            self.merge(*resume)

    def log(self, msg):
        print(f"[{time.time() - self.t0:7.1f}s] {msg}", flush=True)

    def meta(self, lib):
        from importlib import metadata

        versions = {}
        for dist in (
            "flash-attn-4",
            "nvidia-cudnn-frontend",
            "nvidia-cutlass-dsl",
            "quack-kernels",
            "onnxruntime-gpu",
            "triton",
        ):
            with contextlib.suppress(Exception):
                versions[dist] = metadata.version(dist)
        with contextlib.suppress(Exception):
            import cudnn

            versions["cudnn_backend"] = cudnn.backend_version_string()
        commit = None
        with contextlib.suppress(Exception):
            commit = subprocess.run(
                ["git", "-C", _HERE, "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        return {
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
            "device": torch.cuda.get_device_name(),
            "capability": list(torch.cuda.get_device_capability()),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn_torch": torch.backends.cudnn.version(),
            "python": platform.python_version(),
            "versions": versions,
            "spattn_kernels_lib": lib,
            "commit": commit or None,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "plan": self.args.plan,
            "plan_rows": [row_id(r) for r in self.plan],
            "budget_s": self.args.budget_s,
            "peak_bandwidth_TBps": self.args.peak_tbps,
            "note": (
                "effective TF/s = 4 * Hq * D * allowed pairs / time; ratio = best matching "
                "anchor time / spattn time; prefill median_ms: batches of back-to-back calls; "
                "decode median_ms: CUDA-graph replay per call"
            ),
        }

    def merge(self, old: dict, keep: list[dict], path: str) -> None:
        """Start from an earlier result: its plan, its rows ``keep`` (with their mismatches),
        its skipped rows that this run does not run, and its runs before this one."""
        meta, old_meta = self.data["meta"], old.get("meta", {})
        runs = list(old_meta.get("runs") or [run_summary(old_meta)])
        self.run_index = len(runs)
        meta["resumed_from"] = path
        meta["runs"] = runs
        meta["plan_rows"] = list(old_meta["plan_rows"])
        kept = set()
        for r in keep:
            r.setdefault("run", 0)
            kept.add(r.get("id"))
        now = {row_id(r) for r in self.plan}
        self.data["rows"] = list(keep)
        self.data["mismatches"] = [m for m in old.get("mismatches", []) if m.get("row") in kept]
        self.data["skipped"] = [s for s in old.get("skipped", []) if s.get("row") not in kept | now]

    def write(self):
        meta = self.data["meta"]
        meta["elapsed_s"] = time.time() - self.t0
        if "runs" in meta:  # a resumed result: every run's command, this one last
            now = {k: v for k, v in run_summary(meta).items() if k != "fa4_precompile"}
            meta["runs"][self.run_index :] = [now]
            self.data["rows"] = order_rows(self.data["rows"], meta["plan_rows"])
        if self.pool is not None:
            self.data["meta"]["fa4_precompile"] = self.pool.results()
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1, default=str)
        os.replace(tmp, self.path)

    # -- measuring one implementation --

    def prepare(self, row, name, make, to_ours=None, ref=None, note=None):
        """Build ``make()``'s call and run it once (JIT compilation, plans, block masks: the
        setup, timed apart as ``setup_s`` and ``first_call_s``), compare that output with
        ``ref``. Returns the call, or None after an error (recorded in the row, never
        raised). The timing comes later (:meth:`time_prepared`), once every column of the row
        is set up, so that no compilation overlaps a timed column."""
        entry: dict = {}
        if note:
            entry["note"] = note
        row["impl"][name] = entry
        try:
            t_build = time.perf_counter()
            fn, desc = make()
            entry["call"] = desc
            t_first = time.perf_counter()
            o = fn()
            torch.cuda.synchronize()
            entry["setup_s"] = t_first - t_build
            entry["first_call_s"] = time.perf_counter() - t_first
            row.setdefault("setup_s", {})[name] = entry["setup_s"] + entry["first_call_s"]
            if ref is not None:
                got = o if to_ours is None else to_ours(o)
                entry.update(compare(got, ref, ref.dtype))
            del o
            return fn
        except Exception as ex:
            entry.update(_error(ex))
            with contextlib.suppress(Exception):
                torch.cuda.synchronize()
            return None

    def time_prepared(self, row, name, fn):
        """Batched timing of a prepared call (an error is recorded in its entry)."""
        if fn is None:
            return
        entry = row["impl"][name]
        try:
            entry.update(time_batched(fn, self.args.warmup, self.args.iters))
        except Exception as ex:
            entry.update(_error(ex))
            with contextlib.suppress(Exception):
                torch.cuda.synchronize()

    def fa4_ready(self, spec, row):
        """Record this row's FA4 precompilation. By default every variant was compiled (or
        given up) before the first row; with --fa4-overlap, wait for the worker compiling it
        (at most --fa4-wait-s, and not far past the budget). A variant not precompiled is
        compiled by the main process in the row's setup."""
        if self.pool is None:
            return
        vid = fa4_variant(spec)
        if self.pool.final is not None:
            res = next((r for r in self.pool.final if r["id"] == vid), None)
        else:
            left = self.args.budget_s - (time.time() - self.t0)
            res = self.pool.wait(vid, max(30.0, min(self.args.fa4_wait_s, left)))
        if res is not None:
            row.setdefault("fa4_precompile", res)

    # -- prefill --

    def prefill(self, spec):
        args, dev = self.args, DEVICE
        pat = PATTERNS[spec["pattern"]]
        length, d, dtype = spec["L"], spec["D"], getattr(torch, spec["dtype"])
        t_row = time.time()
        pairs = pat.pair_count(length, dev)  # the block counts, cached per (pattern, L)
        t_inputs = time.time()
        row = {
            "kind": "prefill",
            "key": pat.key,
            "pattern": pat.name,
            "L": length,
            "D": d,
            "dtype": spec["dtype"],
            "heads_q": pat.hq,
            "heads_kv": pat.hkv,
            "pairs_per_head": pairs / pat.hq,
            "density": pairs / (pat.hq * length * length),
            "impl": {},
            "anchor_notes": {},
            "setup_s": {"block_counts": t_inputs - t_row},
        }
        g = torch.Generator(device=dev).manual_seed(1000 + length + d)
        q = torch.randn(1, pat.hq, length, d, device=dev, dtype=dtype, generator=g)
        k = torch.randn(1, pat.hkv, length, d, device=dev, dtype=dtype, generator=g)
        v = torch.randn(1, pat.hkv, length, d, device=dev, dtype=dtype, generator=g)
        out = torch.empty_like(q)
        bi = pat.block_indices(length, dev)
        direct = self.kernel.prepare(q, k, v, out, pat.attrs, block_indices=bi)
        torch.cuda.synchronize()
        row["setup_s"]["inputs"] = time.time() - t_inputs

        def make_ours():
            return (lambda: (direct(), out)[1]), "spattn.capi.CudaRunner direct launch"

        calls = {"spattn": self.prepare(row, "spattn", make_ours)}
        ref = None
        if calls["spattn"] is not None:
            direct()
            torch.cuda.synchronize()
            ref = out.clone()
        skip = set(args.skip_anchors)
        names = [a for a in pat.anchors if a not in skip]
        if "flex" in names and not self.flex_wanted(pat, spec):
            names.remove("flex")
        # Every column is set up (compiled, first call) before any is timed.
        if "fa4" in names:
            q4, k4, v4 = (x.transpose(1, 2).contiguous() for x in (q, k, v))
            self.fa4_ready(spec, row)
            calls["fa4"] = self.prepare(
                row,
                "fa4",
                lambda: fa4_prefill(pat, q4, k4, v4),
                to_ours=lambda o: o.transpose(1, 2),
                ref=ref,
            )
        if "cudnn_sdpa" in names:
            calls["cudnn_sdpa"] = self.prepare(
                row, "cudnn_sdpa", lambda: cudnn_sdpa(q, k, v, pat.attrs), ref=ref
            )
        if "cudnn_bsa" in names:
            counts = pat.block_counts(length, dev)
            extra = cover_extra_pairs(counts, BASE_BLOCK, BASE_BLOCK) * (pat.hq // counts.shape[0])
            note = None
            if extra:
                note = (
                    f"block-granular: runs the 64-block cover, {extra} pairs beyond spattn's mask "
                    f"(+{100.0 * extra / pairs:.1f}%): a different mask, its output differs"
                )
                row["anchor_notes"]["cudnn_bsa"] = note
            calls["cudnn_bsa"] = self.prepare(
                row, "cudnn_bsa", lambda: cudnn_bsa(pat, q, k, v), ref=ref, note=note
            )
        if "flex" in names:
            calls["flex"] = self.prepare(row, "flex", lambda: self.flex_call(pat, q, k, v), ref=ref)
        if "sdpa_cudnn" in names:
            calls["sdpa_cudnn"] = self.prepare(
                row, "sdpa_cudnn", lambda: sdpa_cudnn(q, k, v), ref=ref
            )
        row["setup_s"]["total"] = time.time() - t_row
        for name, fn in calls.items():
            self.time_prepared(row, name, fn)
        calls.clear()
        if args.ort and spec["dtype"] == "float16" and pat.layout is None:
            self.ort(pat, q, k, v, out, row, direct)
        self.finish_prefill(row, pairs)
        row["seconds"] = time.time() - t_row
        return row

    def flex_wanted(self, pat, spec):
        """FlexAttention compiles once per pattern and shape (tens of seconds each): by default
        only where it is an anchor of a target, at D = 128, in bf16 (see --flex)."""
        flex = self.args.flex
        if flex == "none" or (spec["dtype"] != "bfloat16" and not self.args.flex_fp16):
            return False
        if flex == "all":
            return True
        return pat.target is _BLOCK_TARGET and (flex == "targets" or spec["D"] == 128)

    def flex_call(self, pat, q, k, v):
        from torch.nn.attention.flex_attention import flex_attention

        if self.flex is None:
            # static shapes (see bench_cuda.py): one compilation per shape
            self.flex = torch.compile(flex_attention, dynamic=False)
        flex = self.flex
        bm = self.flex_block_mask(pat, q.shape[2], q.device)
        gqa = pat.hq != pat.hkv

        def call():
            return flex(q, k, v, block_mask=bm, enable_gqa=gqa)

        return call, "torch.compile(flex_attention), BlockMask 128 from spattn's block counts"

    def flex_block_mask(self, pat, length, device):
        """The BlockMask of a pattern and length (shared by its dtypes and head dims), made
        from the block counts: partial 128-blocks run the MaskRule as mask_mod, full ones run
        unmasked. torch's create_block_mask(_compile=True) would build the same mask by
        torch.compile-ing its whole construction (a fresh compile on every call, the L x L
        mask_mod evaluation traced through vmap): the first full run spent 193 s there on
        one row."""
        from torch.nn.attention.flex_attention import BlockMask

        key = (pat.key, length)
        if key not in self._flex_masks:
            counts = coarsen(pat.block_counts(length, device), 2, 2)
            t = flex_block_tensors(counts, 128)
            self._flex_masks[key] = BlockMask.from_kv_blocks(
                t["kv_num_blocks"],
                t["kv_indices"],
                t["full_kv_num_blocks"],
                t["full_kv_indices"],
                BLOCK_SIZE=128,
                mask_mod=pat.mask_mod(length, device),
                seq_lengths=(length, length),
            )
        return self._flex_masks[key]

    def ort(self, pat, q, k, v, out, row, direct):
        """bench_cuda.py's --ort columns (ONNX Runtime CUDA EP with I/O binding, streamed)."""
        from bench_cuda import ort_columns

        def record(name, fn):
            try:
                t = time_callable(fn, warmup=self.args.warmup, iters=self.args.iters)
                row["impl"][name] = t
            except Exception as ex:
                row["impl"][name] = _error(ex)

        try:
            row["_direct_call"] = direct
            ort_columns(pat, q, k, v, out, row, record, self.args)
            # ort_over_direct of bench_cuda divides a synchronized ORT call by spattn's time;
            # here that is batched, so the synchronized direct call is timed too.
            record("spattn_sync", direct)
            sync = row["impl"]["spattn_sync"].get("median_ms")
            if sync and "median_ms" in row["impl"].get("spattn_ort", {}):
                row["ort_over_direct"] = row["impl"]["spattn_ort"]["median_ms"] / sync
        except Exception as ex:
            row["ort_error"] = _error(ex)
        finally:
            row.pop("_direct_call", None)

    def finish_prefill(self, row, pairs):
        pat = PATTERNS[row["key"]]
        for t in row["impl"].values():
            if "median_ms" in t:
                t["tflops"] = tflops(pairs, row["D"], t["median_ms"])
        ours = row["impl"].get("spattn", {}).get("median_ms")
        for name, t in row["impl"].items():
            if name != "spattn" and ours and "median_ms" in t and not name.endswith("streamed"):
                t["spattn_speedup"] = t["median_ms"] / ours
        row["mismatch"] = [n for n, t in row["impl"].items() if t.get("matches") is False]
        if pat.target:
            row["target"] = evaluate_target(row, pat.target)
        if pat.band:
            row["band_efficiency"] = band_efficiency(row, self.data["rows"])

    # -- decode --

    def decode_inputs(self, cache):
        if self._kv is None or self._kv[0] != cache:
            self._kv = None
            torch.cuda.empty_cache()
            sh, dev = DECODE_SHAPE, DEVICE
            dtype = getattr(torch, sh["dtype"])
            g = torch.Generator(device=dev).manual_seed(2000 + cache)
            shape = (sh["batch"], cache, sh["heads_kv"], sh["D"])
            k4 = torch.randn(shape, device=dev, dtype=dtype, generator=g)
            v4 = torch.randn(shape, device=dev, dtype=dtype, generator=g)
            self._kv = (
                cache,
                k4,
                v4,
                k4.transpose(1, 2).contiguous(),
                v4.transpose(1, 2).contiguous(),
            )
        return self._kv[1:]

    def decode(self, spec):
        args, dev, sh = self.args, DEVICE, DECODE_SHAPE
        dp = DECODE_PATTERNS[spec["pattern"]]
        attrs, cache, lq = dp["attrs"], spec["cache"], spec["lq"]
        t_row = time.time()
        dtype = getattr(torch, sh["dtype"])
        k4, v4, k, v = self.decode_inputs(cache)
        g = torch.Generator(device=dev).manual_seed(3000 + lq)
        q4 = torch.randn(
            sh["batch"], lq, sh["heads_q"], sh["D"], device=dev, dtype=dtype, generator=g
        )
        q = q4.transpose(1, 2).contiguous()
        window = int(attrs["window_left"]) + 1 if "window_left" in attrs else None
        kv_bytes = decode_kv_bytes(sh["batch"], sh["heads_kv"], sh["D"], cache, lq, window)
        row = {
            "kind": "decode",
            "key": spec["pattern"],
            "pattern": dp["name"],
            "attrs": attrs,
            "batch": sh["batch"],
            "Lq": lq,
            "cache": cache,
            "D": sh["D"],
            "dtype": sh["dtype"],
            "heads_q": sh["heads_q"],
            "heads_kv": sh["heads_kv"],
            "kv_bytes": kv_bytes,
            "impl": {},
        }
        out = torch.empty_like(q)
        direct = self.kernel.prepare(q, k, v, out, attrs)
        calls = {
            "spattn": self.prepare(
                row, "spattn", lambda: ((lambda: (direct(), out)[1]), "direct launch")
            )
        }
        ref = None
        if calls["spattn"] is not None:
            direct()
            torch.cuda.synchronize()
            ref = out.clone()
        if "fa4" not in args.skip_anchors:  # compiled (first call) before anything is timed
            self.fa4_ready(spec, row)
            calls["fa4"] = self.prepare(
                row, "fa4", lambda: fa4_decode(attrs, q4, k4, v4), lambda o: o.transpose(1, 2), ref
            )
        self.time_prepared(row, "spattn", calls["spattn"])
        s = row["impl"]["spattn"]
        if "median_ms" in s:
            with contextlib.suppress(Exception):
                s["eager_ms"] = time_callable(direct, warmup=args.warmup, iters=20)["median_ms"]
            s["streamed_ms"] = s["median_ms"]
            out_g = torch.empty_like(q)

            def make_graph_call():
                call = self.kernel.prepare(q, k, v, out_g, attrs)  # bound to the capture stream
                return lambda: (call(), out_g)[1]

            row["cuda_graph"] = self.graph_time(s, make_graph_call, ref, bitwise=True)
        fn = calls.get("fa4")
        self.time_prepared(row, "fa4", fn)
        e = row["impl"].get("fa4", {})
        if fn is not None and "median_ms" in e:
            with contextlib.suppress(Exception):
                e["eager_ms"] = time_callable(fn, warmup=args.warmup, iters=20)["median_ms"]
            e["streamed_ms"] = e["median_ms"]
            fa_ref = fn()
            torch.cuda.synchronize()
            e["cuda_graph"] = self.graph_time(e, lambda: fn, fa_ref, bitwise=True)
        self.finish_decode(row)
        row["seconds"] = time.time() - t_row
        return row

    def graph_time(self, entry, make_fn, ref, bitwise):
        """Capture, replay, compare with the eager output, time the replay; on success the
        replay time becomes the entry's median_ms (the streamed one stays as streamed_ms)."""
        res: dict = {}
        try:
            graph, got = capture_graph(make_fn, self.args.graph_calls)
            graph.replay()
            torch.cuda.synchronize()
            res["captured"] = True
            res["replay_equals_eager"] = bool(torch.equal(got, ref)) if bitwise else None
            t = time_replay(graph, self.args.graph_calls, self.args.iters)
            res.update(t)
            entry["median_ms"] = t["median_ms"]
            entry["timing"] = "cuda_graph"
            del graph
        except Exception as ex:
            res.update(captured=False, **_error(ex))
            with contextlib.suppress(Exception):
                torch.cuda.synchronize()
        return res

    def finish_decode(self, row):
        ours = row["impl"].get("spattn", {})
        fa = row["impl"].get("fa4", {})
        row["mismatch"] = [n for n, t in row["impl"].items() if t.get("matches") is False]
        if "median_ms" in ours:
            bw = row["kv_bytes"] / (ours["median_ms"] * 1e-3) / 1e12
            frac = bw / self.args.peak_tbps
            row["bandwidth"] = {
                "TBps": bw,
                "fraction": frac,
                "min_fraction": DECODE_MIN_FRACTION,
                "met": frac >= DECODE_MIN_FRACTION,
                "timing": ours.get("timing"),
            }
        if "median_ms" in ours and "median_ms" in fa:
            row["ratio_vs_fa4"] = fa["median_ms"] / ours["median_ms"]
            row["fa4_matches"] = fa.get("matches")
            if ours.get("timing") != fa.get("timing"):
                row["timing_note"] = "spattn and FA4 timed differently (one graph capture failed)"

    # -- the run --

    def run(self):
        args = self.args
        for i, spec in enumerate(self.plan):
            rid = row_id(spec)
            elapsed = time.time() - self.t0
            if elapsed > args.budget_s:
                self.data["skipped"].append({"row": rid, "reason": f"budget {args.budget_s} s"})
                continue
            self.log(f"row {i + 1}/{len(self.plan)} {rid}")
            if spec["kind"] == "prefill" and self._kv is not None:
                self._kv = None  # the decode caches (16 GB at 128K) are not needed any more
                torch.cuda.empty_cache()
            try:
                row = self.prefill(spec) if spec["kind"] == "prefill" else self.decode(spec)
            except Exception as ex:  # inputs or spattn itself: the row is recorded as failed
                row = {"kind": spec["kind"], "key": spec["pattern"], "spec": spec, "impl": {}}
                row.update(failed=_error(ex))
                with contextlib.suppress(Exception):
                    torch.cuda.synchronize()
            row["id"] = rid
            row["run"] = self.run_index
            self.data["rows"].append(row)
            for name in row.get("mismatch", []):
                t = row["impl"][name]
                expected = name in row.get("anchor_notes", {})
                self.data["mismatches"].append(
                    {
                        "row": rid,
                        "impl": name,
                        "max_abs_diff": t.get("max_abs_diff"),
                        "expected": expected,
                        "note": row.get("anchor_notes", {}).get(name),
                    }
                )
            self.print_row(row)
            self.write()
            torch.cuda.empty_cache()
        self._kv = None
        # band efficiency once more: a dense row may have come after its band rows
        for row in self.data["rows"]:
            if row.get("kind") == "prefill" and "impl" in row and PATTERNS[row["key"]].band:
                if "L" in row:
                    row["band_efficiency"] = band_efficiency(row, self.data["rows"])
        self.write()

    def print_row(self, row):
        if "failed" in row:
            self.log(f"  FAILED: {row['failed']['error']}")
            return
        cells = []
        for name, t in row["impl"].items():
            if "median_ms" in t:
                tf = f" {t['tflops']:.0f} TF/s" if "tflops" in t else ""
                flag = ""
                if t.get("matches") is False:
                    flag = " MISMATCH"
                elif t.get("matches"):
                    flag = " ok"
                cells.append(f"{name} {t['median_ms']:.4g} ms{tf}{flag}")
            else:
                cells.append(f"{name} ERROR")
        self.log("  " + " | ".join(cells))
        setup = row.get("setup_s") or {}
        slow = [f"{k} {v:.1f} s" for k, v in setup.items() if k != "total" and v >= 1.0]
        if slow:
            self.log(f"  setup {setup.get('total', 0.0):.1f} s: " + ", ".join(slow))
        for name, t in row["impl"].items():
            if "error" in t:
                self.log(f"  {name}: {t['error'][:300]}")
        for name in row.get("mismatch", []):
            t = row["impl"][name]
            why = row.get("anchor_notes", {}).get(name, "UNEXPECTED")
            self.log(f"  !!! MISMATCH {name}: max|diff| {t.get('max_abs_diff')} ({why})")
        tg = row.get("target")
        if tg:
            r = tg.get("ratio")
            verdict = "no matching anchor" if r is None else ("met" if tg["met"] else "NOT MET")
            rs = "-" if r is None else f"{r:.2f}x vs {tg['best_anchor']}"
            self.log(f"  target {tg['text']}: {rs} -> {verdict}")
        be = row.get("band_efficiency")
        if be:
            self.log(f"  band {be['fraction']:.2f} of spattn dense TF/s (min {BAND_MIN_FRACTION})")
        bw = row.get("bandwidth")
        if bw:
            self.log(
                f"  KV bandwidth {bw['TBps']:.2f} TB/s = {bw['fraction']:.0%} of peak "
                f"({bw['timing']}); FA4/spattn {row.get('ratio_vs_fa4')}; graph captured "
                f"{(row.get('cuda_graph') or {}).get('captured')}, replay == eager "
                f"{(row.get('cuda_graph') or {}).get('replay_equals_eager')}"
            )


def sdpa_cudnn(q, k, v):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    def call():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return sdpa(q, k, v)

    return call, "torch SDPA, SDPBackend.CUDNN_ATTENTION"


# ----------------------------------------------------------------------------------------------
# Plot


def plot(data: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prefill = [r for r in data["rows"] if r.get("kind") == "prefill" and r.get("target")]
    decode = [r for r in data["rows"] if r.get("kind") == "decode" and r.get("bandwidth")]
    keys = [k for k in PATTERNS if any(r["key"] == k for r in prefill)]
    panels = len(keys) + (1 if decode else 0)
    if not panels:
        return
    cols = 2
    nrows = math.ceil(panels / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(13, 3.4 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        sel = [r for r in prefill if r["key"] == key]
        labels = [f"{r['L'] // 1024}K D{r['D']} {r['dtype'][:4]}" for r in sel]
        vals = [r["target"]["ratio"] or 0.0 for r in sel]
        colors = [
            "tab:green"
            if r["target"]["met"]
            else ("tab:gray" if r["target"]["met"] is None else "tab:red")
            for r in sel
        ]
        ax.bar(range(len(sel)), vals, color=colors)
        ax.axhline(sel[0]["target"]["min_ratio"], color="k", ls="--", lw=1)
        ax.axhline(1.0, color="k", lw=0.5)
        ax.set_xticks(range(len(sel)))
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
        ax.set_ylabel("best anchor / spattn")
        ax.set_title(f"{key}: target {sel[0]['target']['text']}", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    if decode:
        ax = list(axes.flat)[len(keys)]
        labels = [f"{r['key'][7:]} Lq{r['Lq']} {r['cache'] // 1024}K" for r in decode]
        vals = [r["bandwidth"]["fraction"] for r in decode]
        ax.bar(
            range(len(decode)),
            vals,
            color=["tab:green" if r["bandwidth"]["met"] else "tab:red" for r in decode],
        )
        ax.axhline(DECODE_MIN_FRACTION, color="k", ls="--", lw=1)
        ax.set_xticks(range(len(decode)))
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
        ax.set_ylabel(f"KV bytes / time / {data['meta'].get('peak_bandwidth_TBps', 4.8)} TB/s")
        ax.set_title("decode: bandwidth of spattn (CUDA graph)", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[panels:]:
        ax.axis("off")
    fig.suptitle(f"{data['meta'].get('device')}: spattn against the best anchor", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ----------------------------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plan", choices=["quick", "full"], default="quick")
    ap.add_argument(
        "--only", nargs="+", metavar="PATTERN", help="prefill/decode pattern keys, or 'decode'"
    )
    ap.add_argument("--L", type=int, nargs="+", help="prefill lengths to keep")
    ap.add_argument("--D", type=int, nargs="+", help="head dims to keep (decode rows: --decode-d)")
    ap.add_argument("--dtypes", nargs="+", choices=["bfloat16", "float16"])
    ap.add_argument("--cache", type=int, nargs="+", help="decode cache lengths to keep")
    ap.add_argument(
        "--decode-d",
        type=int,
        choices=(32, 64, 96, 128, 256),
        default=128,
        help="head dim of the decode rows (default 128, the shape of the targets)",
    )
    ap.add_argument(
        "--budget-s", type=float, help="start no row after this many seconds (quick 170, full 450)"
    )
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument(
        "--graph-calls", type=int, default=20, help="calls per captured CUDA graph (decode)"
    )
    ap.add_argument(
        "--flex",
        choices=["d128", "targets", "all", "none"],
        default="d128",
        help="where FlexAttention runs: d128 (default), the block patterns of the targets at "
        "D = 128; targets, those at every D; all, every sparse pattern; none",
    )
    ap.add_argument("--flex-fp16", action="store_true", help="FlexAttention also in float16")
    ap.add_argument(
        "--skip-anchors",
        nargs="*",
        default=[],
        choices=["fa4", "cudnn_sdpa", "cudnn_bsa", "flex", "sdpa_cudnn"],
    )
    ap.add_argument("--fa4-workers", type=int, help="processes compiling FA4 variants (0: none)")
    ap.add_argument(
        "--fa4-wait-s",
        type=float,
        help="longest wait for the FA4 precompilation before the first row (default 600); with "
        "--fa4-overlap, for each row's variant (default 120)",
    )
    ap.add_argument(
        "--fa4-overlap",
        action="store_true",
        help="measure while the workers compile (faster start, but every column of the rows "
        "measured meanwhile is slowed: only for a quick look)",
    )
    ap.add_argument(
        "--resume",
        metavar="PATH",
        help="an earlier result of the same plan: keep its rows, run the ones it lists as "
        "skipped or lacks, write the merged result",
    )
    ap.add_argument(
        "--resume-errors",
        action="store_true",
        help="with --resume: also run again the rows whose row or some column errored",
    )
    ap.add_argument(
        "--ort", action="store_true", help="fp16 rows: bench_cuda's ONNX Runtime CUDA EP columns"
    )
    ap.add_argument("--stream-calls", type=int, default=50)
    ap.add_argument("--peak-tbps", type=float, default=H200_PEAK_TBPS)
    ap.add_argument("--out", default=os.path.join(_HERE, "results"))
    ap.add_argument("--tag")
    ap.add_argument("--fa4-compile-worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.budget_s is None:
        args.budget_s = 170.0 if args.plan == "quick" else 450.0
    if args.tag is None:
        args.tag = f"h200_{args.plan}"
    if args.fa4_wait_s is None:
        args.fa4_wait_s = 120.0 if args.fa4_overlap else 600.0
    if args.resume_errors and not args.resume:
        ap.error("--resume-errors needs --resume PATH")
    if args.fa4_workers is None:
        args.fa4_workers = max(1, min(12, (os.cpu_count() or 2) - 2))
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.fa4_compile_worker:
        return worker_main(args.fa4_compile_worker, args.worker_out)
    DECODE_SHAPE["D"] = args.decode_d
    rows = build_plan(args.plan, args.only, args.L, args.D, args.dtypes, args.cache)
    if not rows:
        raise SystemExit("no rows: the filters left none")
    resume = None
    if args.resume:
        try:
            with open(args.resume) as f:
                old = json.load(f)
            rows, keep = resume_split(old, rows, args.resume_errors)
        except (OSError, ValueError) as ex:
            raise SystemExit(f"--resume {args.resume}: {ex}") from None
        resume = (old, keep, os.path.abspath(args.resume))
        if not rows:
            raise SystemExit(f"--resume {args.resume}: no row left to run")
    if args.ort:
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            raise SystemExit("--ort needs onnxruntime-gpu (no CUDAExecutionProvider)")
    # after the checks of the arguments and of --resume, whose errors come first; an FA4
    # compile worker (above) reports its own failure to the pool
    require_cuda("bench_hopper.py")
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = 1024
    if hasattr(torch._dynamo.config, "recompile_limit"):
        torch._dynamo.config.recompile_limit = 1024
    cache_dir = None
    variants = [] if "fa4" in args.skip_anchors else fa4_variants(rows)
    if args.fa4_workers > 0 and variants:
        # FA4 reads these when flash_attn is first imported (never before this point).
        cache_dir = tempfile.mkdtemp(prefix="spattn_fa4_")
        os.environ["FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED"] = "1"
        os.environ["FLASH_ATTENTION_CUTE_DSL_CACHE_DIR"] = cache_dir
    bench = Bench(args, rows, resume)
    kept = "" if resume is None else f" (+{len(resume[1])} kept from {args.resume})"
    bench.log(f"{len(rows)} rows{kept}, budget {args.budget_s:.0f} s -> {bench.path}")
    bench.write()
    try:
        if cache_dir is not None:
            bench.pool = FA4Pool(variants, args.fa4_workers, cache_dir, bench.log)
            if not args.fa4_overlap:
                t = time.time()
                bench.pool.wait_all(args.fa4_wait_s)
                bench.data["meta"]["fa4_precompile_s"] = time.time() - t
                bench.write()
        bench.run()
    finally:
        if bench.pool is not None:
            tails = bench.pool.close()
            if tails:
                bench.data["meta"]["fa4_worker_logs"] = tails
            bench.write()
        if cache_dir is not None:
            shutil.rmtree(cache_dir, ignore_errors=True)
    try:
        plot(bench.data, os.path.join(args.out, f"hopper_{args.tag}.png"))
    except Exception as ex:
        bench.log(f"plot failed: {ex}")
    import summarize_hopper

    # The tables go to a file, not the log: a log that also shows summarize_hopper.py's output
    # would carry them twice.
    md = os.path.join(args.out, f"hopper_{args.tag}.md")
    with open(md, "w") as f:
        f.write(summarize_hopper.markdown(bench.data))
    bench.log(f"wrote {bench.path} and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
