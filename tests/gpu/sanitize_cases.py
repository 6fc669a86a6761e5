"""A small representative set of GPU cases for compute-sanitizer (memcheck, racecheck).

Run from the repository root, e.g.
    compute-sanitizer --tool memcheck --kernel-name-exclude kns=at:: \
        python3 tests/gpu/sanitize_cases.py
Every call of the CUDA entry is checked against the reference; exits non-zero on a mismatch.
"""

from __future__ import annotations

import os
import sys

import torch  # noqa: E402
from test_cuda_kernel import PATTERNS, run_case  # noqa: E402


def main() -> int:
    cases = [
        # pattern, dtype, d, hq, hkv, lq, lk, key_lengths
        ("sliding", torch.bfloat16, 128, 4, 1, 200, 200, None),
        ("causal", torch.float16, 64, 2, 2, 77, 333, None),
        ("longformer", torch.float16, 128, 2, 2, 333, 77, [50, 77]),
        ("bigbird", torch.bfloat16, 64, 8, 2, 300, 300, [300, 123]),
        ("random_bs1", torch.float16, 64, 2, 1, 90, 130, None),
        ("strided", torch.float32, 64, 2, 1, 150, 150, None),
        ("listed_shared", torch.bfloat16, 128, 2, 1, 130, 200, None),
        ("listed_per_head", torch.float32, 128, 4, 2, 100, 170, [170, 3]),
        ("huge_block", torch.float16, 128, 2, 2, 100, 100, None),
        ("bigbird_bs64", torch.bfloat16, 128, 2, 1, 300, 300, [300, 150]),
    ]
    n = 0
    # SPATTN_SANITIZE_ONLY=new: only the cases of the head dims 32/96/256 and the optional inputs
    # (a shorter run, e.g. for racecheck).
    only_new = os.environ.get("SPATTN_SANITIZE_ONLY") == "new"
    # SPATTN_SANITIZE_ONLY=stack: only the cases of stacked GQA rows.
    if os.environ.get("SPATTN_SANITIZE_ONLY") == "stack":
        n = stacked_cases(0)
        torch.cuda.synchronize()
        print(f"sanitize_cases: {n} cases passed")
        return 0
    # Each case with every kernel of the 16-bit types (float32 has one kernel).
    for kernel in ("ws", "wgmma", "mma") if not only_new else ():
        os.environ["SPATTN_CUDA_KERNEL"] = kernel
        for name, dtype, d, hq, hkv, lq, lk, kl in cases:
            if dtype == torch.float32 and kernel != "ws":
                continue
            attrs, bi_spec = PATTERNS[name]
            b = 1 if kl is None else len(kl)
            run_case(attrs, bi_spec, b, hq, hkv, lq, lk, d, dtype, kl, seed=n)
            n += 1
    os.environ.pop("SPATTN_CUDA_KERNEL", None)
    if not only_new:
        old_cases()
        n += 4
    n = new_cases(n)
    torch.cuda.synchronize()
    print(f"sanitize_cases: {n} cases passed")
    return 0


def old_cases() -> None:
    # Split schedule (global rows) and bad values.
    run_case(
        dict(window_left=64, window_right=64, num_global=16),
        None,
        1,
        2,
        1,
        1500,
        1500,
        64,
        torch.bfloat16,
        None,
        seed=50,
    )
    # The same at head dim 128, where the warp-specialized kernel runs global rows.
    run_case(
        dict(window_left=64, window_right=64, num_global=64),
        None,
        1,
        2,
        1,
        1500,
        1500,
        128,
        torch.bfloat16,
        None,
        seed=52,
    )
    # More work items than SMs: the warp-specialized kernel's CTAs claim items through the
    # workspace counter; 100 global rows, so both 64-row halves of their tiles hold global rows.
    os.environ["SPATTN_CUDA_KERNEL"] = "ws"
    run_case(
        dict(window_left=64, window_right=64, num_global=100),
        None,
        1,
        16,
        4,
        2200,
        2200,
        128,
        torch.bfloat16,
        [2100],
        seed=53,
    )
    del os.environ["SPATTN_CUDA_KERNEL"]
    bad = torch.zeros(2, 2, 100, dtype=torch.bool, device="cuda")
    bad[1] = True
    run_case(
        dict(window_left=10, window_right=10, num_global=3),
        None,
        2,
        2,
        1,
        100,
        120,
        64,
        torch.float16,
        [77, 500],
        seed=51,
        bad_rows=bad,
    )
    torch.cuda.synchronize()


