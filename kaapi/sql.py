"""Hot-path statements run without the ORM's per-call query building, prepared on PostgreSQL.

Building a query through the ORM costs more CPU than the database spends running a simple one (the job path
and ``POST /api/v1/llm/call`` are measured in bench/). Two tools, both keeping Django's semantics:

- ``run``: one statement through the connection, as a server-side prepared statement on PostgreSQL (planned
  once per connection); errors are Django's (``django.db.OperationalError`` …), transactions the
  connection's own, and the statement is recorded in DEBUG's query log like any query.
- ``PreparedQuery``: a read queryset composed once per process and database by the ORM itself, then run again
  with other values through ``run``, its rows converted as the ORM converts them.

and one statement: ``task_result_upsert``, the write of a Celery result row (django-celery-results' table).
tests/kaapi/test_sql.py holds each to what the ORM or the library does.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import psycopg
from django.core.exceptions import EmptyResultSet, FullResultSet
from django.db import connections
from django.db.models import QuerySet
from django.db.models.constants import OnConflict
from django.db.models.sql import InsertQuery
from django_celery_results.models import TaskResult


def run(sql: str, params: tuple | list, *, using: str, fetch: str = "") -> tuple[int, Any]:
    """Run one statement; (rows affected, then per ``fetch``: the first row ("one"), every row ("all") or None)."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.rowcount, _fetch(cursor, fetch)
    connection.close_if_health_check_failed()  # as Django's own cursors do (CONN_HEALTH_CHECKS)
    connection.ensure_connection()
    connection.validate_no_broken_transaction()
    started = time.monotonic()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, prepare=True)  # parsed and planned once per connection (prepare_threshold)
        result = cursor.rowcount, _fetch(cursor, fetch)
    if connection.queries_logged:  # DEBUG, or a test counting queries: recorded as Django's debug cursor does
        connection.queries_log.append({"sql": sql, "time": f"{time.monotonic() - started:.3f}"})
    return result


def _fetch(cursor: Any, fetch: str) -> Any:
    if fetch == "one":
        return cursor.fetchone()
    if fetch == "all":
        return cursor.fetchall()
    return None


Converters = tuple[tuple[int, list, Any], ...]  # (column index, its converters, its expression)


def row_converters(compiler: Any, expressions: list) -> Converters:
    """The ORM's converters of the values of these columns (``compiler.get_converters``), found once per query."""
    return tuple(
        (index, convs, expression) for index, (convs, expression) in compiler.get_converters(expressions).items()
    )


def convert_row(row: tuple | list, converters: Converters, connection: Any) -> tuple:
    """``row`` with its values converted as the ORM converts query results."""
    if not converters:
        return tuple(row)
    row = list(row)
    for index, convs, expression in converters:
        value = row[index]
        for converter in convs:
            value = converter(value, expression, connection)
        row[index] = value
    return tuple(row)


# Values the query is composed with, then found again among its parameters. Integers are in range for any
# integer column (Django refuses out-of-range integer lookups before they reach SQL); all are unlikely real values.
_SENTINEL_INT = 2_147_480_000
_SENTINEL_STR = "\x1fkaapi.sql sentinel {}\x1f"
_SENTINEL_UUID = 0x1F1F_0000_0000_4000_8000_0000_0000_0000
_INTEGER_BITS = {"Int2": 16, "Int4": 32, "Int8": 64}  # psycopg's typed integers; a plain int is bound as 64-bit


@dataclass(frozen=True)
class _Compiled:
    sql: str
    params: tuple
    slots: tuple[tuple[int, str], ...]  # (index in params, name of the value that goes there)
    converters: Converters


