from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from kaapi.celery import QUEUE_MAX_PRIORITY, app

POOLS = ("prefork", "threads", "gevent", "solo")


class Command(BaseCommand):
    help = "Start a Celery worker for the given queues (gossip and mingle off)."

    def add_arguments(self, parser):
        parser.add_argument("--queues", default=",".join(QUEUE_MAX_PRIORITY), help="Comma-separated queue names.")
        parser.add_argument(
            "--concurrency",
            type=int,
            default=None,
            help="Processes/threads/greenlets (default: COMPUTED_CELERY_WORKER_CONCURRENCY; "
            "CELERY_WORKER_GEVENT_CONCURRENCY for gevent and threads).",
        )
        parser.add_argument("--loglevel", default="info")
        parser.add_argument("--pool", choices=POOLS, default="prefork")
        parser.add_argument("--hostname", default=None, help="Node name, e.g. high@%%h.")
        parser.add_argument(
            "--prefetch-multiplier",
            type=int,
            default=None,
            help="Messages reserved per process/greenlet (default: CELERY_WORKER_PREFETCH_MULTIPLIER).",
        )

    def handle(
        self,
        *args,
        queues: str,
        concurrency: int | None,
        loglevel: str,
        pool: str,
        hostname: str | None,
        prefetch_multiplier: int | None = None,
        **options,
    ):
        names = [q.strip() for q in queues.split(",") if q.strip()]
        unknown = sorted(set(names) - set(QUEUE_MAX_PRIORITY))
        if not names or unknown:
            raise CommandError(f"unknown queue(s) {unknown}; known: {', '.join(QUEUE_MAX_PRIORITY)}")
        if concurrency is None and pool in ("gevent", "threads"):
            concurrency = settings.CELERY_WORKER_GEVENT_CONCURRENCY
        if pool == "gevent" and not settings.GEVENT_PATCHED:
            raise CommandError("the gevent pool must monkey-patch before Django starts: use manage.py run_worker")
        argv = [
            "worker",
            "--queues",
            ",".join(names),
            "--loglevel",
            loglevel,
            "--pool",
            pool,
            "--concurrency",
            str(concurrency or settings.COMPUTED_CELERY_WORKER_CONCURRENCY),
            "--without-gossip",
            "--without-mingle",
        ]
        if hostname:
            argv += ["--hostname", hostname]
        if prefetch_multiplier is not None:
            argv += ["--prefetch-multiplier", str(prefetch_multiplier)]
        app.worker_main(argv)
