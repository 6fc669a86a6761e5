"""A mid-size Mistral-like model exported by spattn, by Optimum and by ONNX Runtime GenAI's model
builder, run by ONNX Runtime.

Random weights (hidden 512, 4 layers, 8 query / 2 key-value heads of 64, MLP 1536, vocabulary
4096, sliding window 512), ``text-generation-with-past`` from each exporter, the same
``save_pretrained`` folder. For each length L: prefill latency (batch 1, L tokens, empty cache;
on the CPU the median of ``--prefill-runs``), the peak memory of the process that ran it (each
(exporter, L) in its own process), decode tokens/s (``--decode-steps`` single-token steps after
the prefill) and the KV-cache bytes the prefill returns.

CPU (float32)::

    python benchmarks/bench_hf.py --lengths 2048 8192 16384 --threads 2 --max-rss-gib 16 \\
        --optimum-python /path/to/venv-with-optimum-onnx/bin/python \\
        --genai-python /path/to/venv-with-onnxruntime-genai/bin/python \\
        --out benchmarks/results/hf_cpu.json --plot benchmarks/results/hf_cpu.png

``--model wide`` (with its own ``--work`` folder) benchmarks a realistic width instead: hidden
2048, 8 layers, 16 query / 4 key-value heads of 128, MLP 5632 (0.38 B parameters).

``--max-rss-gib`` stops a run whose resident memory passes the limit (or that would leave the
machine under 2 GiB available) and records it as not completed, with the memory and time it had
reached, instead of letting the machine run out of memory.

CUDA (float16, ONNX Runtime's CUDA EP, I/O binding: inputs, outputs and the cache stay on the
device; median of ``--runs`` synchronized runs; peak device memory polled with NVML): a machine
without transformers or Optimum runs graphs prepared elsewhere. ``--prepare-gpu DIR`` (here)
writes both float16 graphs without their weight matrices plus a manifest (a few MB, instead of
twice the weights); ``--gpu-pack DIR`` (there) refills the matrices, the same random values for
both exporters, each placed where that exporter's graph holds it (transposed where it stores the
transpose), and measures::

    python benchmarks/bench_hf.py --prepare-gpu .gpu/hf --optimum-python /path/bin/python
    python benchmarks/bench_hf.py --provider cuda --gpu-pack .gpu/hf --lengths 16384 65536 \\
        --out benchmarks/results/hf_cuda_h200.json --plot benchmarks/results/hf_cuda_h200.png

Optimum (``optimum-onnx``) needs transformers < 4.58, so it runs from its own environment
(``--optimum-python``); without it only spattn's export is measured. ``--genai-python`` (an
environment with ``onnxruntime-genai``, ``onnx_ir`` and a transformers its model builder imports)
adds ONNX Runtime GenAI: its model builder's graph (fused ``GroupQueryAttention`` with rotary,
``SkipSimplifiedLayerNormalization``, one QKV matrix), run by its own generator. The builder
needs a tokenizer in the model folder: a word-level one over the vocabulary is saved there.

Each completed run also records exactness: the logits of one prompt of ``--exact-length``
tokens (twice the window by default) against the model under ``attn_implementation="eager"``,
overall and at the positions past the window, where a graph that ignores the window differs.

Both float16 graphs are exports of the checkpoint loaded in float16 (Optimum's CLI on a CPU
exports float32 only; its exporter is given the float16 model, as its CLI does with
``--dtype fp16`` on a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

CONFIG = dict(
    hidden_size=512,
    intermediate_size=1536,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=2,
    head_dim=64,
    vocab_size=4096,
    sliding_window=512,
    max_position_embeddings=65536,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
# The benchmark model, chosen with --model: "small" (above) is the tables'; "wide" has a realistic
# width (hidden 2048, head dim 128, GQA 16:4, 8 layers: 0.38 B parameters), where the weights a
# decode step reads outweigh the per-step work around them. CONFIG holds the chosen one.
MODELS = {
    "small": dict(CONFIG),
    "wide": dict(
        CONFIG,
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=8,
        num_attention_heads=16,
        num_key_value_heads=4,
        head_dim=128,
    ),
}


def use_model(name: str) -> None:
    CONFIG.clear()
    CONFIG.update(MODELS[name])


# HF's initializer_range for Mistral: the refilled matrices are drawn with the same spread.
INIT_STD = 0.02
# Weight matrices at least this large are left out of a prepared pack and refilled; smaller
# initializers (norm weights, constants) stay in the graph as exported.
REFILL_MIN_ELEMENTS = 4096
EXPORTERS = ("spattn", "optimum", "genai", "genai_graph")
NAMES = {
    "spattn": "spattn",
    "optimum": "Optimum",
    "genai": "GenAI",
    "genai_graph": "GenAI's graph, our loop",
}
# genai_graph: GenAI's model builder graph run by the same ONNX Runtime loop as spattn's and
# Optimum's graphs (measure), which tells its graph from its generator. Asked for by name only.
DEFAULT_EXPORTERS = ("spattn", "optimum", "genai")


def _hf_model(work: Path) -> Path:
    import torch
    import transformers

    src = work / "model"
    if (src / "config.json").is_file():
        saved = json.loads((src / "config.json").read_text())
        other = {k: saved.get(k) for k, v in CONFIG.items() if saved.get(k) != v}
        if other:
            raise SystemExit(f"--work {work}: holds another model ({other}); use another --work")
    else:
        torch.manual_seed(0)
        cfg = transformers.AutoConfig.for_model("mistral", **CONFIG)
        transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(src)
    return src


# Optimum's CLI loads the checkpoint in its stored float32 on the CPU; for float16 the model is
# loaded in float16 and handed to Optimum's exporter, as its CLI does with --dtype fp16 on a GPU.
_OPTIMUM_FP16 = """
import sys, torch, transformers
from optimum.exporters.onnx import onnx_export_from_model
m = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float16)
onnx_export_from_model(m, sys.argv[2], task="text-generation-with-past", do_validation=False)
"""


def _optimum_export(src: Path, out: Path, optimum_python: str, dtype: str = "float32") -> None:
    if (out / "model.onnx").is_file():
        return
    t = time.time()
    if dtype == "float32":
        cmd = [optimum_python, "-m", "optimum.exporters.onnx", "--model", str(src)]
        cmd += ["--task", "text-generation-with-past", str(out)]
    elif dtype == "float16":
        cmd = [optimum_python, "-c", _OPTIMUM_FP16, str(src), str(out)]
    else:
        raise SystemExit(f"dtype {dtype}: Optimum's graph is exported in float32 or float16")
    subprocess.run(cmd, check=True)
    print(f"optimum export ({dtype}): {time.time() - t:.1f} s", flush=True)


def _save_tokenizer(src: Path) -> None:
    """A word-level tokenizer over the vocabulary (``t0`` ... ``t4095``): GenAI's model builder
    copies the model folder's tokenizer beside its graph and stops without one."""
    if (src / "tokenizer.json").is_file():
        return
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(CONFIG["vocab_size"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t3"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="t3", pad_token="t0", bos_token="t1", eos_token="t2"
    )
    fast.save_pretrained(str(src))


# GenAI's generator sizes its cache by the window when genai_config.json names one, and then every
# prompt longer than the window fails in GroupQueryAttention ("total_sequence_length must equal
# past_sequence_length + kv_sequence_length ..."). Its graph attends every past key anyway
# (local_window_size -1), so the entry is removed and the cache holds every key.
GENAI_CONFIG_PATCH = (
    "removed model.decoder.sliding_window from genai_config.json: with it, prompts longer than "
    "the window fail in GroupQueryAttention"
)


def _genai_build(src: Path, out: Path, genai_python: str) -> None:
    if (out / "genai_config.json").is_file():
        return
    _save_tokenizer(src)
    t = time.time()
    cmd = [genai_python, "-m", "onnxruntime_genai.models.builder", "-i", str(src), "-o", str(out)]
    cmd += ["-p", "fp32", "-e", "cpu", "-c", str(out.parent / "genai_cache")]
    subprocess.run(cmd, check=True)
    cfg_path = out / "genai_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model"]["decoder"].pop("sliding_window", None)
    cfg_path.write_text(json.dumps(cfg, indent=4) + "\n")
    print(f"genai model builder (float32, cpu): {time.time() - t:.1f} s", flush=True)


