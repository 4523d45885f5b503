"""Killed workers, broker and database restarts: no job is lost or stuck, effects happen once per SUCCESS."""

from __future__ import annotations

import random
import threading
import time
from datetime import timedelta

import pytest
import requests
from django.db import connection

from jobs.models import Job, JobStatus
from jobs.services import jobs_dispatch_stalled
from jobs.tasks import jobs_cron_recover_stalled
from tenancy.services import api_key_create
from tests import job_functions
from tests.chaos.conftest import effects_per_job, resilient, services
from tests.conftest import wait_until
from tests.factories import make_job

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

EFFECT = f"{job_functions.record_effect.__module__}.record_effect"


def submit(project, count: int, *, seconds: float) -> list[str]:
    return [str(make_job(project, function_path=EFFECT, seconds=seconds).id) for _ in range(count)]


def all_finished(ids):
    return resilient(lambda: Job.objects.filter(id__in=ids).finished().count() == len(ids))


def assert_all_succeeded_exactly_once(ids) -> None:
    statuses = dict(Job.objects.filter(id__in=ids).values_list("id", "status"))
    assert len(statuses) == len(ids), "a job row is missing"
    not_ok = {str(k): v for k, v in statuses.items() if v != JobStatus.SUCCESS}
    assert not not_ok, f"jobs not SUCCESS: {not_ok}"
    effects = effects_per_job()
    assert set(effects) == set(ids)
    assert all(count == 1 for count in effects.values()), {k: v for k, v in effects.items() if v != 1}


def test_workers_killed_every_few_seconds_lose_no_job(start_worker, project, effect_table):
    env = {"JOB_MAX_WORKER_LOST": "10"}
    workers = [start_worker(queues="high_priority", concurrency=2, env=env) for _ in range(2)]
    ids = submit(project, 200, seconds=0.3)
    kills = 0
    deadline = time.monotonic() + 300
    rng = random.Random(7)
    while not all_finished(ids)():
        assert time.monotonic() < deadline, "jobs did not finish under repeated worker kills"
        time.sleep(rng.uniform(1.5, 3.0))
        victim = rng.choice([w for w in workers if w.process.poll() is None])
        children = victim.child_pids()
        if children and rng.random() < 0.5:
            import os
            import signal

            os.kill(rng.choice(children), signal.SIGKILL)  # the pool replaces the child
        else:
            victim.kill()
            workers.remove(victim)
            workers.append(start_worker(queues="high_priority", concurrency=2, env=env))
        kills += 1
    assert kills >= 3
    assert_all_succeeded_exactly_once(ids)
    assert Job.objects.filter(id__in=ids, worker_lost_count__gt=0).exists(), "no kill hit a running job"


def test_broker_restart_during_submission_and_execution_loses_no_job(start_worker, project, effect_table):
    start_worker(queues="high_priority", concurrency=2)
    ids = submit(project, 40, seconds=0.2)
    submitted: list[str] = []

    def keep_submitting():
        try:
            for _ in range(60):
                submitted.extend(submit(project, 1, seconds=0.2))
                time.sleep(0.1)
        finally:
            connection.close()

    thread = threading.Thread(target=keep_submitting)
    thread.start()
    time.sleep(1)
    services("stop", "rabbitmq")
    time.sleep(3)
    services("start", "rabbitmq")
    thread.join(120)
    ids += submitted
    assert len(ids) == 100
    stranded = Job.objects.filter(id__in=ids).undispatched().count()
    assert stranded > 0, "no submission met the outage; the test proved nothing"

    def swept_and_finished():
        jobs_dispatch_stalled(older_than=timedelta(seconds=0))  # what the periodic recovery sweep does
        return all_finished(ids)()

    try:
        wait_until(swept_and_finished, timeout=240, interval=2, message="all jobs to finish after the broker restart")
    except AssertionError:
        from django.db.models import Count, Q

        undispatched = Count("id", filter=Q(dispatched_at__isnull=True))
        print(list(Job.objects.filter(id__in=ids).values("status").annotate(n=Count("id"), undispatched=undispatched)))
        raise
    assert_all_succeeded_exactly_once(ids)


def test_postgres_restart_workers_recover_and_jobs_finish(start_worker, project, effect_table):
    start_worker(queues="high_priority", concurrency=2)
    ids = submit(project, 80, seconds=0.1)
    wait_until(lambda: Job.objects.filter(id__in=ids, status=JobStatus.SUCCESS).count() >= 10, timeout=60)
    assert Job.objects.filter(id__in=ids).finished().count() < len(ids), "all done before the restart"
    connection.close()
    services("restart", "postgres")
    wait_until(all_finished(ids), timeout=240, interval=1, message="all jobs to finish after the database restart")
    assert_all_succeeded_exactly_once(ids)


