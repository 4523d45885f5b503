"""Validation of config blobs: ``{"completion": {"provider": "...", "params": {...}}}``.

Errors name the field by its path (``completion.params.temperature``) so a client can fix it.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

from .providers import PROVIDERS


def validate_blob(blob: Any) -> dict[str, Any]:
    """The blob, normalized (unchanged values, known keys only); ``ValidationError`` naming every bad field."""
    if not isinstance(blob, dict):
        raise ValidationError({"blob": ['must be an object: {"completion": {"provider": ..., "params": {...}}}']})
    errors: dict[str, list[str]] = {}
    for key in sorted(set(blob) - {"completion"}):
        errors[key] = ["unknown field; the blob has only 'completion'"]
    completion = blob.get("completion")
    if not isinstance(completion, dict):
        errors["completion"] = ['required, an object {"provider": ..., "params": {...}}']
        raise ValidationError(errors)
    for key in sorted(set(completion) - {"provider", "params"}):
        errors[f"completion.{key}"] = ["unknown field; 'completion' has only 'provider' and 'params'"]

    provider_name = completion.get("provider")
    provider = PROVIDERS.get(provider_name) if isinstance(provider_name, str) else None
    if provider is None:
        errors["completion.provider"] = [f"must be one of {', '.join(PROVIDERS)}; got {provider_name!r}"]
        raise ValidationError(errors)
    params = completion.get("params")
    if not isinstance(params, dict):
        errors["completion.params"] = ["required, an object with at least 'model'"]
        raise ValidationError(errors)

    for name in sorted(params):
        spec = provider.params.get(name)
        path = f"completion.params.{name}"
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
            errors[f"completion.params.{name}"] = [f"required for provider {provider.name}"]
    if errors:
        raise ValidationError(errors)
    return {"completion": {"provider": provider.name, "params": dict(params)}}
