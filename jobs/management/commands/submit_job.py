import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from jobs import services
from jobs.functions import ECHO_PATH
from tenancy.models import Project


class Command(BaseCommand):
    help = "Submit a diagnostic echo job (returns its params after an optional delay); prints the job id."

    def add_arguments(self, parser):
        parser.add_argument("--organization", required=True)
        parser.add_argument("--project", required=True)
        parser.add_argument("--priority", choices=sorted(services.PRIORITY_LEVELS), default="high")
        parser.add_argument("--delay", type=float, default=0.0, help="Seconds to sleep before returning.")
        parser.add_argument("--params", default="{}", help="JSON object returned as the result.")
        parser.add_argument("--count", type=int, default=1, help="How many jobs to submit.")

    def handle(self, *args, organization, project, priority, delay, params, count, **options):
        try:
            extra = json.loads(params)
        except json.JSONDecodeError as exc:
            raise CommandError(f"--params is not JSON: {exc}") from None
        if not isinstance(extra, dict):
            raise CommandError("--params must be a JSON object")
        if not 0 <= delay <= settings.ECHO_MAX_DELAY_SECONDS:
            raise CommandError(f"--delay must be between 0 and {settings.ECHO_MAX_DELAY_SECONDS}")
        target = Project.objects.filter(organization__name=organization, name=project).first()
        if target is None:
            raise CommandError(f"no project {project!r} in organization {organization!r}")
        for _ in range(count):
            with transaction.atomic():
                job = services.job_create(
                    project=target, function_path=ECHO_PATH, priority=priority, params={**extra, "delay": delay}
                )
            self.stdout.write(str(job.id))
