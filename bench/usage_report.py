"""The usage report of a month of one project over a million jobs: from the job_usage index, against the same query
reading the table's rows.

    python -m bench.usage_report [--jobs 1000000] [--projects 100] [--runs 5]

Fills ``--jobs`` finished LLM jobs (one INSERT … SELECT from generate_series: the bulk path) over six months in
``--projects`` projects, one of which has a fifth of them (the busy one whose month is reported: ~33,000 calls at
the defaults), VACUUM ANALYZEs the table as autovacuum would, then times ``GET /api/v1/usage/``'s query
(llm.usage.usage_report) for each group_by, median of ``--runs``: as served (an index-only scan of job_usage) and,
side by side, with index-only scans disabled (PostgreSQL reads each row from the table). The goal is under 1 s on
2 cores for the month's report.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import setup_environment  # noqa: E402

FIRST_DAY = datetime(2026, 1, 1, tzinfo=UTC)
MONTHS = 6
REPORTED = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def fill(*, jobs: int, project_ids: list[int]) -> None:
    """``jobs`` finished LLM_API jobs, a fifth of them in the first project, spread evenly over six months."""
    from django.db import connection

    busy, others = project_ids[0], project_ids[1:]
    seconds = int((datetime(2026, 7, 1, tzinfo=UTC) - FIRST_DAY).total_seconds())
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO jobs_job (
                id, project_id, job_type, function_path, queue, priority, status, params, result, error,
                progress_percent, progress_message, task_id, trace_id, callback_url, attempts, worker_lost_count,
                waiting_reason, provider, model, config_id, input_tokens, output_tokens, cost,
                created_at, dispatched_at, started_at, finished_at, updated_at
            )
            SELECT
                gen_random_uuid(),
                CASE WHEN i %% 5 = 0 THEN %(busy)s ELSE (%(others)s::bigint[])[1 + i %% %(n_others)s] END,
                'LLM_API', 'llm.jobs.execute_job', 'high_priority', 9,
                CASE WHEN i %% 20 = 0 THEN 'FAILED' ELSE 'SUCCESS' END,
                '{}'::jsonb, NULL, '', 100, '', '', '', '', 1, 0, '',
                (ARRAY['openai', 'anthropic', 'openai-chat'])[1 + i %% 3],
                (ARRAY['gpt-4o-mini', 'claude-sonnet-4', 'llama3', 'gpt-4o'])[1 + i %% 4],
                NULLIF(i %% 7, 0),
                CASE WHEN i %% 20 = 0 THEN NULL ELSE 50 + i %% 400 END,
                CASE WHEN i %% 20 = 0 THEN NULL ELSE 10 + i %% 200 END,
                CASE WHEN i %% 20 = 0 OR i %% 3 = 2 THEN NULL ELSE (i %% 1000) / 1e6 END,
                t, t, t, t + interval '2 seconds', t + interval '2 seconds'
            FROM (
                SELECT i, %(first)s::timestamptz + (i::bigint * %(seconds)s / %(jobs)s) * interval '1 second' AS t
                FROM generate_series(1, %(jobs)s) AS i
            ) AS series
            """,
            {
                "busy": busy,
                "others": others,
                "n_others": len(others),
                "first": FIRST_DAY,
                "seconds": seconds,
                "jobs": jobs,
            },
        )
        cursor.execute("VACUUM ANALYZE jobs_job")


def timed(function, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--projects", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    setup_environment("usage_report")
    from django.db import connection, transaction

    from llm import usage
    from tenancy.services import project_get_or_create

    projects = [
        project_get_or_create(organization_name="Bench", project_name=f"project {i}").pk for i in range(args.projects)
    ]
    started = time.perf_counter()
    fill(jobs=args.jobs, project_ids=projects)
    log(f"filled {args.jobs} jobs in {args.projects} projects and vacuumed in {time.perf_counter() - started:.1f} s")

    start, end = REPORTED
    month_calls = usage.usage_report(project_ids=[projects[0]], start=start, end=end, group_by="month")["total"]
    log(f"the reported month of the busy project: {month_calls['calls']} calls, {month_calls['cost']} USD")

    def report(group_by: str):
        return lambda: usage.usage_report(project_ids=[projects[0]], start=start, end=end, group_by=group_by)

    def from_rows(group_by: str):
        def run():
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SET LOCAL enable_indexonlyscan = off")
                report(group_by)()

        return run

    sql, params = usage.usage_report_query(
        project_ids=[projects[0]], start=start, end=end, group_by="day"
    ).query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    log("plan of the day report:\n" + plan)

    print()
    print("| group_by | job_usage index (s) | rows from the table (s) | ratio |")
    print("|---|---|---|---|")
    for group_by in usage.GROUP_BY:
        indexed = timed(report(group_by), args.runs)
        rows = timed(from_rows(group_by), args.runs)
        print(f"| {group_by} | {indexed:.3f} | {rows:.3f} | {rows / indexed:.1f}x |")
    spend = timed(lambda: usage.spend(project_ids=[projects[0]], now=start), args.runs)
    print(f"\nbudget spend of the busy project's month: {spend:.3f} s")


if __name__ == "__main__":
    main()
