"""The ``spattn::SparseAttention`` nodes of an ONNX model: attributes checked against
docs/op-spec.md, pattern, density.

Examples
--------
>>> from spattn import modelio, nodes
>>> info = nodes.spattn_node_info(modelio.load_onnx("encoder.onnx"), length=4096)  # doctest: +SKIP
>>> info[0]["pattern"], info[0]["density"]  # doctest: +SKIP
('Longformer: sliding window ±128 + the first token global (window_left=128 ...)', 0.0634)
"""

from __future__ import annotations

from typing import Any

from .attributes import ATTRIBUTES, INPUTS, attribute, input_index
from .errors import UserError
from .modelio import constant_tensor

__all__ = ["check_attributes", "spattn_node_info", "pattern_differences"]

# Every attribute of the op, its type and its valid values: the one table (spattn.attributes).
_KNOWN_ATTRIBUTES = {a.name for a in ATTRIBUTES}


def check_attributes(node: Any) -> dict[str, Any]:
    """A SparseAttention node's attributes as Python values, checked against docs/op-spec.md.

    Raises
    ------
    UserError
        An unknown attribute, an attribute of the wrong type or out of range.
    """
    from onnx import AttributeProto, helper

    label = f"node {node.name!r}" if node.name else "a SparseAttention node"
    what = "fix the model (docs/op-spec.md, Attributes) or re-export it with `spattn export`"
    attrs: dict[str, Any] = {}
    for a in node.attribute:
        if a.name not in _KNOWN_ATTRIBUTES:
            raise UserError(
                f"{label}: unknown attribute {a.name!r}; SparseAttention version 1 "
                f"has {', '.join(sorted(_KNOWN_ATTRIBUTES))}; {what}"
            )
        expected = getattr(AttributeProto, attribute(a.name).onnx_type)
        if a.type != expected:
            raise UserError(
                f"{label}: {a.name}: expected an attribute of type "
                f"{AttributeProto.AttributeType.Name(expected)}, got "
                f"{AttributeProto.AttributeType.Name(a.type)}; {what}"
            )
        v = helper.get_attribute_value(a)
        attrs[a.name] = v.decode() if isinstance(v, bytes) else v
    for name, value in attrs.items():
        why = attribute(name).problem(value)
        if why is not None:
            raise UserError(f"{label}: {name}: expected {why}, got {value!r}; {what}")
    return attrs


def spattn_node_info(
    model: Any, length: int | None = None, require: bool = True, path: str = "the model"
) -> list[dict[str, Any]]:
    """One dict per ``spattn::SparseAttention`` node: name, attributes, pattern, density.

    Parameters
    ----------
    model : onnx.ModelProto
        The model.
    length : int, optional
        Sequence length (``Lq = Lk``) at which to count the density; None skips it.
    require : bool
        Raise :class:`UserError` when the model has no spattn node.
    path : str
        The model's name in messages.
    """
    from . import schema

    nodes = [
        n for n in model.graph.node if n.domain == schema.DOMAIN and n.op_type == schema.OP_TYPE
    ]
    others = [n for n in model.graph.node if n.domain == schema.DOMAIN and n not in nodes]
    if others:
        raise UserError(
            f"{path}: node {others[0].name!r} has op type {others[0].op_type!r} in "
            "domain spattn; the only spattn op is SparseAttention"
        )
    if require and not nodes:
        raise UserError(
            f"{path} has no spattn::SparseAttention node: export the model with "
            "`spattn export` (or spattn.export) so that its attention becomes "
            "SparseAttention; for other models use onnxruntime or trtexec directly"
        )
    info = []
    dims = _value_dims(model, [x for n in nodes for x in (n.input[0], n.input[2])])
    for k, n in enumerate(nodes):
        attrs = check_attributes(n)
        if len(n.input) < 3 or any(not x for x in n.input[:3]):
            raise UserError(
                f"node {n.name!r}: query, key and value inputs are required; re-export the model"
            )
        if len(n.input) > len(INPUTS):
            raise UserError(
                f"node {n.name!r}: input {len(INPUTS)}: reserved position, got {len(n.input)} "
                f"inputs; SparseAttention version 1 takes at most {len(INPUTS)} "
                f"({', '.join(i.name for i in INPUTS)})"
            )
        bi_name = n.input[4] if len(n.input) > 4 and n.input[4] else None
        entry: dict[str, Any] = {
            "index": k,
            "name": n.name or f"#{k}",
            "attributes": attrs,
            "inputs": list(n.input),
            "outputs": list(n.output),
            "key_lengths": len(n.input) > 3 and bool(n.input[3]),
            "block_indices": None,
            "head_dim": _last_dim(dims.get(n.input[0])),
            "head_dim_v": _last_dim(dims.get(n.input[2])),
        }
        layout = None
        if bi_name is not None:
            layout = constant_tensor(model, bi_name)
            entry["block_indices"] = (
                "constant " + str(list(layout.shape))
                if layout is not None
                else "computed at run time"
            )
        gm = has_input(n, "global_mask")
        entry["global_mask"] = gm
        entry["pattern"] = node_label(attrs, list(n.input), layout, with_attributes=True)
        entry["density"] = None
        if length is not None:
            entry["density"], entry["density_note"] = _density(attrs, layout, bi_name, length, gm)
        info.append(entry)
    return info


