"""The price table of LLM models and the record of budget alerts sent (once per budget and month)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("llm", "0002_credential_limits"),
        ("tenancy", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="ModelPrice",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "provider",
                    models.CharField(
                        help_text="openai (also used for openai-chat) or anthropic; another name prices calls of that provider.",
                        max_length=32,
                        verbose_name="provider",
                    ),
                ),
                (
                    "model",
                    models.CharField(
                        help_text="The model's name; it also prices dated versions (gpt-4o prices gpt-4o-2024-08-06).",
                        max_length=200,
                        verbose_name="model",
                    ),
                ),
                (
                    "aliases",
                    models.CharField(
                        blank=True,
                        default="",
                        help_text="Other names of the same model, comma separated (each also matches its dated versions).",
                        max_length=500,
                        verbose_name="aliases",
                    ),
                ),
                (
                    "input_per_million",
                    models.DecimalField(
                        decimal_places=6,
                        help_text="Uncached input tokens.",
                        max_digits=12,
                        verbose_name="input (USD per 1M tokens)",
                    ),
                ),
                (
                    "cached_input_per_million",
                    models.DecimalField(
                        blank=True,
                        decimal_places=6,
                        help_text="Input tokens read from the provider's prompt cache; empty: priced as input.",
                        max_digits=12,
                        null=True,
                        verbose_name="cached input (USD per 1M tokens)",
                    ),
                ),
                (
                    "output_per_million",
                    models.DecimalField(
                        decimal_places=6,
                        help_text="Output tokens, reasoning tokens included.",
                        max_digits=12,
                        verbose_name="output (USD per 1M tokens)",
                    ),
                ),
                (
                    "price_date",
                    models.DateField(
                        help_text="When these prices were read from the source.", verbose_name="price date"
                    ),
                ),
                (
                    "source_url",
                    models.URLField(help_text="Where the prices were read.", max_length=500, verbose_name="source"),
                ),
                ("updated_at", models.DateTimeField(auto_now=True, verbose_name="updated at")),
            ],
            options={
                "verbose_name": "LLM model price",
                "ordering": ["provider", "model"],
                "constraints": [models.UniqueConstraint(fields=("provider", "model"), name="llm_model_price_unique")],
            },
        ),
        migrations.CreateModel(
            name="BudgetAlert",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "month",
                    models.DateField(
                        help_text="The first day of the month (UTC) the alert is about.", verbose_name="month"
                    ),
                ),
                ("budget", models.DecimalField(decimal_places=2, max_digits=14, verbose_name="budget (USD)")),
                (
                    "spend",
                    models.DecimalField(
                        decimal_places=8,
                        help_text="When the alert was made.",
                        max_digits=18,
                        verbose_name="spend (USD)",
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True, verbose_name="created at")),
                (
                    "organization",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="budget_alerts",
                        to="tenancy.organization",
                    ),
                ),
                (
                    "project",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="budget_alerts",
                        to="tenancy.project",
                    ),
                ),
            ],
            options={
                "verbose_name": "LLM budget alert",
                "ordering": ["-created_at"],
                "constraints": [
                    models.UniqueConstraint(fields=("project", "month"), name="llm_budget_alert_project_month"),
                    models.UniqueConstraint(fields=("organization", "month"), name="llm_budget_alert_org_month"),
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("organization__isnull", True), ("project__isnull", False)),
                            models.Q(("organization__isnull", False), ("project__isnull", True)),
                            _connector="OR",
                        ),
                        name="llm_budget_alert_one_scope",
                    ),
                ],
            },
        ),
    ]
