"""The list prices of the common OpenAI and Anthropic models, per million tokens, as published on the providers'
pricing pages on the date given. Operators check them against those pages and edit them in admin: prices change,
and negotiated or batch prices are not list prices. Rows already present (edited in admin) are left alone."""

import datetime
from decimal import Decimal

from django.db import migrations

OPENAI = "https://openai.com/api/pricing/"
ANTHROPIC = "https://docs.anthropic.com/en/docs/about-claude/pricing"
READ_ON = datetime.date(2025, 8, 15)

# (provider, model, aliases, input, cached input, output): USD per million tokens.
PRICES = [
    ("openai", "gpt-5", "", "1.25", "0.125", "10.00"),
    ("openai", "gpt-5-mini", "", "0.25", "0.025", "2.00"),
    ("openai", "gpt-5-nano", "", "0.05", "0.005", "0.40"),
    ("openai", "gpt-4.1", "", "2.00", "0.50", "8.00"),
    ("openai", "gpt-4.1-mini", "", "0.40", "0.10", "1.60"),
    ("openai", "gpt-4.1-nano", "", "0.10", "0.025", "0.40"),
    ("openai", "gpt-4o", "", "2.50", "1.25", "10.00"),
    ("openai", "gpt-4o-mini", "", "0.15", "0.075", "0.60"),
    ("openai", "o1", "", "15.00", "7.50", "60.00"),
    ("openai", "o3", "", "2.00", "0.50", "8.00"),
    ("openai", "o3-mini", "", "1.10", "0.55", "4.40"),
    ("openai", "o4-mini", "", "1.10", "0.275", "4.40"),
    ("openai", "gpt-4-turbo", "", "10.00", None, "30.00"),
    ("openai", "gpt-3.5-turbo", "", "0.50", None, "1.50"),
    ("anthropic", "claude-opus-4-1", "", "15.00", "1.50", "75.00"),
    ("anthropic", "claude-opus-4", "claude-4-opus", "15.00", "1.50", "75.00"),
    ("anthropic", "claude-sonnet-4-5", "", "3.00", "0.30", "15.00"),
    ("anthropic", "claude-sonnet-4", "claude-4-sonnet", "3.00", "0.30", "15.00"),
    ("anthropic", "claude-3-7-sonnet", "", "3.00", "0.30", "15.00"),
    ("anthropic", "claude-3-5-sonnet", "", "3.00", "0.30", "15.00"),
    ("anthropic", "claude-haiku-4-5", "", "1.00", "0.10", "5.00"),
    ("anthropic", "claude-3-5-haiku", "", "0.80", "0.08", "4.00"),
    ("anthropic", "claude-3-haiku", "", "0.25", "0.03", "1.25"),
    ("anthropic", "claude-3-opus", "", "15.00", "1.50", "75.00"),
]


def add_prices(apps, schema_editor):
    ModelPrice = apps.get_model("llm", "ModelPrice")
    for provider, model, aliases, input_price, cached, output in PRICES:
        ModelPrice.objects.get_or_create(
            provider=provider,
            model=model,
            defaults={
                "aliases": aliases,
                "input_per_million": Decimal(input_price),
                "cached_input_per_million": None if cached is None else Decimal(cached),
                "output_per_million": Decimal(output),
                "price_date": READ_ON,
                "source_url": OPENAI if provider == "openai" else ANTHROPIC,
            },
        )


class Migration(migrations.Migration):
    dependencies = [("llm", "0003_prices_and_budget_alerts")]

    operations = [migrations.RunPython(add_prices, migrations.RunPython.noop)]
