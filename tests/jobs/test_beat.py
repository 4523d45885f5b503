"""Real beat processes with the database scheduler: schedules made through the ORM run on a `cron` worker,
edits are picked up without a restart, and two beats fire once per tick (the beat lock)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks
from django_celery_results.models import TaskResult

from jobs.beat import FileLock, PostgresAdvisoryLock, RedisLock
from jobs.models import Job, JobStatus
from tests.conftest import LOG_DIR, ROOT, wait_until, worker_environment
from tests.factories import job_row

SENT = "Sending due task"


class BeatProcess:
    """`manage.py run_beat`, as an operator starts it; it looks at the schedule table every second."""

    def __init__(self, env: dict[str, str] | None = None, *, args: tuple[str, ...] = ()) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.args = args
        self.log_path = LOG_DIR / f"beat-{uuid.uuid4().hex[:8]}.log"
        self.env = worker_environment(**{"CELERY_BEAT_MAX_LOOP_INTERVAL": "1", "BEAT_LOCK_TIMEOUT": "5", **(env or {})})
        self.process: subprocess.Popen | None = None

    def start(self) -> BeatProcess:
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "run_beat", "--loglevel", "info", *self.args],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 30) -> None:
        def seen():
            if self.process.poll() is not None:
                raise AssertionError(f"beat exited with {self.process.returncode}; see {self.log_path}")
            return text in self.log()

        wait_until(seen, timeout=timeout, interval=0.2, message=f"{text!r} in {self.log_path}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


@pytest.fixture
def start_beat(start_worker) -> Iterator[Callable[..., BeatProcess]]:
    started: list[BeatProcess] = []

    def start(**env: str) -> BeatProcess:
        beat = BeatProcess(env).start()
        started.append(beat)
        return beat

    yield start
    for beat in started:
        beat.stop()


def every_second(name: str, task: str, **kwargs) -> PeriodicTask:
    interval, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    return PeriodicTask.objects.create(name=name, task=task, interval=interval, kwargs=json.dumps(kwargs))


def runs(name: str):
    return TaskResult.objects.filter(periodic_task_name=name, status="SUCCESS")


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_beat_runs_the_database_schedule_on_the_cron_worker_and_picks_up_edits(start_worker, start_beat, project):
    # A job whose message was lost: the PENDING row exists, nothing was published.
    lost = job_row(
        project,
        params={"delay": 0, "lost": True},
    )
    Job.objects.filter(id=lost.id).update(updated_at=timezone.now() - timedelta(hours=1))
    worker = start_worker(queues="cron,high_priority")
    beat = start_beat()
    beat.wait_for_log("acquired: this beat schedules")
    # Made after beat started: beat finds it in the table.
    task = every_second("test: recover stalled", "jobs_cron_recover_stalled", limit=100)

    wait_until(lambda: runs(task.name).exists(), timeout=30, message="the recovery sweep to run")
    assert runs(task.name).first().worker == worker.name
    wait_until(
        lambda: Job.objects.get(id=lost.id).status == JobStatus.SUCCESS, timeout=30, message="the lost job to run"
    )
    assert Job.objects.get(id=lost.id).result == {"delay": 0, "lost": True}

    # An edit (as in admin) is picked up without restarting beat.
    task.kwargs = json.dumps({"limit": 4242})
    task.save()
    wait_until(
        lambda: runs(task.name).filter(task_kwargs__contains="4242").exists(), timeout=30, message="the edited kwargs"
    )
    assert "Schedule changed" in beat.log()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_two_beats_fire_once_per_tick(start_worker, start_beat):
    """With the PostgreSQL advisory lock (the Redis lock is exercised in test_locks_are_exclusive)."""
    start_worker(queues="cron")
    task = every_second("test: tick", "jobs_cron_deliver_due_webhooks")
    first = start_beat(BEAT_LOCK_BACKEND="postgres")
    first.wait_for_log("acquired: this beat schedules")
    second = start_beat(BEAT_LOCK_BACKEND="postgres")
    second.wait_for_log("standing by")

    wait_until(lambda: runs(task.name).count() >= 3, timeout=30, message="three ticks")
    assert SENT in first.log()
    assert SENT not in second.log()

    # The holder stops (between two sends: the schedule is paused first); the standby takes over.
    pause(task, first)
    first.stop()
    resume(task)
    second.wait_for_log("acquired: this beat schedules")
    second.wait_for_log(f"{SENT} {task.name}")
    pause(task, second)

    sent = first.log().count(f"{SENT} {task.name}") + second.log().count(f"{SENT} {task.name}")
    wait_until(lambda: runs(task.name).count() == sent, timeout=30, message=f"{sent} runs, one per tick sent")


def pause(task: PeriodicTask, beat: BeatProcess) -> None:
    """Disable ``task`` (as in admin) and wait until ``beat`` has seen it: no send of it is in flight after."""
    changes = beat.log().count("Schedule changed")
    PeriodicTask.objects.filter(pk=task.pk).update(enabled=False)
    PeriodicTasks.update_changed()
    wait_until(lambda: beat.log().count("Schedule changed") > changes, timeout=30, message="beat to see the pause")


def resume(task: PeriodicTask) -> None:
    PeriodicTask.objects.filter(pk=task.pk).update(enabled=True)
    PeriodicTasks.update_changed()


@pytest.mark.django_db
def test_locks_are_exclusive(settings, tmp_path):
    name = f"test-{uuid.uuid4().hex}"
    pairs = [
        (PostgresAdvisoryLock(name), PostgresAdvisoryLock(name)),
        (RedisLock(name, url=settings.REDIS_URL, timeout=5), RedisLock(name, url=settings.REDIS_URL, timeout=5)),
        (FileLock(name, path=tmp_path / "beat.lock"), FileLock(name, path=tmp_path / "beat.lock")),
    ]
    for holder, other in pairs:
        assert holder.acquire()
        assert holder.acquire()  # confirms and renews
        assert not other.acquire()
        holder.release()
        assert other.acquire()
        assert not holder.acquire()
        other.release()
