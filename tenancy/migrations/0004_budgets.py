"""Monthly LLM budgets of organizations and projects, and the project URL that receives budget.threshold."""

import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tenancy", "0003_project_max_submissions_per_minute"),
    ]

    operations = [
        migrations.AddField(
            model_name="organization",
            name="monthly_budget",
            field=models.DecimalField(
                blank=True,
                decimal_places=2,
                help_text="LLM spend of all its projects in a calendar month (UTC); once reached, new LLM calls are refused (402) until the month ends. Empty: no budget.",
                max_digits=14,
                null=True,
                validators=[django.core.validators.MinValueValidator(0)],
                verbose_name="monthly budget (USD)",
            ),
        ),
        migrations.AddField(
            model_name="project",
            name="budget_callback_url",
            field=models.URLField(
                blank=True,
                default="",
                help_text="Receives the signed budget.threshold webhook (once a month, when spend passes LLM_BUDGET_THRESHOLD_PERCENT of a budget). Empty: none sent.",
                max_length=2048,
                verbose_name="budget callback URL",
            ),
        ),
        migrations.AddField(
            model_name="project",
            name="monthly_budget",
            field=models.DecimalField(
                blank=True,
                decimal_places=2,
                help_text="LLM spend of this project in a calendar month (UTC); once reached, new LLM calls are refused (402) until the month ends. Empty: no budget.",
                max_digits=14,
                null=True,
                validators=[django.core.validators.MinValueValidator(0)],
                verbose_name="monthly budget (USD)",
            ),
        ),
    ]
