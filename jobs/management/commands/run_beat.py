from django.core.management.base import BaseCommand

from kaapi.celery import app


class Command(BaseCommand):
    help = "Start Celery beat with the database scheduler (schedules are edited in Django admin)."

    def add_arguments(self, parser):
        parser.add_argument("--loglevel", default="info")

    def handle(self, *args, loglevel: str, **options):
        app.start(["beat", "--loglevel", loglevel, "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"])
