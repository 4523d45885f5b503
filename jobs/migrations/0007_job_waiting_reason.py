"""Admission: why a PENDING job waits, and the indexes admission reads (a project's waiting and admitted jobs);
the waiting jobs' index serves the dispatch sweep too, in place of job_undispatched (same condition)."""

from django.db import migrations, models

from kaapi.migration_operations import AddIndex, RemoveIndex


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("jobs", "0006_failed_jobs_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="waiting_reason",
            field=models.CharField(
                blank=True,
                choices=[
                    ("max_concurrent_jobs", "the project runs its maximum of jobs at once"),
                    ("retry", "waiting for its next attempt"),
                ],
                default="",
                help_text="Why a PENDING job is not yet on its way to a worker; empty otherwise.",
                max_length=32,
                verbose_name="waiting reason",
            ),
        ),
        AddIndex(
            model_name="job",
            index=models.Index(
                models.F("project"),
                models.F("queue"),
                models.OrderBy(models.F("priority"), descending=True),
                models.F("created_at"),
                condition=models.Q(("dispatched_at__isnull", True), ("status", "PENDING")),
                name="job_waiting",
            ),
        ),
        AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("dispatched_at__isnull", False), ("status__in", ["PENDING", "PROCESSING"])),
                fields=["project", "queue"],
                name="job_admitted",
            ),
        ),
        RemoveIndex(model_name="job", name="job_undispatched"),
    ]
