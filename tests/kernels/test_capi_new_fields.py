"""The fields appended to the direct C API's spattn_args (global_mask, key_starts, sinks, softcap;
chunk_size in the third version)
through libspattn_kernels.so's CPU entry, with ctypes mirrors of the second and third versions
written here from c_api.h: the `_ex` entry against the float64 NumPy statement of the spec of
tests/plugins/test_ort_new_inputs.py, and the entry without a size reading the first version only.
"""

from __future__ import annotations

import ctypes
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from spattn.runtime import library_path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location(
    "spattn_spec_numpy", HERE.parent / "plugins" / "test_ort_new_inputs.py"
)
assert _spec and _spec.loader
spec_numpy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(spec_numpy)

_INTS = "batch heads_q heads_kv len_q len_k head_dim head_dim_v bi_heads bi_k".split()
_ATTRS1 = "window_left window_right causal num_global stride block_size num_random seed".split()


class Args(ctypes.Structure):
    """spattn_args of c_api.h, second version (192 bytes: softcap, then 4 bytes of padding)."""

    _fields_ = (
        [(n, ctypes.c_void_p) for n in ("q", "k", "v", "o", "key_lengths", "block_indices")]
        + [("dtype", ctypes.c_int32)]
        + [(n, ctypes.c_int32) for n in _INTS]
        + [("scale", ctypes.c_float)]
        + [(n, ctypes.c_int32) for n in _ATTRS1]
        + [
            ("stream", ctypes.c_void_p),
            ("workspace", ctypes.c_void_p),
            ("workspace_bytes", ctypes.c_size_t),
            ("num_threads", ctypes.c_int32),
            ("global_mask", ctypes.c_void_p),
            ("key_starts", ctypes.c_void_p),
            ("sinks", ctypes.c_void_p),
            ("softcap", ctypes.c_float),
        ]
    )


class Args3(ctypes.Structure):
    """The third version: the second's tail padding as a field that is never read, then
    chunk_size (one flat list: a ctypes subclass would start its fields after the padding)."""

    _fields_ = Args._fields_ + [
        ("reserved_v2_padding", ctypes.c_int32),
        ("chunk_size", ctypes.c_int32),
    ]


def _lib():
    lib = ctypes.CDLL(library_path("kernels"))
    for name in ("spattn_cpu_forward_ex", "spattn_cpu_forward"):
        fn = getattr(lib, name)
        fn.restype = ctypes.c_int
    lib.spattn_cpu_forward_ex.argtypes = [
        ctypes.POINTER(Args),
        ctypes.c_size_t,
        ctypes.c_char_p,
        ctypes.c_size_t,
    ]
    lib.spattn_cpu_forward.argtypes = [ctypes.POINTER(Args), ctypes.c_char_p, ctypes.c_size_t]
    return lib


def _args(q, k, v, o, attrs, cls=Args, **arrays):
    a = cls()
    a.q, a.k, a.v, a.o = (x.ctypes.data for x in (q, k, v, o))
    a.dtype = 0
    a.batch, a.heads_q, a.len_q, a.head_dim = q.shape
    a.heads_kv, a.len_k = k.shape[1], k.shape[2]
    a.head_dim_v = v.shape[3]
    a.window_left = a.window_right = -1
    a.block_size = 64
    a.num_threads = 2
    for name, value in attrs.items():
        setattr(a, name, value)
    for name, x in arrays.items():
        if x is not None:
            setattr(a, name, x.ctypes.data)
    return a


def _data(b=2, hq=4, hkv=2, lq=50, lk=70, d=24, seed=0):
    g = np.random.default_rng(seed)
    q = g.standard_normal((b, hq, lq, d)).astype(np.float32)
    k = g.standard_normal((b, hkv, lk, d)).astype(np.float32)
    v = g.standard_normal((b, hkv, lk, d)).astype(np.float32)
    gm = (g.integers(0, 9, (b, lk)) == 0).astype(np.int32)
    kl = np.array([lk, lk - 13], np.int32)
    ks = np.array([5, 20], np.int32)
    sk = g.standard_normal(hq).astype(np.float32)
    return q, k, v, gm, kl, ks, sk


def test_ex_entry_computes_the_new_fields():
    lib = _lib()
    q, k, v, gm, kl, ks, sk = _data()
    attrs = {"window_left": 8, "window_right": 4, "num_global": 1, "softcap": 4.0}
    o = np.zeros_like(q)
    a = _args(q, k, v, o, attrs, key_lengths=kl, global_mask=gm, key_starts=ks, sinks=sk)
    err = ctypes.create_string_buffer(512)
    assert lib.spattn_cpu_forward_ex(ctypes.byref(a), ctypes.sizeof(Args), err, 512) == 0, err.value
    want = spec_numpy.spec_attention(q, k, v, attrs, kl, None, gm, ks, sk)
    np.testing.assert_allclose(o, want, atol=2e-5, rtol=1e-4)


