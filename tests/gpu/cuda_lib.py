"""ctypes binding of the direct CUDA entry (``spattn_cuda_forward_ex``) and a float64 dense-mask
reference written from docs/op-spec.md, for the GPU tests and benchmarks/bench_cuda.py.

The library is found through ``SPATTN_KERNELS_LIB`` or in the usual build folders.
"""

from __future__ import annotations

import ctypes
import glob
import os
from dataclasses import dataclass, field

import numpy as np

from spattn.capi import SpattnArgs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The fields appended to spattn_args for the optional inputs global_mask, key_starts, sinks and
# the softcap attribute (c_api.h, after num_threads), read by the `_ex` entries, which take the
# struct's size. Where spattn.capi's mirror does not have them yet, this binding appends them
# itself, in the same order.
_APPENDED = (
    ("global_mask", ctypes.c_void_p),
    ("key_starts", ctypes.c_void_p),
    ("sinks", ctypes.c_void_p),
    ("softcap", ctypes.c_float),
)
if all(name in dict(SpattnArgs._fields_) for name, _ in _APPENDED):
    Args = SpattnArgs
else:

    class Args(SpattnArgs):  # type: ignore[no-redef]
        _fields_ = list(_APPENDED)


@dataclass
class Attrs:
    """The op's attributes (defaults as in the spec)."""

    scale: float = 0.0
    window_left: int = -1
    window_right: int = -1
    causal: int = 0
    num_global: int = 0
    stride: int = 0
    block_size: int = 64
    num_random: int = 0
    seed: int = 0
    softcap: float = 0.0
    extra: dict = field(default_factory=dict)


def find_library() -> str | None:
    env = os.environ.get("SPATTN_KERNELS_LIB")
    if env:
        return env if os.path.exists(env) else None
    cands = [os.path.join(ROOT, ".gpu", "libspattn_kernels.so")]
    cands += sorted(glob.glob(os.path.join(ROOT, "build", "*", "kernels", "libspattn_kernels.so")))
    cands += sorted(glob.glob(os.path.join(ROOT, "build", "*", "libspattn_kernels.so")))
    for c in cands:
        if os.path.exists(c):
            return c
    return None


_LIB = None


def load_library():
    """Loads libspattn_kernels.so once; returns None when it is missing or has no CUDA kernels."""
    global _LIB
    if _LIB is not None:
        return _LIB
    path = find_library()
    if path is None:
        return None
    lib = ctypes.CDLL(path)
    if not hasattr(lib, "spattn_cuda_forward_ex"):
        # A library from before the appended fields (e.g. a baseline for timings): its entries
        # read the first version of the struct, so the new inputs cannot reach it.
        v1 = (lib.spattn_cuda_forward, lib.spattn_cuda_workspace_size)
        v1[0].argtypes = [ctypes.POINTER(Args), ctypes.c_char_p, ctypes.c_size_t]
        v1[0].restype = ctypes.c_int
        v1[1].argtypes = [ctypes.POINTER(Args)]
        v1[1].restype = ctypes.c_size_t
        lib.spattn_cuda_forward_ex = lambda a, size, err, n: v1[0](a, err, n)
        lib.spattn_cuda_workspace_size_ex = lambda a, size: v1[1](a)
    else:
        lib.spattn_cuda_forward_ex.argtypes = [
            ctypes.POINTER(Args),
            ctypes.c_size_t,
            ctypes.c_char_p,
            ctypes.c_size_t,
        ]
        lib.spattn_cuda_forward_ex.restype = ctypes.c_int
        lib.spattn_cuda_workspace_size_ex.argtypes = [ctypes.POINTER(Args), ctypes.c_size_t]
        lib.spattn_cuda_workspace_size_ex.restype = ctypes.c_size_t
    lib.spattn_has_cuda.restype = ctypes.c_int
    if not lib.spattn_has_cuda():
        return None
    _LIB = lib
    return lib


def _dtype_code(t) -> int:
    import torch

    return {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}[t]


