"""The drain against the baselines a Django team would pick instead of our jobs, same broker, worker and prefetch.

Ours: echo jobs through the full path (job_create, published before the worker starts), drained by kaapi's worker:
the claim, the function, the SUCCESS with the result row.
Baselines: a no-op Celery task (bench/team_tasks.py) drained by the same worker command with Celery configured as
a Django team would (bench/team_settings.py): ``task_track_started`` on, results in
  django-db  django-celery-results' stock database backend (STARTED, then SUCCESS: two writes a task), goal ≥ 1.0x;
  redis      the Redis result backend, as the system we rebuild ran (no goal: a durable job row costs what an
             in-memory result does not).
Each phase pre-fills the queue, starts the worker and stops the clock when every result is SUCCESS. Rounds
alternate the three (--rounds, default 3); each round gives its ratios, and the median is the figure.

    python bench/drain_baselines.py --jobs 2000 --concurrency 2 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import kaapi_worker, print_table, purge, set_max_concurrent_jobs, setup_environment, wait  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--output", help="append the markdown table to this file")
    args = parser.parse_args()
    n, c = args.jobs, args.concurrency

    env = setup_environment("drainbaselines", redis=True)
    import redis
    from django.db import connection
    from django_celery_results.models import TaskResult

    from jobs.admission import dispatcher
    from jobs.models import Job, JobStatus
    from jobs.publishing import new_task_id
    from jobs.services import job_create
    from kaapi.celery import HIGH_PRIORITY, HIGH_PRIORITY_QUEUE, app, confirmed_producer
    from tenancy.services import project_get_or_create

    redis_url = env["REDIS_URL"]
    results_redis = redis.Redis.from_url(redis_url)
    project = project_get_or_create(organization_name="bench", project_name="drainbaselines")
    set_max_concurrent_jobs(project, n)  # every job is published before the worker starts
    purge(app)

    def empty_tables() -> None:
        tables = ", ".join(connection.ops.quote_name(model._meta.db_table) for model in (Job, TaskResult))
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {tables} CASCADE")

    def drain(worker_env: dict[str, str] | None, done, label: str) -> float:
        """Seconds to drain what is queued, scaled to n: the clock starts once the worker answers a ping."""
        worker = kaapi_worker(
            HIGH_PRIORITY_QUEUE, concurrency=c, include="bench.team_tasks", env=worker_env, label=label
        )
        t0, left = time.perf_counter(), done(remaining=True)
        seconds = (wait(done) - t0) * n / max(left, 1)
        worker.stop()
        return seconds

    def ours() -> float:
        empty_tables()
        for i in range(n):
            job_create(project=project, function_path="jobs.functions.echo", priority="high", params={"i": i})
        assert dispatcher.flush(timeout=300), "the dispatcher did not publish every job"

        def done(remaining: bool = False):
            if remaining:
                return n - Job.objects.filter(status=JobStatus.SUCCESS).count()
            return (
                TaskResult.objects.filter(status="SUCCESS").count() >= n
                and Job.objects.filter(status=JobStatus.SUCCESS).count() >= n
            )

        return drain(None, done, "ours")

    def publish_noops() -> list[str]:
        task_ids = [new_task_id() for _ in range(n)]
        with confirmed_producer() as producer:
            for i, task_id in enumerate(task_ids):
                app.send_task(
                    "bench.team_noop",
                    args=[i],
                    task_id=task_id,
                    queue=HIGH_PRIORITY_QUEUE,
                    priority=HIGH_PRIORITY,
                    producer=producer,
                )
        return task_ids

    def team_django_db() -> float:
        empty_tables()
        publish_noops()

        def done(remaining: bool = False):
            succeeded = TaskResult.objects.filter(status="SUCCESS").count()
            return n - succeeded if remaining else succeeded >= n

        return drain({"DJANGO_SETTINGS_MODULE": "bench.team_settings", "BENCH_RESULT_BACKEND": "django-db"}, done, "db")

    def team_redis() -> float:
        task_ids = publish_noops()
        keys = [f"celery-task-meta-{task_id}" for task_id in task_ids]

        def succeeded() -> int:
            return sum(1 for value in results_redis.mget(keys) if value and b'"SUCCESS"' in value)

        def done(remaining: bool = False):
            return n - succeeded() if remaining else succeeded() >= n

        try:
            return drain(
                {"DJANGO_SETTINGS_MODULE": "bench.team_settings", "BENCH_RESULT_BACKEND": redis_url}, done, "redis"
            )
        finally:
            results_redis.delete(*keys)

    # The machine is shared and noisy: the rounds alternate the three, and each round gives its own ratios.
    rounds = [{"ours": ours(), "db": team_django_db(), "redis": team_redis()} for _ in range(args.rounds)]
    purge(app)
    rates = {kind: [n / r[kind] for r in rounds] for kind in ("ours", "db", "redis")}

    def joined(values: list[float], spec: str) -> str:
        return " / ".join(format(v, spec) for v in values)

    rows: list[tuple[str, ...]] = []
    for kind, title, goal in (
        ("db", "django-db results (django-celery-results), track_started", "goal ≥ 1.0"),
        ("redis", "Redis results, track_started", "no goal"),
    ):
        ratios = [o / b for o, b in zip(rates["ours"], rates[kind], strict=True)]
        median = statistics.median(ratios)
        verdict = ("met" if median >= 1.0 else "not met") if goal.startswith("goal") else "—"
        rows.append(
            (
                title,
                joined(rates["ours"], ",.0f"),
                joined(rates[kind], ",.0f"),
                joined(ratios, ".2f"),
                f"{median:.2f} ({goal})",
                verdict,
            )
        )
    table = print_table(
        f"Drain against the Django team's baselines: {n} echo jobs vs {n} no-op Celery tasks on kaapi's worker "
        f"(prefork, concurrency {c}, prefetch 1), {args.rounds} alternating rounds",
        rows,
        ("baseline", "our jobs/s", "baseline tasks/s", "ratio per round", "median ratio", "goal"),
    )
    if args.output:
        with open(args.output, "a") as fh:
            fh.write(table + "\n\n")


if __name__ == "__main__":
    main()
