"""Who served an AI call, its tokens and its cost, in columns of the job (usage reports and budgets read them), and
the covering partial index those reports are served from."""

from django.db import migrations, models

from kaapi.migration_operations import AddIndex


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("jobs", "0009_idempotency_batch_scheduled"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="provider",
            field=models.CharField(blank=True, default="", max_length=32, verbose_name="provider"),
        ),
        migrations.AddField(
            model_name="job",
            name="model",
            field=models.CharField(blank=True, default="", max_length=200, verbose_name="model"),
        ),
        migrations.AddField(
            model_name="job",
            name="config_id",
            field=models.PositiveIntegerField(
                blank=True,
                help_text="The config the call was made with; empty: an inline one.",
                null=True,
                verbose_name="config",
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="input_tokens",
            field=models.PositiveIntegerField(blank=True, null=True, verbose_name="input tokens"),
        ),
        migrations.AddField(
            model_name="job",
            name="output_tokens",
            field=models.PositiveIntegerField(blank=True, null=True, verbose_name="output tokens"),
        ),
        migrations.AddField(
            model_name="job",
            name="cost",
            field=models.DecimalField(
                blank=True,
                decimal_places=8,
                help_text="From the price table at the time of the call; empty: unknown model or not an AI call.",
                max_digits=18,
                null=True,
                verbose_name="cost (USD)",
            ),
        ),
        AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("finished_at__isnull", False), ("provider__gt", "")),
                fields=["project", "finished_at"],
                include=("status", "provider", "model", "config_id", "input_tokens", "output_tokens", "cost"),
                name="job_usage",
            ),
        ),
    ]
