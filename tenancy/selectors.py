"""Tenancy reads."""

from __future__ import annotations

from typing import Any

from django.db import router

from kaapi.sql import PreparedQuery

from .models import APIKey, Organization, Project

# The columns of an API key, its project and the project's organization, in model order (``from_db``'s fast path).
_MODELS = (APIKey, Project, Organization)
_PATHS = ("", "project__", "project__organization__")
_ATTNAMES = tuple([field.attname for field in model._meta.concrete_fields] for model in _MODELS)


def _api_key_by_prefix(*, prefix: str):
    # No ordering: the prefix is unique, and the model's default ordering would sort by created_at for nothing.
    columns = [path + attname for path, attnames in zip(_PATHS, _ATTNAMES, strict=True) for attname in attnames]
    return APIKey.objects.filter(prefix=prefix).order_by().values_list(*columns)[:1]


# Composed once by the ORM and prepared: every API request authenticates with it (tenancy/authentication.py). Built
# by ``select_related("project__organization")`` on each request it cost ~0.8 ms of CPU, most of a trivial
# request's; prepared it costs a tenth of that (bench/submission.py measures the trivial request).
_API_KEY_BY_PREFIX = PreparedQuery(_api_key_by_prefix, prefix=str)


def api_key_by_prefix(*, prefix: str) -> APIKey | None:
    """The API key with ``prefix`` (revoked ones included), with its project and organization loaded; or None."""
    using = router.db_for_read(APIKey)
    rows = _API_KEY_BY_PREFIX.rows(prefix=prefix, using=using)
    if not rows:
        return None
    instances: list[Any] = []
    start = 0
    for model, attnames in zip(_MODELS, _ATTNAMES, strict=True):
        instances.append(model.from_db(using, attnames, rows[0][start : start + len(attnames)]))
        start += len(attnames)
    api_key, project, organization = instances
    project.organization = organization
    api_key.project = project
    return api_key
