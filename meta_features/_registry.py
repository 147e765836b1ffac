"""The meta-feature registry: named groups of extractor functions.

Adding a meta-feature is one decorated function ``@register("group")`` that takes the
:class:`~meta_features._prepare.Prepared` view and returns ``{name: float}``; names are
prefixed ``group.`` by :mod:`meta_features._extract`, which runs them. Extractors return
every name they own, NaN when not computable, so every dataset gets the same columns and the
meta-model sees missing, never invented. This module imports no extractor module, so the
extractor modules can import ``register`` from it.
"""

from __future__ import annotations

from collections.abc import Callable

from meta_features._prepare import Prepared

Extractor = Callable[[Prepared], dict[str, float]]
_REGISTRY: dict[str, list[Extractor]] = {}
_NAMES: dict[str, list[str]] | None = None  # group -> full names, filled by _extract; reset here
GROUP_ORDER = ["stats", "texture", "size", "dataset", "deep", "label"]


def register(group: str) -> Callable[[Extractor], Extractor]:
    """Decorator: add ``fn`` to ``group`` (created on first use)."""

    def deco(fn: Extractor) -> Extractor:
        global _NAMES
        _REGISTRY.setdefault(group, []).append(fn)
        _NAMES = None  # names are rediscovered lazily
        return fn

    return deco