def build(
    work: Path, optimum_python: str | None, dtype: str = "float32", genai_python: str | None = None
) -> dict[str, str]:
    """Float32 (or ``dtype``) exports of the benchmark model; returns exporter -> model.onnx
    (GenAI: its model folder)."""
    import spattn

    src = _hf_model(work)
    paths = {}
    ours = work / ("spattn" if dtype == "float32" else f"spattn_{dtype}")
    if not (ours / "model.onnx").is_file():
        t = time.time()
        rep = spattn.export_hf(
            str(src),
            task="text-generation-with-past",
            output_dir=str(ours),
            dtype=dtype,
            validate=False,
        )
        print(f"spattn export: {time.time() - t:.1f} s, {rep.num_spattn_nodes} nodes", flush=True)
    paths["spattn"] = str(ours / "model.onnx")
    if optimum_python:
        opt = work / ("optimum" if dtype == "float32" else f"optimum_{dtype}")
        _optimum_export(src, opt, optimum_python, dtype)
        paths["optimum"] = str(opt / "model.onnx")
    if genai_python and dtype == "float32":
        _genai_build(src, work / "genai", genai_python)
        paths["genai"] = str(work / "genai")
        paths["genai_graph"] = str(work / "genai" / "model.onnx")
    return paths


def reference_logits(work: Path, length: int) -> Path:
    """The eager model's logits for one seeded prompt of ``length`` tokens (the exactness
    check's reference), saved with the prompt."""
    import numpy as np
    import torch
    import transformers

    out = work / f"exact_{length}.npz"
    if out.is_file():
        return out
    src = _hf_model(work)
    model = transformers.AutoModelForCausalLM.from_pretrained(src, attn_implementation="eager")
    ids = np.random.default_rng(1).integers(5, CONFIG["vocab_size"], (1, length)).astype(np.int64)
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(ids)).logits[0].float().numpy()
    np.savez(out, ids=ids, logits=logits)
    return out


def _exactness(logits: Any, ref_file: str) -> dict[str, Any]:
    import numpy as np

    ref = np.load(ref_file)["logits"]
    diff = np.abs(np.asarray(logits, np.float32).reshape(ref.shape) - ref)
    w = CONFIG["sliding_window"]
    return {
        "exact_length": int(ref.shape[0]),
        "max_abs_diff": float(diff.max()),
        "max_abs_diff_past_window": float(diff[w:].max()) if ref.shape[0] > w else None,
        "max_abs_diff_within_window": float(diff[:w].max()),
    }


# --- packs of weightless graphs (prepared here, refilled on a machine without transformers) ---


