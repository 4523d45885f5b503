"""Job overhead: echo jobs through the full path vs raw Celery no-op tasks, same broker, pool and prefetch.

Full path: jobs.services.job_create (INSERT, publish with confirms after commit, UPDATE dispatched_at) →
RabbitMQ → worker (the claim, run, then one statement writing the SUCCESS and the row in the
django-celery-results table).
Raw: `noop.apply_async()` (with publisher confirms, as job messages) → RabbitMQ → worker, no result stored.

Two measurements of each, in the same run:
  submit+run — submission and execution overlap, the clock stops when the last one finished;
  drain      — a pre-filled queue, the clock runs from worker start-up to empty.
Rounds alternate raw and kaapi (--rounds, default 3); each round gives a ratio, and the median is the figure.

The drain also measures its bound: kaapi's worker draining a bare task that runs only the two statements every
job costs its worker (the claim, and the SUCCESS with the result row: bench/job_statements.py) on PENDING rows.
Its ratio to raw Celery is the most the full path can reach here; the full path's ratio to it is what the rest of
the job code (registry, logging context, function call, metrics) costs.

    python bench/job_overhead.py --jobs 2000 --concurrency 2 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    kaapi_worker,
    print_table,
    purge,
    queue_depth,
    raw_worker,
    set_max_concurrent_jobs,
    setup_environment,
    wait,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="alternating raw/kaapi rounds (default 3)")
    parser.add_argument("--output", help="append the markdown table to this file")
    args = parser.parse_args()
    n, c = args.jobs, args.concurrency

    setup_environment("overhead")
    from django.db import connection
    from django_celery_results.models import TaskResult

    from bench.raw_celery_app import app as raw_app
    from bench.raw_celery_app import noop, publish
    from jobs.admission import dispatcher
    from jobs.models import Job, JobStatus
    from jobs.publishing import new_task_id
    from jobs.services import job_create
    from kaapi.celery import app, confirmed_producer
    from tenancy.services import project_get_or_create

    project = project_get_or_create(organization_name="bench", project_name="overhead")
    set_max_concurrent_jobs(project, n)  # the drain publishes all n jobs before its worker starts
    purge(app)

    def empty_tables() -> None:
        """Every phase starts from empty job and result tables: TRUNCATE, so that no phase inherits the dead rows
        (and an autovacuum run) of the one before."""
        tables = ", ".join(connection.ops.quote_name(model._meta.db_table) for model in (Job, TaskResult))
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {tables} CASCADE")

    empty_tables()
    with raw_app.connection_for_write() as conn:
        raw_app.conf.task_queues[0](conn.default_channel).declare()
        raw_app.conf.task_queues[0](conn.default_channel).purge()

    def submit_jobs() -> None:
        # No surrounding transaction: an echo job has no domain rows to commit with it, so its INSERT is its own
        # transaction, as in POST /api/v1/llm/call.
        for i in range(n):
            job_create(project=project, function_path="jobs.functions.echo", priority="high", params={"i": i})

    def jobs_done() -> bool:  # the job row is SUCCESS and Celery's result row is written
        # Polled every 20 ms while the worker runs: the result table's count first (an index-only scan); the job
        # table's, a sequential scan (no index leads with status), only once the results are all in.
        return (
            TaskResult.objects.filter(status="SUCCESS").count() >= n
            and Job.objects.filter(status=JobStatus.SUCCESS).count() >= n
        )

    def measure_round() -> dict[str, float]:
        results = {}
        # Raw Celery, submit + run
        worker = raw_worker(concurrency=c)
        t0 = time.perf_counter()
        for i in range(n):
            publish(noop, i)
        results["raw_submit_run"] = wait(lambda: queue_depth(raw_app, "raw") == 0) - t0
        worker.stop()
        # Raw Celery, drain: the clock starts when the worker answers a ping; what it ran before does not count
        for i in range(n):
            publish(noop, i)
        worker = raw_worker(concurrency=c)
        t0, left = time.perf_counter(), queue_depth(raw_app, "raw")
        results["raw_drain"] = (wait(lambda: queue_depth(raw_app, "raw") == 0) - t0) * n / max(left, 1)
        worker.stop()

        # Kaapi, submit + run
        empty_tables()
        worker = kaapi_worker("high_priority", concurrency=c)
        t0 = time.perf_counter()
        submit_jobs()
        results["kaapi_submit_run"] = wait(jobs_done) - t0
        worker.stop()
        empty_tables()
        # Kaapi, drain: every message published (the dispatcher thread finished) before the worker starts
        submit_jobs()
        assert dispatcher.flush(timeout=300), "the dispatcher did not publish every job"
        worker = kaapi_worker("high_priority", concurrency=c)
        t0, left = time.perf_counter(), n - Job.objects.filter(status=JobStatus.SUCCESS).count()
        results["kaapi_drain"] = (wait(jobs_done) - t0) * n / max(left, 1)
        worker.stop()
        results["stored"] = TaskResult.objects.filter(status="SUCCESS").count()

        # The bound: PENDING rows (one INSERT), a message each for the bare task running the job's two statements
        empty_tables()
        rows = Job.objects.bulk_create(
            Job(
                project=project,
                job_type="echo",
                function_path="jobs.functions.echo",
                queue="high_priority",
                priority=9,
                params={"i": i},
                task_id=new_task_id(),
            )
            for i in range(n)
        )
        with confirmed_producer() as producer:
            for row in rows:
                app.send_task(
                    "bench.job_statements",
                    args=[str(row.id)],
                    task_id=row.task_id,
                    queue="high_priority",
                    priority=9,
                    producer=producer,
                )
        worker = kaapi_worker("high_priority", concurrency=c, include="bench.job_statements", label="bound")
        t0, left = time.perf_counter(), n - Job.objects.filter(status=JobStatus.SUCCESS).count()
        results["bound_drain"] = (wait(jobs_done) - t0) * n / max(left, 1)
        worker.stop()
        return results

    # The machine is shared and noisy: the rounds alternate raw and kaapi, and each round gives its own ratio.
    rounds = [measure_round() for _ in range(args.rounds)]
    stored = int(rounds[-1]["stored"])
    rows = []
    for kind in ("submit_run", "drain"):
        raw_rates = [n / r[f"raw_{kind}"] for r in rounds]
        kaapi_rates = [n / r[f"kaapi_{kind}"] for r in rounds]
        ratios = [k / r for k, r in zip(kaapi_rates, raw_rates, strict=True)]
        rows.append(
            (
                kind.replace("_", "+"),
                " / ".join(f"{rate:,.0f}" for rate in kaapi_rates),
                " / ".join(f"{rate:,.0f}" for rate in raw_rates),
                " / ".join(f"{ratio:.2f}" for ratio in ratios),
                f"{statistics.median(ratios):.2f}",
            )
        )
    bound_rates = [n / r["bound_drain"] for r in rounds]
    kaapi_drain = [n / r["kaapi_drain"] for r in rounds]
    raw_drain = [n / r["raw_drain"] for r in rounds]
    bound_ratios = [b / r for b, r in zip(bound_rates, raw_drain, strict=True)]
    rows.append(
        (
            "drain bound: the job's two statements alone",
            " / ".join(f"{rate:,.0f}" for rate in bound_rates),
            " / ".join(f"{rate:,.0f}" for rate in raw_drain),
            " / ".join(f"{ratio:.2f}" for ratio in bound_ratios),
            f"{statistics.median(bound_ratios):.2f} (the drain's bound)",
        )
    )
    of_bound = [k / b for k, b in zip(kaapi_drain, bound_rates, strict=True)]
    table = print_table(
        f"Job overhead: {n} echo jobs vs raw Celery no-op tasks (prefork, concurrency {c}, prefetch 1), "
        f"{args.rounds} alternating rounds",
        rows,
        ("measure", "kaapi jobs/s", "raw Celery tasks/s", "ratio per round", "median ratio (goal ≥ 0.5)"),
    )
    bound_note = (
        f"(drain against its bound, per round: {' / '.join(f'{x:.2f}' for x in of_bound)}, median "
        f"{statistics.median(of_bound):.2f}: what the job code beyond its two statements leaves of the bound's rate)"
    )
    print(f"\nresult rows in the table after the drain run: {stored} of {n}")
    print(bound_note)
    if args.output:
        with open(args.output, "a") as fh:
            fh.write(table + "\n\n" + bound_note + "\n\n")


if __name__ == "__main__":
    main()