class CudaSparseAttention:
    """Calls the direct CUDA entry on torch CUDA tensors, with a workspace kept between calls."""

    def __init__(self, lib=None):
        self.lib = lib or load_library()
        self._ws = None

    def args(
        self,
        q,
        k,
        v,
        out,
        attrs: Attrs,
        key_lengths=None,
        block_indices=None,
        global_mask=None,
        key_starts=None,
        sinks=None,
    ):
        import torch

        a = Args()
        # The optional inputs added after the first version of spattn_args: set only when given,
        # so that a struct without them still serves the tests that do not use them.
        for name, t in (("global_mask", global_mask), ("key_starts", key_starts), ("sinks", sinks)):
            if t is not None:
                if not hasattr(a, name):
                    raise RuntimeError(f"spattn_args of this build has no field {name}")
                setattr(a, name, t.data_ptr())
        if attrs.softcap:
            if not hasattr(a, "softcap"):
                raise RuntimeError("spattn_args of this build has no field softcap")
            a.softcap = attrs.softcap
        a.q, a.k, a.v, a.o = q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr()
        a.key_lengths = key_lengths.data_ptr() if key_lengths is not None else None
        a.block_indices = block_indices.data_ptr() if block_indices is not None else None
        a.dtype = _dtype_code(q.dtype)
        a.batch, a.heads_q, a.len_q, a.head_dim = q.shape
        a.heads_kv, a.len_k = k.shape[1], k.shape[2]
        a.head_dim_v = v.shape[3]
        if block_indices is not None:
            a.bi_heads, a.bi_k = block_indices.shape[0], block_indices.shape[2]
        a.scale = attrs.scale
        a.window_left, a.window_right = attrs.window_left, attrs.window_right
        a.causal, a.num_global, a.stride = attrs.causal, attrs.num_global, attrs.stride
        a.block_size, a.num_random, a.seed = attrs.block_size, attrs.num_random, attrs.seed
        a.stream = torch.cuda.current_stream().cuda_stream
        return a

    def prepare(self, q, k, v, out, attrs, key_lengths=None, block_indices=None, **extra):
        """Builds the argument struct and a large enough workspace; returns a no-arg callable.
        `extra`: the optional inputs global_mask, key_starts, sinks (torch CUDA tensors)."""
        import torch

        a = self.args(q, k, v, out, attrs, key_lengths, block_indices, **extra)
        need = self.lib.spattn_cuda_workspace_size_ex(ctypes.byref(a), ctypes.sizeof(a))
        if need and (self._ws is None or self._ws.numel() < need):
            self._ws = torch.empty(need, dtype=torch.uint8, device=q.device)
        if need:
            a.workspace = self._ws.data_ptr()
            a.workspace_bytes = self._ws.numel()
        err = ctypes.create_string_buffer(1024)
        lib = self.lib

        def call():
            rc = lib.spattn_cuda_forward_ex(ctypes.byref(a), ctypes.sizeof(a), err, len(err))
            if rc != 0:
                raise RuntimeError(err.value.decode())

        # Keep the tensors alive as long as the callable.
        call._keep = (q, k, v, out, key_lengths, block_indices, self._ws, extra)
        return call

    def __call__(
        self, q, k, v, attrs: Attrs, key_lengths=None, block_indices=None, out=None, **extra
    ):
        import torch

        if out is None:
            out = torch.full(
                q.shape[:3] + (v.shape[3],), float("nan"), dtype=q.dtype, device=q.device
            )
        self.prepare(q, k, v, out, attrs, key_lengths, block_indices, **extra)()
        return out


# ----------------------------------------------------------------------------------------------
# Reference, straight from the spec's rules.

_M32 = np.uint64(0xFFFFFFFF)


def _mix32(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64) & _M32
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7FEB352D)) & _M32
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846CA68B)) & _M32
    x ^= x >> np.uint64(16)
    return x


def random_blocks(seed: int, heads: int, nqb: int, num_random: int, nkb: int) -> np.ndarray:
    """random_block(seed, h, qb, r, nkb) for all h, qb, r: int64 array [heads, nqb, num_random]."""
    h = np.arange(heads, dtype=np.uint64)[:, None, None]
    qb = np.arange(nqb, dtype=np.uint64)[None, :, None]
    r = np.arange(num_random, dtype=np.uint64)[None, None, :]
    x = _mix32(np.array((seed + 0x9E3779B9) & 0xFFFFFFFF, dtype=np.uint64))
    x = _mix32(x ^ h)
    x = _mix32(x ^ qb)
    x = _mix32(x ^ r)
    return (x % np.uint64(nkb)).astype(np.int64)


