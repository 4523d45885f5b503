from django.apps import AppConfig


class DoctransformConfig(AppConfig):
    name = "doctransform"
    default_auto_field = "django.db.models.BigAutoField"
