from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from kaapi import crypto

        from . import functions  # noqa: F401  registers the built-in job functions
        from .webhooks.services import webhook_secrets_reencrypt

        crypto.register_reencryption("webhook secret", webhook_secrets_reencrypt)
