"""The result backend: django-celery-results' database backend (the ``django-db`` tables, its admin and its
queries), with two changes.

* ``result_compression`` ("gzip") is honoured. Celery ignores that setting for database backends, so results
  and their meta were stored as plain JSON; here those of at least ``COMPRESS_MIN_BYTES`` of JSON are
  gzip-compressed with their meta (base64 in the text columns, marked by ``content_encoding = "gzip+base64"``)
  and decompressed on read. Smaller ones stay plain JSON: gzip's header and base64 would make them longer, not
  shorter, and cost CPU on every job (an echo job's result and meta are a few dozen bytes). Rows written before
  stay readable.
* A result is written with one ``INSERT ... ON CONFLICT (task_id) DO UPDATE`` (``kaapi.sql.task_result_upsert``)
  instead of the library's SELECT + INSERT/UPDATE in a transaction: four database round trips fewer per task.

``result_row`` gives the row without writing it, so the generic job tasks write a job's SUCCESS and its result row
in one statement (jobs/execution.py, jobs/sql.py).
"""

from __future__ import annotations

import gzip
from base64 import b64decode, b64encode

from celery import states
from django.db import connections, router
from django.utils import timezone
from django_celery_results.backends.database import DatabaseBackend as DjangoDatabaseBackend
from django_celery_results.models import TaskResult

from .sql import task_result_upsert

COMPRESSED = "gzip+base64"
COMPRESS_MIN_BYTES = 1024  # below about a kilobyte, gzip + base64 saves little or nothing and costs CPU on every job


class DatabaseBackend(DjangoDatabaseBackend):
    def prepare_compression(self, compression):
        # Celery 5.7 adds payload compression of its own, which the text columns cannot store (it warns that it
        # ignores the setting); ``_encoded`` honours ``result_compression`` for this backend instead.
        return None

    def _encoded(self, data, *, compress: bool | None = None) -> tuple[str, str, str]:
        """(content type, content encoding, content) of ``data``; ``compress`` None: by the length of its JSON."""
        content_type, content_encoding, content = self.encode_content(data)
        raw = content.encode() if isinstance(content, str) else content
        if compress is None:
            compress = bool(self.app.conf.result_compression) and len(raw) >= COMPRESS_MIN_BYTES
        if not compress:
            return content_type, content_encoding, content
        return content_type, COMPRESSED, b64encode(gzip.compress(raw, compresslevel=6, mtime=0)).decode("ascii")

    def decode_content(self, obj, content):
        if content and obj.content_encoding == COMPRESSED:
            return self.decode(gzip.decompress(b64decode(content)))
        return super().decode_content(obj, content)

    def result_row(self, task_id, result, status, traceback=None, request=None) -> TaskResult:
        """The unsaved row Celery stores for this outcome."""
        content_type, content_encoding, encoded = self._encoded(result)
        meta = {**self._get_meta_from_request(request), "children": self.current_task_children(request)}
        # One content_encoding column for both: the meta is compressed exactly when the result is.
        _, _, encoded_meta = self._encoded(meta, compress=content_encoding == COMPRESSED)
        fields = {
            "task_id": task_id,
            "status": status,
            "result": encoded,
            "meta": encoded_meta,
            "traceback": traceback,
            "content_type": content_type,
            "content_encoding": content_encoding,
            **self._get_extended_properties(request, traceback),
        }
        if status == states.STARTED:
            fields["date_started"] = timezone.now()
        return TaskResult(**fields)

    def _store_result(self, task_id, result, status, traceback=None, request=None, using=None):
        using = using or router.db_for_write(TaskResult)
        row = self.result_row(task_id, result, status, traceback, request)
        with connections[using].cursor() as cursor:
            cursor.execute(*task_result_upsert(row, using=using))
        return result