def _match(a: Any, weights: dict[str, Any]) -> tuple[str, bool] | None:
    """The state-dict matrix an initializer holds, as is or transposed.

    Equal within 1e-6 rather than bit-equal, so that an exporter that rounds or clips tiny
    entries still matches; any other matrix differs by ~1e-2.
    """
    import numpy as np

    a = a.astype(np.float32)
    for key, v in weights.items():
        for transposed, w in ((False, v), (True, v.T if v.ndim == 2 else None)):
            if w is None or w.shape != a.shape:
                continue
            if np.abs(a.ravel()[:64] - w.ravel()[:64]).max() > 1e-6:
                continue
            if np.abs(a - w).max() <= 1e-6:
                return key, transposed
    return None


def prepare_gpu(work: Path, optimum_python: str | None, dest: Path, dtype: str) -> None:
    """Writes DEST/{spattn,optimum}.onnx without their weight matrices and DEST/manifest.json."""
    import numpy as np
    import onnx
    from onnx import numpy_helper
    from safetensors.numpy import load_file

    paths = build(work, optimum_python, dtype)
    src = _hf_model(work)
    np_dtype = np.float16 if dtype == "float16" else np.float32
    weights = {
        key: v.astype(np_dtype).astype(np.float32)
        for f in sorted(src.glob("*.safetensors"))
        for key, v in load_file(str(f)).items()
        if v.size >= REFILL_MIN_ELEMENTS
    }
    dest.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "config": CONFIG,
        "dtype": dtype,
        "init_std": INIT_STD,
        "shapes": {k: list(v.shape) for k, v in weights.items()},
        "models": {},
    }
    for name, path in paths.items():
        m = onnx.load(path)
        keep, refill = [], {}
        for init in m.graph.initializer:
            a = numpy_helper.to_array(init)
            hit = None
            # a float16 export may still hold some matrices in float32 (Optimum: o_proj)
            if a.size >= REFILL_MIN_ELEMENTS and a.dtype in (np.float16, np.float32):
                hit = _match(a, weights)
            if hit is None:
                keep.append(init)
            else:
                refill[init.name] = {"key": hit[0], "transposed": hit[1], "dtype": str(a.dtype)}
        kept_bytes = sum(numpy_helper.to_array(i).nbytes for i in keep)
        if kept_bytes > 4 * 2**20:
            big = sorted(keep, key=lambda i: -numpy_helper.to_array(i).nbytes)[:3]
            raise SystemExit(
                f"--prepare-gpu: {name}'s graph keeps {kept_bytes / 2**20:.1f} MiB of initializers "
                f"that match no weight matrix (largest: {[i.name for i in big]})"
            )
        del m.graph.initializer[:]
        m.graph.initializer.extend(keep)
        onnx.save(m, str(dest / f"{name}.onnx"))
        manifest["models"][name] = {"refill": refill, "kept_initializer_bytes": kept_bytes}
        print(
            f"{name}: {len(refill)} matrices left out, {kept_bytes / 2**20:.2f} MiB kept, "
            f"graph {os.path.getsize(dest / f'{name}.onnx') / 2**20:.2f} MiB",
            flush=True,
        )
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def refill(pack: Path, work: Path) -> dict[str, str]:
    """Inverse of :func:`prepare_gpu`: the same matrices for every exporter's graph."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    manifest = json.loads((pack / "manifest.json").read_text())
    if manifest["config"] != CONFIG:
        raise SystemExit(f"--gpu-pack {pack}: prepared for another config: {manifest['config']}")
    np_dtype = np.float16 if manifest["dtype"] == "float16" else np.float32
    weights: dict[str, Any] = {}
    for key, shape in manifest["shapes"].items():
        # seeded by the name, so every graph (and every machine) gets the same matrix
        rng = np.random.default_rng(zlib.crc32(key.encode()))
        weights[key] = (rng.standard_normal(shape, dtype=np.float32) * manifest["init_std"]).astype(
            np_dtype
        )
    work.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, spec in manifest["models"].items():
        m = onnx.load(str(pack / f"{name}.onnx"))
        for init_name, r in spec["refill"].items():
            a = weights[r["key"]].astype(r.get("dtype", manifest["dtype"]))
            a = np.ascontiguousarray(a.T) if r["transposed"] else a
            m.graph.initializer.append(numpy_helper.from_array(a, init_name))
        out = work / f"{name}_{manifest['dtype']}.onnx"
        onnx.save(m, str(out))
        paths[name] = str(out)
    return paths


# --- one measurement, in its own process ---


def _session(path: str, provider: str, threads: int) -> Any:
    import onnxruntime as ort

    from spattn.runtime import SESSION_MEM_PATTERN, library_path

    so = ort.SessionOptions()
    so.register_custom_ops_library(library_path("ort"))
    # Both exporters' graphs run with the options spattn's own sessions use: the memory pattern
    # off (with it, the second prefill of a length plans a new block beside the arena's chunks).
    so.enable_mem_pattern = SESSION_MEM_PATTERN
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if provider == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise SystemExit(
                "--provider cuda: this onnxruntime has no CUDAExecutionProvider (available: "
                f"{ort.get_available_providers()}); install onnxruntime-gpu"
            )
        # kSameAsRequested: the arena grows by what is asked, so the peak is the model's need
        cuda = {"device_id": 0, "arena_extend_strategy": "kSameAsRequested"}
        sess = ort.InferenceSession(
            path, so, providers=[("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]
        )
        if sess.get_providers()[0] != "CUDAExecutionProvider":
            raise SystemExit(f"--provider cuda: session providers are {sess.get_providers()}")
        return sess
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _phase(name: str) -> None:
    print(f"phase: {name}", file=sys.stderr, flush=True)


def _timing_row(
    times: list[float], decode_steps: int, decode_s: float, kv_prefill: int, kv_decode: int
) -> dict[str, Any]:
    """A CPU run's row; the peak memory is read now, before any exactness prompt."""
    return {
        "prefill_s": statistics.median(times),
        "prefill_s_runs": times,
        "decode_tokens_per_s": decode_steps / decode_s if decode_steps else None,
        "kv_cache_bytes_after_prefill": kv_prefill,
        "kv_cache_bytes_after_decode": kv_decode,
        "peak_rss_bytes": _peak_rss(),
    }


