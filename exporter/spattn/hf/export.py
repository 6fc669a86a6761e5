"""``export_hf``: a Hugging Face model folder (or hub id) to ONNX, one ``spattn::SparseAttention``
node per attention call, with Optimum's input/output names and tasks.

Inputs ``input_ids``, ``attention_mask`` (+ ``token_type_ids``, ``position_ids``,
``global_attention_mask`` where the model takes them), ``past_key_values.{i}.key/.value`` for
``text-generation-with-past``; outputs ``last_hidden_state`` / ``logits`` and
``present.{i}.key/.value``. Dynamic axes ``batch_size``, ``sequence_length``,
``past_sequence_length``.

The ``-with-past`` graph keeps, for a sliding-window layer of window ``W``, only the last ``W - 1``
keys/values (``present = last W-1 of concat(past, new)``): the next query sits at the newest
position and its window ``p - j < W`` reaches back exactly ``W - 1`` keys, so nothing older can
matter (transformers' own sliding cache keeps the same). Full-attention layers keep everything.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from .. import tolerances
from ..export import check_model, node_attributes, spattn_nodes
from .attention import config_window, layer_chunk
from .convert import convert_hf

__all__ = ["TASKS", "HFExportReport", "export_hf", "layer_windows"]

TASKS = {
    "feature-extraction": "AutoModel",
    "fill-mask": "AutoModelForMaskedLM",
    "text-classification": "AutoModelForSequenceClassification",
    "text-generation": "AutoModelForCausalLM",
    "text-generation-with-past": "AutoModelForCausalLM",
}
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "added_tokens.json",
    "generation_config.json",
)


@dataclass
class HFExportReport:
    """What :func:`export_hf` wrote and how ONNX Runtime compared with HF eager attention."""

    path: str
    task: str
    model_type: str
    dtype: str
    num_spattn_nodes: int
    input_names: list[str]
    output_names: list[str]
    patterns: list[str] = field(default_factory=list)
    errors: dict[str, float] = field(default_factory=dict)
    passed: bool | None = None
    atol: float | None = None
    rtol: float | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [
            f"{self.path}: {self.model_type} {self.task}, {self.num_spattn_nodes} "
            f"spattn::SparseAttention node(s), dtype {self.dtype}, {self.seconds:.1f} s",
            "  inputs:  " + ", ".join(self.input_names),
            "  outputs: " + ", ".join(self.output_names),
        ]
        for p, n in _count(self.patterns).items():
            lines.append(f"  {n} x {p}")
        for k, v in self.errors.items():
            lines.append(f"  {k}: max abs diff vs eager {v:.3g}")
        lines += [f"  note: {n}" for n in self.notes]
        if self.passed is not None:
            lines.append(
                f"  validation vs attn_implementation='eager' "
                f"{'passed' if self.passed else 'FAILED'} (atol {self.atol}, rtol {self.rtol})"
            )
        return "\n".join(lines)


def _count(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return out


# ------------------------------------------------------------------------------ the KV cache
def layer_windows(config: Any) -> list[int | None]:
    """Per decoder layer: the sliding window ``W`` (keys kept: ``W - 1``) or ``None`` (full);
    a chunked layer's chunk size counts as its window.

    Mirrors how each family decides which layers slide: ``layer_types`` when the config has
    them, else ``config.sliding_window`` on every layer (Mistral, Phi-3), GPT-Neo's
    ``attention_layers``/``window_size``.
    """
    n = int(getattr(config, "num_hidden_layers", None) or config.num_layers)
    if getattr(config, "model_type", "") == "gpt_neo":
        return [int(config.window_size) if t == "local" else None for t in config.attention_layers]
    return [config_window(config, i) or _config_chunk(config, i) for i in range(n)]


def _config_chunk(config: Any, layer_idx: int) -> int | None:
    """A chunked layer's chunk size ``C``: its queries see at most the ``C - 1`` keys before them,
    so its cache keeps ``C - 1`` like a window of ``C`` (transformers' does the same); the chunks
    stay where they were through ``key_starts`` (``attention.chunk_key_starts``)."""
    holder = type("Layer", (), {"config": config, "layer_idx": layer_idx})()
    return layer_chunk(holder)


def cache_layers(config: Any) -> list[int]:
    """The decoder layers that keep a cache of their own, in order: every layer but those that
    reuse another layer's keys and values (KV sharing: Gemma 3n and Gemma 4's last
    ``num_kv_shared_layers`` layers read those of the last earlier layer of their type, which
    transformers names in ``config.kv_sharing_modes``). Only these layers have
    ``past_key_values.{i}.*`` inputs and ``present.{i}.*`` outputs."""
    n = len(layer_windows(config))
    modes = getattr(config, "kv_sharing_modes", None)
    if modes is None:  # configs that name only the count: the last layers share
        shared = int(getattr(config, "num_kv_shared_layers", 0) or 0)
        modes = [None] * (n - shared) + ["reuse"] * shared
    return [i for i in range(n) if modes[i] != "reuse"]


def _cache_layer_class() -> Any:
    from transformers.cache_utils import DynamicLayer

    class ExportLayer(DynamicLayer):
        """Past keys/values given as graph inputs; ``present`` is what the next step needs."""

        def __init__(
            self, keys: torch.Tensor, values: torch.Tensor, window: int | None, past_length: Any
        ) -> None:
            super().__init__()
            self.keys, self.values = keys, values
            self.device = keys.device
            self.is_initialized = True
            self.window = window
            self.is_sliding = window is not None
            self.past_length = past_length

        def update(
            self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
        ) -> tuple[torch.Tensor, torch.Tensor]:
            past_k: Any = self.keys
            past_v: Any = self.values
            k = torch.cat([past_k, key_states], dim=-2)
            v = torch.cat([past_v, value_states], dim=-2)
            if self.window is not None and self.window > 1:
                keep = self.window - 1
                self.keys, self.values = k[:, :, -keep:], v[:, :, -keep:]
            elif self.window is not None:  # a window of 1: the query alone, nothing to keep
                self.keys, self.values = k[:, :, :0], v[:, :, :0]
            else:
                self.keys, self.values = k, v
            return k, v

        def get_seq_length(self) -> Any:
            return self.past_length

        def get_mask_sizes(self, query_length: int) -> tuple[Any, Any]:
            keys: Any = self.keys
            kept = keys.shape[-2]
            return kept + query_length, self.past_length - kept

    return ExportLayer


def _make_cache(
    pasts: list[tuple[torch.Tensor, torch.Tensor] | None],
    windows: list[int | None],
    past_length: Any,
) -> Any:
    """One cache layer per decoder layer; ``None`` in ``pasts``: a layer that reuses another's
    keys and values (KV sharing), which holds none (transformers' ``DummyLayer``)."""
    from transformers.cache_utils import Cache, DummyLayer

    cls = _cache_layer_class()
    layers = [
        DummyLayer() if kv is None else cls(kv[0], kv[1], w, past_length)
        for kv, w in zip(pasts, windows, strict=True)
    ]
    return Cache(layers=layers)


# ------------------------------------------------------------------------------ the wrapper
class _Wrapper(nn.Module):
    """Positional inputs in Optimum's order -> (main output, present.0.key, present.0.value...)."""

    def __init__(
        self,
        model: nn.Module,
        input_names: list[str],
        main: str,
        with_past: bool,
        windows: list[int | None],
    ) -> None:
        super().__init__()
        self.model = model
        self.input_names = input_names
        self.main = main
        self.with_past = with_past
        self.windows = windows

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        named = dict(zip(self.input_names, args, strict=True))
        kwargs: dict[str, Any] = {
            k: named[k]
            for k in (
                "input_ids",
                "attention_mask",
                "token_type_ids",
                "position_ids",
                "global_attention_mask",
            )
            if k in named
        }
        cache = None
        if self.with_past:
            n = len(self.windows)
            pasts = [
                (named[f"past_key_values.{i}.key"], named[f"past_key_values.{i}.value"])
                if f"past_key_values.{i}.key" in named
                else None  # a layer that reuses another's keys and values
                for i in range(n)
            ]
            past_length = named["attention_mask"].shape[1] - named["input_ids"].shape[1]
            cache = _make_cache(pasts, self.windows, past_length)
            kwargs["cache"] = cache
            kwargs["use_cache"] = True
        elif "use_cache" in inspect.signature(self.model.forward).parameters:
            kwargs["use_cache"] = False
        multiple = _pad_multiple(self.model.config) if cache is None else 0
        length = kwargs["input_ids"].shape[1]
        if multiple > 1:
            # Longformer and BigBird pad to a multiple of their window/block inside forward
            # behind a Python branch that torch.export would freeze at the example's length;
            # padding here first (as they do: pad token, mask 0) keeps every length exact
            pad = (-length) % multiple
            pad_id = getattr(self.model.config, "pad_token_id", None) or 0
            for k in list(kwargs):
                if k in ("input_ids", "attention_mask", "token_type_ids", "global_attention_mask"):
                    value = pad_id if k == "input_ids" else 0
                    kwargs[k] = nn.functional.pad(kwargs[k], (0, pad), value=value)
        out = self.model(**kwargs, return_dict=True)
        main = out[self.main]
        if multiple > 1:
            main = main[:, :length]
        if cache is None:
            return (main,)
        flat: list[torch.Tensor] = []
        for layer in cache.layers:
            if layer.keys is not None:  # DummyLayer: KV sharing, no cache of its own
                flat += [layer.keys, layer.values]
        return (main, *flat)


def _pad_multiple(config: Any) -> int:
    mt = getattr(config, "model_type", "")
    if mt == "longformer":
        w = config.attention_window
        return int(max(w) if isinstance(w, (list, tuple)) else w)
    if mt == "big_bird" and getattr(config, "attention_type", "") == "block_sparse":
        return int(config.block_size)
    return 0


def _load(model_dir_or_id: str, task: str, dtype: torch.dtype, attn: str) -> nn.Module:
    import transformers

    cls = getattr(transformers, TASKS[task])
    kw: dict[str, Any] = {}
    if attn != "eager":
        cfg = transformers.AutoConfig.from_pretrained(model_dir_or_id)
        experts = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
        if any(isinstance(getattr(cfg, a, None), int) and getattr(cfg, a) > 0 for a in experts):
            # mixture-of-experts blocks: the default implementation loops over the experts a
            # token picked (data-dependent control flow torch.export cannot trace);
            # "batched_mm" computes the same with gathers and batched products (the config names
            # its expert count in one of these: Qwen2-MoE has num_experts only, and its default
            # grouped_mm has no ONNX translation)
            kw["experts_implementation"] = "batched_mm"
    model = cls.from_pretrained(model_dir_or_id, attn_implementation="eager", dtype=dtype, **kw)
    return model.eval()


def _input_names(model: nn.Module, task: str) -> list[str]:
    params = inspect.signature(model.forward).parameters
    cfg: Any = model.config
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in params and getattr(cfg, "type_vocab_size", None):
        names.append("token_type_ids")
    if task.startswith("text-generation") and "position_ids" in params:
        names.append("position_ids")
    if "global_attention_mask" in params:
        names.append("global_attention_mask")
    return names


def _head_dims(model: nn.Module) -> tuple[int, int, int]:
    cfg: Any = model.config
    if cfg.model_type == "gpt_neo":
        return cfg.num_layers, cfg.num_heads, cfg.hidden_size // cfg.num_heads
    hq = cfg.num_attention_heads
    hkv = getattr(cfg, "num_key_value_heads", None) or hq
    d = getattr(cfg, "head_dim", None) or cfg.hidden_size // hq
    return cfg.num_hidden_layers, hkv, d


def _config_kv_dims(model: nn.Module) -> list[tuple[int, int]]:
    """Per decoder layer: (key/value heads, head dim) of its cache by the config. A config whose
    layers differ (Gemma 4: its full-attention layers have their own head dim) names those
    attributes in ``per_layer_attributes`` and holds them in ``per_layer_config``; the others
    hold one pair for every layer."""
    cfg: Any = model.config
    varying = set(getattr(cfg, "per_layer_attributes", None) or ())
    if varying & {"head_dim", "num_key_value_heads"}:
        per = cfg.per_layer_config
        return [(int(per[i].num_key_value_heads), int(per[i].head_dim)) for i in range(len(per))]
    n, hkv, d = _head_dims(model)
    return [(hkv, d)] * n


# model -> its cache's per-layer shapes (probing runs the model, so once per model)
_KV_SHAPES: weakref.WeakKeyDictionary[nn.Module, list[tuple[tuple[int, int], tuple[int, int]]]]
_KV_SHAPES = weakref.WeakKeyDictionary()


def _kv_shapes(model: nn.Module) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Per decoder layer: ((heads, dim) of its cached keys, (heads, dim) of its cached values).

    Read from the cache the model itself fills in one forward of two tokens: what a layer caches
    is not always what the config's head counts say (DeepSeek-V3 caches its compressed latent
    and its rotary key part, one head each, of different widths; GPT-2 has no
    ``num_key_value_heads``). Falls back to the config (:func:`_config_kv_dims`) when the model
    cannot be run that way (the probe's failure then surfaces in the export itself).
    """
    if model in _KV_SHAPES:
        return _KV_SHAPES[model]
    n = len(layer_windows(model.config))
    shapes = [(dims, dims) for dims in _config_kv_dims(model)]
    try:
        from transformers.cache_utils import DynamicCache

        cfg: Any = model.config
        cache = DynamicCache(config=cfg)
        ids = torch.full((1, 2), min(5, int(cfg.vocab_size) - 1), dtype=torch.int64)
        params = inspect.signature(model.forward).parameters
        cache_arg = "cache" if "cache" in params else "past_key_values"
        with torch.no_grad():
            model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                use_cache=True,
                **{cache_arg: cache},
            )
        layers = list(getattr(cache, "layers", None) or [])
        if len(layers) == n:
            # layers that reuse another's keys and values (DummyLayer) hold none: the config's
            shapes = [
                ((int(k.shape[1]), int(k.shape[3])), (int(v.shape[1]), int(v.shape[3])))
                if k is not None and v is not None
                else shapes[i]
                for i, (k, v) in enumerate((layer.keys, layer.values) for layer in layers)
            ]
    except Exception:  # noqa: BLE001 - any failure keeps the config's dims
        pass
    _KV_SHAPES[model] = shapes
    return shapes


def example_inputs(
    model: nn.Module,
    names: list[str],
    batch: int,
    length: int,
    past: int = 0,
    pad: str | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> list[torch.Tensor]:
    """Inputs in ``names`` order: random ids, a mask padded on ``pad`` ("left"/"right") for
    batch 1 (a quarter of the tokens), HF generate's ``position_ids``, random past keys/values."""
    cfg: Any = model.config
    g = torch.Generator().manual_seed(seed)
    vocab = int(cfg.vocab_size)
    total = past + length
    mask = torch.ones(batch, total, dtype=torch.int64)
    if pad and batch > 1:
        n = max(1, total // 4)
        if pad == "left":
            mask[1, :n] = 0
        else:
            mask[1, total - n :] = 0
    ids = torch.randint(5, vocab, (batch, length), generator=g)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, past:]
    out: list[torch.Tensor] = []
    windows = layer_windows(cfg)
    dims = _kv_shapes(model) if any(n.startswith("past_key_values.") for n in names) else []
    for name in names:
        if name == "input_ids":
            out.append(ids)
        elif name == "attention_mask":
            out.append(mask)
        elif name == "token_type_ids":
            out.append(torch.zeros(batch, length, dtype=torch.int64))
        elif name == "position_ids":
            out.append(pos)
        elif name == "global_attention_mask":
            gm = torch.zeros(batch, length, dtype=torch.int64)
            gm[:, 0] = 1
            gm[0, min(3, length - 1)] = 1
            out.append(gm)
        elif name.startswith("past_key_values."):
            i = int(name.split(".")[1])
            w = windows[i]
            n = past if w is None else min(past, w - 1)
            hkv, d = dims[i][0 if name.endswith(".key") else 1]
            out.append(torch.randn(batch, hkv, n, d, generator=g).to(dtype))
        else:  # pragma: no cover - names come from _input_names
            raise AssertionError(name)
    return out


def _rename_dims(proto: onnx.ModelProto, names: list[str], out_names: list[str]) -> None:
    """Optimum's dim names on the graph inputs (and the batch axis of every output)."""

    def setdim(vi: Any, axis: int, name: str) -> None:
        dims = vi.type.tensor_type.shape.dim
        if axis < len(dims) and not dims[axis].HasField("dim_value"):
            dims[axis].dim_param = name

    seq_inputs = {"input_ids", "token_type_ids", "position_ids", "global_attention_mask"}
    for vi in proto.graph.input:
        setdim(vi, 0, "batch_size")
        if vi.name in seq_inputs:
            setdim(vi, 1, "sequence_length")
        elif vi.name == "attention_mask":
            with_past = any(n.startswith("past_key_values.") for n in names)
            setdim(
                vi, 1, "past_sequence_length + sequence_length" if with_past else "sequence_length"
            )
        elif vi.name.startswith("past_key_values."):
            setdim(vi, 2, "past_sequence_length")
    for vi in proto.graph.output:
        setdim(vi, 0, "batch_size")
        if vi.name in ("logits", "last_hidden_state"):
            setdim(vi, 1, "sequence_length")


def _spattn_cause(e: BaseException) -> BaseException | None:
    """The ValueError or NotImplementedError that spattn's own code raised behind ``e`` (the
    exporter reports any error inside the traced model as its own TorchExportError)."""
    import traceback

    seen: set[int] = set()
    c: BaseException | None = e
    while c is not None and id(c) not in seen:
        seen.add(id(c))
        if isinstance(c, (ValueError, NotImplementedError)):
            frames = traceback.extract_tb(c.__traceback__)
            if any(f"{os.sep}spattn{os.sep}" in f.filename for f in frames):
                return c
        c = c.__cause__ or c.__context__
    return None


def _complex_cause(e: BaseException) -> str | None:
    """The first line of an error behind ``e`` about complex-valued tensors, which torch.onnx
    cannot translate (rotary embeddings computed with ``torch.view_as_complex``)."""
    marks = ("complex-valued", "complex64", "complex128", "complexfloat", "view_as_complex")
    seen: set[int] = set()
    c: BaseException | None = e
    while c is not None and id(c) not in seen:
        seen.add(id(c))
        lines = [ln.strip() for ln in str(c).splitlines() if any(m in ln.lower() for m in marks)]
        if lines:
            return lines[0]
        c = c.__cause__ or c.__context__
    return None


def _lean_graph(proto: onnx.ModelProto, windows: list[int | None]) -> dict[str, int]:
    """Two rewrites of the exported graph that leave its results as they were and let ONNX
    Runtime merge or fuse what the tracer wrote once per layer; returns how many of each.

    - Every layer reads its padding range (``key_starts``/``key_lengths``) from the attention
      mask and its own past length, a chain of about 25 nodes. Layers with the same window keep
      caches of the same length (the rule of ``_make_cache``), so their ``Shape`` nodes read the
      first such layer's past instead: the chains become identical and the session's common
      subexpression elimination keeps one per window.
      Only where every layer's past has the same static head count and head dims.
    - ``x * Reciprocal(Sqrt(v))`` (``torch.rsqrt`` of RMSNorm) becomes ``x / Sqrt(v)``, the form
      ONNX Runtime fuses into ``SimplifiedLayerNormalization`` on its CPU and CUDA providers.

    Both together: a Mistral-like model's 333 nodes after ONNX Runtime's optimizations become 223
    (benchmarks/hf_graph_ab.py).
    """
    g = proto.graph
    counts = {"shared_past_shapes": 0, "rsqrt_to_div": 0}
    past = {vi.name: vi for vi in g.input if vi.name.startswith("past_key_values.")}

    def static(vi: Any) -> tuple[int, int]:
        d = vi.type.tensor_type.shape.dim
        return (d[1].dim_value, d[3].dim_value) if len(d) == 4 else (0, 0)

    kinds: dict[str, set[tuple[int, int]]] = {}
    for name, vi in past.items():
        kinds.setdefault(name.rsplit(".", 1)[1], set()).add(static(vi))
    same = all(len(d) == 1 and all(next(iter(d))) for d in kinds.values())
    if past and same and len(windows) > 1:
        first: dict[Any, int] = {}
        for i, w in enumerate(windows):
            if f"past_key_values.{i}.key" in past:  # not a layer that reuses another's cache
                first.setdefault(w, i)
        for n in g.node:
            if n.op_type != "Shape" or n.input[0] not in past:
                continue
            _, layer, kind = n.input[0].split(".")
            if int(layer) >= len(windows):
                continue
            target = f"past_key_values.{first[windows[int(layer)]]}.{kind}"
            if target != n.input[0] and target in past:
                n.input[0] = target
                counts["shared_past_shapes"] += 1
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}
    dropped = set()
    for n in g.node:
        src = producer.get(n.input[0]) if n.op_type == "Reciprocal" else None
        users = consumers.get(n.output[0], []) if src is not None else []
        if src is None or src.op_type != "Sqrt" or n.output[0] in outputs or not users:
            continue
        if not all(u.op_type == "Mul" and list(u.input).count(n.output[0]) == 1 for u in users):
            continue
        for u in users:
            other = u.input[1] if u.input[0] == n.output[0] else u.input[0]
            u.op_type = "Div"
            del u.input[:]
            u.input.extend([other, src.output[0]])
        dropped.add(id(n))
        counts["rsqrt_to_div"] += 1
    if dropped:
        keep = [n for n in g.node if id(n) not in dropped]
        del g.node[:]
        g.node.extend(keep)
    return counts


