"""Registries that decorators fill at import time: the job functions (jobs.registry) and the document
transformers (doctransform.transformers) register their functions by dotted path."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any, TypeVar

K = TypeVar("K")
V = TypeVar("V")


def dotted_path(fn: Callable[..., Any]) -> str:
    """``module.function``: what a registered function is known by (and, for a transformer, imported by)."""
    return f"{fn.__module__}.{fn.__qualname__}"


def register(entries: MutableMapping[K, V], key: K, entry: V, *, what: str) -> None:
    """Put ``entry`` under ``key``. The same entry again (a module imported twice) changes nothing; another entry
    under a key that is taken is a ``ValueError``: "{what} is already registered"."""
    existing = entries.get(key)
    if existing is not None and existing != entry:
        raise ValueError(f"{what} is already registered")
    entries[key] = entry
