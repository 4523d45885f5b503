import base64
import gzip
import json
import os
import signal
import uuid

import pytest
from django_celery_results.models import TaskResult

from jobs.models import Job, JobStatus
from jobs.publishing import get_task_status
from tests.conftest import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_echo_jobs_across_both_priorities_succeed(start_worker, api_client):
    start_worker()
    ids = []
    big = {"pad": "x" * 2000}  # job 5's result is large enough to be stored compressed
    for i in range(50):
        params = {"n": i, **(big if i == 5 else {})}
        resp = api_client.post(
            "/api/v1/jobs/echo/", {"params": params, "priority": "high" if i % 2 else "low"}, format="json"
        )
        assert resp.status_code == 202, resp.content
        assert resp.json()["status"] == "PENDING"
        ids.append(resp.json()["job_id"])
    wait_until(
        lambda: Job.objects.filter(id__in=ids, status=JobStatus.SUCCESS).count() == 50,
        timeout=90,
        message="50 echo jobs to succeed",
    )
    jobs = {str(j.id): j for j in Job.objects.filter(id__in=ids)}
    for i, job_id in enumerate(ids):
        job = jobs[job_id]
        assert job.result == {"delay": 0.0, "n": i, **(big if i == 5 else {})}
        assert job.queue == ("high_priority" if i % 2 else "low_priority")
        assert job.attempts == 1
        assert job.started_at and job.finished_at
    task_ids = [jobs[i].task_id for i in ids]
    wait_until(lambda: TaskResult.objects.filter(task_id__in=task_ids, status="SUCCESS").count() == 50, timeout=30)
    stored = TaskResult.objects.get(task_id=jobs[ids[3]].task_id)
    assert stored.task_name == "execute_high_priority_task"
    job = jobs[ids[3]]  # the result table names the job, without its params (they may be user data)
    assert json.loads(stored.task_kwargs) == repr(
        {"function_path": "jobs.functions.echo", "project_id": job.project_id, "job_id": str(job.id)}
    )
    assert stored.content_encoding == "utf-8"  # below COMPRESS_MIN_BYTES: plain JSON (kaapi/results.py)
    assert json.loads(stored.result) == {"delay": 0, "n": 3}
    assert get_task_status(stored.task_id)["result"] == {"delay": 0.0, "n": 3}
    stored = TaskResult.objects.get(task_id=jobs[ids[5]].task_id)
    assert stored.content_encoding == "gzip+base64"  # result_compression = gzip, at least COMPRESS_MIN_BYTES
    assert json.loads(gzip.decompress(base64.b64decode(stored.result))) == {"delay": 0, "n": 5, **big}
    assert get_task_status(stored.task_id)["result"] == {"delay": 0.0, "n": 5, **big}


def test_run_worker_command_starts_a_worker_that_runs_jobs(transactional_db, project):
    import subprocess
    import sys

    from jobs.models import Job
    from jobs.publishing import get_task_status
    from kaapi.celery import app
    from tests.conftest import ROOT, purge_queues, worker_environment
    from tests.factories import make_job

    purge_queues()
    hostname = f"cmd-test-{uuid.uuid4().hex[:8]}@localhost"  # never answered for by a worker left from another run
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "run_worker",
            "--queues",
            "low_priority",
            "--concurrency",
            "1",
            "--hostname",
            hostname,
            "--loglevel",
            "warning",
        ],
        cwd=ROOT,
        env=worker_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: app.control.ping(destination=[hostname], timeout=0.5), timeout=60, message="run_worker")
        job = make_job(project, priority="low", via="run_worker")
        wait_until(lambda: Job.objects.get(id=job.id).status == JobStatus.SUCCESS, timeout=60)
        job.refresh_from_db()
        status = wait_until(lambda: (s := get_task_status(job.task_id))["ready"] and s, timeout=30)
        assert status["status"] == "SUCCESS"
        assert status["result"] == {"delay": 0, "via": "run_worker"}
    finally:  # the worker and its pool, whether the test passed or gave up waiting
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_the_documented_http_flow_against_the_deployed_web_server(start_web, start_worker, project):
    """Submit and poll over HTTP as README's curl lines do, against gunicorn and a real worker."""
    import time

    import requests

    from tenancy.services import api_key_create

    start_worker(queues="high_priority")
    web = start_web()
    headers = {"X-API-KEY": api_key_create(project=project).plaintext, "X-Request-ID": "e2e-http-flow"}
    assert requests.get(f"{web.url}/readyz", timeout=10).status_code == 200

    resp = requests.post(
        f"{web.url}/api/v1/jobs/echo/", json={"params": {"hello": "world"}, "delay": 0.2}, headers=headers, timeout=10
    )
    assert resp.status_code == 202, resp.text
    assert resp.headers["X-Request-ID"] == "e2e-http-flow"
    submitted = resp.json()
    assert submitted["status_url"] == f"{web.url}/api/v1/jobs/{submitted['job_id']}/"
    assert resp.headers["Location"] == submitted["status_url"]

    deadline = time.monotonic() + 60
    while (job := requests.get(submitted["status_url"], headers=headers, timeout=10).json())["status"] != "SUCCESS":
        assert job["status"] in {"PENDING", "PROCESSING"}, job
        assert time.monotonic() < deadline, f"the job did not succeed: {job}"
        time.sleep(0.1)
    assert job["result"] == {"delay": 0.2, "hello": "world"} and job["trace_id"] == "e2e-http-flow"
    assert job["progress"]["percent"] == 100

    unknown = requests.get(f"{web.url}/api/v1/jobs/{'0' * 8}-0000-0000-0000-{'0' * 12}/", headers=headers, timeout=10)
    assert unknown.status_code == 404 and unknown.json() == {"detail": "No job with this id in your project."}
    bad_key = requests.get(submitted["status_url"], headers={"X-API-KEY": "kaapi_nope"}, timeout=10)
    assert bad_key.status_code == 401 and bad_key.json() == {"detail": "Invalid API key."}
    bad_json = requests.post(
        f"{web.url}/api/v1/jobs/echo/",
        data="{not json",
        headers={**headers, "Content-Type": "application/json"},
        timeout=10,
    )
    assert bad_json.status_code == 400 and "JSON" in bad_json.json()["detail"]
