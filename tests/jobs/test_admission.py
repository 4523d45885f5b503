"""Admission on the real database and broker, without workers: who is published, who waits and why."""

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs import services
from jobs.admission import RATE_WINDOW, admit
from jobs.functions import ECHO_PATH
from jobs.models import Job, WaitingReason
from jobs.services import _new_jobs
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

    assert admit(project_id=project.id, queue="high_priority", submitted=[job.id for job in high]) == (
        2,
        True,
        WaitingReason.MAX_CONCURRENT_JOBS,
        None,
    )
    assert admit(project_id=project.id, queue="low_priority", submitted=[job.id for job in low])[:2] == (2, True)
    assert admit(project_id=other_project.id, queue="high_priority") == (3, True, "", None)  # not the other's limit

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


@pytest.mark.django_db(transaction=True)  # the admission lock is a transaction's: each must end for real
def test_a_finishing_job_never_waits_for_another_process_s_admission_and_hands_it_to_its_dispatcher(
    project, settings, monkeypatch
):
    """Under a flood, every finishing job of a gevent worker waiting on the project's admission lock held a pooled
    connection each, and the process's other jobs waited for one."""
    import psycopg
    from django.db import connection

    from jobs import admission as dispatcher

    settings.JOB_DISPATCH_MODE = "inline"
    project.max_concurrent_jobs = 1
    project.save()
    first, second = _waiting_jobs(project, 2)
    admit(project_id=project.id, queue="high_priority")
    requested = []
    monkeypatch.setattr(dispatcher.dispatcher, "request", lambda **key: requested.append(key))
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as other:  # another process, admitting this project's jobs
        other.execute("SELECT pg_advisory_lock(%s, %s)", [project.id, dispatcher._LOCK_KEYS["high_priority"]])
        services.job_cancel(job=first)  # its slot_freed runs when it commits, while the lock is held
    assert requested == [{"project_id": project.id, "queue": "high_priority"}]
    assert set(Job.objects.admitted().values_list("id", flat=True)) == set()  # left to the dispatcher thread
    assert admit(project_id=project.id, queue="high_priority").handled == 1  # which admits it once the lock is free
    assert set(Job.objects.admitted().values_list("id", flat=True)) == {second.id}


def _window_passed(jobs: list[Job]) -> None:
    """As if ``jobs`` had been admitted a little over a minute ago."""
    Job.objects.filter(id__in=[job.id for job in jobs]).update(
        dispatched_at=timezone.now() - RATE_WINDOW - timedelta(seconds=1)
    )


def test_a_project_s_submission_rate_admits_at_most_n_jobs_a_minute_across_both_queues(project, other_project):
    project.max_submissions_per_minute = 3
    project.save()
    high = _waiting_jobs(project, 5)
    low = _waiting_jobs(project, 2, priority="low")
    _waiting_jobs(other_project, 4)

    first = admit(project_id=project.id, queue="high_priority", submitted=[job.id for job in high])
    assert (first.handled, first.broker_ok, first.waiting_reason) == (3, True, WaitingReason.SUBMISSION_RATE)
    assert 59 < first.retry_in <= 61  # when the first of the three leaves the window
    low_admission = admit(project_id=project.id, queue="low_priority", submitted=[job.id for job in low])
    assert low_admission[:3] == (0, True, WaitingReason.SUBMISSION_RATE)  # the same window as the high queue's
    assert admit(project_id=other_project.id, queue="high_priority")[:3] == (4, True, "")  # not the other's rate

    admitted = set(Job.objects.admitted().filter(project=project).values_list("id", flat=True))
    assert admitted == {job.id for job in high[:3]}
    waiting = {job.id: job.waiting_reason for job in Job.objects.waiting()}
    assert waiting == {job.id: WaitingReason.SUBMISSION_RATE for job in (*high[3:], *low)}

    # A minute later the window has room again: three more, the high queue first.
    _window_passed(high[:3])
    assert admit(project_id=project.id, queue="high_priority").handled == 2
    assert admit(project_id=project.id, queue="low_priority").handled == 1
    assert not Job.objects.waiting().filter(project=project).exclude(id=low[1].id).exists()


def test_the_submission_rate_comes_from_the_setting_unless_the_project_sets_its_own(project, settings):
    settings.JOB_MAX_SUBMISSIONS_PER_MINUTE = 2
    jobs = _waiting_jobs(project, 4)
    assert admit(project_id=project.id, queue="high_priority")[:3] == (2, True, WaitingReason.SUBMISSION_RATE)
    project.max_submissions_per_minute = 3
    project.save()
    assert admit(project_id=project.id, queue="high_priority")[:3] == (1, True, WaitingReason.SUBMISSION_RATE)
    settings.JOB_MAX_SUBMISSIONS_PER_MINUTE = 0  # off: only the project's own holds
    project.max_submissions_per_minute = None
    project.save()
    assert admit(project_id=project.id, queue="high_priority") == (1, True, "", None)
    assert not Job.objects.waiting().filter(id__in=[job.id for job in jobs]).exists()


def test_of_both_limits_the_one_reached_is_the_waiting_reason(project):
    project.max_concurrent_jobs = 2
    project.max_submissions_per_minute = 5
    project.save()
    jobs = _waiting_jobs(project, 8)
    assert admit(project_id=project.id, queue="high_priority")[:3] == (2, True, WaitingReason.MAX_CONCURRENT_JOBS)
    Job.objects.filter(id__in=[jobs[0].id, jobs[1].id]).update(status="SUCCESS")  # finished: slots free again
    assert admit(project_id=project.id, queue="high_priority")[:3] == (2, True, WaitingReason.MAX_CONCURRENT_JOBS)
    Job.objects.filter(id__in=[jobs[2].id, jobs[3].id]).update(status="SUCCESS")
    # two slots free, but one admission left in the minute: the rate holds the project back now
    admission = admit(project_id=project.id, queue="high_priority", submitted=[job.id for job in jobs])
    assert admission[:3] == (1, True, WaitingReason.SUBMISSION_RATE)
    assert {job.waiting_reason for job in Job.objects.waiting()} == {WaitingReason.SUBMISSION_RATE}


def test_the_recovery_sweep_admits_jobs_held_by_the_rate_once_the_window_frees(project):
    project.max_submissions_per_minute = 2
    project.save()
    jobs = _waiting_jobs(project, 3)
    assert services.jobs_dispatch_stalled(older_than=timedelta(0)) == 2
    assert Job.objects.get(id=jobs[2].id).waiting_reason == WaitingReason.SUBMISSION_RATE
    assert services.jobs_dispatch_stalled(older_than=timedelta(0)) == 0  # the window is full
    _window_passed(jobs[:2])
    assert services.jobs_dispatch_stalled(older_than=timedelta(0)) == 1
    assert not Job.objects.waiting().exists()
