"""CPU: how many key-tile conversions does the CPU kernel's tile cache save, by its slot count?

Question: the CPU kernel keeps converted key tiles in a per-thread, direct-mapped cache (slot =
key tile % slots; kernels/src/cpu/sparse_attention_cpu.cc, Scratch). How many conversions does
one head of the benchmark's band (+-256 + 64 global tokens, L = 4K, 64 x 64 tiles) take with 32
and with 64 slots, against the fewest possible?

Replays the kernel's visit order without running it: tasks of ``--per-task`` consecutive query
tiles (run(): up to 32), each task's query tiles in order, each visiting its key tiles (those
holding an allowed pair, from the pattern's mask) in ascending order; a task starts with an empty
cache (a thread's next task is mostly another head's, whose tags all differ).

    python benchmarks/cpu_tile_cache_replay.py [--length 4096] [--per-task 32] [--slots 32 64]
"""

from __future__ import annotations

import argparse

import numpy as np

from spattn.bench import DEFAULT_PATTERN
from spattn.patterns import Pattern

TILE = 64


def visits(length: int) -> list[list[int]]:
    """Key tiles with an allowed pair, per query tile, ascending."""
    mask = Pattern.from_attributes(DEFAULT_PATTERN).token_mask(length)[0].numpy()
    n = length // TILE
    tiles = mask.reshape(n, TILE, n, TILE).any(axis=(1, 3))
    return [list(np.flatnonzero(row)) for row in tiles]


def conversions(order: list[list[int]], per_task: int, slots: int | None) -> int:
    """Conversions with a direct-mapped cache of ``slots`` (None: unbounded, the fewest)."""
    total = 0
    for start in range(0, len(order), per_task):
        cache: dict[int, int] = {}
        for tiles in order[start : start + per_task]:
            for t in tiles:
                slot = t if slots is None else t % slots
                if cache.get(slot) != t:
                    cache[slot] = t
                    total += 1
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--per-task", type=int, default=32)
    parser.add_argument("--slots", type=int, nargs="+", default=[32, 64])
    args = parser.parse_args()
    order = visits(args.length)
    print(f"L = {args.length}, tasks of {args.per_task} query tiles, one head:")
    print(f"  visits: {sum(len(t) for t in order)} key tiles")
    for s in args.slots:
        print(f"  {s} slots: {conversions(order, args.per_task, s)} conversions")
    print(f"  fewest (one slot per key tile): {conversions(order, args.per_task, None)}")


if __name__ == "__main__":
    main()