class PreparedQuery:
    """A read queryset composed once per database by the ORM and run again with other values.

    ``build(**values)`` returns the queryset (``values_list()`` or a model query alike). It is called once per
    database alias with a distinct sentinel for each value named in ``types`` (``int``, ``str`` or ``uuid.UUID``),
    and each sentinel must reach the SQL as a parameter unchanged: plain lookups (``id=``, ``version=``,
    ``provider=``) on text, UUID or 32/64-bit integer columns, not transforms of the value. A UUID value may be a
    ``uuid.UUID`` or its text; text that is not a UUID raises ``ValueError``. ``rows(**values)`` then runs that SQL
    with the real values (prepared on PostgreSQL) and returns the rows as tuples, converted as the ORM converts them.
    """

    def __init__(self, build: Callable[..., QuerySet], **types: type) -> None:
        if any(kind not in (int, str, uuid.UUID) for kind in types.values()):
            raise TypeError("PreparedQuery values are int, str or uuid.UUID")
        self._build = build
        self._types = types
        self._compiled: dict[str, _Compiled] = {}
        self._lock = threading.Lock()

    def _compile(self, using: str) -> _Compiled:
        sentinels = {
            name: {
                int: _SENTINEL_INT + index,
                str: _SENTINEL_STR.format(index),
                uuid.UUID: uuid.UUID(int=_SENTINEL_UUID + index),
            }[kind]
            for index, (name, kind) in enumerate(self._types.items())
        }
        compiler = self._build(**sentinels).query.get_compiler(using=using)
        try:
            sql, params = compiler.as_sql()
        except (EmptyResultSet, FullResultSet) as exc:  # e.g. a 16-bit column: the sentinel is out of its range
            raise ValueError(f"the query cannot be composed with sentinel values ({type(exc).__name__})") from exc
        by_value = {value: name for name, value in sentinels.items()}
        # A UUID reaches the parameters as a uuid.UUID on PostgreSQL, as its 32 hex digits elsewhere.
        by_value.update({value.hex: name for name, value in sentinels.items() if isinstance(value, uuid.UUID)})
        slots = tuple(
            (index, by_value[param])
            for index, param in enumerate(params)
            if isinstance(param, int | str | uuid.UUID) and param in by_value
        )
        missing = set(self._types) - {name for _, name in slots}
        if missing:
            raise ValueError(f"values {sorted(missing)} do not reach the query's parameters unchanged")
        columns = [column[0] for column in compiler.select[: compiler.col_count]]
        return _Compiled(sql=sql, params=tuple(params), slots=slots, converters=row_converters(compiler, columns))

    def rows(self, *, using: str = "default", **values: Any) -> list[tuple]:
        compiled = self._compiled.get(using)
        if compiled is None:
            with self._lock:
                compiled = self._compiled.get(using) or self._compile(using)
                self._compiled[using] = compiled
        params = list(compiled.params)
        for index, name in compiled.slots:
            kind = self._types[name]
            if kind is str:
                params[index] = str(values[name])
                continue
            if kind is uuid.UUID:
                value = values[name] if isinstance(values[name], uuid.UUID) else uuid.UUID(str(values[name]))
                params[index] = value if isinstance(params[index], uuid.UUID) else value.hex
                continue
            value = type(params[index])(values[name])  # int, or psycopg's Int4 … as the ORM typed it
            bits = _INTEGER_BITS.get(type(value).__name__, 64)
            if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
                return []  # as the ORM answers an out-of-range integer lookup: nothing matches
            params[index] = value
        _, rows = run(compiled.sql, params, using=using, fetch="all")
        connection = connections[using]
        return [convert_row(row, compiled.converters, connection) for row in rows]


# --- The result table -----------------------------------------------------------------------------------
_RESULT_INSERT_FIELDS = [field for field in TaskResult._meta.concrete_fields if not field.primary_key]
# What a stored outcome leaves of an existing row, as django-celery-results' ``TaskResultManager.store_result``
# does: its task id and creation time; its start time unless the outcome carries one (STARTED).
_RESULT_KEPT = ("task_id", "date_created")


def task_result_upsert(row: TaskResult, *, using: str) -> tuple[str, tuple]:
    """SQL and parameters of ``INSERT ... ON CONFLICT (task_id) DO UPDATE`` of the unsaved ``row``, as
    ``bulk_create(update_conflicts=True)`` would run it: the SQL is compiled once per field set, the parameters are
    prepared by the model fields as the ORM prepares them."""
    connection = connections[using]
    values = (field.get_db_prep_save(field.pre_save(row, add=True), connection) for field in _RESULT_INSERT_FIELDS)
    return _task_result_upsert_sql(using, row.date_started is not None), tuple(values)


@cache
def _task_result_upsert_sql(using: str, started: bool) -> str:
    kept = _RESULT_KEPT if started else (*_RESULT_KEPT, "date_started")
    query = InsertQuery(
        TaskResult,
        on_conflict=OnConflict.UPDATE,
        update_fields=[field for field in _RESULT_INSERT_FIELDS if field.name not in kept],
        unique_fields=[TaskResult._meta.get_field("task_id")],
    )
    query.insert_values(_RESULT_INSERT_FIELDS, [TaskResult(task_id="")])
    [(sql, _)] = query.get_compiler(using=using).as_sql()
    return sql
