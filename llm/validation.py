"""Validation of config blobs: ``{"completion": {"provider": "...", "params": {...}}}``.

Errors name the field by its path (``completion.params.temperature``) so a client can fix it.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

from .providers import PROVIDERS

MAX_FALLBACKS = 5


def validate_blob(blob: Any) -> dict[str, Any]:
    """The blob, normalized (unchanged values, known keys only); ``ValidationError`` naming every bad field.

    ``fallbacks`` (optional): an ordered list of ``{"provider", "params"}`` tried when the primary is down
    (llm/jobs.py); each entry is checked like ``completion`` and its errors are named ``fallbacks[i].…``.
    """
    if not isinstance(blob, dict):
        raise ValidationError({"blob": ['must be an object: {"completion": {"provider": ..., "params": {...}}}']})
    errors: dict[str, list[str]] = {}
    for key in sorted(set(blob) - {"completion", "fallbacks"}):
        errors[key] = ["unknown field; the blob has only 'completion' and 'fallbacks'"]
    completion = _validate_entry(blob.get("completion"), "completion", errors)
    normalized: dict[str, Any] = {"completion": completion}
    fallbacks = blob.get("fallbacks")
    if fallbacks is not None:
        if not isinstance(fallbacks, list) or len(fallbacks) > MAX_FALLBACKS:
            errors["fallbacks"] = [f'must be a list of at most {MAX_FALLBACKS} {{"provider": ..., "params": {{...}}}}']
        else:
            normalized["fallbacks"] = [
                _validate_entry(entry, f"fallbacks[{i}]", errors) for i, entry in enumerate(fallbacks)
            ]
    if errors:
        raise ValidationError(errors)
    return normalized


def _validate_entry(entry: Any, where: str, errors: dict[str, list[str]]) -> dict[str, Any] | None:
    """One ``{"provider", "params"}`` (the primary or a fallback), normalized; its problems go into ``errors``."""
    if not isinstance(entry, dict):
        errors[where] = ['required, an object {"provider": ..., "params": {...}}']
        return None
    for key in sorted(set(entry) - {"provider", "params"}):
        errors[f"{where}.{key}"] = [f"unknown field; '{where}' has only 'provider' and 'params'"]

    provider_name = entry.get("provider")
    provider = PROVIDERS.get(provider_name) if isinstance(provider_name, str) else None
    if provider is None:
        errors[f"{where}.provider"] = [f"must be one of {', '.join(PROVIDERS)}; got {provider_name!r}"]
        return None
    params = entry.get("params")
    if not isinstance(params, dict):
        errors[f"{where}.params"] = ["required, an object with at least 'model'"]
        return None

    for name in sorted(params):
        spec = provider.params.get(name)
        path = f"{where}.params.{name}"
        if spec is None:
            errors[path] = [
                f"unknown parameter for provider {provider.name}; known: {', '.join(sorted(provider.params))}"
            ]
            continue
        problem = spec.error(params[name])
        if problem:
            errors[path] = [problem]
    for name, spec in provider.params.items():
        if spec.required and name not in params:
            errors[f"{where}.params.{name}"] = [f"required for provider {provider.name}"]
    return {"provider": provider.name, "params": dict(params)}


def blob_providers(blob: dict[str, Any]) -> list[str]:
    """The providers a validated blob may call, primary first."""
    entries = [blob["completion"], *blob.get("fallbacks", [])]
    return list(dict.fromkeys(entry["provider"] for entry in entries))
