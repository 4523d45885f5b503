from django.conf import settings
from django.core.management.base import BaseCommand

from jobs.maintenance import periodic_tasks_install
from kaapi.celery import app


class Command(BaseCommand):
    help = (
        "Start Celery beat with the database scheduler (schedules are edited in Django admin). "
        "Installs the default schedules that are missing first (as setup_periodic_tasks). "
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
        parser.add_argument(
            "--no-default-schedules", action="store_true", help="Do not install missing default schedules."
        )

    def handle(self, *args, loglevel: str, max_interval: int | None, no_default_schedules: bool, **options):
        if not no_default_schedules:
            try:
                periodic_tasks_install()
            except Exception as exc:  # beat still starts on the schedules already there
                self.stderr.write(f"could not install the default schedules: {exc}")
        argv = ["beat", "--loglevel", loglevel, "--scheduler", settings.CELERY_BEAT_SCHEDULER]
        if max_interval:
            argv += ["--max-interval", str(max_interval)]
        app.start(argv)