def submit_while_stopped(service: str, api_client):
    """An echo submission while ``service`` is stopped (started again right after): the response and its seconds."""
    services("stop", service)
    try:
        started = time.monotonic()
        resp = api_client.post("/api/v1/jobs/echo/", {"params": {"during": "outage"}}, format="json")
        return resp, time.monotonic() - started
    finally:
        services("start", service)


def test_submission_while_broker_is_down_is_accepted_and_published_later(start_worker, api_client):
    resp, elapsed = submit_while_stopped("rabbitmq", api_client)
    assert resp.status_code == 202, resp.content
    assert elapsed < 10, f"submission took {elapsed:.1f}s while the broker was down"
    job = Job.objects.get(id=resp.json()["job_id"])
    assert job.status == JobStatus.PENDING
    # The process's dispatcher kept the job and tries again after each back-off (0.5 s doubling to 15 s): it
    # publishes the job itself once the broker is back, without the recovery sweep (tested on its own above).
    wait_until(
        lambda: Job.objects.filter(id=job.id, dispatched_at__isnull=False).exists(),
        timeout=60,
        interval=0.5,
        message="the dispatcher to publish the accepted job once the broker is back",
    )
    start_worker(queues="high_priority")
    wait_until(
        lambda: Job.objects.filter(id=job.id, status=JobStatus.SUCCESS).exists(),
        timeout=120,
        interval=0.5,
        message="the accepted job to run",
    )
    assert Job.objects.get(id=job.id).result == {"delay": 0.0, "during": "outage"}


def test_submission_while_the_database_is_down_is_a_503_then_accepted_once_it_is_back(api_client):
    connection.close()
    resp, elapsed = submit_while_stopped("postgres", api_client)
    assert resp.status_code == 503, resp.content
    assert resp["Retry-After"] and "database is unavailable" in resp.json()["detail"]
    assert elapsed < 10, f"the 503 took {elapsed:.1f}s"

    def accepted():
        resp = api_client.post("/api/v1/jobs/echo/", {"params": {"after": "outage"}}, format="json")
        if resp.status_code == 503:
            connection.close()  # the test client keeps its connection across requests; a server closes it
            return None
        return resp

    resp = wait_until(accepted, timeout=60, interval=1, message="the API to answer once the database is back")
    assert resp.status_code == 202, resp.content
    assert Job.objects.filter(id=resp.json()["job_id"], status=JobStatus.PENDING).exists()


def test_web_server_killed_before_publishing_the_jobs_it_accepted_loses_none(start_worker, start_web, project):
    """What "accepted" promises: the job is committed before the 202, so a web server killed while the jobs it
    accepted still wait in its memory for the broker loses none of them; the recovery sweep publishes them."""
    key = api_key_create(project=project).plaintext
    services("stop", "rabbitmq")
    try:
        web = start_web()
        ids = []
        for i in range(20):
            started = time.monotonic()
            resp = requests.post(
                f"{web.url}/api/v1/jobs/echo/", json={"params": {"i": i}}, headers={"X-API-KEY": key}, timeout=30
            )
            assert resp.status_code == 202, resp.text
            assert time.monotonic() - started < 10, "a submission waited for the broker"
            ids.append(resp.json()["job_id"])
        web.kill()  # SIGKILL, master and workers: the dispatcher threads' queues die with them
    finally:
        services("start", "rabbitmq")
    assert Job.objects.filter(id__in=ids, status=JobStatus.PENDING, dispatched_at__isnull=True).count() == len(ids)

    # The sweep as beat runs it (jobs_cron_recover_stalled on the cron queue), its grace shortened to 1 s.
    start_worker(queues="high_priority,cron", env={"JOB_DISPATCH_GRACE_SECONDS": "1"})
    time.sleep(1.5)
    jobs_cron_recover_stalled.apply_async()
    wait_until(
        lambda: Job.objects.filter(id__in=ids, status=JobStatus.SUCCESS).count() == len(ids),
        timeout=120,
        interval=0.5,
        message="every accepted job to run after the sweep",
    )
    results = dict(Job.objects.filter(id__in=ids).values_list("id", "result"))
    assert sorted(result["i"] for result in results.values()) == list(range(len(ids)))
