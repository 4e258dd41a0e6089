"""Lazy package exports: `from hiera_hf import HieraModel` imports `modeling_hiera` (and torch) on first use only,
so that `hiera-hf --help` and code that needs one corner of the package do not pay for all of it."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """`(__getattr__, __dir__)` for `package` whose public `exports` map each name to the module (relative to
    `package`, e.g. `".modeling_hiera"`) that defines it; a name is imported on first access and then cached."""

    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        setattr(importlib.import_module(package), name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(importlib.import_module(package)), *exports})

    return __getattr__, __dir__
