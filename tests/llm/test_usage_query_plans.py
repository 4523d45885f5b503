"""The usage report and the budgets' spend are served from the ``job_usage`` index (a covering, partial index on
the job's usage columns), never by reading the jobs or their results' JSON: bench/usage_report.py times the month's
report over a million jobs; these tests hold its plan."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection

from jobs.models import Job, JobStatus
from jobs.services import _new_jobs
from llm import usage
from tenancy.models import Project

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="query plans are PostgreSQL's"),
]

MARCH = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def calls(project, other_project):
    """Calls of 20 projects over three months: one project's month is a small part of the table, as in production
    (with two projects PostgreSQL would rightly read the narrower job_finished index and filter)."""
    projects = [project, other_project] + [
        Project.objects.create(organization=project.organization, name=f"plans {i}") for i in range(18)
    ]
    jobs = []
    for i in range(3000):
        [job] = _new_jobs(
            project=projects[i % len(projects)],
            function_path="jobs.functions.echo",
            params_list=[{"query": "x" * 200}],
            priority="high",
            trace_id="plans",
            job_type="LLM_API" if i % 5 else None,
        )
        job.status = JobStatus.SUCCESS if i % 7 else JobStatus.FAILED
        job.finished_at = MARCH + timedelta(minutes=37 * i)
        if i % 5:
            job.provider, job.model, job.cost = "openai", f"gpt-4o-{i % 4}", Decimal("0.001")
            job.input_tokens, job.output_tokens = 100, 20
        jobs.append(job)
    Job.objects.bulk_create(jobs)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Job._meta.db_table}")


def _plan(queryset) -> str:
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        # Whether the index can serve it at all: on a table this small PostgreSQL would rightly read the table. An
        # index-only scan needs every column the query reads in the index and the query to imply its condition.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("RESET enable_seqscan")  # the test's deferred constraint checks run after this
    return plan


@pytest.mark.parametrize("group_by", usage.GROUP_BY)
def test_the_report_of_a_month_reads_the_usage_index(calls, project, group_by):
    start, end = usage.day_range(MARCH.date(), datetime(2026, 3, 31).date())
    plan = _plan(usage.usage_report_query(project_ids=[project.pk], start=start, end=end, group_by=group_by))
    # Inside the test's transaction the visibility map is empty, so PostgreSQL may prefer a bitmap scan of the
    # index to an index-only scan; bench/usage_report.py (vacuumed) shows the index-only scan.
    assert re.search(r"(Index Only Scan using|Bitmap Index Scan on) job_usage", plan), plan


def test_the_spend_of_a_month_reads_the_usage_index(calls, project):
    queryset = usage.spend_query(project_ids=[project.pk], now=MARCH)
    plan = _plan(queryset)
    # Inside the test's transaction the visibility map is empty, so PostgreSQL may prefer a bitmap scan of the
    # index to an index-only scan; bench/usage_report.py (vacuumed) shows the index-only scan.
    assert re.search(r"(Index Only Scan using|Bitmap Index Scan on) job_usage", plan), plan
