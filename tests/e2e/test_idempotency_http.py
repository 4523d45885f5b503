"""Idempotency-Key through the production web server: 50 concurrent clients sending 10 keys to gunicorn's worker
processes create exactly 10 jobs, and after a restart of the web server the keys still answer those jobs."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from jobs.models import IdempotencyKey, Job
from tenancy.services import api_key_create
from tests.conftest import purge_queues

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CLIENTS, KEYS = 50, 10


@pytest.fixture
def _empty_queues():
    yield
    purge_queues()  # no worker runs: the jobs' messages stay queued


def _submit(url: str, api_key: str, key: str) -> tuple[int, dict, dict]:
    response = requests.post(
        f"{url}/api/v1/jobs/echo/",
        json={"params": {"key": key}},
        headers={"X-API-KEY": api_key, "Idempotency-Key": key},
        timeout=30,
    )
    return response.status_code, response.json(), response.headers


def test_concurrent_clients_with_ten_keys_create_ten_jobs_across_a_restart(start_web, project, _empty_queues):
    api_key = api_key_create(project=project).plaintext
    web = start_web(workers=2)
    start = threading.Barrier(CLIENTS)

    def client(index: int) -> tuple[str, str, bool]:
        key = f"client-key-{index % KEYS}"
        start.wait()
        for _ in range(600):  # 409 while another request holds the key: the client retries, as it should
            status, body, headers = _submit(web.url, api_key, key)
            if status != 409:
                break
            time.sleep(0.05)
        assert status == 202, body
        return key, body["job_id"], headers.get("Idempotent-Replayed") == "true"

    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = list(pool.map(client, range(CLIENTS)))

    jobs_per_key = defaultdict(set)
    for key, job_id, _ in answers:
        jobs_per_key[key].add(job_id)
    assert sum(not replayed for _, _, replayed in answers) == KEYS  # one creation per key, replays for the rest
    assert Job.objects.count() == KEYS
    assert all(len(job_ids) == 1 for job_ids in jobs_per_key.values()), jobs_per_key
    assert {job_id for job_ids in jobs_per_key.values() for job_id in job_ids} == {
        str(job_id) for job_id in Job.objects.values_list("id", flat=True)
    }
    assert IdempotencyKey.objects.count() == KEYS

    web.stop()
    restarted = start_web(workers=1)
    for key, [job_id] in jobs_per_key.items():
        status, body, headers = _submit(restarted.url, api_key, key)
        assert (status, body["job_id"], headers["Idempotent-Replayed"]) == (202, job_id, "true")
    assert Job.objects.count() == KEYS