def _copy_side_files(src: str, out: Path, model: Any) -> list[str]:
    model.config.save_pretrained(out)
    copied = ["config.json"]
    gen = getattr(model, "generation_config", None)
    if src and os.path.isdir(src):
        for f in _TOKENIZER_FILES:
            if os.path.isfile(os.path.join(src, f)):
                shutil.copy(os.path.join(src, f), out / f)
                copied.append(f)
    elif gen is not None:
        try:
            gen.save_pretrained(out)
            copied.append("generation_config.json")
        except Exception:  # noqa: BLE001 - a generation config is optional
            pass
    if src and not os.path.isdir(src):
        try:
            from transformers import AutoTokenizer

            AutoTokenizer.from_pretrained(src).save_pretrained(out)
            copied.append("tokenizer")
        except Exception:  # noqa: BLE001 - a model without a tokenizer exports fine
            pass
    return copied


def _valid_positions(names: list[str], inputs: list[torch.Tensor], past: int) -> torch.Tensor:
    mask = inputs[names.index("attention_mask")]
    return mask[:, past:].bool()


def export_hf(
    model_dir_or_id: str | os.PathLike[str],
    task: str = "feature-extraction",
    output_dir: str | os.PathLike[str] = "onnx",
    dtype: str = "float32",
    validate: bool = True,
    opset: int = 18,
    atol: float | None = None,
    rtol: float | None = None,
    intra_op_threads: int | None = None,
) -> HFExportReport:
    """Export a Hugging Face model to ``output_dir/model.onnx`` with spattn attention.

    Parameters
    ----------
    model_dir_or_id : str or os.PathLike
        A ``save_pretrained`` folder (works offline) or a hub id.
    task : str
        One of :data:`TASKS`.
    output_dir : str or os.PathLike
        Receives ``model.onnx``, ``config.json`` and the tokenizer files if present.
    dtype : {"float32", "float16", "bfloat16"}
        The graph's floating-point type.
    validate : bool
        Compare ONNX Runtime (our library) with the model under ``attn_implementation="eager"``
        at two batch/length shapes, one padded, at the valid positions.

    Returns
    -------
    HFExportReport

    Examples
    --------
    >>> report = export_hf("./tiny_mistral", task="text-generation-with-past",
    ...                    output_dir="out")  # doctest: +SKIP
    >>> report.passed  # doctest: +SKIP
    True
    """
    t0 = time.time()
    if task not in TASKS:
        raise ValueError(f"task: expected one of {sorted(TASKS)}, got {task!r}")
    dname = tolerances.dtype_name(dtype)
    tdtype = _DTYPES[dname]
    src = os.fspath(model_dir_or_id)
    model = _load(src, task, torch.float32, "spattn")
    model = convert_hf(model).to(tdtype)
    with_past = task == "text-generation-with-past"
    if with_past:
        # The exported cache carries softmax attention's keys and values only; other layers'
        # state (LFM2's convolutions, Qwen3-Next's linear attention, state-space layers) would
        # be dropped between steps.
        types = getattr(model.config, "layer_types", None) or []
        kv_only = {"full_attention", "sliding_attention", "chunked_attention"}
        other = sorted({str(t) for t in types} - kv_only)
        if other:
            raise NotImplementedError(
                f"task {task!r}: this model's layer types {other} keep a state of their own "
                "between decoding steps, which the exported cache (attention keys and values "
                "only) does not carry; export it with task 'text-generation' (no cache)"
            )
    names = _input_names(model, task)
    windows = layer_windows(model.config) if task.startswith("text-generation") else []
    kv_layers = cache_layers(model.config) if with_past else []
    if with_past:
        names += [f"past_key_values.{i}.{kv}" for i in kv_layers for kv in ("key", "value")]
    main = "logits" if task != "feature-extraction" else "last_hidden_state"
    out_names = [main]
    if with_past:
        out_names += [f"present.{i}.{kv}" for i in kv_layers for kv in ("key", "value")]
    wrapper = _Wrapper(model, names, main, with_past, windows).eval()

    past = 5 if with_past else 0
    cfg: Any = model.config
    mt = str(cfg.model_type)
    length = 12 if mt != "big_bird" else _bigbird_example_length(model.config)
    args = example_inputs(model, names, 2, length, past, pad=None, dtype=tdtype)
    dyn = torch.export.Dim.DYNAMIC
    shapes: list[Any] = []
    for n in names:
        if n.startswith("past_key_values."):
            shapes.append({0: dyn, 2: dyn})
        else:
            shapes.append({0: dyn, 1: dyn})
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.onnx"
    from .. import op as _op

    with torch.no_grad():
        try:
            program = torch.onnx.export(
                wrapper,
                tuple(args),
                dynamo=True,
                input_names=names,
                output_names=out_names,
                dynamic_shapes=(tuple(shapes),),  # forward(*args): one varargs entry
                opset_version=opset,
                custom_translation_table=_op.custom_translation_table(),
                verbose=False,
            )
        except Exception as e:
            ours = _spattn_cause(e)
            if ours is None:
                complex_ = _complex_cause(e)
                if complex_ is not None:
                    raise NotImplementedError(
                        "torch.onnx cannot translate this model's complex-valued tensors (ONNX "
                        "has no complex type; rotary embeddings computed with "
                        "torch.view_as_complex, as in DeepSeek-V2 and Llama 4, are the usual "
                        f"source): {complex_}"
                    ) from e
                raise
            # the exporter wraps it in its own "failed to export" error: say ours
            raise type(ours)(str(ours)) from e
    assert program is not None
    proto = program.model_proto
    proto.ir_version = min(proto.ir_version, 10)
    _rename_dims(proto, names, out_names)
    _lean_graph(proto, windows if with_past else [])
    onnx.save(proto, str(path), save_as_external_data=proto.ByteSize() > 1_900_000_000)
    check_model(str(path))
    nodes = spattn_nodes(proto)
    from ..modelio import constant_tensor
    from ..nodes import has_input, node_label

    patterns = []
    for n in nodes:
        attrs = {
            k: (v.decode() if isinstance(v, bytes) else v) for k, v in node_attributes(n).items()
        }
        inputs = list(n.input)
        layout = constant_tensor(proto, inputs[4]) if has_input(inputs, "block_indices") else None
        patterns.append(node_label(attrs, inputs, layout, with_attributes=True))
    _copy_side_files(src, out, model)
    report = HFExportReport(
        path=str(path),
        task=task,
        model_type=mt,
        dtype=dname,
        num_spattn_nodes=len(nodes),
        input_names=[i.name for i in proto.graph.input],
        output_names=[o.name for o in proto.graph.output],
        patterns=patterns,
    )
    if not nodes:
        raise RuntimeError(
            f"export_hf: the exported graph has no spattn::SparseAttention node ({path})"
        )
    if validate:
        _validate(
            report, src, task, names, out_names, tdtype, atol, rtol, intra_op_threads, past, length
        )
    report.seconds = time.time() - t0
    return report


