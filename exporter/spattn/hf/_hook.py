"""A post-import hook: call ``module.function()`` right after another module is imported.

``import spattn`` must stay fast and torch-free, yet ``attn_implementation="spattn"`` must be
known to transformers as soon as a model is built. The hook registers when transformers' own
modules load (or at once when they already have).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

__all__ = ["when_imported"]

_pending: dict[str, list[tuple[str, str]]] = {}


def _run(callbacks: list[tuple[str, str]]) -> None:
    for module, function in callbacks:
        getattr(importlib.import_module(module), function)()


class _Loader:
    """Delegates to the real loader, then runs the callbacks (duck-typed: importlib.abc is
    slow to import)."""

    def __init__(self, loader: Any, name: str) -> None:
        self.loader, self.name = loader, name

    def create_module(self, spec: Any) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        _run(_pending.pop(self.name, []))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


class _Finder:
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in _pending:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader, fullname)  # type: ignore[assignment]
                return spec
        return None


_finder = _Finder()


def when_imported(target: str, module: str, function: str) -> None:
    """Call ``module.function()`` once ``target`` is imported (now, if it already is)."""
    if target in sys.modules:
        _run([(module, function)])
        return
    _pending.setdefault(target, []).append((module, function))
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
