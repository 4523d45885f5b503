"""The job path's hand-written statements: the drain's bound, and each statement against its ORM form.

The drain's bound: a bare task that runs exactly the two statements a job costs its worker, and nothing else.

The architecture gives every job two database writes in the worker: the claim (PENDING → PROCESSING, attempt + 1,
committed before the function runs) and the SUCCESS with Celery's result row (one statement here). This task runs
those two statements (``jobs.sql``, as the generic tasks run them) without the registry, the logging
context, the function call, metrics or webhooks. bench/job_overhead.py drains it with kaapi's own worker
(``--include bench.job_statements``), beside raw no-op tasks and real echo jobs: raw Celery plus the two
statements is as fast as the full path can get, whatever the rest of the job code costs.

Run alone, it times each hand-written statement (``jobs.sql``, ``kaapi.sql``) beside the ORM form it replaces, in
the same run: a statement stays hand-written only while it beats its ORM form (docs/benchmarks.md).

    python bench/job_statements.py --calls 300 --rounds 3
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":  # run alone: this bench's database and Django first, then the job modules
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.harness import setup_environment

    setup_environment("statements")

from celery import shared_task, states  # noqa: E402
from django.db.models import F  # noqa: E402
from django.utils import timezone  # noqa: E402

from jobs import sql  # noqa: E402


@shared_task(name="bench.job_statements", bind=True, ignore_result=True, track_started=False)
def job_statements(self, job_id: str) -> None:
    sql.claim(job_id=job_id, task_id=self.request.id, now=timezone.now())
    result = {"job_id": job_id}
    row = self.backend.result_row(self.request.id, result, states.SUCCESS, request=self.request)
    sql.mark_success(job_id=job_id, result=result, now=timezone.now(), task_result=row)


# --- Each hand-written statement beside its ORM form --------------------------------------------------------
def _orm_mark_success(*, job_id, result, now, task_result):
    """What the SUCCESS costs through the ORM: the conditional UPDATE, the finished row read back (the finish hook
    needs it), and the result row written as ``bulk_create(update_conflicts=True)`` writes it, in one transaction."""
    from django.db import transaction
    from django_celery_results.models import TaskResult

    from jobs.models import Job, JobStatus

    with transaction.atomic():
        updated = Job.objects.filter(id=job_id, status=JobStatus.PROCESSING).update(
            status=JobStatus.SUCCESS, result=result, error="", progress_percent=100, finished_at=now, updated_at=now
        )
        job = Job.objects.defer("params", "result").get(id=job_id) if updated else None
        fields = [f.name for f in TaskResult._meta.concrete_fields if f.name not in ("id", "task_id", "date_created")]
        TaskResult.objects.bulk_create(
            [task_result],
            update_conflicts=True,
            unique_fields=["task_id"],
            update_fields=[name for name in fields if name != "date_started"],
        )
    return job


def _orm_finish(*, job_id, from_statuses, **fields):
    from jobs.models import Job

    if not Job.objects.filter(id=job_id, status__in=from_statuses).update(**fields):
        return None
    return Job.objects.get(id=job_id)


def main() -> None:
    """Time each statement of ``jobs.sql`` / ``kaapi.sql`` beside the ORM form it replaces, in one process and one
    run, alternating rounds; prints microseconds per call and the ORM's time over the hand-written one's."""
    import argparse
    import statistics
    import time

    from bench.harness import print_table

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--calls", type=int, default=300, help="calls of each form per round (default 300)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", help="append the markdown table to this file")
    args = parser.parse_args()
    n = args.calls

    from django.db import connection
    from django.utils import timezone
    from django_celery_results.models import TaskResult

    from jobs.models import Job, JobStatus
    from jobs.publishing import new_task_id
    from kaapi.celery import app
    from kaapi.sql import task_result_upsert
    from tenancy.services import project_get_or_create

    project = project_get_or_create(organization_name="bench", project_name="statements")
    params = {"query": "x" * 500, "request_metadata": {"conversation": 7}}  # an LLM call's size of params

    def new_job() -> Job:
        return Job(
            project=project,
            job_type="ECHO",
            function_path="jobs.functions.echo",
            queue="high_priority",
            priority=9,
            params=params,
            task_id=new_task_id(),
            trace_id="bench",
        )

    def rows(status: str) -> list[Job]:
        jobs = [new_job() for _ in range(n)]
        for job in jobs:
            job.status = status
        return Job.objects.bulk_create(jobs)

    def timed(calls) -> float:
        started = time.perf_counter()
        for call in calls:
            call()
        return (time.perf_counter() - started) / n * 1e6

    def row_of(job: Job) -> TaskResult:
        return app.backend.result_row(job.task_id, {"ok": True}, "SUCCESS")

    def upsert(row: TaskResult) -> None:
        with connection.cursor() as cursor:
            cursor.execute(*task_result_upsert(row, using="default"))

    kept = ("id", "task_id", "date_created", "date_started")
    orm_update_fields = [f.name for f in TaskResult._meta.concrete_fields if f.name not in kept]

    def fresh(count: int) -> list[Job]:
        return [new_job() for _ in range(count)]

    def with_rows(jobs: list[Job]) -> list[tuple[Job, TaskResult]]:
        return [(job, row_of(job)) for job in jobs]

    forms = {
        "INSERT of a job": (
            lambda: [lambda job=job: sql.insert(job) for job in fresh(n)],
            lambda: [lambda job=job: job.save(force_insert=True) for job in fresh(n)],
        ),
        "claim (PENDING → PROCESSING)": (
            lambda: [
                lambda job=job: sql.claim(job_id=job.id, task_id=job.task_id, now=timezone.now())
                for job in rows(JobStatus.PENDING)
            ],
            lambda: [
                lambda job=job: Job.objects.filter(id=job.id, status=JobStatus.PENDING).update(
                    status=JobStatus.PROCESSING,
                    attempts=F("attempts") + 1,
                    started_at=timezone.now(),
                    task_id=job.task_id,
                    updated_at=timezone.now(),
                )
                for job in rows(JobStatus.PENDING)
            ],
        ),
        "SUCCESS with the result row": (
            lambda: [
                lambda job=job, row=row: sql.mark_success(
                    job_id=job.id, result={"ok": True}, now=timezone.now(), task_result=row
                )
                for job, row in with_rows(rows(JobStatus.PROCESSING))
            ],
            lambda: [
                lambda job=job, row=row: _orm_mark_success(
                    job_id=job.id, result={"ok": True}, now=timezone.now(), task_result=row
                )
                for job, row in with_rows(rows(JobStatus.PROCESSING))
            ],
        ),
        "finish (FAILED, the row read back)": (
            lambda: [
                lambda job=job: sql.finish(
                    job_id=job.id, from_statuses=[JobStatus.PROCESSING], status=JobStatus.FAILED, error="e"
                )
                for job in rows(JobStatus.PROCESSING)
            ],
            lambda: [
                lambda job=job: _orm_finish(
                    job_id=job.id, from_statuses=[JobStatus.PROCESSING], status=JobStatus.FAILED, error="e"
                )
                for job in rows(JobStatus.PROCESSING)
            ],
        ),
        "result row alone (upsert)": (
            lambda: [lambda row=row: upsert(row) for _, row in with_rows(fresh(n))],
            lambda: [
                lambda row=row: TaskResult.objects.bulk_create(
                    [row], update_conflicts=True, unique_fields=["task_id"], update_fields=orm_update_fields
                )
                for _, row in with_rows(fresh(n))
            ],
        ),
    }
    measured: dict[str, list[tuple[float, float]]] = {name: [] for name in forms}
    for round_number in range(args.rounds + 1):  # the first round warms up (prepared statements, caches)
        for name, (hand, orm) in forms.items():
            # the form that runs first alternates between rounds; each form's calls are built before the clock
            first, second = (hand, orm) if round_number % 2 else (orm, hand)
            times = {id(first): timed(first()), id(second): timed(second())}
            if round_number:
                measured[name].append((times[id(hand)], times[id(orm)]))
        Job.objects.all().delete()
        TaskResult.objects.all().delete()
    table_rows = []
    for name, pairs in measured.items():
        hand_us = statistics.median(h for h, _ in pairs)
        orm_us = statistics.median(o for _, o in pairs)
        ratios = [o / h for h, o in pairs]
        table_rows.append(
            (
                name,
                f"{hand_us:,.0f}",
                f"{orm_us:,.0f}",
                " / ".join(f"{r:.2f}" for r in ratios),
                f"{statistics.median(ratios):.2f}",
            )
        )
    table = print_table(
        f"Hand-written statements against their ORM form: {n} calls each, {args.rounds} alternating rounds, "
        "one connection",
        table_rows,
        ("statement", "hand-written µs/call", "ORM µs/call", "ORM / hand per round", "median ORM / hand"),
    )
    if args.output:
        with open(args.output, "a") as fh:
            fh.write(table + "\n\n")


if __name__ == "__main__":
    main()