def _bigbird_example_length(cfg: Any) -> int:
    # above HF's switch to dense attention ((5 + 2 r) * block_size), a multiple of the block
    bs, r = int(cfg.block_size), int(cfg.num_random_blocks)
    return (5 + 2 * r) * bs + 2 * bs


def _validate(
    report: HFExportReport,
    src: str,
    task: str,
    names: list[str],
    out_names: list[str],
    tdtype: torch.dtype,
    atol: float | None,
    rtol: float | None,
    threads: int | None,
    past: int,
    length: int,
) -> None:
    from .. import runtime

    eager = _load(src, task, torch.float32, "eager").to(tdtype)
    windows = layer_windows(eager.config) if task.startswith("text-generation") else []
    # GPT-Neo builds one mask for all its layers, sized for a full cache: its eager reference
    # keeps full caches (the older keys lie outside the local layers' windows and change nothing)
    ref_windows: list[int | None] = (
        [None] * len(windows) if report.model_type == "gpt_neo" else windows
    )
    ref = _Wrapper(eager, names, out_names[0], task == "text-generation-with-past", ref_windows)
    d_atol, d_rtol = tolerances.tolerance(report.dtype)
    # whole-model tolerances: the errors of every layer accumulate
    report.atol = atol if atol is not None else d_atol * 10
    report.rtol = rtol if rtol is not None else d_rtol * 10
    proto, _ = runtime._with_float_outputs(onnx.load(report.path))
    try:
        session = runtime.ort_session(proto, intra_op_threads=threads)
    except Exception as e:  # onnxruntime raises its own exception types
        if report.dtype == "bfloat16" and "NOT_IMPLEMENTED" in str(e):
            report.notes.append(f"not validated: ONNX Runtime cannot run this bfloat16 model: {e}")
            return
        raise
    pad = "left" if task.startswith("text-generation") else "right"
    longer = length + 7
    cases = [(1, length, past, None), (3, longer, past + 3 if past else 0, pad)]
    passed = True
    for case, (b, n, p, side) in enumerate(cases):
        args = example_inputs(eager, names, b, n, p, pad=side, seed=case + 1, dtype=tdtype)
        with torch.no_grad():
            ref_args = list(args)
            # only the layers with a cache of their own have past inputs and present outputs
            trimmed = [
                i
                for i, (w, rw) in enumerate(zip(windows, ref_windows, strict=True))
                if w != rw and f"past_key_values.{i}.key" in names
            ]
            for i in trimmed:  # left-pad the trimmed past to the full past length
                for kv in ("key", "value"):
                    j = names.index(f"past_key_values.{i}.{kv}")
                    t = args[j]
                    shape = (t.shape[0], t.shape[1], p - t.shape[2], t.shape[3])
                    ref_args[j] = torch.cat([t.new_zeros(shape), t], 2)
            expected = list(ref(*ref_args))
            for i in trimmed:
                w = windows[i]
                if w is None:
                    continue
                for kv in ("key", "value"):
                    j = out_names.index(f"present.{i}.{kv}")
                    expected[j] = expected[j][:, :, -(w - 1) :] if w > 1 else expected[j][:, :, :0]
        feeds = {k: runtime_feed(a) for k, a in zip(names, args, strict=True)}
        got = runtime.run_ort(None, feeds, session=session)
        valid = _valid_positions(names, args, p)
        label = (
            f"batch {b}, length {n}"
            + (f", past {p}" if p else "")
            + (f", {side}-padded" if side else "")
        )
        for k, name in enumerate(out_names):
            want = expected[k].detach().float().numpy()
            g = got[name]
            if g.shape != want.shape:
                passed = False
                report.notes.append(f"{name}: shape {g.shape} != eager {want.shape} ({label})")
                continue
            if k == 0 and want.ndim >= 2 and want.shape[:2] == tuple(valid.shape):
                sel = valid.numpy()
                want, g = want[sel], g[sel]
            elif k > 0:
                # cache rows of padded positions are never read by valid tokens
                kv_valid = _kv_valid(args[names.index("attention_mask")], want.shape[2])
                want = np.where(kv_valid[:, None, :, None], want, 0.0)
                g = np.where(kv_valid[:, None, :, None], g, 0.0)
            err = float(np.max(np.abs(g - want))) if want.size else 0.0
            key = f"{name} ({label})"
            if k == 0 or err > 0:
                report.errors[key] = err
            if np.any(np.abs(g - want) > report.atol + report.rtol * np.abs(want)):
                passed = False
    report.passed = passed


def _kv_valid(mask: torch.Tensor, n: int) -> np.ndarray:
    return mask[:, mask.shape[1] - n :].bool().numpy()


def runtime_feed(a: torch.Tensor) -> Any:
    a = a.detach().cpu()
    if a.dtype == torch.bfloat16:
        return ("bfloat16", a.view(torch.int16).numpy().view(np.uint16))
    return a.numpy()


def write_report(report: HFExportReport, path: str | os.PathLike[str]) -> None:
    Path(path).write_text(json.dumps(report.__dict__, indent=2))