def measure(
    path: str,
    length: int,
    threads: int,
    decode_steps: int,
    prefill_runs: int = 1,
    exact: str | None = None,
) -> dict[str, Any]:
    """CPU EP, numpy feeds (the float32 table). Prefill: the median of ``prefill_runs`` runs
    (the first one also pays for the memory the process touches for the first time)."""
    import numpy as np

    sess = _session(path, "cpu", threads)
    ins = {i.name: i for i in sess.get_inputs()}
    past_names = [n for n in ins if n.startswith("past_key_values.")]
    rng = np.random.default_rng(0)

    def feeds(ids: Any, mask: Any, pos: Any, past: dict[str, Any]) -> dict[str, Any]:
        f = {"input_ids": ids, "attention_mask": mask, **past}
        if "position_ids" in ins:
            f["position_ids"] = pos
        return f

    kv_shape = (1, CONFIG["num_key_value_heads"], 0, CONFIG["head_dim"])  # GenAI's are symbolic
    empty = {n: np.zeros(kv_shape, np.float32) for n in past_names}
    names = [o.name for o in sess.get_outputs()]

    def prefill_feeds(ids: Any) -> dict[str, Any]:
        n = ids.shape[1]
        return feeds(ids, np.ones((1, n), np.int64), np.arange(n, dtype=np.int64)[None], empty)

    _phase("warm-up")
    sess.run(None, prefill_feeds(rng.integers(5, 4096, (1, 256))))
    ids = rng.integers(5, 4096, (1, length)).astype(np.int64)
    _phase("prefill")
    times, outs = [], {}
    for _ in range(prefill_runs):
        outs.clear()  # the last run's outputs are freed before this one allocates its own
        t = time.perf_counter()
        outs = dict(zip(names, sess.run(None, prefill_feeds(ids)), strict=True))
        times.append(time.perf_counter() - t)
    past = {n: outs[n.replace("past_key_values.", "present.")] for n in past_names}
    kv_bytes = int(sum(v.nbytes for v in past.values()))
    tok = outs["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
    del outs
    _phase("decode")
    t = time.perf_counter()
    for s in range(decode_steps):
        mask = np.ones((1, length + s + 1), np.int64)
        o = dict(
            zip(
                names, sess.run(None, feeds(tok, mask, np.array([[length + s]]), past)), strict=True
            )
        )
        past = {n: o[n.replace("past_key_values.", "present.")] for n in past_names}
        tok = o["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
    decode = time.perf_counter() - t
    after = int(sum(v.nbytes for v in past.values()))
    row = _timing_row(times, decode_steps, decode, kv_bytes, after)
    if exact:
        _phase("exactness")
        ref_ids = np.load(exact)["ids"]
        logits = dict(zip(names, sess.run(None, prefill_feeds(ref_ids)), strict=True))["logits"]
        row["exactness"] = _exactness(logits, exact)
    return row


def measure_genai(
    path: str,
    length: int,
    threads: int,
    decode_steps: int,
    prefill_runs: int = 1,
    exact: str | None = None,
) -> dict[str, Any]:
    """ONNX Runtime GenAI's own generator on its model builder's folder (CPU, greedy): the
    prefill is ``append_tokens`` of the prompt to a new generator (median of ``prefill_runs``),
    decode ``generate_next_token``. Its cache is one buffer for the whole sequence
    (past_present_share_buffer), sized by max_length = L + decode steps + 1."""
    import numpy as np
    import onnxruntime_genai as og

    cfg = og.Config(path)
    cfg.clear_providers()  # the CPU
    so = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
    cfg.overlay(json.dumps({"model": {"decoder": {"session_options": so}}}))
    model = og.Model(cfg)
    rng = np.random.default_rng(0)

    def generator(max_length: int) -> Any:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=max_length, do_sample=False)
        return og.Generator(model, params)

    _phase("warm-up")
    generator(257).append_tokens(rng.integers(5, 4096, (1, 256)).astype(np.int32))
    ids = rng.integers(5, 4096, (1, length)).astype(np.int32)
    _phase("prefill")
    times, g = [], None
    for _ in range(prefill_runs):
        g = None  # the last generator (its cache) is freed before this one allocates its own
        g = generator(length + decode_steps + 1)
        t = time.perf_counter()
        g.append_tokens(ids)
        times.append(time.perf_counter() - t)
    _phase("decode")
    t = time.perf_counter()
    for _ in range(decode_steps):
        g.generate_next_token()
    decode = time.perf_counter() - t
    dec = json.loads((Path(path) / "genai_config.json").read_text())["model"]["decoder"]
    kv = 2 * dec["num_hidden_layers"] * dec["num_key_value_heads"] * dec["head_size"] * 4
    # the shared buffer as allocated: every position up to max_length
    allocated = kv * (length + decode_steps + 1)
    row = _timing_row(times, decode_steps, decode, allocated, allocated)
    del g
    if exact:
        _phase("exactness")
        ref_ids = np.load(exact)["ids"]
        g = generator(ref_ids.shape[1] + 1)
        g.append_tokens(ref_ids.astype(np.int32))
        row["exactness"] = _exactness(g.get_output("logits"), exact)
    return row


def measure_bound(
    path: str, length: int, provider: str, threads: int, decode_steps: int, runs: int
) -> dict[str, Any]:
    """I/O binding: every input, output and the cache on the provider's device (CUDA: float16).

    ``Run`` synchronizes the CUDA EP's stream before it returns, so host timing around it is
    the device time plus ONNX Runtime's host work. Prefill: median of ``runs``; decode: median
    tokens/s of ``runs`` passes of ``decode_steps`` greedy steps from the same prefill (each step
    reads the argmax token back to the host, as a decoding loop does).
    """
    import numpy as np
    import onnxruntime as ort

    sess = _session(path, provider, threads)
    dev = "cuda" if provider == "cuda" else "cpu"
    ins = {i.name: i for i in sess.get_inputs()}
    past_names = [n for n in ins if n.startswith("past_key_values.")]
    out_names = [o.name for o in sess.get_outputs()]
    ftype = np.float16 if "float16" in ins[past_names[0]].type else np.float32
    rng = np.random.default_rng(0)

    def on_dev(a: Any) -> Any:
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a), dev, 0)

    def bind(ids: Any, start: int, past: dict[str, Any]) -> Any:
        n = ids.shape[1]
        io = sess.io_binding()
        io.bind_ortvalue_input("input_ids", on_dev(ids.astype(np.int64)))
        io.bind_ortvalue_input("attention_mask", on_dev(np.ones((1, start + n), np.int64)))
        if "position_ids" in ins:
            io.bind_ortvalue_input(
                "position_ids", on_dev(np.arange(start, start + n, dtype=np.int64)[None])
            )
        for k, v in past.items():
            if isinstance(v, np.ndarray):  # the empty cache: nothing to place on the device
                io.bind_cpu_input(k, v)
            else:
                io.bind_ortvalue_input(k, v)
        for o in out_names:
            io.bind_output(o, dev)
        return io

    def run(io: Any) -> dict[str, Any]:
        sess.run_with_iobinding(io)
        return dict(zip(out_names, io.get_outputs(), strict=True))

    def last_token(logits: Any) -> Any:
        return logits.numpy()[:, -1].argmax(-1)[:, None]

    empty = {n: np.zeros((1, ins[n].shape[1], 0, ins[n].shape[3]), ftype) for n in past_names}
    _phase("warm-up")
    run(bind(rng.integers(5, 4096, (1, 256)), 0, empty))
    ids = rng.integers(5, 4096, (1, length))
    _phase("prefill")
    times = []
    for _ in range(runs):
        io = bind(ids, 0, empty)
        t = time.perf_counter()
        outs = run(io)
        times.append(time.perf_counter() - t)
    past = {n: outs[n.replace("past_key_values.", "present.")] for n in past_names}
    kv_bytes = int(sum(np.prod(v.shape()) * np.dtype(ftype).itemsize for v in past.values()))
    first = last_token(outs["logits"])
    logits_last = outs["logits"].numpy()[0, -1].astype(np.float32)
    _phase("decode")
    rates = []
    for _ in range(runs if decode_steps else 0):
        p, tok = dict(past), first
        t = time.perf_counter()
        for s in range(decode_steps):
            o = run(bind(tok, length + s, p))
            p = {n: o[n.replace("past_key_values.", "present.")] for n in past_names}
            tok = last_token(o["logits"])
        rates.append(decode_steps / (time.perf_counter() - t))
    after = int(sum(np.prod(v.shape()) * np.dtype(ftype).itemsize for v in p.values()))
    return {
        "prefill_s": statistics.median(times),
        "prefill_s_runs": times,
        "decode_tokens_per_s": statistics.median(rates) if rates else None,
        "decode_tokens_per_s_runs": rates,
        "kv_cache_bytes_after_prefill": kv_bytes,
        "kv_cache_bytes_after_decode": after if rates else kv_bytes,
        "peak_rss_bytes": _peak_rss(),
        # to compare exporters: the same weights give the same next-token distribution
        "last_logits_head": [float(x) for x in logits_last[:8]],
        "last_logits_argmax": int(logits_last.argmax()),
        "finite_logits": bool(np.isfinite(logits_last).all()),
    }


