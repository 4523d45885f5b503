"""Webhook deliveries of project events (budget.threshold): a project instead of a job."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0010_job_usage_columns"),
        ("tenancy", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="webhookdelivery",
            name="project",
            field=models.ForeignKey(
                blank=True,
                help_text="For an event about the project rather than a job; the job's project otherwise.",
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="webhook_deliveries",
                to="tenancy.project",
                verbose_name="project",
            ),
        ),
        migrations.AlterField(
            model_name="webhookdelivery",
            name="event",
            field=models.CharField(
                choices=[
                    ("job.succeeded", "job succeeded"),
                    ("job.failed", "job failed"),
                    ("job.cancelled", "job cancelled"),
                    ("budget.threshold", "budget threshold reached"),
                ],
                max_length=32,
                verbose_name="event",
            ),
        ),
        migrations.AlterField(
            model_name="webhookdelivery",
            name="job",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="webhook_deliveries",
                to="jobs.job",
                verbose_name="job",
            ),
        ),
    ]
