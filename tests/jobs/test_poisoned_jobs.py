"""A job that cannot be published or run fails alone: it never stalls the dispatcher, the sweep or other projects."""

from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.admission import admit
from jobs.functions import ECHO_PATH
from jobs.models import Job, JobStatus
from jobs.publishing import BackgroundDispatcher
from jobs.registry import STANDARD_PARAMETERS
from jobs.services import _new_jobs, jobs_dispatch_stalled
from kaapi.celery import app
from tests.conftest import wait_until
from tests.factories import job_row

# Named like the arguments of the publish call and of the generic tasks: before params travelled under one
# argument of their own, each of these made every publish of the job raise TypeError.
COLLIDING_WITH_THE_MESSAGE = {"priority": 3, "function_path": "x.y", "trace_id": "t", "params": {"a": 1}}


def _backlog(project, other_project, n: int = 100) -> list[Job]:
    """``n`` echo jobs of two projects, high and low priority, committed and not published."""
    jobs = []
    for i in range(n):
        jobs += _new_jobs(
            project=project if i % 2 else other_project,
            function_path=ECHO_PATH,
            params_list=[{"i": i}],
            priority="high" if i % 3 else "low",
            trace_id="",
            job_type=None,
        )
    return Job.objects.bulk_create(jobs)


def _poisoned(project) -> dict[str, Job]:
    return {
        # registered when it was submitted, gone from the registry of the process that publishes it
        "unregistered": job_row(project, function_path="tests.gone.function", task_id="poison-1"),
        # stored before submissions refused standard parameter names (or written by hand)
        "reserved": job_row(project, params={"task_id": 1, "job_id": "x"}, task_id="poison-2"),
        "colliding": job_row(project, params=COLLIDING_WITH_THE_MESSAGE, task_id="poison-3"),
    }


def _all_finished(jobs: list[Job]):
    ids = [job.id for job in jobs]
    return lambda: Job.objects.filter(id__in=ids).finished().count() == len(ids)


def _assert_outcomes(poisoned: dict[str, Job], others: list[Job]) -> None:
    statuses = Counter(Job.objects.filter(id__in=[job.id for job in others]).values_list("status", flat=True))
    assert statuses == {JobStatus.SUCCESS: len(others)}
    unregistered = Job.objects.get(id=poisoned["unregistered"].id)
    assert unregistered.status == JobStatus.FAILED
    assert unregistered.error == (
        "the job's message could not be published: ValueError: job function 'tests.gone.function' is not registered"
    )
    assert unregistered.attempts == 0 and unregistered.dispatched_at is None
    reserved = Job.objects.get(id=poisoned["reserved"].id)
    assert reserved.status == JobStatus.FAILED
    assert reserved.error == "refused: the job's params may not be named job_id, task_id (standard parameters)"
    colliding = Job.objects.get(id=poisoned["colliding"].id)
    assert colliding.status == JobStatus.SUCCESS, colliding.error
    assert colliding.result == {"delay": 0, **COLLIDING_WITH_THE_MESSAGE}


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_poisoned_jobs_fail_alone_through_the_dispatcher(start_worker, project, other_project):
    others = _backlog(project, other_project)
    poisoned = _poisoned(project)
    start_worker(queues="high_priority,low_priority", concurrency=2)
    dispatcher = BackgroundDispatcher(admit)
    dispatcher.submit([*poisoned.values(), *others])  # the poisoned ones at the head of its queue
    assert dispatcher.flush(timeout=60), "the dispatcher did not get through its queue"
    wait_until(_all_finished([*poisoned.values(), *others]), timeout=120, message="every job to finish")
    _assert_outcomes(poisoned, others)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_poisoned_jobs_fail_alone_through_the_recovery_sweep(start_worker, project, other_project):
    poisoned = _poisoned(project)
    others = _backlog(project, other_project)
    start = timezone.now() - timedelta(minutes=10)
    for i, job in enumerate([*poisoned.values(), *others]):  # the poisoned ones are the oldest: swept first
        Job.objects.filter(id=job.id).update(updated_at=start + timedelta(seconds=i))
    start_worker(queues="high_priority,low_priority", concurrency=2)
    assert jobs_dispatch_stalled(older_than=timedelta(0)) == len(poisoned) + len(others)
    wait_until(_all_finished([*poisoned.values(), *others]), timeout=120, message="every job to finish")
    _assert_outcomes(poisoned, others)
    assert not Job.objects.undispatched().exists()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_messages_of_the_old_shape_still_run(start_worker, project):
    """Messages published before the params had an argument of their own (in a queue at upgrade time) spread
    the params among the task's keyword arguments: they still run, with the same params."""
    start_worker(queues="high_priority", concurrency=1)
    spread = job_row(project, params={"a": 1, "params": [2]})
    bare = job_row(project)
    for job in (spread, bare):
        app.send_task(
            "execute_high_priority_task",
            kwargs={"function_path": ECHO_PATH, "project_id": project.id, "job_id": str(job.id), **job.params},
            task_id=job.task_id or None,
        )
    wait_until(_all_finished([spread, bare]), timeout=60)
    spread.refresh_from_db()
    bare.refresh_from_db()
    assert spread.status == JobStatus.SUCCESS and spread.result == {"delay": 0, "a": 1, "params": [2]}
    assert bare.status == JobStatus.SUCCESS and bare.result == {"delay": 0}


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(STANDARD_PARAMETERS))
def test_echo_refuses_params_named_like_a_standard_parameter(api_client, name):
    resp = api_client.post("/api/v1/jobs/echo/", {"params": {name: 1, "ok": 2}}, format="json")
    assert resp.status_code == 400
    assert resp.json() == {"params": [f"'{name}' may not be a param: every job function gets it already"]}
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_echo_accepts_params_named_like_the_message_s_other_arguments(api_client):
    resp = api_client.post("/api/v1/jobs/echo/", {"params": COLLIDING_WITH_THE_MESSAGE}, format="json")
    assert resp.status_code == 202
    assert Job.objects.get().params == {"delay": 0.0, **COLLIDING_WITH_THE_MESSAGE}
