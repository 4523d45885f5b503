from django.apps import AppConfig


class LlmConfig(AppConfig):
    name = "llm"
    verbose_name = "LLM calls"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from kaapi import crypto

        from . import jobs  # noqa: F401  registers llm.jobs.execute_job
        from .services import credentials_rotate

        crypto.register_reencryption("credential", credentials_rotate)
