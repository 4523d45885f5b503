from django.core.management.base import BaseCommand

from jobs.maintenance import periodic_tasks_install


class Command(BaseCommand):
    help = (
        "Install the default periodic schedules (idempotent: schedules already there keep the edits operators "
        "made in admin, unless --reset)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--reset", action="store_true", help="Restore existing default schedules too.")

    def handle(self, *args, reset: bool, **options):
        for name, outcome in periodic_tasks_install(reset=reset).items():
            self.stdout.write(f"{outcome:8} {name}")
