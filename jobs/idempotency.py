"""Idempotency keys: a client that retries a submission with the same ``Idempotency-Key`` header gets the same
answer (the same job) instead of a second job.

A submission with a key runs in one transaction that holds a transaction-level advisory lock on (project, key):
it reads the key's row, and either answers from it (a replay), or runs the submission and writes the row with the
answer beside the job rows, so that the key exists exactly when its job does. A second request with the key while
the first is running does not wait for the lock: it is answered 409 (``IdempotencyKeyInFlight``); one with a
different body is answered 422 (``IdempotencyKeyReused``). The unique (project, key) constraint holds the guarantee
where there is no advisory lock (SQLite): the second INSERT fails and rolls its submission back. A process killed
mid-request leaves nothing behind (its transaction is rolled back): the client's retry runs the submission anew.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.utils import timezone

from tenancy.models import Project

from .models import IdempotencyKey

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255


class IdempotencyKeyInFlight(Exception):
    """Another request with this key is being processed."""


class IdempotencyKeyReused(Exception):
    """The key was used for a request with another body."""


def validate_key(key: str) -> str:
    """1 to 255 printable ASCII characters (a header value that every client library sends unchanged; HTTP drops
    the spaces around it)."""
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(0x20 <= ord(char) <= 0x7E for char in key):
        raise ValidationError({HEADER: [f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"]})
    return key


def request_fingerprint(*, method: str, path: str, data: Any) -> str:
    """SHA-256 of what makes two submissions the same: the method, the path (with or without its trailing slash)
    and the parsed body — JSON with sorted keys, so that the order of keys and the spacing do not count; a multipart
    body's fields and each file's name and content, not the boundary a client picks afresh for each try."""
    digest = hashlib.sha256(f"{method} {path.rstrip('/')}\n".encode())
    if hasattr(data, "lists"):  # a QueryDict: form fields and uploaded files
        fields = []
        for name, values in sorted(data.lists()):
            for value in values:
                if isinstance(value, UploadedFile):
                    fields.append([name, value.name, _file_digest(value)])
                else:
                    fields.append([name, value])
        data = fields
    digest.update(json.dumps(data, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder).encode())
    return digest.hexdigest()


def _file_digest(file: UploadedFile) -> str:
    digest = hashlib.sha256()
    for chunk in file.chunks():
        digest.update(chunk)
    file.seek(0)
    return digest.hexdigest()


def _lock_id(project_id: int, key: str) -> int:
    """The advisory lock's one 64-bit key (a space apart from the admission's two 32-bit keys)."""
    return int.from_bytes(hashlib.blake2b(f"{project_id}\n{key}".encode(), digest_size=8).digest(), "big", signed=True)


def idempotency_key_find(*, project: Project, key: str, fingerprint: str) -> IdempotencyKey | None:
    """Inside the submission's transaction: take the key's lock and return its recorded answer, or None when the
    submission is to run (a new key, or an expired one, deleted here).

    ``IdempotencyKeyInFlight`` while another transaction holds the key; ``IdempotencyKeyReused`` when the key
    answered a request with another fingerprint.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_lock_id(project.pk, key)])
            if not cursor.fetchone()[0]:
                raise IdempotencyKeyInFlight(f"a request with this {HEADER} is still being processed; retry later")
    found = IdempotencyKey.objects.filter(project=project, key=key).first()
    if found is None:
        return None
    if found.expires_at <= timezone.now():
        found.delete()
        return None
    if found.fingerprint != fingerprint:
        raise IdempotencyKeyReused(
            f"this {HEADER} was used for a request with another body; use a new key for a new request"
        )
    return found


def idempotency_key_record(
    *, project: Project, key: str, fingerprint: str, status: int, body: Any, location: str = ""
) -> IdempotencyKey:
    """Record the answer to the key's submission, in the submission's transaction (IntegrityError when another
    request recorded the key first: the caller's transaction, job included, must roll back)."""
    now = timezone.now()
    return IdempotencyKey.objects.create(
        project=project,
        key=key,
        fingerprint=fingerprint,
        response_status=status,
        response_body=json.loads(json.dumps(body, cls=DjangoJSONEncoder)),
        response_location=location[:2048],
        expires_at=now + timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL),
    )


def idempotency_keys_expired():
    """The keys past their time (the retention task deletes them in batches)."""
    return IdempotencyKey.objects.expired()