def new_cases(n: int) -> int:
    # Head dims 32, 96 and 256 (each kernel that takes them), and the optional inputs
    # global_mask, key_starts, sinks with softcap: masks, the per-tile global bits, the counted
    # plan's pieces and the combine with the sink.
    from test_cuda_kernel import new_inputs, with_softcap

    features = ("softcap", "sinks", "gmask", "kstart")
    for kernel in ("ws", "wgmma", "mma"):
        os.environ["SPATTN_CUDA_KERNEL"] = kernel
        for name, dtype, d in (
            ("longformer", torch.bfloat16, 96),
            ("bigbird", torch.float16, 256),
            ("causal_sliding", torch.float16, 32),
            ("bigbird_bs64", torch.bfloat16, 128),
            ("strided", torch.float32, 256),
        ):
            if dtype == torch.float32 and kernel != "ws":
                continue
            attrs, bi_spec = PATTERNS[name]
            extra = new_inputs(features, 2, 4, 333, [333, 150], n)
            run_case(
                with_softcap(attrs, features),
                bi_spec,
                2,
                4,
                2,
                77,
                333,
                d,
                dtype,
                [333, 150],
                seed=n,
                extra=extra,
            )
            n += 1
        # Head dims 96 and 128 without the optional inputs: the lean one-warpgroup kernel keeps
        # one K and one V buffer for rows that are not stacked GQA rows (three CTAs per SM,
        # launch_wgmma), a different load and barrier order.
        for name, dtype, d in (
            ("bigbird_bs64", torch.bfloat16, 96),
            ("longformer", torch.float16, 96),
            ("bigbird_bs64", torch.float16, 128),
        ):
            attrs, bi_spec = PATTERNS[name]
            run_case(attrs, bi_spec, 2, 4, 2, 333, 333, d, dtype, [333, 150], seed=n)
            n += 1
        # Global tokens in long rows: the counted plan splits their tiles.
        extra = new_inputs(features, 2, 4, 1500, None, n)
        run_case(
            with_softcap(dict(window_left=64, window_right=64), features),
            None,
            2,
            4,
            2,
            1500,
            1500,
            128,
            torch.bfloat16,
            None,
            seed=n,
            extra=extra,
        )
        n += 1
    del os.environ["SPATTN_CUDA_KERNEL"]
    n = stacked_cases(n)
    return nonfinite_cases(n)


def stacked_cases(n: int) -> int:
    # GQA rows stacked into one tile (launch.cu, gqa_fold): decode steps and draft tokens, with
    # the split-KV plan (long cache), the optional inputs and a group filling the 128-row tile.
    from test_cuda_kernel import new_inputs, with_softcap

    features = ("softcap", "sinks", "gmask", "kstart")
    for kernel in ("ws", "wgmma", "mma"):
        os.environ["SPATTN_CUDA_KERNEL"] = kernel
        for name, b, hq, hkv, lq, lk, kl, feats in (
            ("causal_sliding", 3, 32, 8, 1, 3000, [3000, 1234, 1], features),
            ("longformer", 2, 8, 2, 8, 1000, [1000, 700], features),
            ("listed_shared", 2, 16, 2, 4, 700, None, ()),
            ("causal", 1, 8, 1, 16, 900, None, ("sinks",)),
        ):
            attrs, bi_spec = PATTERNS[name]
            extra = new_inputs(feats, b, hq, lk, kl, n)
            run_case(
                with_softcap(attrs, feats),
                bi_spec,
                b,
                hq,
                hkv,
                lq,
                lk,
                128,
                torch.bfloat16,
                kl,
                seed=n,
                extra=extra,
            )
            n += 1
    del os.environ["SPATTN_CUDA_KERNEL"]
    return n


def nonfinite_cases(n: int) -> int:
    # NaN and +-inf in the K and V rows of padding keys (the V rows that the kernels zero-fill or
    # zero in shared memory), with and without the optional inputs, each kernel.
    from test_cuda_kernel import NONFINITE, poison_padding

    for kernel in ("ws", "wgmma", "mma"):
        os.environ["SPATTN_CUDA_KERNEL"] = kernel
        for name, dtype, d, starts in (
            ("longformer", torch.bfloat16, 128, [0, 37, 70]),
            ("bigbird", torch.float16, 256, [0, 37, 70]),
            ("causal", torch.float32, 64, [5, 0, 64]),
            ("sliding", torch.float16, 96, None),
        ):
            if dtype == torch.float32 and kernel != "ws":
                continue
            attrs, bi_spec = PATTERNS[name]
            extra = {}
            if starts is not None:
                extra["key_starts"] = torch.tensor(starts, dtype=torch.int32, device="cuda")
            run_case(
                attrs,
                bi_spec,
                3,
                4,
                2,
                300,
                300,
                d,
                dtype,
                [300, 203, 130],
                seed=n,
                extra=extra,
                poison=poison_padding(NONFINITE),
            )
            n += 1
    del os.environ["SPATTN_CUDA_KERNEL"]
    return n


if __name__ == "__main__":
    sys.exit(main())
