"""Package attributes resolved on first use (PEP 562), so importing a package stays light.

A package that re-exports names from heavy submodules declares them once and gets its
module-level `__getattr__` from here:

>>> __getattr__ = lazy_getattr(__name__, {"LiveViewSink": "edge.serve.sink"})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` that imports `exports[name]` (a module path) on first use.

    Unknown names raise AttributeError, as Python expects of a module `__getattr__`.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__
