"""/metrics through the production web server: gunicorn with two workers and jobs run on two prefork children,
and every scrape, whichever web worker answers it, shows the same totals (the processes share the multiprocess
metrics directory)."""

from __future__ import annotations

import pytest
import requests
from django.db import transaction
from prometheus_client.parser import text_string_to_metric_families

import tests.job_functions  # noqa: F401  (registers the test job functions in this process)
from jobs.models import Job, JobStatus
from jobs.services import job_create
from tests.conftest import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FINISHED = ("kaapi_jobs_finished_total", (("job_type", "TEST"), ("status", "SUCCESS")))
SUBMITTED = ("kaapi_jobs_submitted_total", (("job_type", "TEST"), ("queue", "high_priority")))


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    # A new connection each time: gunicorn's two workers take turns accepting them
    resp = requests.get(f"{url}/metrics", headers={"Connection": "close"}, timeout=30)
    assert resp.status_code == 200, resp.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(resp.text)
        for sample in family.samples
    }


def test_every_scrape_through_two_web_workers_shows_the_totals_of_two_worker_children(start_worker, start_web, project):
    web = start_web(workers=2)
    before = scrape(web.url)
    start_worker(queues="high_priority", concurrency=2)
    with transaction.atomic():
        jobs = [
            job_create(
                project=project,
                function_path="tests.job_functions.report_pid_and_sleep",
                params={"seconds": 0.5},
                priority="high",
            )
            for _ in range(4)
        ]
    ids = [job.id for job in jobs]
    wait_until(
        lambda: Job.objects.filter(id__in=ids, status=JobStatus.SUCCESS).count() == 4, timeout=60, message="the jobs"
    )
    pids = {job.result["pid"] for job in Job.objects.filter(id__in=ids)}
    assert len(pids) == 2, pids  # counted in two child processes

    def delta(samples, key) -> float:
        return samples.get(key, 0.0) - before.get(key, 0.0)

    # The children record a finish just after they wrote the job's status: scrape until it is there
    wait_until(lambda: delta(scrape(web.url), FINISHED) == 4, timeout=20, message="the 4 finished jobs in /metrics")
    scrapes = [scrape(web.url) for _ in range(10)]
    assert {(delta(s, FINISHED), delta(s, SUBMITTED)) for s in scrapes} == {(4, 4)}