def _value_dims(model: Any, wanted: list[str]) -> dict[str, list[Any]]:
    """Dims of graph values (inputs, outputs, value_info); shape inference when some of
    ``wanted`` are not annotated."""
    from .schema import tensor_dims

    def collect(g: Any) -> dict[str, list[Any]]:
        out = {}
        for v in [*g.input, *g.value_info, *g.output]:
            d = tensor_dims(v.type)
            if d is not None:
                out[v.name] = d
        return out

    dims = collect(model.graph)
    if all(w in dims for w in wanted):
        return dims
    try:
        import onnx

        from . import schema

        schema.register()
        dims = {**collect(onnx.shape_inference.infer_shapes(model).graph), **dims}
    except Exception:  # a model shape inference cannot handle: dims stay unknown
        pass
    return dims


def _last_dim(dims: list[Any] | None) -> int | None:
    if not dims or not isinstance(dims[-1], int) or dims[-1] <= 0:
        return None
    return int(dims[-1])


def _pattern(attrs: dict[str, Any], layout: Any = None) -> Any:
    from .patterns import Pattern

    try:
        return Pattern.from_attributes(attrs, block_indices=layout)
    except ValueError as e:
        raise UserError(f"{e}; fix the attribute (docs/op-spec.md, Attributes)") from None


def has_input(node: Any, name: str) -> bool:
    """True when the node passes its optional input ``name`` (position present, name not empty)."""
    k = input_index(name)
    inputs = list(node.input) if not isinstance(node, list) else node
    return len(inputs) > k and bool(inputs[k])


def node_label(
    attrs: dict[str, Any], inputs: list[str], layout: Any = None, with_attributes: bool = False
) -> str:
    """A node's descriptive label (:meth:`spattn.Pattern.label`), read from its attributes and
    which optional inputs it passes (``global_mask``, a ``block_indices`` computed at run time);
    ``with_attributes``: followed by the attributes (:meth:`spattn.Pattern.describe`).

    Examples
    --------
    >>> node_label({"window_left": 4, "window_right": 4}, ["q", "k", "v", "", "", "gm"])
    'Longformer: sliding window ±4 + per-input global tokens (global_mask)'
    """
    gm = has_input(inputs, "global_mask")
    listed = has_input(inputs, "block_indices")
    run_time = listed and layout is None
    # A run-time layout is unknown here, but the pattern still needs one to name the component.
    p = _pattern(attrs, (lambda lq, lk: None) if run_time else layout)
    text = p.describe(global_mask=gm) if with_attributes else p.label(global_mask=gm)
    if run_time:
        text = text.replace("(block_indices)", "(block_indices, computed at run time)")
        text = text.replace("block_indices=callable", "block_indices=run time")
    return text


