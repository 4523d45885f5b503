from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from jobs import services
from jobs.models import Job, WaitingReason


class Command(BaseCommand):
    help = (
        "Run the stalled-job recovery now (what the periodic jobs_cron_recover_stalled does every minute): publish "
        "PENDING jobs whose message never reached the broker, and requeue or fail PROCESSING jobs no worker will "
        "finish. After a broker outage, to publish the backlog at once; --dry-run only counts them."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--grace-seconds",
            type=int,
            default=None,
            help="Publish jobs undispatched for longer than this (default: JOB_DISPATCH_GRACE_SECONDS). 0: all of "
            "them, including those a web process may still be about to publish (a duplicate message is harmless).",
        )
        parser.add_argument("--limit", type=int, default=100_000, help="At most this many jobs of each kind.")
        parser.add_argument("--dry-run", action="store_true", help="Count the jobs; change nothing.")

    def handle(self, *args, grace_seconds, limit, dry_run, **options):
        if grace_seconds is not None and grace_seconds < 0:
            raise CommandError("--grace-seconds must be 0 or more")
        if limit < 1:
            raise CommandError("--limit must be at least 1")
        grace = timedelta(seconds=grace_seconds) if grace_seconds is not None else services.dispatch_grace()
        if dry_run:
            undispatched = Job.objects.stalled_undispatched(older_than=grace).count()
            overdue = Job.objects.overdue(older_than=services.overdue_after()).count()
            self.stdout.write(f"undispatched: {undispatched}, overdue: {overdue} (dry run: nothing changed)")
            return
        published = services.jobs_dispatch_stalled(older_than=grace, limit=limit, seconds=float("inf"))
        counts = services.jobs_recover_overdue(limit=limit)
        self.stdout.write(f"published: {published}, requeued: {counts['requeued']}, failed: {counts['failed']}")
        left_waiting = Job.objects.stalled_undispatched(older_than=grace).exclude(
            waiting_reason=WaitingReason.MAX_CONCURRENT_JOBS  # waiting for their project's running jobs, rightly
        )
        if published < limit and (left := left_waiting.count()):
            raise CommandError(f"{left} undispatched jobs left: the broker refused them (is it reachable?)")
