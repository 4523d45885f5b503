from django.apps import AppConfig


class DoctransformConfig(AppConfig):
    name = "doctransform"
    verbose_name = "Document transformation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from jobs.maintenance import DefaultSchedule, register_default_schedule

        from . import jobs  # noqa: F401  - registers the DOC_TRANSFORM job function

        register_default_schedule(
            DefaultSchedule(
                "kaapi: document retention",
                "doctransform_cron_retention",
                3600,
                "Delete documents (uploaded and derived) older than DOCUMENT_RETENTION_DAYS with their files, "
                "in batches.",
            )
        )
