"""Delayed jobs when beat, a worker and the broker restart around their due time: none is lost, none runs twice
(one effect per job), and none runs before its time."""

from __future__ import annotations

import sys
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from jobs import services
from jobs.models import Job, JobStatus
from jobs.services import jobs_dispatch_stalled
from tests import job_functions
from tests.chaos.conftest import effects_per_job, resilient
from tests.chaos.conftest import services as node
from tests.conftest import ServiceProcess, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

EFFECT = f"{job_functions.record_effect.__module__}.record_effect"


class BeatProcess(ServiceProcess):
    """`manage.py run_beat`, as an operator starts it (it installs the default schedules, the due-job sweep's
    every second among them); ready once it holds the beat lock."""

    kind = "beat"

    def __init__(self) -> None:
        argv = [sys.executable, "manage.py", "run_beat", "--max-interval", "1"]
        # the PostgreSQL advisory lock dies with a killed beat's connection (Redis's would outlive it 30 s)
        super().__init__(name="beat-scheduled", argv=argv, env={"BEAT_LOCK_BACKEND": "postgres"})
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0

    def ready(self) -> bool:
        with open(self.log_path, "rb") as log:
            log.seek(self._offset)
            return b"this beat schedules" in log.read()


def _schedule(project, count: int, *, in_seconds: float) -> list[str]:
    run_after = timezone.now() + timedelta(seconds=in_seconds)
    with transaction.atomic():
        return [
            str(services.job_create(project=project, function_path=EFFECT, params={}, run_after=run_after).id)
            for _ in range(count)
        ]


def test_restarts_of_beat_a_worker_and_the_broker_around_the_due_time_lose_and_double_no_job(
    start_worker, project, effect_table
):
    worker = start_worker(queues="high_priority,cron", concurrency=2)
    beat = BeatProcess().start()
    try:
        ids = _schedule(project, 20, in_seconds=4)  # due while beat is down
        ids += _schedule(project, 20, in_seconds=9)  # due while the worker is being replaced
        ids += _schedule(project, 20, in_seconds=14)  # due while the broker is down
        assert Job.objects.filter(id__in=ids, status=JobStatus.SCHEDULED).count() == 60

        time.sleep(2)
        beat.kill()
        time.sleep(4)
        beat = BeatProcess().start()
        time.sleep(2)
        worker.kill()
        worker = start_worker(queues="high_priority,cron", concurrency=2)
        time.sleep(2)
        node("stop", "rabbitmq")
        time.sleep(4)
        node("start", "rabbitmq")

        def finished() -> bool:
            # what the periodic recovery sweep does for jobs promoted while the broker was down
            jobs_dispatch_stalled(older_than=timedelta(seconds=0))
            return Job.objects.filter(id__in=ids).finished().count() == len(ids)

        wait_until(resilient(finished), timeout=180, interval=2, message="every scheduled job to run")
    finally:
        beat.stop()
        connection.close()

    statuses = dict(Job.objects.filter(id__in=ids).values_list("id", "status"))
    assert set(statuses.values()) == {JobStatus.SUCCESS}, statuses
    effects = effects_per_job()
    assert set(effects) == set(ids)
    assert set(effects.values()) == {1}, {k: v for k, v in effects.items() if v != 1}
    assert not Job.objects.filter(id__in=ids, started_at__lt=F("run_after")).exists(), "a job ran before its time"
