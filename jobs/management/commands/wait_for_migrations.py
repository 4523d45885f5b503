import time

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor


def unapplied_migrations(database: str = DEFAULT_DB_ALIAS) -> list[str]:
    """The migrations of this code that the database has not applied yet ("app.name")."""
    connection = connections[database]
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return [f"{migration.app_label}.{migration.name}" for migration, _ in plan]


class Command(BaseCommand):
    help = (
        "Wait until the database has every migration of this code (applied by `migrate`, run once elsewhere), then "
        "exit 0; exit 1 after --timeout seconds. The apps' init step in deploy/kubernetes: a new version's pods start "
        "only once its migrations Job has run, and never migrate themselves."
    )

    def add_arguments(self, parser):
        parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait at most (default 600)")
        parser.add_argument("--interval", type=float, default=2.0, help="seconds between two looks (default 2)")

    def handle(self, *args, timeout: float, interval: float, **options):
        deadline = time.monotonic() + timeout
        while True:
            try:
                missing = unapplied_migrations()
            except Exception as exc:  # the database is not reachable yet: keep waiting for it too
                missing, reason = None, f"database not reachable: {exc}"
            else:
                if not missing:
                    self.stdout.write("every migration is applied")
                    return
                reason = f"{len(missing)} migration(s) not applied yet, first {missing[0]}"
            if time.monotonic() >= deadline:
                raise CommandError(f"gave up after {timeout:g} s: {reason}")
            self.stdout.write(f"waiting: {reason}")
            connections.close_all()
            time.sleep(interval)