def reference_mask(
    batch,
    heads_q,
    len_q,
    len_k,
    attrs: Attrs,
    key_lengths=None,
    block_indices=None,
    device="cpu",
    global_mask=None,
    key_starts=None,
):
    """Boolean mask [B, Hq, Lq, Lk] of allowed pairs (docs/op-spec.md, "The mask")."""
    import torch

    a = attrs
    bs = a.block_size
    i = torch.arange(len_q, device=device)[:, None]
    j = torch.arange(len_k, device=device)[None, :]
    p = i + len_k - len_q
    d = p - j
    other = (
        a.num_global > 0
        or a.stride > 0
        or a.num_random > 0
        or block_indices is not None
        or global_mask is not None
    )
    local_on = not (a.window_left == -1 and a.window_right == -1 and other)
    m = torch.zeros(len_q, len_k, dtype=torch.bool, device=device)
    if local_on:
        loc = torch.ones_like(m)
        if a.window_left >= 0:
            loc &= d <= a.window_left
        if a.window_right >= 0:
            loc &= -d <= a.window_right
        m |= loc
    if a.num_global > 0:
        m |= (j < a.num_global) | (
            (p >= 0) & (p < a.num_global)
        )  # negative positions: never global
    if a.stride > 0:
        m |= (d % a.stride) == 0
    m = m[None].expand(heads_q, len_q, len_k).clone()
    nqb = -(-len_q // bs)
    nkb = -(-len_k // bs)
    blk = torch.zeros(heads_q, nqb, nkb, dtype=torch.bool, device=device)
    if a.num_random > 0:
        rb = torch.from_numpy(random_blocks(a.seed, heads_q, nqb, a.num_random, nkb)).to(device)
        blk.scatter_(2, rb, True)
    if block_indices is not None:
        bi = block_indices.to(device=device, dtype=torch.int64)
        if bi.shape[0] == 1:
            bi = bi.expand(heads_q, -1, -1)
        if bi.shape[2] > 0:
            valid = (bi >= 0) & (bi < nkb)
            sel = torch.zeros_like(blk)
            hh, qq, kk = torch.nonzero(valid, as_tuple=True)
            sel[hh, qq, bi[hh, qq, kk]] = True
            blk |= sel
    if a.num_random > 0 or block_indices is not None:
        qbi = torch.arange(len_q, device=device) // bs
        kbj = torch.arange(len_k, device=device) // bs
        m |= blk[:, qbi][:, :, kbj]
    m = m[None].expand(batch, heads_q, len_q, len_k).clone()
    if global_mask is not None:
        # Global keys per batch, and query rows whose position is a global token.
        gm = global_mask.to(device=device) != 0  # [B, Lk]
        m |= gm[:, None, None, :]
        pos = torch.arange(len_q, device=device) + len_k - len_q
        inside = (pos >= 0) & (pos < len_k)
        row = torch.zeros(batch, len_q, dtype=torch.bool, device=device)
        row[:, inside] = gm[:, pos[inside]]
        m |= row[:, None, :, None]
    if a.causal:
        m &= (j <= p)[None, None]
    if key_lengths is not None:
        kl = key_lengths.to(device=device, dtype=torch.int64)
        m &= j[None, None] < kl[:, None, None, None]
    if key_starts is not None:
        ks = key_starts.to(device=device, dtype=torch.int64)
        m &= j[None, None] >= ks[:, None, None, None]
    return m


def reference_attention(
    q,
    k,
    v,
    attrs: Attrs,
    key_lengths=None,
    block_indices=None,
    global_mask=None,
    key_starts=None,
    sinks=None,
):
    """Float64 dense-mask attention on the (already rounded) inputs; returns float64."""
    import torch

    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    scale = attrs.scale if attrs.scale != 0.0 else 1.0 / np.sqrt(D)
    mask = reference_mask(
        B,
        Hq,
        Lq,
        Lk,
        attrs,
        key_lengths,
        block_indices,
        device=q.device,
        global_mask=global_mask,
        key_starts=key_starts,
    )
    rep = Hq // Hkv
    kk = k.double().repeat_interleave(rep, dim=1)
    vv = v.double().repeat_interleave(rep, dim=1)
    s = torch.matmul(q.double(), kk.transpose(-1, -2)) * scale
    if attrs.softcap > 0:
        s = attrs.softcap * torch.tanh(s / attrs.softcap)
    s = s.masked_fill(~mask, float("-inf"))
    mx = s.amax(dim=-1, keepdim=True)
    sk = None
    if sinks is not None:
        # The sink is one more logit in the denominator only; rows with no key stay zeros.
        sk = sinks.double().to(q.device)[None, :, None, None].expand_as(mx)
        mx = torch.where(torch.isfinite(mx), torch.maximum(mx, sk), mx)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    e = torch.exp(s - mx)
    den = e.sum(-1, keepdim=True)
    if sk is not None:
        den = torch.where(den > 0, den + torch.exp(sk - mx), den)
    out = torch.matmul(e, vv) / torch.where(den > 0, den, torch.ones_like(den))
    return out, mask
