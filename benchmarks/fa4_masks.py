"""The FlashAttention-4 ``mask_mod`` of bench_hopper.py's block-sparse FA4 anchor.

FA4 applies a ``mask_mod`` only inside the blocks that its block-sparse tensors list as partial
(``mask_block_*``); the blocks listed as full run unmasked. bench_hopper.py builds those tensors
from spattn's own mask (``MaskRule``): every block that the pattern's random, listed or global
components touch at the block size FA4 is given is entirely allowed, so inside a partial block
the mask is the token band and the global rows and columns only (the test
tests/benchmarks/test_bench_hopper.py checks this against the token mask; its Python twin is
``bench_hopper.band_global_allowed``).

Needs flash-attn-4 and the CuTe DSL; bench_hopper.py imports this module only when the FA4
anchor runs. Queries and keys share positions (Lq == Lk).
"""

from __future__ import annotations

import cutlass
import cutlass.cute as cute
from flash_attn.cute import utils as fa_utils


def band_global_mask(window_left: int, window_right: int, num_global: int):
    """``mask_mod`` allowing key ``j`` for query ``i`` when ``i - window_left <= j <= i +
    window_right``, or ``i < num_global``, or ``j < num_global``."""

    @cute.jit
    def spattn_band_global(
        batch: cute.TensorSSA,
        head: cute.TensorSSA,
        m_idx: cute.TensorSSA,
        n_idx: cute.TensorSSA,
        seqlen_info,
        aux_tensors,
    ) -> cute.TensorSSA:
        left = fa_utils.scalar_to_ssa(window_left, cutlass.Int32)
        right = fa_utils.scalar_to_ssa(window_right, cutlass.Int32)
        first = fa_utils.scalar_to_ssa(num_global, cutlass.Int32)
        in_band = (n_idx >= m_idx - left) & (n_idx <= m_idx + right)
        return in_band | (m_idx < first) | (n_idx < first)

    return spattn_band_global
