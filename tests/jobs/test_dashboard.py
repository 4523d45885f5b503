"""The admin dashboard (jobs/dashboard.py): its numbers, its page and who may see it."""

import uuid
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.staticfiles import finders
from django.core.cache.backends.locmem import LocMemCache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobs import dashboard
from jobs.models import Job, JobStatus, WaitingReason
from tests.factories import job_row

pytestmark = pytest.mark.django_db

CHART_JS = "vendor/chart.js/4.4.9/chart.umd.min.js"


@pytest.fixture(autouse=True)
def broker_and_workers(monkeypatch):
    # a cache of this test's own: the settled hours' counts of one test must not serve the next
    monkeypatch.setattr(dashboard, "cache", LocMemCache(f"dashboard-{uuid.uuid4()}", {}))
    monkeypatch.setattr(dashboard.queue_depth_collector, "snapshot", lambda: (True, {"high_priority": (7, 2)}))
    monkeypatch.setattr(dashboard, "workers_online", lambda: {"reached": True, "names": ["high1@host"]})


def finished(project, *, status, minutes_ago: float, waited: float, ran: float, job_type="ECHO") -> Job:
    end = timezone.now() - timedelta(minutes=minutes_ago)
    started = end - timedelta(seconds=ran)
    job = job_row(project, status=status, job_type=job_type, started_at=started, finished_at=end)
    Job.objects.filter(id=job.id).update(created_at=started - timedelta(seconds=waited))
    return job


def test_throughput_failure_rate_and_timings(project):
    for i in range(4):
        finished(project, status=JobStatus.SUCCESS, minutes_ago=2, waited=1 + i, ran=10 * (i + 1))
    finished(project, status=JobStatus.FAILED, minutes_ago=2, waited=1, ran=1, job_type="LLM_API")
    finished(project, status=JobStatus.FAILED, minutes_ago=300, waited=1, ran=1)  # in the day, not the hour
    finished(project, status=JobStatus.SUCCESS, minutes_ago=60 * 25, waited=1, ran=1)  # older than a day

    data = dashboard.dashboard_data()

    hour, day = data["throughput"]["hour"], data["throughput"]["day"]
    assert len(hour["minutes"]) == 60 and len(day["minutes"]) == 24 * 60
    assert sum(hour["series"]["SUCCESS"]) == 4 and sum(hour["series"]["FAILED"]) == 1
    assert sum(day["series"]["FAILED"]) == 2 and sum(day["series"]["SUCCESS"]) == 4
    assert sum(hour["series"]["SUCCESS"][-4:-1]) == 4  # about two minutes ago (a minute may turn meanwhile)
    assert data["failure_rate"] == {"hour": 0.2, "day": round(2 / 6, 4)}
    [echo, llm] = data["timings"]
    assert (echo["job_type"], echo["count"], llm["job_type"], llm["count"]) == ("ECHO", 4, "LLM_API", 1)
    assert echo["wait_p50"] == 2.5 and echo["run_p50"] == 25.0
    assert echo["wait_p95"] == pytest.approx(3.85) and echo["run_p95"] == pytest.approx(38.5)
    assert data["broker"] == {"up": True, "queues": [{"name": "high_priority", "messages": 7, "consumers": 2}]}
    assert data["workers"]["names"] == ["high1@host"]


def test_busiest_projects_by_running_then_waiting_then_failed(project, other_project):
    now = timezone.now()
    job_row(project, status=JobStatus.PROCESSING, started_at=now)
    for _ in range(3):
        job_row(other_project)  # waiting for admission
    job_row(other_project, waiting_reason=WaitingReason.RETRY)
    job_row(other_project, status=JobStatus.FAILED, finished_at=now)

    projects = dashboard.dashboard_data()["projects"]

    assert [p["project_id"] for p in projects] == [project.id, other_project.id]
    assert {k: projects[1][k] for k in ("running", "waiting", "retrying", "failed")} == {
        "running": 0,
        "waiting": 3,
        "retrying": 1,
        "failed": 1,
    }
    assert projects[0]["running"] == 1 and other_project.name in projects[1]["project"]


def test_the_numbers_take_a_few_queries_and_settled_hours_are_counted_once(project):
    finished(project, status=JobStatus.SUCCESS, minutes_ago=1, waited=1, ran=1)
    finished(project, status=JobStatus.SUCCESS, minutes_ago=600, waited=1, ran=1)
    with CaptureQueriesContext(connection) as queries:
        first = dashboard.dashboard_data()
    assert len(queries.captured_queries) <= 7
    with CaptureQueriesContext(connection) as again:
        second = dashboard.dashboard_data()
    assert len(again.captured_queries) == len(queries.captured_queries) - 1  # the settled hours from the cache
    day = [data["throughput"]["day"]["series"]["SUCCESS"] for data in (first, second)]
    assert sum(day[0]) == sum(day[1]) == 2


def test_the_page_draws_with_chart_js_from_our_static_files(admin_client, project):
    index = admin_client.get("/admin/").content.decode()
    assert 'href="/admin/dashboard/"' in index
    page = admin_client.get("/admin/dashboard/").content.decode()
    assert f"/static/{CHART_JS}" in page and 'id="chart-hour"' in page and 'data-url="/admin/dashboard/data/"' in page
    assert finders.find(CHART_JS) and finders.find("jobs/dashboard.js")
    data = admin_client.get("/admin/dashboard/data/").json()
    assert set(data) >= {"broker", "workers", "throughput", "failure_rate", "timings", "projects"}


def test_only_staff_who_may_view_jobs_see_it(client):
    staff = User.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.get("/admin/dashboard/").status_code == 403
    assert client.get("/admin/dashboard/data/").status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_job"))
    assert client.get("/admin/dashboard/data/").status_code == 200
    client.logout()
    assert client.get("/admin/dashboard/data/").status_code == 302  # to the login page


def test_the_timings_of_other_databases_match_postgresqls(project, monkeypatch):
    for i in range(5):
        finished(project, status=JobStatus.SUCCESS, minutes_ago=3, waited=0.5 * i, ran=i * i, job_type="LLM_API")
    since = timezone.now() - timedelta(hours=1)
    postgresql = dashboard._timings(since=since)
    monkeypatch.setattr(dashboard, "connection", SimpleNamespace(vendor="sqlite"))
    assert dashboard._timings(since=since) == postgresql
