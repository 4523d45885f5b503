"""What a call cost: the price table (``llm.models.ModelPrice``, edited in admin) applied to a call's usage.

``cost_for(provider, model, usage)`` prices a call, and ``usage_columns(provider, model, usage)`` gives the Job's
usage columns of a call that was priced: other apps that call models (doctransform's vision transformer) use them
too.

Each process keeps a provider's rows for ``PRICE_CACHE_SECONDS``: reading them for every call was a seventh of a
busy gevent worker's time (py-spy, bench/fairness.py's flood). A price edited in admin applies at once in the
process that saved it and within that time in the others.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from decimal import Decimal
from time import monotonic
from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .models import ModelPrice

# Providers priced from another's rows: OpenAI's Chat Completions are OpenAI's models (an OpenAI-compatible server
# of other models finds no row, and so no price).
PRICE_PROVIDER = {"openai-chat": "openai"}
MILLION = Decimal(1_000_000)
COST_PLACES = Decimal("0.00000001")  # the Job.cost column's precision
# What follows a model's name in a dated or tagged version: gpt-4o-2024-08-06, claude-3-5-sonnet@20240620.
VERSION_SEPARATORS = ("-", "@", ":")


PRICE_CACHE_SECONDS = 60.0

_lock = threading.Lock()
_rows: dict[str, tuple[float, list[ModelPrice]]] = {}  # provider -> (read at, its rows)
_generation = 0  # counts the edits: rows read before one are not kept after it


def forget_prices() -> None:
    global _generation
    with _lock:
        _rows.clear()
        _generation += 1


@receiver([post_save, post_delete], sender=ModelPrice)
def _price_edited(**kwargs) -> None:
    # Now, and once more when the edit commits: a read between the two saw the rows before it.
    forget_prices()
    transaction.on_commit(forget_prices)


def _price_rows(provider: str) -> list[ModelPrice]:
    now = monotonic()
    cached = _rows.get(provider)
    if cached is not None and now - cached[0] <= PRICE_CACHE_SECONDS:
        return cached[1]
    generation = _generation
    rows = list(ModelPrice.objects.for_provider(provider))
    with _lock:
        if generation == _generation:
            _rows[provider] = (now, rows)
    return rows


def price_for(provider: str, model: str) -> ModelPrice | None:
    """The row pricing ``model`` of ``provider``: its name or an alias, exactly, else the longest name or alias
    that ``model`` is a version of (``gpt-4o-mini-2024-07-18`` → ``gpt-4o-mini``, not ``gpt-4o``)."""
    if not model:
        return None
    rows = _price_rows(PRICE_PROVIDER.get(provider, provider))
    best: tuple[int, ModelPrice] | None = None
    for row in rows:
        for name in row.names:
            if model == name:
                return row
            if model.startswith(name) and model[len(name)] in VERSION_SEPARATORS:
                if best is None or len(name) > best[0]:
                    best = (len(name), row)
    return None if best is None else best[1]


def cost_for(provider: str, model: str, usage: Mapping[str, Any]) -> Decimal | None:
    """The USD cost of one call, or None when the table has no price for the model.

    ``usage``: ``input_tokens`` (all of the prompt), ``cached_input_tokens`` (the part read from the provider's
    cache, priced as cached input), ``output_tokens`` (reasoning included: reasoning is priced as output).
    """
    price = price_for(provider, model)
    if price is None:
        return None
    input_tokens = int(usage.get("input_tokens") or 0)
    cached = min(int(usage.get("cached_input_tokens") or 0), input_tokens)
    output_tokens = int(usage.get("output_tokens") or 0)
    cached_price = price.cached_input_per_million
    if cached_price is None:
        cached_price = price.input_per_million
    total = (
        (input_tokens - cached) * price.input_per_million
        + cached * cached_price
        + output_tokens * price.output_per_million
    ) / MILLION
    return total.quantize(COST_PLACES)


def usage_columns(provider: str | None, model: str | None, usage: Mapping[str, Any]) -> dict[str, Any]:
    """The Job's usage columns (jobs.registry ``accounting``) of a call: who answered, its tokens and the cost in
    its ``usage``, as ``cost_for`` gave it (a string in a job's result)."""
    cost = usage.get("cost")
    return {
        "provider": provider,
        "model": model,
        "input_tokens": usage.get("input_tokens"),
        "output_tokens": usage.get("output_tokens"),
        "cost": None if cost is None else Decimal(cost),
    }
