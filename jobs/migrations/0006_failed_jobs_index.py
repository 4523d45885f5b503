"""FAILED jobs, newest first (admin's most used filter), from a partial index: no index leads with status since
0005, and no update of a job by id implies ``status = 'FAILED'``, so none can be served from this one."""

from django.db import migrations, models

from kaapi.migration_operations import AddIndex


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("jobs", "0005_partial_sweep_indexes"),
    ]

    operations = [
        AddIndex(
            model_name="job",
            index=models.Index(condition=models.Q(("status", "FAILED")), fields=["-created_at"], name="job_failed"),
        ),
    ]
