"""Admission by submission rate: the waiting reason, and the index that counts a project's jobs admitted in the last
minute (partial: new jobs, not yet dispatched, add no entry)."""

from django.db import migrations, models

from kaapi.migration_operations import AddIndex


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("jobs", "0007_job_waiting_reason"),
    ]

    operations = [
        migrations.AlterField(
            model_name="job",
            name="waiting_reason",
            field=models.CharField(
                blank=True,
                choices=[
                    ("max_concurrent_jobs", "the project runs its maximum of jobs at once"),
                    ("retry", "waiting for its next attempt"),
                    ("submission_rate", "the project had its maximum of jobs admitted in the last minute"),
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
                condition=models.Q(("dispatched_at__isnull", False)),
                fields=["project", "dispatched_at"],
                name="job_project_dispatched",
            ),
        ),
    ]
