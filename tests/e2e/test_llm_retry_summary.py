"""A retried LLM call keeps its query and config out of task events, Flower and the result table."""

import json
import time

import pytest
from django_celery_results.models import TaskResult
from kombu import Queue

from jobs.models import Job, JobStatus
from kaapi.celery import app
from tests.conftest import wait_until
from tests.e2e.test_llm import WORKER, submit
from tests.llm.conftest import unique

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _task_events_queue(channel) -> Queue:
    """A queue of this test's own bound to every task event (what Flower consumes)."""
    from celery.events.event import get_exchange

    exchange = get_exchange(channel.connection.client, name=app.conf.event_exchange)
    queue = Queue("", exchange=exchange, routing_key="task.#", exclusive=True, auto_delete=True)(channel)
    queue.declare()
    return queue


def _both_deliveries_seen(events: list[dict]) -> bool:
    kinds = [event["type"] for event in events]
    return kinds.count("task-sent") >= 2 and kinds.count("task-received") >= 2


def test_a_retried_call_shows_no_params_in_events_or_the_result_table(
    start_worker, api_client, provider_credentials, project
):
    provider_credentials(project, ["anthropic"])
    query = unique("[fake:status=500,times=1] my private question")
    secrets_of_the_call = [query.split("#")[1], "claude-sonnet-4", "max_tokens", "my private question"]
    with app.connection_for_write() as conn:
        events_queue = _task_events_queue(conn.default_channel)
        start_worker(**WORKER)
        job_id = submit(api_client, "anthropic", query)
        wait_until(
            lambda: Job.objects.filter(id=job_id, status=JobStatus.SUCCESS).exists(),
            timeout=60,
            message="the call to succeed after a retry",
        )
        job = Job.objects.get(id=job_id)
        assert job.attempts == 2, job.error  # the provider's 500 made it retry once

        # Both deliveries' task-sent and task-received events, which arrive about when the job ends.
        events: list[dict] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not _both_deliveries_seen(events):
            message = events_queue.get(no_ack=True)
            if message is None:
                time.sleep(0.05)
            elif message.decode().get("uuid") == job.task_id:
                events.append(message.decode())

    assert _both_deliveries_seen(events), [event["type"] for event in events]  # the first delivery and the retry
    for event in events:
        summary = f"{event.get('args', '')} {event.get('kwargs', '')}"
        if event["type"] in ("task-sent", "task-received"):
            assert job_id in event["kwargs"], event  # the summary says which job
        for secret in secrets_of_the_call:
            assert secret not in summary, (event["type"], summary)

    rows = list(TaskResult.objects.filter(task_id=job.task_id))
    assert rows, "no result row for the task"
    for row in rows:
        stored = json.dumps([row.task_args, row.task_kwargs])  # the result column holds the answer, by design
        assert job_id in (row.task_kwargs or ""), row.task_kwargs
        for secret in secrets_of_the_call:
            assert secret not in stored, (row.status, stored)
