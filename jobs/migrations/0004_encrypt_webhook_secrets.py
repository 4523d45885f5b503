"""Webhook signing secrets are stored encrypted (kaapi.crypto.EncryptedCharField): widen the columns, then
encrypt the rows written in plain text before (and decrypt them again when migrating back)."""

from django.db import migrations

import kaapi.crypto

COLUMNS = ("secret", "previous_secret")


def _convert(schema_editor, transform) -> None:
    connection = schema_editor.connection
    quote = connection.ops.quote_name
    table = quote("jobs_webhooksecret")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {quote('id')}, {quote('secret')}, {quote('previous_secret')} FROM {table}")
        rows = cursor.fetchall()
        for pk, *values in rows:
            converted = [transform(value) if value else value for value in values]
            assignments = ", ".join(f"{quote(column)} = %s" for column in COLUMNS)
            cursor.execute(f"UPDATE {table} SET {assignments} WHERE {quote('id')} = %s", [*converted, pk])


def encrypt_rows(apps, schema_editor) -> None:
    _convert(schema_editor, kaapi.crypto.encrypt)


def decrypt_rows(apps, schema_editor) -> None:
    _convert(schema_editor, kaapi.crypto.decrypt)


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0003_fewer_job_indexes"),
    ]

    operations = [
        migrations.AlterField(
            model_name="webhooksecret",
            name="previous_secret",
            field=kaapi.crypto.EncryptedCharField(
                blank=True,
                default="",
                help_text="Secret before the last rotation.",
                max_length=512,
                verbose_name="previous secret",
            ),
        ),
        migrations.AlterField(
            model_name="webhooksecret",
            name="secret",
            field=kaapi.crypto.EncryptedCharField(
                help_text="Current signing secret (whsec_…).", max_length=512, verbose_name="secret"
            ),
        ),
        migrations.RunPython(encrypt_rows, decrypt_rows),
    ]
