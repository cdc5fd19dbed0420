"""Per-protocol dissectors, registered by port, ethertype or catalog protocol.

Every module in this package is imported once, and each class decorated with
@register joins the registry; adding a protocol means adding one module.
"""

from __future__ import annotations

import importlib
import pkgutil

from tapwatch.dissect.base import Dissector, Evidence, Packet

_REGISTRY: list[type[Dissector]] = []
_loaded = False


def register(cls: type[Dissector]) -> type[Dissector]:
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} needs a `name`")
    _REGISTRY.append(cls)
    return cls


def dissectors() -> list[Dissector]:
    """One instance of every registered dissector (importing all modules the first time)."""
    global _loaded
    if not _loaded:
        for mod in pkgutil.iter_modules(__path__):
            if mod.name not in ("base", "stage"):
                importlib.import_module(f"{__name__}.{mod.name}")
        _loaded = True
    return [cls() for cls in _REGISTRY]


__all__ = ["Dissector", "Evidence", "Packet", "dissectors", "register"]
