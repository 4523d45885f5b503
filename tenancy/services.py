"""Tenancy services: organizations, projects and API keys."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .models import APIKey, Organization, Project
from .selectors import api_key_by_prefix

KEY_PREFIX = "kaapi"


@dataclass(frozen=True)
class IssuedKey:
    api_key: APIKey
    plaintext: str


def hash_secret(secret: str) -> str:
    return hmac.new(settings.API_KEY_PEPPER.encode(), secret.encode(), hashlib.sha256).hexdigest()


def parse_key(raw: str) -> tuple[str, str] | None:
    """Split ``kaapi_<prefix>_<secret>`` into (prefix, secret); None when malformed."""
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or len(parts[1]) != 12 or len(parts[2]) < 32:
        return None
    return parts[1], parts[2]


def api_key_create(*, project: Project, name: str = "") -> IssuedKey:
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)  # 256 bits of entropy
    api_key = APIKey.objects.create(project=project, name=name, prefix=prefix, key_hash=hash_secret(secret))
    return IssuedKey(api_key=api_key, plaintext=f"{KEY_PREFIX}_{prefix}_{secret}")


def api_key_verify(*, raw: str) -> APIKey | None:
    """The key for ``raw`` (revoked ones included, so callers can say so), or None."""
    parsed = parse_key(raw)
    if parsed is None:
        return None
    prefix, secret = parsed
    api_key = api_key_by_prefix(prefix=prefix)
    if api_key is None or not hmac.compare_digest(api_key.key_hash, hash_secret(secret)):
        return None
    return api_key


def api_key_revoke(*, api_key: APIKey) -> APIKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key


@transaction.atomic
def project_get_or_create(*, organization_name: str, project_name: str) -> Project:
    organization, _ = Organization.objects.get_or_create(name=organization_name)
    project, _ = Project.objects.get_or_create(organization=organization, name=project_name)
    return project