# --- the parent: one guarded subprocess per (exporter, L) ---


def _rss(pid: int | str, key: str = "VmRSS") -> int:
    """A size line of /proc/PID/status in bytes (0 where there is none)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _peak_rss() -> int:
    """This process's peak resident memory. VmHWM, not ``ru_maxrss``: Linux folds the RSS of the
    image an ``execve`` replaces into ``ru_maxrss``, so a measuring child started by a parent that
    had just exported the model (torch loaded) reported the parent's 1 GB as its own."""
    return _rss("self", "VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 1 << 62


class _GpuMemory:
    """Peak device memory in use during a run, minus what was in use before it (NVML)."""

    def __init__(self) -> None:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._h = pynvml.nvmlDeviceGetHandleByIndex(0)
        self.base = self._used()
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()

    def _used(self) -> int:
        return int(self._nvml.nvmlDeviceGetMemoryInfo(self._h).used)

    def _poll(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._used())

    def stop(self) -> int:
        self._stop.set()
        self._t.join()
        return self.peak - self.base


def run_guarded(cmd: list[str], max_rss: int | None, timeout_s: float, gpu: bool) -> dict[str, Any]:
    """Runs one measurement; stops it above ``max_rss`` resident bytes, under 2 GiB available
    on the machine, or after ``timeout_s``, and says so in the row."""
    gpu_mem = None
    if gpu:
        try:
            gpu_mem = _GpuMemory()
        except Exception as e:  # no NVML: the table still has the times, not the memory
            print(f"peak GPU memory not measured: NVML unavailable ({e})", flush=True)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.time()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        peak, stopped = 0, None
        while p.poll() is None:
            rss = _rss(p.pid)
            peak = max(peak, rss)
            if max_rss is not None and rss > max_rss:
                stopped = f"exceeded {max_rss / 2**30:g} GiB RSS after {time.time() - t0:.0f} s"
            elif max_rss is not None and _mem_available() < 2 * 2**30:
                stopped = (
                    f"stopped at {rss / 2**30:.1f} GiB RSS after {time.time() - t0:.0f} s: the "
                    "machine had under 2 GiB available"
                )
            elif time.time() - t0 > timeout_s:
                stopped = f"timed out after {timeout_s:g} s"
            if stopped:
                p.send_signal(signal.SIGKILL)
                p.wait()
                break
            time.sleep(0.1)
        wall = time.time() - t0
        gpu_peak = gpu_mem.stop() if gpu_mem else None
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    phases = [ln[7:] for ln in stderr.splitlines() if ln.startswith("phase: ")]
    row: dict[str, Any]
    if stopped:
        row = {"status": stopped, "phase": phases[-1] if phases else None, "peak_rss_bytes": peak}
    elif p.returncode == 0:
        row = json.loads(stdout.strip().splitlines()[-1])
    else:
        lines = [ln for ln in stderr.strip().splitlines() if not ln.startswith("phase: ")]
        row = {
            "error": (lines or ["killed"])[-1][:400],
            "returncode": p.returncode,
            "phase": phases[-1] if phases else None,
            "peak_rss_bytes": peak,
        }
    if gpu_peak is not None:
        row["peak_gpu_bytes"] = gpu_peak
    row["wall_s"] = wall
    return row


# --- report ---


def _completed(r: dict[str, Any]) -> bool:
    return "prefill_s" in r


def _gb(b: float) -> str:
    return f"{b / 1e9:.2f} GB"


def table(results: dict[str, Any]) -> str:
    """Markdown table of a results file: one row per L, one value per exporter in each cell
    (spattn / Optimum / GenAI, those the file has), then the exactness of each exporter."""
    runs = results["runs"]
    names = [e for e in EXPORTERS if e in runs]
    lengths = sorted({int(L) for rows in runs.values() for L in rows})
    mem = "peak GPU memory" if results.get("provider") == "cuda" else "peak memory (RSS)"
    who = " / ".join(NAMES[e] for e in names)
    lines = [
        f"| L | prefill {who} | {mem} {who} | decode tokens/s {who} | KV cache {who} |",
        "|---|---|---|---|---|",
    ]
    memkey = "peak_gpu_bytes" if results.get("provider") == "cuda" else "peak_rss_bytes"

    def cells(r: dict[str, Any] | None) -> list[str]:
        if r is None:
            return ["not run"] * 4
        if not _completed(r):
            why = r.get("status") or f"failed: {r.get('error', '?')[:80]}"
            if memkey == "peak_gpu_bytes" and r.get(memkey) is not None:
                reached = f"{_gb(r[memkey])} when it stopped"
            elif "status" in r:
                reached = f"> {_gb(r['peak_rss_bytes'])} RSS"
            else:
                reached = "-"
            return [f"did not complete ({why})", reached, "-", "-"]
        p = r["prefill_s"]
        return [
            f"{p:.3g} s" if p >= 1 else f"{p * 1e3:.3g} ms",
            _gb(r[memkey]) if r.get(memkey) is not None else "-",
            f"{r['decode_tokens_per_s']:.3g}" if r.get("decode_tokens_per_s") else "-",
            f"{r['kv_cache_bytes_after_prefill'] / 1e6:.3g} MB",
        ]

    for L in lengths:
        cols = [cells(runs[e].get(str(L))) for e in names]
        lines.append(
            f"| {L} | " + " | ".join(" / ".join(c) for c in zip(*cols, strict=True)) + " |"
        )
    exact = {
        e: next((r["exactness"] for _, r in sorted(runs[e].items()) if "exactness" in r), None)
        for e in names
    }
    if any(exact.values()):
        w = results.get("config", CONFIG)["sliding_window"]
        lines += [
            "",
            f"| logits vs eager, one prompt | all positions | positions >= {w}, past the window |",
            "|---|---|---|",
        ]
        for e, x in exact.items():
            if x:
                past = x["max_abs_diff_past_window"]
                lines.append(
                    f"| {NAMES[e]} ({x['exact_length']} tokens) | {x['max_abs_diff']:.2g} | "
                    + (f"{past:.2g} |" if past is not None else "- |")
                )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cuda = results.get("provider") == "cuda"
    memkey = "peak_gpu_bytes" if cuda else "peak_rss_bytes"
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    keys = [
        ("prefill_s", "prefill latency (s)"),
        (memkey, "peak GPU memory (GiB)" if cuda else "peak memory, RSS (GiB)"),
        ("decode_tokens_per_s", "decode tokens/s"),
        ("kv_cache_bytes_after_prefill", "KV cache after prefill (MiB)"),
    ]
    scale = {memkey: 2**30, "kv_cache_bytes_after_prefill": 2**20}
    colors = {"spattn": "C0", "optimum": "C1", "genai": "C2"}
    for ax, (k, label) in zip(axes, keys, strict=True):
        for exporter, rows in results["runs"].items():
            c = colors.get(exporter, None)
            pts = [(int(L), r[k] / scale.get(k, 1)) for L, r in rows.items() if r.get(k)]
            pts = [(L, v) for L, v in pts if _completed(rows[str(L)])]
            if pts:
                ax.plot(*zip(*sorted(pts), strict=True), marker="o", label=exporter, color=c)
            for L, r in rows.items():
                if _completed(r):
                    continue
                # a run that stopped (memory guard, out of memory, error): the memory it had
                # reached, marked as such, on the memory plot; a note on the others
                if k == memkey and r.get(k):
                    y = r[k] / scale[k]
                    ax.plot([int(L)], [y], marker="^", ms=10, color=c, ls="none")
                    ax.annotate(
                        f"{exporter} {L}: stopped\nat {y:.1f} GiB",
                        (int(L), y),
                        fontsize=7,
                        xytext=(-70, -22),
                        textcoords="offset points",
                    )
                else:
                    why = r.get("status") or "failed, see the JSON"
                    ax.annotate(
                        f"{exporter} {L}: did not complete\n({why})",
                        (0.02, 0.88 - 0.14 * list(results["runs"]).index(exporter)),
                        xycoords="axes fraction",
                        fontsize=7,
                        color=c,
                    )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=8)
    where = (
        f"ORT CUDA EP float16 ({results.get('device', 'GPU')})"
        if cuda
        else f"ORT CPU {results['threads']} threads"
    )
    c = results.get("config", CONFIG)
    fig.suptitle(
        f"Mistral-like (hidden {c['hidden_size']}, {c['num_hidden_layers']} layers, GQA "
        f"{c['num_attention_heads']}:{c['num_key_value_heads']}, head dim {c['head_dim']}, window "
        f"{c['sliding_window']}), {where}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _device_name() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 else "unknown GPU"
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown GPU"


def _env_versions(python: str, packages: tuple[str, ...]) -> str:
    code = (
        "import importlib.metadata as m; print(', '.join(f'{p} {m.version(p)}' for p in "
        f"{packages!r}))"
    )
    return subprocess.run([python, "-c", code], capture_output=True, text=True).stdout.strip()


def _machine() -> str:
    """The CPU's model name (bench_cpu's reader), AVX-512 where it has it, and its core count."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_cpu import _cpu_name

    try:
        avx512 = " avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        avx512 = False
    return f"{_cpu_name()}{', AVX-512' if avx512 else ''}, {os.cpu_count()} cores"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[2048, 8192, 16384])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", choices=sorted(MODELS), default="small", help="the benchmark model")
    ap.add_argument("--decode-steps", type=int, default=64)
    ap.add_argument("--provider", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument(
        "--io-binding",
        action="store_true",
        help="CPU: the I/O-binding measurement the CUDA EP uses (always on with --provider cuda)",
    )
    ap.add_argument("--runs", type=int, default=5, help="I/O binding: prefill/decode repeats")
    ap.add_argument("--work", default="/tmp/spattn_bench_hf")
    ap.add_argument("--optimum-python")
    ap.add_argument(
        "--genai-python",
        help="an environment with onnxruntime-genai and onnx_ir: adds its model builder's graph, "
        "run by its generator (CPU, float32)",
    )
    ap.add_argument(
        "--prefill-runs", type=int, default=3, help="CPU: prefills per run (the median is kept)"
    )
    ap.add_argument(
        "--exact-length",
        type=int,
        default=2 * CONFIG["sliding_window"],
        help="CPU: tokens of the prompt whose logits are compared with the eager model's (0: none)",
    )
    ap.add_argument("--exporters", nargs="+", choices=EXPORTERS, default=list(DEFAULT_EXPORTERS))
    ap.add_argument("--skip", nargs="*", default=[], help="exporter:L pairs not to run")
    ap.add_argument(
        "--max-rss-gib",
        type=float,
        help="stop a run above this resident memory (or with the machine under 2 GiB available) "
        "and record it as not completed",
    )
    ap.add_argument("--timeout-s", type=float, default=3600.0, help="per (exporter, L) run")
    ap.add_argument("--prepare-gpu", metavar="DIR", help="write the weightless float16 pack")
    ap.add_argument("--prepare-dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--gpu-pack", metavar="DIR", help="refill and measure a prepared pack")
    ap.add_argument("--out", default="benchmarks/results/hf_cpu.json")
    ap.add_argument("--plot")
    ap.add_argument(
        "--table",
        action="store_true",
        help="measure nothing: print the markdown table of --out (and write --plot from it)",
    )
    ap.add_argument("--measure", nargs=2, metavar=("ONNX", "L"), help=argparse.SUPPRESS)
    ap.add_argument("--measure-genai", nargs=2, metavar=("DIR", "L"), help=argparse.SUPPRESS)
    ap.add_argument("--exact", help=argparse.SUPPRESS)
    a = ap.parse_args()
    use_model(a.model)
    if a.runs < 1:
        ap.error(f"--runs: expected at least 1, got {a.runs}")
    if a.prefill_runs < 1:
        ap.error(f"--prefill-runs: expected at least 1, got {a.prefill_runs}")
    if a.max_rss_gib is not None and a.max_rss_gib <= 0:
        ap.error(f"--max-rss-gib: expected a positive number of GiB, got {a.max_rss_gib}")
    if a.measure:
        if a.provider == "cuda" or a.io_binding:
            row = measure_bound(
                a.measure[0], int(a.measure[1]), a.provider, a.threads, a.decode_steps, a.runs
            )
        else:
            row = measure(
                a.measure[0], int(a.measure[1]), a.threads, a.decode_steps, a.prefill_runs, a.exact
            )
        print(json.dumps(row))
        return
    if a.measure_genai:
        row = measure_genai(
            a.measure_genai[0],
            int(a.measure_genai[1]),
            a.threads,
            a.decode_steps,
            a.prefill_runs,
            a.exact,
        )
        print(json.dumps(row))
        return
    if a.table:
        results = json.loads(Path(a.out).read_text())
        if a.plot:
            plot(results, a.plot)
        print(table(results), end="")
        return
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    if a.prepare_gpu:
        prepare_gpu(work, a.optimum_python, Path(a.prepare_gpu), a.prepare_dtype)
        return
    if a.provider == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise SystemExit(
                "--provider cuda: this onnxruntime has no CUDAExecutionProvider (available: "
                f"{ort.get_available_providers()}); install onnxruntime-gpu"
            )
        if not a.gpu_pack:
            ap.error("--provider cuda: give --gpu-pack DIR (made by --prepare-gpu)")
    paths = refill(Path(a.gpu_pack), work / "refilled") if a.gpu_pack else None
    paths = paths or build(work, a.optimum_python, genai_python=a.genai_python)
    cpu = a.provider == "cpu" and not a.io_binding
    exact = (
        str(reference_logits(work, a.exact_length))
        if cpu and a.exact_length and not a.gpu_pack
        else None
    )
    import onnxruntime as ort

    results: dict[str, Any] = {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "machine": _machine(),
        "provider": a.provider,
        "onnxruntime": ort.__version__,
        "threads": a.threads,
        "config": CONFIG,
        "dtype": "float16" if a.gpu_pack else "float32",
        "decode_steps": a.decode_steps,
        "runs": {},
    }
    if a.provider == "cuda":
        results["device"] = _device_name()
        results["runs_per_point"] = a.runs
        results["memory"] = (
            "peak_gpu_bytes: device memory in use (NVML, polled every 5 ms) above what was in "
            "use before the process started; includes the CUDA context and ONNX Runtime's "
            "arena (kSameAsRequested)"
        )
    if cpu:
        results["prefill_runs"] = a.prefill_runs
    results["session_options"] = (
        "spattn and Optimum: ONNX Runtime's defaults but enable_mem_pattern off, as in "
        "spattn's own sessions (spattn.runtime.SESSION_MEM_PATTERN); GenAI: its generator's"
    )
    if a.optimum_python:
        results["optimum_env"] = _env_versions(
            a.optimum_python, ("optimum-onnx", "optimum", "transformers", "torch", "onnxruntime")
        )
    if a.genai_python and "genai" in paths:
        results["genai_env"] = _env_versions(
            a.genai_python, ("onnxruntime-genai", "onnx-ir", "transformers", "onnxruntime")
        )
        results["genai_config_patch"] = GENAI_CONFIG_PATCH
    if a.max_rss_gib is not None:
        results["max_rss_gib"] = a.max_rss_gib
    if Path(a.out).is_file():  # keep earlier runs (e.g. a length measured on another machine)
        earlier = json.loads(Path(a.out).read_text())
        results["runs"] = earlier.get("runs", {})
        results["commands"] = earlier.get("commands") or [earlier["command"]]
        for rows in results["runs"].values():
            for r in rows.values():
                r.setdefault("command", 0)  # rows of a file that had one command
    # each row's "command" is its index in "commands"
    results.setdefault("commands", []).append(results["command"])
    max_rss = int(a.max_rss_gib * 2**30) if a.max_rss_gib is not None else None
    for exporter in a.exporters:
        if exporter not in paths:
            continue
        for L in a.lengths:
            if f"{exporter}:{L}" in a.skip:
                continue
            genai = exporter == "genai"
            cmd = [
                a.genai_python if genai else sys.executable,
                __file__,
                "--measure-genai" if genai else "--measure",
                paths[exporter],
                str(L),
                "--provider",
                a.provider,
                "--threads",
                str(a.threads),
                "--decode-steps",
                str(a.decode_steps),
                "--runs",
                str(a.runs),
                "--prefill-runs",
                str(a.prefill_runs),
                "--model",
                a.model,
                *(["--io-binding"] if a.io_binding else []),
                *(["--exact", exact] if exact else []),
            ]
            row = run_guarded(cmd, max_rss, a.timeout_s, gpu=a.provider == "cuda")
            row["command"] = len(results["commands"]) - 1
            results["runs"].setdefault(exporter, {})[str(L)] = row
            print(exporter, L, json.dumps(row), flush=True)
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
    agreement = {}
    for L in a.lengths:
        r = [results["runs"].get(e, {}).get(str(L), {}) for e in ("spattn", "optimum")]
        if all("last_logits_head" in x for x in r):
            diff = max(abs(x - y) for x, y in zip(*(x["last_logits_head"] for x in r), strict=True))
            same = r[0]["last_logits_argmax"] == r[1]["last_logits_argmax"]
            agreement[str(L)] = {"max_abs_diff_first_logits": diff, "same_next_token": same}
    if agreement:
        # same weights, same tokens: the two graphs must predict the same next token
        results["exporters_agree"] = agreement
        Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
        print("exporters agree:", json.dumps(agreement))
    if a.plot:
        plot(results, a.plot)
    print(table(results), end="")


if __name__ == "__main__":
    main()
