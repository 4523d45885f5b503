"""Delayed jobs (jobs/scheduled.py): run_after / delay_seconds, SCHEDULED until due, promoted by the sweep."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from jobs import scheduled
from jobs.maintenance import default_schedules
from jobs.models import Job, JobStatus
from jobs.scheduled import jobs_promote_due

pytestmark = pytest.mark.django_db

ECHO = "/api/v1/jobs/echo/"


@pytest.fixture
def admitted(monkeypatch) -> list[Job]:
    """What the sweep hands to admission."""
    handed: list[Job] = []
    monkeypatch.setattr(scheduled, "dispatch", handed.extend)
    return handed


def test_delay_seconds_stores_a_scheduled_job_with_its_time(api_client):
    before = timezone.now()
    response = api_client.post(ECHO, {"delay_seconds": 600}, format="json")
    assert response.status_code == 202
    assert response.json()["status"] == "SCHEDULED"
    job = Job.objects.get()
    assert job.status == JobStatus.SCHEDULED and job.dispatched_at is None
    assert before + timedelta(seconds=600) <= job.run_after <= timezone.now() + timedelta(seconds=600)
    body = api_client.get(f"/api/v1/jobs/{job.id}/").json()
    assert parse_datetime(body["run_after"]) == job.run_after
    assert api_client.get("/api/v1/jobs/", {"status": "SCHEDULED"}).json()["count"] == 1


def test_run_after_is_kept_as_given(api_client):
    when = (timezone.now() + timedelta(days=2)).replace(microsecond=0)
    response = api_client.post(ECHO, {"run_after": when.isoformat()}, format="json")
    assert response.status_code == 202
    assert Job.objects.get().run_after == when


def test_a_time_past_runs_at_once(api_client):
    response = api_client.post(ECHO, {"run_after": "2001-01-01T00:00:00Z"}, format="json")
    assert response.json()["status"] == "PENDING"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"delay_seconds": 5, "run_after": "2030-01-01T00:00:00Z"}, "delay_seconds"),
        ({"delay_seconds": 31 * 86_400}, "delay_seconds"),
        ({"delay_seconds": -1}, "delay_seconds"),
        ({"run_after": "next tuesday"}, "run_after"),
        ({"run_after": "2999-01-01T00:00:00Z"}, "run_after"),
    ],
)
def test_bad_schedules_are_400_naming_the_field(api_client, body, field):
    response = api_client.post(ECHO, body, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not Job.objects.exists()


def test_the_horizon_is_a_setting(api_client, settings):
    settings.JOB_SCHEDULE_HORIZON_DAYS = 1
    assert api_client.post(ECHO, {"delay_seconds": 2 * 86_400}, format="json").status_code == 400


def test_the_sweep_promotes_due_jobs_once_and_hands_them_to_admission(api_client, admitted):
    due = [api_client.post(ECHO, {"delay_seconds": 60}, format="json").json()["job_id"] for _ in range(3)]
    later = api_client.post(ECHO, {"delay_seconds": 3600}, format="json").json()["job_id"]
    cancelled = api_client.post(ECHO, {"delay_seconds": 60}, format="json").json()["job_id"]
    assert api_client.post(f"/api/v1/jobs/{cancelled}/cancel/").json()["status"] == "CANCELLED"
    Job.objects.filter(id__in=[*due, cancelled]).update(run_after=timezone.now() - timedelta(seconds=1))

    assert jobs_promote_due() == 3
    assert sorted(str(job.id) for job in admitted) == sorted(due)
    assert set(Job.objects.filter(id__in=due).values_list("status", flat=True)) == {JobStatus.PENDING}
    assert Job.objects.get(id=later).status == JobStatus.SCHEDULED
    assert Job.objects.get(id=cancelled).status == JobStatus.CANCELLED

    assert jobs_promote_due() == 0  # promoted once: nothing is handed over twice
    assert len(admitted) == 3


def test_the_sweep_works_in_batches(api_client, admitted, monkeypatch):
    monkeypatch.setattr(scheduled, "PROMOTE_BATCH", 2)
    for _ in range(5):
        api_client.post(ECHO, {"delay_seconds": 60}, format="json")
    Job.objects.update(run_after=timezone.now())
    assert jobs_promote_due() == 5
    assert len(admitted) == 5


def test_the_sweep_is_a_default_schedule_every_setting_seconds(settings):
    [schedule] = [s for s in default_schedules() if s.task == "jobs_cron_publish_scheduled"]
    assert schedule.every_seconds == settings.JOB_SCHEDULED_SWEEP_SECONDS == 1


def test_admin_lists_scheduled_jobs_with_their_time(admin_client, api_client):
    api_client.post(ECHO, {"delay_seconds": 600}, format="json")
    job = Job.objects.get()
    response = admin_client.get("/admin/jobs/job/", {"status__exact": "SCHEDULED"})
    assert response.status_code == 200
    assert str(job.id) in response.content.decode()
    assert "run after" in response.content.decode().lower()


@pytest.mark.django_db(transaction=True)
def test_concurrent_sweeps_hand_each_due_job_over_once(project, monkeypatch):
    """Sweeps in several processes at once (beat fired twice, a slow run overlapping the next): the row locks give
    each due job to one of them."""
    import threading

    from django.db import connection

    from jobs.functions import ECHO_PATH
    from jobs.services import job_create_many

    monkeypatch.setattr(scheduled, "PROMOTE_BATCH", 7)
    handed: list = []
    lock = threading.Lock()

    def record(jobs):
        with lock:
            handed.extend(job.id for job in jobs)

    monkeypatch.setattr(scheduled, "dispatch", record)
    soon = timezone.now() + timedelta(seconds=30)
    jobs = job_create_many(
        project=project, function_path=ECHO_PATH, params_list=[{"i": i} for i in range(120)], run_afters=[soon] * 120
    )
    Job.objects.update(run_after=timezone.now())
    start = threading.Barrier(4)

    def sweep() -> None:
        try:
            start.wait()
            jobs_promote_due()
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(handed) == sorted(job.id for job in jobs)
