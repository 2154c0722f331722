"""A package's names imported when first used (PEP 562), not with the package: a package whose modules load torch
and the worlds (3 s) still gives its light names (a config reader, an error class) at once, so a command answers
``--help`` or refuses a mistake before those load."""

from __future__ import annotations

import importlib
import sys


def lazy_exports(package: str, exports: dict[str, str]):
    """``(__getattr__, __dir__)`` for the module ``package``: each name of ``exports`` comes from its module (relative
    to the package, ``.model``), imported at the name's first use."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name], package), name)

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
