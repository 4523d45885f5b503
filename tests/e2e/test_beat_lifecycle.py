"""`manage.py run_beat` as operators run it, against the real broker, database, Redis and a cron worker: the
default schedules it installs, periodic messages that expire, and the takeover by a standby beat when the lock's
holder is killed or paused (each periodic run counted exactly once)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from jobs.maintenance import default_schedules
from kaapi.celery import app
from tests.conftest import purge_queues, wait_until
from tests.jobs.test_beat import SENT, BeatProcess, every_second, pause, resume, runs

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def start_beat() -> Iterator[Callable[..., BeatProcess]]:
    started: list[BeatProcess] = []

    def start(*args: str, **env: str) -> BeatProcess:
        beat = BeatProcess(env, args=args).start()
        started.append(beat)
        return beat

    yield start
    for beat in started:  # after the test's assertions: at once (a stopped beat is sent SIGCONT first)
        if beat.process.poll() is None:
            os.killpg(beat.process.pid, signal.SIGCONT)
            os.killpg(beat.process.pid, signal.SIGKILL)
            beat.process.wait(10)
    purge_queues()  # what they sent with no cron worker to take it


def sends(task: PeriodicTask, *beats: BeatProcess) -> int:
    return sum(beat.log().count(f"{SENT} {task.name}") for beat in beats)


def test_run_beat_installs_the_default_schedules_unless_told_not_to(start_beat):
    beat = start_beat("--no-default-schedules", BEAT_LOCK_BACKEND="postgres")
    beat.wait_for_log("acquired: this beat schedules")
    assert not PeriodicTask.objects.filter(name__in=[d.name for d in default_schedules()]).exists()

    beat = start_beat(BEAT_LOCK_BACKEND="postgres")  # stands by (the first holds the lock); installs all the same
    beat.wait_for_log("standing by")
    names = [d.name for d in default_schedules()]
    installed = {task.name: task for task in PeriodicTask.objects.filter(name__in=names)}
    assert set(installed) == {d.name for d in default_schedules()}
    for default in default_schedules():
        task = installed[default.name]
        assert (task.task, task.enabled, task.interval.every, task.interval.period) == (
            default.task,
            True,
            default.every_seconds,
            IntervalSchedule.SECONDS,
        )
        assert task.expire_seconds == default.every_seconds  # a tick nobody ran in time is dropped, not piled up


def test_a_periodic_message_nobody_ran_in_time_expires(start_beat, start_worker):
    purge_queues()
    interval, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    task = PeriodicTask.objects.create(
        name="test: expiring tick", task="jobs_cron_deliver_due_webhooks", interval=interval, expire_seconds=1
    )
    beat = start_beat("--no-default-schedules", BEAT_LOCK_BACKEND="postgres")
    beat.wait_for_log(f"{SENT} {task.name}")
    with app.connection_for_write() as conn:  # no cron worker yet: the message waits in the queue, with its expiry
        message = wait_until(
            lambda: conn.default_channel.basic_get("cron", no_ack=False), timeout=30, message="a cron message"
        )
        assert message.headers["task"] == "jobs_cron_deliver_due_webhooks" and message.headers["expires"]
        assert message.properties["expiration"] == "1000"  # RabbitMQ drops it once expired, before any worker
        conn.default_channel.basic_reject(message.delivery_tag, requeue=True)
    pause(task, beat)
    os.killpg(beat.process.pid, signal.SIGKILL)
    # A cron worker started after they expired takes none of them: they are dropped, not run late.
    start_worker(queues="cron")
    with app.connection_for_write() as conn:
        wait_until(
            lambda: conn.default_channel.queue_declare(queue="cron", passive=True).message_count == 0,
            timeout=30,
            message="the expired ticks to leave the cron queue",
        )
    assert not runs(task.name).exists()


@pytest.mark.parametrize("backend", ["redis", "postgres"])
def test_a_standby_beat_takes_over_when_the_holder_is_killed(start_beat, start_worker, backend):
    start_worker(queues="cron")
    task = every_second("test: tick", "jobs_cron_deliver_due_webhooks")
    # A Redis lock lives 2 s here (5 s in BeatProcess): a dead holder's lock expires sooner, the test is shorter
    first = start_beat("--no-default-schedules", BEAT_LOCK_BACKEND=backend, BEAT_LOCK_TIMEOUT="2")
    first.wait_for_log("acquired: this beat schedules")
    second = start_beat("--no-default-schedules", BEAT_LOCK_BACKEND=backend, BEAT_LOCK_TIMEOUT="2")
    second.wait_for_log("standing by")
    wait_until(lambda: runs(task.name).count() >= 2, timeout=30, message="two ticks")

    pause(task, first)  # no send in flight when it dies
    os.killpg(first.process.pid, signal.SIGKILL)  # no release: Redis's lock expires, PostgreSQL's ends with its session
    resume(task)
    second.wait_for_log("acquired: this beat schedules")
    second.wait_for_log(f"{SENT} {task.name}")
    pause(task, second)
    sent = sends(task, first, second)
    wait_until(lambda: runs(task.name).count() == sent, timeout=30, message=f"{sent} runs, one per tick sent")


def test_a_holder_paused_past_the_lock_s_lifetime_stands_by_when_resumed(start_beat, start_worker):
    start_worker(queues="cron")
    task = every_second("test: tick", "jobs_cron_deliver_due_webhooks")
    first = start_beat("--no-default-schedules", BEAT_LOCK_BACKEND="redis", BEAT_LOCK_TIMEOUT="2")
    first.wait_for_log("acquired: this beat schedules")
    second = start_beat("--no-default-schedules", BEAT_LOCK_BACKEND="redis", BEAT_LOCK_TIMEOUT="2")
    second.wait_for_log("standing by")

    pause(task, first)
    os.killpg(first.process.pid, signal.SIGSTOP)  # a holder frozen (a long GC pause, a stopped VM) past the lock's life
    resume(task)
    second.wait_for_log("acquired: this beat schedules")
    second.wait_for_log(f"{SENT} {task.name}")
    standing_by = first.log().count("standing by")
    os.killpg(first.process.pid, signal.SIGCONT)
    wait_until(
        lambda: first.log().count("standing by") > standing_by, timeout=30, message="the resumed beat to stand by"
    )
    pause(task, second)
    sent_by_first = first.log().count(f"{SENT} {task.name}")
    sent = sends(task, first, second)
    wait_until(lambda: runs(task.name).count() == sent, timeout=30, message=f"{sent} runs, one per tick sent")
    assert first.log().count(f"{SENT} {task.name}") == sent_by_first  # it sent nothing once resumed
