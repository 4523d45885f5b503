"""The admin dashboard with a million jobs: the time of its numbers (jobs/dashboard.py) and of its page, beside one
full scan of the jobs table (``SELECT count(*)``) in the same run: what a dashboard that read the whole table
would cost at least. Goal: the dashboard (its page plus the data it fetches) under 500 ms.

The day's per-minute counts of settled hours are cached (jobs/dashboard.py): the page is timed warm, as every
refresh after a process's first finds it, and the numbers also cold (the whole day counted), as the first does.

The jobs are written by PostgreSQL itself (one ``INSERT ... SELECT`` over ``generate_series``, then ``ANALYZE``),
spread over the last --days days: mostly finished (90 % SUCCESS, 7 % FAILED, 3 % CANCELLED) across --projects
projects, plus --running PROCESSING and --waiting PENDING jobs (a tenth of those waiting for their retry). The
broker's queue depths and the workers' ping are cached by the page (seconds); they are read once before timing.

    python bench/dashboard.py --jobs 1000000 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import print_table, setup_environment  # noqa: E402

# How each column of a generated job is computed from g (1..N), its finished time t and its status s; any other
# column of the model gets its default as a parameter.
_COLUMNS = {
    "id": "gen_random_uuid()",
    "project_id": "p.ids[1 + (g::bigint * 7919) %% array_length(p.ids, 1)]",
    "job_type": "(ARRAY['ECHO', 'LLM_API', 'DOC_TRANSFORM'])[1 + g %% 3]",
    "function_path": "'jobs.functions.echo'",
    "queue": "CASE WHEN g %% 3 = 2 THEN 'low_priority' ELSE 'high_priority' END",
    "priority": "9",
    "status": "s",
    "error": "CASE WHEN s = 'FAILED' THEN 'ValueError: bench' ELSE '' END",
    "waiting_reason": "CASE WHEN s = 'PENDING' AND g %% 10 = 0 THEN 'retry' ELSE '' END",
    "attempts": "CASE WHEN s = 'PENDING' THEN 0 ELSE 1 END",
    "created_at": "t - interval '3 seconds' * (1 + g %% 5)",
    "dispatched_at": "CASE WHEN s = 'PENDING' THEN NULL ELSE t - interval '2 seconds' END",
    "started_at": "CASE WHEN s = 'PENDING' THEN NULL ELSE t - interval '1 second' * (g %% 7) END",
    "finished_at": "CASE WHEN s IN ('PENDING', 'PROCESSING') THEN NULL ELSE t END",
    "updated_at": "t",
}


def fill(*, jobs: int, days: float, projects: int, running: int, waiting: int) -> None:
    from django.db import connection

    from jobs.models import Job
    from tenancy.services import project_get_or_create

    ids = [project_get_or_create(organization_name="bench", project_name=f"p{i}").pk for i in range(projects)]
    columns, values, params = [], [], []
    for field in Job._meta.concrete_fields:
        columns.append(connection.ops.quote_name(field.column))
        if field.column in _COLUMNS:
            values.append(_COLUMNS[field.column])
        else:
            values.append("%s")
            params.append(field.get_db_prep_save(field.get_default(), connection))
    finished = jobs - running - waiting
    sql = f"""
        INSERT INTO {Job._meta.db_table} ({", ".join(columns)})
        SELECT {", ".join(values)}
        FROM (SELECT %s::int[] AS ids) p,
        LATERAL (
            SELECT g,
                   CASE WHEN g <= %s THEN now() - interval '1 second' * (g::float / %s * %s * 86400)
                        ELSE now() - interval '1 second' * (g %% 3600) END AS t,
                   CASE WHEN g > %s + %s THEN 'PENDING'
                        WHEN g > %s THEN 'PROCESSING'
                        WHEN g %% 100 < 7 THEN 'FAILED'
                        WHEN g %% 100 < 10 THEN 'CANCELLED'
                        ELSE 'SUCCESS' END AS s
            FROM generate_series(1, %s) g
        ) rows
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, ids, finished, finished, days, finished, running, finished, jobs])
        cursor.execute(f"ANALYZE {Job._meta.db_table}")


def timed(function, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        function()
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=7.0, help="the finished jobs are spread over this many days")
    parser.add_argument("--projects", type=int, default=200)
    parser.add_argument("--running", type=int, default=2_000)
    parser.add_argument("--waiting", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    setup_environment("dashboard")  # no REDIS_URL: the cache is this process's memory
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.cache import cache
    from django.db import connection
    from django.test import Client

    from jobs import dashboard
    from jobs.models import Job

    started = time.perf_counter()
    fill(jobs=args.jobs, days=args.days, projects=args.projects, running=args.running, waiting=args.waiting)
    print(f"filled {Job.objects.count():,} jobs in {time.perf_counter() - started:.1f} s", flush=True)

    User.objects.create_superuser("bench", "bench@localhost", "bench")
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(User.objects.get(username="bench"))
    client.get("/admin/dashboard/data/")  # reads the broker and pings the workers once: cached afterwards

    def full_scan() -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {Job._meta.db_table}")
            cursor.fetchone()

    def page() -> None:
        assert client.get("/admin/dashboard/").status_code == 200

    def cold() -> None:
        cache.clear()  # this process's memory cache: the settled hours of the day are counted again
        dashboard.dashboard_data()

    results = {
        "dashboard numbers, cold cache (the whole day counted)": timed(cold, args.rounds),
        "dashboard numbers (jobs/dashboard.py)": timed(dashboard.dashboard_data, args.rounds),
        "dashboard page (GET /admin/dashboard/)": timed(page, args.rounds),
        "data refresh (GET /admin/dashboard/data/)": timed(lambda: client.get("/admin/dashboard/data/"), args.rounds),
        "one full scan: SELECT count(*)": timed(full_scan, args.rounds),
    }
    scan = statistics.median(results["one full scan: SELECT count(*)"])
    rows = [
        (name, f"{statistics.median(times):.0f}", f"{max(times):.0f}", f"{statistics.median(times) / scan:.2f}")
        for name, times in results.items()
    ]
    print_table(
        f"Admin dashboard with {args.jobs:,} jobs ({args.rounds} rounds)",
        rows,
        ("what", "median ms", "max ms", "x full scan"),
    )
    assert "locmem" in settings.CACHES["default"]["BACKEND"]
    # what an operator waits for: the page, then the data it fetches
    worst = statistics.median(results["dashboard page (GET /admin/dashboard/)"]) + statistics.median(
        results["data refresh (GET /admin/dashboard/data/)"]
    )
    print(f"\ngoal: the dashboard (page + data) under 500 ms -> {'met' if worst < 500 else 'NOT met'} ({worst:.0f} ms)")


if __name__ == "__main__":
    main()
