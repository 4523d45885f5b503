"""Index operations for migrations that run on a live database: CONCURRENTLY on PostgreSQL, so building or dropping
an index of a large table does not lock out its writes; the plain operation elsewhere (SQLite, the zero-setup
default). A migration that uses them sets ``atomic = False`` (CONCURRENTLY cannot run in a transaction)."""

from __future__ import annotations

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations


# mypy sees a plain class here (type: ignore below): the Concurrently operation is the next base in the MRO, and
# ``self`` is the operation that the plain one's methods expect.
class _ConcurrentlyOnPostgres:
    plain: type[migrations.AddIndex] | type[migrations.RemoveIndex]

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)  # type: ignore[misc]
        return self.plain.database_forwards(self, app_label, schema_editor, from_state, to_state)  # type: ignore[arg-type]

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_backwards(app_label, schema_editor, from_state, to_state)  # type: ignore[misc]
        return self.plain.database_backwards(self, app_label, schema_editor, from_state, to_state)  # type: ignore[arg-type]


class AddIndex(_ConcurrentlyOnPostgres, AddIndexConcurrently):
    plain = migrations.AddIndex


class RemoveIndex(_ConcurrentlyOnPostgres, RemoveIndexConcurrently):
    plain = migrations.RemoveIndex
