"""The jobs app's hand-written SQL: the statements every job runs, written out once per process and prepared on the
server. Every other job query goes through the ORM.

Three of them: a job's INSERT when it is submitted, then in the worker the claim (PENDING → PROCESSING) and the
SUCCESS, which writes the task's Celery result row in the same statement; a job that ends otherwise is finished
with one UPDATE … RETURNING (the ORM's UPDATE with a RETURNING clause added).
Built through the ORM on every call they cost more CPU than the database spends running them
(bench/job_statements.py times each beside its ORM form): here their SQL is composed once from the model's own
columns, their parameters are prepared by the model fields as the ORM prepares them, and they run through
``kaapi.sql.run`` (prepared statements on PostgreSQL, Django's errors and transactions). tests/jobs/test_sql.py
holds each one to the row its ORM form writes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import cache
from typing import Any

from django.db import connections, transaction
from django.db.models.sql import UpdateQuery
from django_celery_results.models import TaskResult

from kaapi.sql import run, task_result_upsert

from .models import Job, JobStatus


def _field(name: str) -> Any:  # one of Job's concrete fields (get_field's type also admits relations)
    return Job._meta.get_field(name)


_ID, _STATUS, _STARTED_AT, _UPDATED_AT = Job._meta.pk, _field("status"), _field("started_at"), _field("updated_at")
_SUCCESS_FIELDS = [
    _field(name) for name in ("status", "result", "error", "progress_percent", "finished_at", "updated_at")
]
_INSERT_FIELDS = list(Job._meta.concrete_fields)
# Usage columns the SUCCESS writes from the function's ``accounting`` (jobs.registry): in the conditional UPDATE
# itself, so a redelivered or concurrent SUCCESS can never count a call's cost twice. Each keeps its value when
# not given (COALESCE): provider and model were written at submission and stay unless a fallback answered.
USAGE_COLUMNS = ("provider", "model", "input_tokens", "output_tokens", "cost")
_USAGE_FIELDS = [_field(name) for name in USAGE_COLUMNS]
# The SUCCESS returns the finished row without its params and result: the worker has the result, and the params
# (an LLM call's whole prompt) are read again only by a webhook, for its metadata. Neither is sent back, parsed and
# decoded on every job.
_SUCCESS_RETURNING = tuple(
    field.attname for field in Job._meta.concrete_fields if field.name not in ("params", "result")
)


@cache
def _insert_sql(using: str) -> str:
    quote: Callable[[Any], str] = connections[using].ops.quote_name
    columns = ", ".join(quote(field.column) for field in _INSERT_FIELDS)
    return f"INSERT INTO {quote(Job._meta.db_table)} ({columns}) VALUES ({', '.join(['%s'] * len(_INSERT_FIELDS))})"


def insert(job: Job, *, using: str = "default") -> None:
    """INSERT the new ``job`` (``save(force_insert=True)`` without the ORM's per-call query building; no signals
    are sent, and none are connected to Job)."""
    connection = connections[using]
    params = tuple(field.get_db_prep_save(field.pre_save(job, add=True), connection) for field in _INSERT_FIELDS)
    run(_insert_sql(using), params, using=using)
    job._state.adding = False
    job._state.db = using


@cache
def _claim_sql(using: str) -> str:
    quote: Callable[[Any], str] = connections[using].ops.quote_name
    status, attempts, started_at, task_id, updated_at, pk = (
        quote(_field(name).column) for name in ("status", "attempts", "started_at", "task_id", "updated_at", "id")
    )
    return (
        f"UPDATE {quote(Job._meta.db_table)} SET {status} = %s, {attempts} = {attempts} + 1, {started_at} = %s, "
        f"{task_id} = %s, {updated_at} = %s WHERE {pk} = %s AND {status} = %s"
    )


def claim(*, job_id: Any, task_id: str, now: datetime, using: str = "default") -> bool:
    """PENDING → PROCESSING with attempts + 1; True when this call took the job."""
    connection = connections[using]
    params = (
        JobStatus.PROCESSING.value,
        _STARTED_AT.get_db_prep_save(now, connection),
        task_id,
        _UPDATED_AT.get_db_prep_save(now, connection),
        _ID.get_db_prep_save(job_id, connection),
        JobStatus.PENDING.value,
    )
    rows, _ = run(_claim_sql(using), params, using=using)
    return rows == 1


@cache
def _success_sql(using: str) -> str:
    quote: Callable[[Any], str] = connections[using].ops.quote_name
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in _SUCCESS_FIELDS)
    assignments += "".join(f", {quote(field.column)} = COALESCE(%s, {quote(field.column)})" for field in _USAGE_FIELDS)
    returning = ", ".join(quote(_field(attname).column) for attname in _SUCCESS_RETURNING)
    return (
        f"UPDATE {quote(Job._meta.db_table)} SET {assignments} "
        f"WHERE {quote(_ID.column)} = %s AND {quote(_STATUS.column)} = %s RETURNING {returning}"
    )


def mark_success(
    *,
    job_id: Any,
    result: Any,
    now: datetime,
    task_result: TaskResult | None = None,
    usage: dict[str, Any] | None = None,
    using: str = "default",
) -> Job | None:
    """PROCESSING → SUCCESS with ``result``; the finished job (its params deferred: read on first access), or None
    when the job was not PROCESSING.

    ``task_result``, the task's Celery result row, is written whether or not the job matched: on PostgreSQL in the
    same statement (a data-modifying WITH: one round trip), elsewhere right after it in one transaction.
    """
    connection = connections[using]
    values = (JobStatus.SUCCESS.value, result, "", 100, now, now)
    params = tuple(
        field.get_db_prep_save(value, connection) for field, value in zip(_SUCCESS_FIELDS, values, strict=True)
    )
    usage = usage or {}
    params += tuple(
        None if usage.get(field.name) is None else field.get_db_prep_save(usage[field.name], connection)
        for field in _USAGE_FIELDS
    )
    params += (_ID.get_db_prep_save(job_id, connection), JobStatus.PROCESSING.value)
    sql = _success_sql(using)
    if task_result is None:
        _, row = run(sql, params, using=using, fetch="one")
    elif connection.vendor == "postgresql":
        upsert, upsert_params = task_result_upsert(task_result, using=using)
        with_also = f'WITH "updated" AS ({sql}), "also" AS ({upsert}) SELECT * FROM "updated"'
        _, row = run(with_also, params + upsert_params, using=using, fetch="one")
    else:
        with transaction.atomic(using=using):
            _, row = run(sql, params, using=using, fetch="one")
            run(*task_result_upsert(task_result, using=using), using=using)
    if row is None:
        return None
    job = Job.from_row(row, using=using, attnames=_SUCCESS_RETURNING)
    job.result = result
    return job


def finish(*, job_id: Any, from_statuses: list[str], using: str = "default", **fields: Any) -> Job | None:
    """Set ``fields`` on the job if its status is one of ``from_statuses``; the updated job, read back in the same
    statement (UPDATE … RETURNING: PostgreSQL, and SQLite 3.35+), or None when it was in none of them. The UPDATE
    is the ORM's own; the RETURNING clause is added to it."""
    queryset = Job.objects.using(using).filter(id=job_id, status__in=from_statuses)
    query = queryset.query.chain(UpdateQuery)
    query.add_update_values(fields)  # type: ignore[attr-defined]  # Django's, not in django-stubs
    sql, params = query.get_compiler(using).as_sql()
    connection = connections[using]
    columns = ", ".join(connection.ops.quote_name(str(field.column)) for field in Job._meta.concrete_fields)
    with connection.cursor() as cursor:
        cursor.execute(f"{sql} RETURNING {columns}", params)
        row = cursor.fetchone()
    return None if row is None else Job.from_row(row, using=using)
