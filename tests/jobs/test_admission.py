"""Admission on the real database and broker, without workers: who is published, who waits and why."""

import pytest

from jobs import services
from jobs.dispatcher import admit
from jobs.models import Job, WaitingReason
from jobs.services import _new_jobs
from jobs.views import ECHO_PATH
from tests.conftest import purge_queues

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _empty_queues():
    yield
    purge_queues()


def _waiting_jobs(project, n: int, priority: str = "high") -> list[Job]:
    return Job.objects.bulk_create(
        _new_jobs(
            project=project,
            function_path=ECHO_PATH,
            params_list=[{"i": i} for i in range(n)],
            priority=priority,
            trace_id="",
            job_type=None,
        )
    )


def test_a_project_gets_its_limit_per_queue_in_submission_order_and_the_rest_say_why_they_wait(
    project, other_project, api_client
):
    project.max_concurrent_jobs = 2
    project.save()
    high = _waiting_jobs(project, 4)
    low = _waiting_jobs(project, 3, priority="low")
    others = _waiting_jobs(other_project, 3)

    assert admit(project_id=project.id, queue="high_priority", submitted=[job.id for job in high]) == (2, True)
    assert admit(project_id=project.id, queue="low_priority", submitted=[job.id for job in low]) == (2, True)
    assert admit(project_id=other_project.id, queue="high_priority") == (3, True)  # not limited by the other's

    admitted = set(Job.objects.admitted().values_list("id", flat=True))
    assert admitted == {high[0].id, high[1].id, low[0].id, low[1].id, *(job.id for job in others)}
    waiting = {job.id: job.waiting_reason for job in Job.objects.waiting()}
    assert waiting == {job.id: WaitingReason.MAX_CONCURRENT_JOBS for job in (high[2], high[3], low[2])}
    body = api_client.get(f"/api/v1/jobs/{high[3].id}/").json()
    assert body["status"] == "PENDING" and body["waiting_reason"] == "max_concurrent_jobs"
    assert api_client.get(f"/api/v1/jobs/{high[0].id}/").json()["waiting_reason"] == ""


def test_a_finished_job_frees_its_slot_for_the_project_s_next_waiting_job(
    project, settings, django_capture_on_commit_callbacks
):
    settings.JOB_DISPATCH_MODE = "inline"  # the finishing process admits in its own thread, as a worker does
    project.max_concurrent_jobs = 1
    project.save()
    first, second, third = _waiting_jobs(project, 3)
    admit(project_id=project.id, queue="high_priority")
    assert set(Job.objects.admitted().values_list("id", flat=True)) == {first.id}

    with django_capture_on_commit_callbacks(execute=True):
        services.job_cancel(job=first)
    assert set(Job.objects.admitted().values_list("id", flat=True)) == {second.id}

    Job.objects.filter(id=second.id).update(status="PROCESSING")  # claimed by a worker
    with django_capture_on_commit_callbacks(execute=True):
        assert services.job_mark_failed(job_id=second.id, error="boom")
    assert set(Job.objects.admitted().values_list("id", flat=True)) == {third.id}
