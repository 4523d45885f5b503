from django.apps import AppConfig


class DoctransformConfig(AppConfig):
    name = "doctransform"
    verbose_name = "Document transformation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import jobs  # noqa: F401  - registers the DOC_TRANSFORM job function
