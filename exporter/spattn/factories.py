"""Model factories: a built-in sample, ``package.module:function`` or ``file.py:function``
returning ``(torch module, example inputs)``, called with ``KEY=VALUE`` parameters.

Examples
--------
>>> parse_params(["seq_len=64", "name=abc"])
{'seq_len': 64, 'name': 'abc'}
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import UserError

__all__ = [
    "parse_params",
    "resolve_factory",
    "factory_parameters",
    "load_factory",
    "model_patterns",
    "torch_argument_names",
    "example_tensors",
]


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    """``["seq_len=64", "name=abc"]`` -> ``{"seq_len": 64, "name": "abc"}`` (Python literals).

    Raises
    ------
    ValueError
        An item without ``=``.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"{item!r}: expected KEY=VALUE (e.g. seq_len=256)")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def resolve_factory(source: str) -> tuple[Any, str]:
    """The callable named by ``source``: a built-in sample, ``pkg.mod:function`` or
    ``file.py:function``; returns ``(callable, display name)``.

    Raises
    ------
    UserError
        When the module or function cannot be found; ``LookupError`` for an unknown sample name.
    """
    if ":" not in source:
        from .models import SAMPLES

        if source not in SAMPLES:
            raise LookupError(
                f"{source!r} is neither a built-in sample ({', '.join(SAMPLES)}) "
                "nor a factory package.module:function"
            )
        return SAMPLES[source], source
    mod_name, _, fn_name = source.rpartition(":")
    if mod_name.endswith(".py"):
        file = Path(mod_name)
        if not file.is_file():
            raise UserError(f"{mod_name}: no such file (from the factory {source!r})")
        spec = importlib.util.spec_from_file_location(file.stem, file)
        if spec is None or spec.loader is None:
            raise UserError(f"{mod_name}: not a Python source file (from the factory {source!r})")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            raise UserError(f"{mod_name}: importing it failed with {type(e).__name__}: {e}") from e
    else:
        try:
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            file_form = mod_name.replace(".", "/") + ".py:" + fn_name
            raise UserError(
                f"cannot import {mod_name!r} ({e}); install its package, or name the "
                f"factory by its file: path/to/{file_form}"
            ) from e
        except Exception as e:
            raise UserError(f"importing {mod_name!r} failed with {type(e).__name__}: {e}") from e
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise UserError(
            f"{mod_name!r} has no function {fn_name!r}; the factory must be "
            "package.module:function returning (model, example_inputs)"
        )
    return fn, source


def factory_parameters(fn: Any) -> list[str] | None:
    """Keyword parameters a factory accepts (None when it takes ``**kwargs``)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return [
        n for n, p in sig.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def load_factory(source: str, params: Mapping[str, Any] | None = None) -> tuple[Any, Any]:
    """Call a model factory; returns ``(torch module in eval mode, example inputs)``: a tuple of
    positional inputs, or a dict of keyword inputs when the factory returns one.

    Raises
    ------
    UserError
        Import failure, a factory error or a return value that is not ``(module, inputs)``.
    """
    import torch

    fn, name = resolve_factory(source)
    try:
        result = fn(**dict(params or {}))
    except (TypeError, ValueError) as e:
        raise UserError(f"the factory {name} failed: {e}; check the --param values") from e
    if (
        not isinstance(result, (tuple, list))
        or len(result) != 2
        or not isinstance(result[0], torch.nn.Module)
    ):
        raise UserError(
            f"the factory {name} must return (torch.nn.Module, example_inputs), got "
            f"{type(result).__name__}"
        )
    model, inputs = result
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    if isinstance(inputs, Mapping):  # keyword example inputs: model(**inputs)
        return model.eval(), dict(inputs)
    return model.eval(), tuple(inputs)


def torch_argument_names(model: Any, example: Any, specs: Sequence[Any]) -> list[str]:
    """The ``forward`` parameter that feeds each ONNX input (``specs``): by name where the graph
    kept the parameter names, else in order."""
    from .export import named_inputs

    params = [n for n, _ in named_inputs(model, example)[0]]
    names = [s.name for s in specs]
    if all(n in params for n in names):
        return names
    return params[: len(names)]


def example_tensors(model: Any, example: Any, specs: Sequence[Any]) -> dict[str, Any]:
    """The example's tensors keyed by the ONNX input each one feeds."""
    from .export import named_inputs

    named = named_inputs(model, example)[0]
    by_param = dict(named)
    if all(s.name in by_param for s in specs):
        return {s.name: by_param[s.name] for s in specs}
    return {s.name: t for s, (_, t) in zip(specs, named, strict=False)}


def model_patterns(model: Any) -> list[Any]:
    """The :class:`spattn.Pattern` of each sparse-attention module of a torch model, in module
    order (modules with a ``pattern`` attribute: :class:`spattn.SparseMultiheadAttention` and
    the converters' attention modules)."""
    from .patterns import Pattern

    return [m.pattern for m in model.modules() if isinstance(getattr(m, "pattern", None), Pattern)]