def test_entry_without_size_reads_the_first_version():
    """spattn_cpu_forward never reads past num_threads: the appended fields count as absent."""
    lib = _lib()
    q, k, v, gm, kl, ks, sk = _data(seed=1)
    attrs = {"window_left": 8, "window_right": 4, "softcap": 4.0}
    o = np.zeros_like(q)
    a = _args(q, k, v, o, attrs, key_lengths=kl, global_mask=gm, key_starts=ks, sinks=sk)
    err = ctypes.create_string_buffer(512)
    assert lib.spattn_cpu_forward(ctypes.byref(a), err, 512) == 0, err.value
    want = spec_numpy.spec_attention(q, k, v, {"window_left": 8, "window_right": 4}, kl)
    np.testing.assert_allclose(o, want, atol=2e-5, rtol=1e-4)
    # A struct of the first version's size: the same through the _ex entry.
    o2 = np.zeros_like(q)
    a.o = o2.ctypes.data
    v1 = Args.global_mask.offset
    assert lib.spattn_cpu_forward_ex(ctypes.byref(a), v1, err, 512) == 0, err.value
    np.testing.assert_array_equal(o, o2)


@pytest.mark.parametrize(
    "change, size, text",
    [
        ({}, 100, "SparseAttention: args: args_size of at least 160 bytes"),
        ({"softcap": -1.0}, None, "SparseAttention: softcap: a finite value >= 0"),
        ({"key_starts": np.array([0, 60], np.int32)}, None, r"key_starts: .*key_starts\[1\] = 60"),
        ({"sinks": np.array([0, 0, np.nan, 0], np.float32)}, None, r"sinks: .*sinks\[2\] = nan"),
    ],
)
def test_ex_entry_errors(change, size, text):
    lib = _lib()
    q, k, v, gm, kl, ks, sk = _data(seed=2)
    o = np.zeros_like(q)
    arrays = {"key_lengths": kl, "global_mask": gm, "key_starts": ks, "sinks": sk}
    attrs = {}
    for name, value in change.items():
        (arrays if isinstance(value, np.ndarray) else attrs)[name] = value
    a = _args(q, k, v, o, attrs, **arrays)
    err = ctypes.create_string_buffer(512)
    rc = lib.spattn_cpu_forward_ex(ctypes.byref(a), size or ctypes.sizeof(Args), err, 512)
    assert rc != 0
    assert re.search(text, err.value.decode()), err.value


def test_ex_entry_computes_chunk_size():
    lib = _lib()
    q, k, v, gm, kl, ks, sk = _data(seed=3)
    attrs = {"causal": 1, "chunk_size": 6}
    o = np.zeros_like(q)
    a = _args(q, k, v, o, attrs, cls=Args3, key_starts=ks)
    assert Args3.chunk_size.offset == 192
    err = ctypes.create_string_buffer(512)
    assert ctypes.sizeof(Args3) == 200
    ptr = ctypes.cast(ctypes.pointer(a), ctypes.POINTER(Args))  # the entry's declared type
    assert lib.spattn_cpu_forward_ex(ptr, ctypes.sizeof(Args3), err, 512) == 0, err.value
    want = spec_numpy.spec_attention(q, k, v, attrs, None, None, None, ks)
    np.testing.assert_allclose(o, want, atol=2e-5, rtol=1e-4)
    plain = spec_numpy.spec_attention(q, k, v, {"causal": 1}, None, None, None, ks)
    assert np.abs(plain - want).max() > 1e-2  # the chunks changed the answer


def test_second_version_tail_padding_is_never_read():
    """A caller built against the second version passes its 4 bytes of tail padding inside its
    size, uninitialized: whatever they hold, no chunk_size is read from them."""
    lib = _lib()
    q, k, v, gm, kl, ks, sk = _data(seed=4)
    o = np.zeros_like(q)
    a = _args(q, k, v, o, {"causal": 1})
    assert ctypes.sizeof(Args) == 192 and Args.softcap.offset == 184
    # a small value, which read as chunk_size would change the answer
    ctypes.c_int32.from_address(ctypes.addressof(a) + 188).value = 3
    err = ctypes.create_string_buffer(512)
    assert lib.spattn_cpu_forward_ex(ctypes.byref(a), ctypes.sizeof(Args), err, 512) == 0, err.value
    want = spec_numpy.spec_attention(q, k, v, {"causal": 1})
    np.testing.assert_allclose(o, want, atol=2e-5, rtol=1e-4)
