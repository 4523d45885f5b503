"""The admin page of LLM usage (a proxy of the project: no table)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("llm", "0004_model_prices_list"),
        ("tenancy", "0004_budgets"),
    ]

    operations = [
        migrations.CreateModel(
            name="ProjectUsage",
            fields=[],
            options={
                "verbose_name": "LLM usage",
                "verbose_name_plural": "LLM usage",
                "proxy": True,
                "indexes": [],
                "constraints": [],
            },
            bases=("tenancy.project",),
        ),
    ]
