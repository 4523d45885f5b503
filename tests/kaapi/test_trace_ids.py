"""Trace ids: from the X-Request-ID header to the job, the Celery message and the worker's log lines."""

import json
import logging

import pytest
from celery.signals import task_postrun, task_prerun

from jobs.models import Job, JobStatus
from kaapi.logging import ContextFilter, JsonFormatter, current_trace_id, log_context
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("pool", ["prefork", "gevent"])
def test_request_id_reaches_the_job_and_every_worker_log_line_of_it(start_worker, api_client, pool):
    worker = start_worker(queues="high_priority", pool=pool, env={"LOG_FORMAT": "json"})
    resp = api_client.post("/api/v1/jobs/echo/", {"params": {"x": 1}}, format="json", HTTP_X_REQUEST_ID="abc-123")
    assert resp.status_code == 202, resp.content
    assert resp["X-Request-ID"] == "abc-123"
    job_id = resp.json()["job_id"]
    assert Job.objects.get(id=job_id).trace_id == "abc-123"
    wait_until(lambda: Job.objects.filter(id=job_id, status=JobStatus.SUCCESS).exists(), timeout=60)
    job = Job.objects.get(id=job_id)

    def records():
        lines = [line for line in worker.log().splitlines() if line.startswith("{")]
        return [json.loads(line) for line in lines]

    # the "succeeded" line is written by Celery after the job function returned: wait for it
    succeeded = wait_until(
        lambda: [r for r in records() if job.task_id in r["message"] and "succeeded" in r["message"]],
        timeout=30,
        message="Celery's 'succeeded' log line",
    )
    # Chosen by who wrote them, not by the context they carry (a line without its context must be seen): the
    # worker ran this one job, so every line of the job code and of Celery's task tracer is about it.
    of_job = [r for r in records() if r["logger"].split(".")[0] == "jobs" or r["logger"] == "celery.app.trace"]
    messages = [r["message"] for r in of_job]
    assert "job started: jobs.functions.echo" in messages
    assert "job succeeded" in messages
    assert succeeded[0] in of_job  # Celery's own line carries the context too (task_prerun signal)
    for record in of_job:
        assert record["trace_id"] == "abc-123", record
        assert record["task_id"] == job.task_id and record["job_id"] == job_id, record
        assert {"timestamp", "level", "logger"} <= record.keys()


@pytest.mark.parametrize(
    "header, kept",
    [("abc-123", True), ("A.b_C-9", True), ("x" * 128, True), ("x" * 129, False), ("a b", False), ("é", False)],
)
def test_request_id_is_used_only_when_safe(client, header, kept):
    resp = client.get("/healthz", HTTP_X_REQUEST_ID=header)
    assert resp.status_code == 200
    if kept:
        assert resp["X-Request-ID"] == header
    else:
        assert resp["X-Request-ID"] != header
        assert len(resp["X-Request-ID"]) == 32  # a generated uuid4 hex


def test_a_request_without_id_gets_a_new_one_each_time(client):
    first, second = client.get("/healthz")["X-Request-ID"], client.get("/healthz")["X-Request-ID"]
    assert first and second and first != second


def test_jobs_created_in_a_context_inherit_its_trace_id(project):
    from django.db import transaction

    from jobs.functions import ECHO_PATH
    from jobs.services import job_create

    with transaction.atomic(), log_context(trace_id="outer-trace"):
        assert current_trace_id() == "outer-trace"
        inherited = job_create(project=project, function_path=ECHO_PATH)
        explicit = job_create(project=project, function_path=ECHO_PATH, trace_id="given")
    fresh = job_create(project=project, function_path=ECHO_PATH)
    assert (inherited.trace_id, explicit.trace_id) == ("outer-trace", "given")
    assert current_trace_id() is None and len(fresh.trace_id) == 32


class _Request:
    def __init__(self, **attrs):
        self.__dict__.update(attrs)


class _Task:
    def __init__(self, request):
        self.request = request


@pytest.mark.parametrize(
    "request_attrs, kwargs, expected_trace",
    [
        ({"trace_id": "from-header", "headers": {"trace_id": "from-header"}}, {"trace_id": "kw"}, "from-header"),
        ({"headers": None}, {"trace_id": "from-kwargs", "job_id": "j-1"}, "from-kwargs"),
        ({"headers": None}, {"trace_id": "bad id!"}, None),
    ],
)
def test_every_task_runs_in_the_context_of_its_message(request_attrs, kwargs, expected_trace):
    task = _Task(_Request(**request_attrs))
    task_prerun.send(sender=task, task_id="t-1", task=task, args=(), kwargs=kwargs)
    try:
        assert current_trace_id() == expected_trace
        from kaapi.logging import job_id_var, task_id_var

        assert task_id_var.get() == "t-1"
        assert job_id_var.get() == kwargs.get("job_id")
    finally:
        task_postrun.send(sender=task, task_id="t-1", task=task, args=(), kwargs=kwargs, retval=None, state="SUCCESS")
    assert current_trace_id() is None


def test_json_lines_carry_the_context_and_extras():
    record = logging.LogRecord("kaapi.test", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    record.duration_ms = 1.5
    with log_context(trace_id="t", job_id="j"):
        ContextFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "hello world"
    assert (line["level"], line["logger"]) == ("INFO", "kaapi.test")
    assert (line["trace_id"], line["job_id"], line["task_id"]) == ("t", "j", None)
    assert line["duration_ms"] == 1.5 and "timestamp" in line


def test_the_web_request_line_carries_the_trace_id(api_client):
    import io

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    request_logger = logging.getLogger("kaapi.request")
    request_logger.addHandler(handler)
    try:
        resp = api_client.get("/api/v1/jobs/", HTTP_X_REQUEST_ID="web-trace-1")
    finally:
        request_logger.removeHandler(handler)
    assert resp.status_code == 200
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["trace_id"] == "web-trace-1"
    assert (line["method"], line["path"], line["status"]) == ("GET", "/api/v1/jobs/", 200)
    assert line["duration_ms"] >= 0
