"""The maintenance sweeps get partial indexes of their own instead of ``(status, updated_at)``.

With a status-leading index, the planner could serve ``UPDATE … WHERE id = %s AND status = 'PENDING'`` (the claim of
every job) from it whenever its statistics said PENDING was rare, scanning every PENDING job's entry for each claim:
quadratic in the backlog. The new indexes' conditions cannot be proven from such a statement, so it uses the
primary key. On PostgreSQL they are built and the old one dropped without locking out writes (CONCURRENTLY:
``kaapi.migration_operations``).
"""

from django.db import migrations, models

from kaapi.migration_operations import AddIndex, RemoveIndex


class Migration(migrations.Migration):
    atomic = False  # CREATE/DROP INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("jobs", "0004_encrypt_webhook_secrets"),
        ("tenancy", "0001_initial"),
    ]

    operations = [
        AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("dispatched_at__isnull", True), ("status", "PENDING")),
                fields=["updated_at"],
                name="job_undispatched",
            ),
        ),
        AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("started_at__isnull", False), ("status", "PROCESSING")),
                fields=["started_at"],
                name="job_running_started",
            ),
        ),
        AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("finished_at__isnull", False)), fields=["finished_at"], name="job_finished"
            ),
        ),
        RemoveIndex(model_name="job", name="job_status_updated"),
    ]
