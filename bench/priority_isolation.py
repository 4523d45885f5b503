"""Priority isolation: queue wait of high-priority jobs behind a large low-priority backlog.

The documented default worker layout (README, docker-compose): one gevent worker per core for high_priority
and one prefork worker for low_priority,default. A backlog of --backlog low-priority echo jobs is published, then
high-priority echo jobs are submitted at a steady --rate for --seconds. Queue wait = started_at - created_at
(the job row's own clock: INSERT → a worker claims it).

Baseline, in the same run: the same high-priority stream with no backlog. Printed: p50/p99 of both, the ratio.
Goal: p99 ≤ 100 ms with the backlog.

    python bench/priority_isolation.py --backlog 10000 --rate 20 --seconds 15
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    kaapi_worker,
    percentile,
    print_table,
    purge,
    queue_depth,
    set_max_concurrent_jobs,
    setup_environment,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlog", type=int, default=10000)
    parser.add_argument("--rate", type=float, default=20.0, help="high-priority jobs per second")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--high-concurrency", type=int, default=100)
    parser.add_argument(
        "--high-workers", type=int, default=min(os.cpu_count() or 1, 4), help="gevent high workers (one per core)"
    )
    parser.add_argument("--output")
    args = parser.parse_args()

    setup_environment("priority")
    from django.db import transaction

    from jobs.admission import dispatcher
    from jobs.models import Job, JobStatus
    from jobs.services import job_create, job_create_many
    from kaapi.celery import app
    from tenancy.services import project_get_or_create

    project = project_get_or_create(organization_name="bench", project_name="priority")
    # the whole low-priority backlog is in RabbitMQ before the stream starts (the limit holds per queue)
    set_max_concurrent_jobs(project, max(args.backlog, int(args.rate * args.seconds)))
    purge(app)

    def stream(label: str) -> list[float]:
        """Submit high-priority jobs at a steady rate; their queue waits in ms."""
        count = int(args.rate * args.seconds)
        interval = 1.0 / args.rate
        ids = []
        start = time.perf_counter()
        for i in range(count):
            target = start + i * interval
            if (pause := target - time.perf_counter()) > 0:
                time.sleep(pause)
            with transaction.atomic():
                ids.append(
                    job_create(
                        project=project,
                        function_path="jobs.functions.echo",
                        priority="high",
                        params={"stream": label, "i": i},
                    ).id
                )
        deadline = time.monotonic() + 120
        while Job.objects.filter(id__in=ids, status=JobStatus.SUCCESS).count() < count:
            if time.monotonic() > deadline:
                raise TimeoutError("high-priority jobs did not finish")
            time.sleep(0.2)
        return [
            (started - created).total_seconds() * 1000
            for created, started in Job.objects.filter(id__in=ids).values_list("created_at", "started_at")
        ]

    highs = [
        kaapi_worker("high_priority", pool="gevent", concurrency=args.high_concurrency, label=f"high{i + 1}")
        for i in range(args.high_workers)
    ]
    low = kaapi_worker("low_priority,default", pool="prefork", concurrency=2, label="low")
    time.sleep(2)

    idle = stream("idle")

    low.stop()  # publish the backlog with its worker stopped, then start it so it is busy during the stream
    t0 = time.perf_counter()
    with transaction.atomic():
        job_create_many(
            project=project,
            function_path="jobs.functions.echo",
            priority="low",
            params_list=[{"backlog": i} for i in range(args.backlog)],
        )
    dispatcher.flush(timeout=600)  # the backlog is in RabbitMQ before the stream starts
    published_in = time.perf_counter() - t0
    low = kaapi_worker("low_priority,default", pool="prefork", concurrency=2, label="low")
    time.sleep(2)
    depth_before = queue_depth(app, "low_priority")
    loaded = stream("backlog")
    depth_after = queue_depth(app, "low_priority")
    low_done = Job.objects.filter(queue="low_priority", status=JobStatus.SUCCESS).count()
    for high in highs:
        high.stop()
    low.stop()

    rows = [
        ("no backlog (baseline)", f"{len(idle)}", f"{percentile(idle, 50):.1f}", f"{percentile(idle, 99):.1f}", "—"),
        (
            f"{args.backlog:,} low-priority backlog",
            f"{len(loaded)}",
            f"{percentile(loaded, 50):.1f}",
            f"{percentile(loaded, 99):.1f}",
            f"{percentile(loaded, 99) / max(percentile(idle, 99), 0.001):.2f}",
        ),
    ]
    table = print_table(
        f"Priority isolation: high-priority queue wait at {args.rate:g}/s "
        f"({args.high_workers} gevent high workers, prefork low worker)",
        rows,
        ("condition", "jobs", "p50 ms", "p99 ms (goal ≤ 100)", "p99 ratio to baseline"),
    )
    print(
        f"\nbacklog published in {published_in:.1f}s; low_priority depth {depth_before} → {depth_after} during the "
        f"stream; {low_done} low-priority jobs done"
    )
    if args.output:
        with open(args.output, "a") as fh:
            fh.write(table + "\n\n")


if __name__ == "__main__":
    main()