def _density(
    attrs: dict[str, Any], layout: Any, bi_name: str | None, length: int, global_mask: bool
) -> tuple[float | None, str]:
    if bi_name is not None and layout is None:
        return None, "block_indices computed at run time"
    p = _pattern(attrs, layout)
    if layout is not None:
        nqb = -(-length // p.block_size)
        if layout.ndim != 3 or layout.shape[1] != nqb:
            return None, (
                f"the constant layout has {layout.shape[1]} query blocks; it fits "
                f"Lq = {layout.shape[1] * p.block_size}, not {length}"
            )
    from .blocksparse import count_allowed_bands

    if count_allowed_bands(p, 1, 1) is None:  # stride, random or listed blocks: counted pairs
        work = count_work(p, layout, length)
        if work > DENSITY_MAX_WORK:
            return None, (
                f"not counted at L={length}: about {work:.2g} (query, key) pairs to visit, "
                f"over {DENSITY_MAX_WORK:.2g}; give a smaller --length"
            )
    if global_mask:  # present with no token marked: each marked token adds its row and column
        note = "global_mask input: no token marked global"
        if "window" not in p.components(global_mask=True) and p.components() == ["window"]:
            return 0.0, note  # the input's presence switches the band off: nothing is left
        return float(p.density(length)), note
    return float(p.density(length)), ""


# Patterns with stride, random or listed blocks are counted pair by pair: past this many visited
# pairs (a few seconds) the density is left out rather than computed for minutes. Band, causal
# and global patterns have a closed form and are counted at any length.
DENSITY_MAX_WORK = 1 << 25


def count_work(p: Any, layout: Any, length: int) -> int:
    """An upper bound of the (query, key) pairs the exact count visits."""
    band = length
    if p.local_on and p.window_left >= 0 and p.window_right >= 0:
        band = p.window_left + p.window_right + 1
    elif not p.local_on:
        band = 0
    listed = 0 if layout is None else int(layout.shape[-1])
    per_row = band + p.num_global + (length // p.stride if p.stride else 0)
    per_row += (p.num_random + listed) * p.block_size
    return length * min(length, per_row) + min(p.num_global, length) * length


def pattern_differences(nodes: list[dict[str, Any]], patterns: list[Any]) -> list[str]:
    """What differs between the attributes of a model's spattn nodes (:func:`spattn_node_info`)
    and the patterns of the PyTorch model meant to match it; empty when they agree.

    Nodes and patterns are matched in order; the same attributes in another order also agree.

    Examples
    --------
    >>> from spattn import Pattern
    >>> node = {"name": "attn0", "attributes": Pattern.sliding_window(8).attributes()}
    >>> pattern_differences([node], [Pattern.sliding_window(4)])
    ['node attn0: window_left 8 (model) != 4 (factory), window_right 8 (model) != 4 (factory)']
    """
    from .patterns import Pattern

    got = [Pattern.from_attributes(n["attributes"]).attributes() for n in nodes]
    want = [p.attributes() for p in patterns]
    if len(got) != len(want):
        return [
            f"the model has {len(got)} spattn node(s) but the factory's model has "
            f"{len(want)} sparse-attention module(s)"
        ]

    def key(a: dict[str, Any]) -> list[tuple[str, Any]]:
        return sorted(a.items())

    if sorted(map(key, got)) == sorted(map(key, want)):
        return []
    diffs = []
    for n, a, b in zip(nodes, got, want, strict=True):
        d = [
            f"{k} {a.get(k, 'unset')} (model) != {b.get(k, 'unset')} (factory)"
            for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)
        ]
        if d:
            diffs.append(f"node {n['name']}: " + ", ".join(d))
    return diffs
