"""Webhook signing secrets are stored encrypted, like provider credentials; the API and the signer see them."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from jobs.models import WebhookSecret
from jobs.webhooks import webhook_secret_get, webhook_secret_rotate
from kaapi import crypto


def stored_columns(project) -> tuple[str, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret, previous_secret FROM jobs_webhooksecret WHERE project_id = %s", [project.id])
        return cursor.fetchone()


@pytest.mark.django_db
def test_the_secret_is_encrypted_in_the_database_and_plain_in_the_api(project, api_client):
    shown = api_client.get("/api/v1/webhooks/secret/").json()["secret"]
    assert shown.startswith("whsec_") and webhook_secret_get(project=project).secret == shown
    stored, previous = stored_columns(project)
    assert shown not in stored and crypto.decrypt(stored) == shown and previous == ""

    rotated = api_client.post("/api/v1/webhooks/secret/rotate/").json()["secret"]
    stored, previous = stored_columns(project)
    assert crypto.decrypt(stored) == rotated and crypto.decrypt(previous) == shown
    assert WebhookSecret.objects.get(project=project).previous_secret == shown


@pytest.mark.django_db(transaction=True)
def test_the_migration_encrypts_secrets_stored_in_plain_text_before(project, migrate_to):
    migrate_to(("jobs", "0003_fewer_job_indexes"))
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO jobs_webhooksecret (project_id, secret, previous_secret, created_at) "
            "VALUES (%s, %s, %s, now())",
            [project.id, "whsec_plain-current", "whsec_plain-previous"],
        )
    migrate_to(("jobs", "0004_encrypt_webhook_secrets"))
    stored, previous = stored_columns(project)
    assert crypto.decrypt(stored) == "whsec_plain-current" and crypto.decrypt(previous) == "whsec_plain-previous"
    migrate_to(*MigrationExecutor(connection).loader.graph.leaf_nodes())
    secret = WebhookSecret.objects.get(project=project)
    assert (secret.secret, secret.previous_secret) == ("whsec_plain-current", "whsec_plain-previous")
    webhook_secret_rotate(project=project)  # and the rows stay usable
    assert WebhookSecret.objects.get(project=project).previous_secret == "whsec_plain-current"


@pytest.mark.django_db
def test_the_key_rotation_command_re_encrypts_webhook_secrets_too(project, settings):
    from cryptography.fernet import Fernet
    from django.core.management import call_command

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.CREDENTIALS_ENCRYPTION_KEYS = [old]
    plain = webhook_secret_get(project=project).secret
    settings.CREDENTIALS_ENCRYPTION_KEYS = [new, old]
    call_command("rotate_llm_credentials", stdout=open("/dev/null", "w"))  # noqa: SIM115
    settings.CREDENTIALS_ENCRYPTION_KEYS = [new]  # the old key is gone: the secret is still readable
    assert crypto.decrypt(stored_columns(project)[0]) == plain
    assert WebhookSecret.objects.get(project=project).secret == plain
