from django.conf import settings
from django.core.management.base import BaseCommand

from kaapi.celery import app


class Command(BaseCommand):
    help = (
        "Start Celery beat with the database scheduler (schedules are edited in Django admin). "
        "Only the beat holding the beat lock fires; another one stands by (see jobs/beat.py)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--loglevel", default="info")
        parser.add_argument(
            "--max-interval",
            type=int,
            default=None,
            help="Longest sleep between looks at the schedule table (default CELERY_BEAT_MAX_LOOP_INTERVAL).",
        )

    def handle(self, *args, loglevel: str, max_interval: int | None, **options):
        argv = ["beat", "--loglevel", loglevel, "--scheduler", settings.CELERY_BEAT_SCHEDULER]
        if max_interval:
            argv += ["--max-interval", str(max_interval)]
        app.start(argv)
