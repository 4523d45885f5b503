"""A webhook attempt has a total deadline, its lease outlasts it, and one delivery never has two attempts at once:
a slow receiver cannot hold the workers that deliver webhooks (and convert documents)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from jobs.models import DeliveryStatus, WebhookDelivery
from jobs.webhooks import webhook_attempt
from jobs.webhooks.services import LEASE_MARGIN_SECONDS, _claim
from tests.conftest import wait_until
from tests.factories import WebhookDeliveryFactory
from tests.fakes.webhook_receiver import Trickle, WebhookReceiver

DEADLINE = 1.0
# What "ends by the deadline" means here: generous, and far below the trickle's ~45 s and any per-read timeout.
ENDS_WITHIN = DEADLINE + 4


@pytest.fixture
def receiver():
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def slow_receiver_settings(settings):
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    settings.WEBHOOK_CONNECT_TIMEOUT = 1
    settings.WEBHOOK_READ_TIMEOUT = 2  # per read: a byte every 0.1 s never trips it
    settings.WEBHOOK_ATTEMPT_DEADLINE_SECONDS = DEADLINE
    return settings


def due_delivery(project, url: str) -> WebhookDelivery:
    return WebhookDeliveryFactory(
        job__project=project, job__callback_url=url, payload={"n": 1}, next_attempt_at=timezone.now()
    )


def assert_scheduled_for_retry(delivery: WebhookDelivery, *, after) -> None:
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 1
    assert delivery.next_attempt_at > after, "the retry is scheduled later, not due at once"
    assert f"deadline ({DEADLINE:g} s)" in delivery.last_error, delivery.last_error


def attempt_timed(delivery_id: str) -> tuple[str, float]:
    started = time.monotonic()
    outcome = webhook_attempt(delivery_id=delivery_id)
    return outcome, time.monotonic() - started


@pytest.mark.django_db
@pytest.mark.parametrize(
    "answer",
    [Trickle(status=200), Trickle(status=500, body_only=True)],
    ids=["status-line-and-headers-trickle", "error-body-trickles"],
)
def test_a_trickling_receiver_is_cut_off_at_the_deadline_and_retried(project, receiver, slow_receiver_settings, answer):
    receiver.script("/slow", [answer])
    delivery = due_delivery(project, receiver.url("/slow"))
    outcome, elapsed = attempt_timed(str(delivery.id))
    assert outcome == "retrying"
    assert elapsed < ENDS_WITHIN, elapsed
    assert_scheduled_for_retry(delivery, after=timezone.now())
    assert len(receiver.requests("/slow")) == 1


@pytest.mark.django_db(transaction=True)
def test_the_deadline_holds_outside_the_main_thread_too(project, receiver, slow_receiver_settings):
    """A threads pool runs attempts outside the main thread, where no alarm signal can interrupt them."""
    receiver.script("/slow", [Trickle(status=200)])
    delivery = due_delivery(project, receiver.url("/slow"))
    result: list[tuple[str, float]] = []

    def attempt() -> None:
        try:
            result.append(attempt_timed(str(delivery.id)))
        finally:
            connection.close()

    thread = threading.Thread(target=attempt)
    thread.start()
    thread.join(timeout=60)
    [(outcome, elapsed)] = result
    assert outcome == "retrying" and elapsed < ENDS_WITHIN, (outcome, elapsed)
    assert_scheduled_for_retry(delivery, after=timezone.now())


@pytest.mark.django_db
def test_the_lease_outlasts_the_deadline(project, settings):
    settings.WEBHOOK_ATTEMPT_DEADLINE_SECONDS = 120  # longer than the per-read timeouts: the lease follows it
    delivery = due_delivery(project, "https://hooks.test/x")
    before = timezone.now()
    claimed = _claim(str(delivery.id))
    assert claimed is not None
    assert claimed.next_attempt_at >= before + timedelta(seconds=120 + LEASE_MARGIN_SECONDS)


@pytest.mark.django_db(transaction=True)
def test_an_attempt_in_flight_is_never_joined_by_a_second(project, receiver, slow_receiver_settings):
    """While one attempt waits on a receiver that trickles its answer, the delivery's other messages (a duplicate,
    the sweep's republish) keep trying to attempt it: only one request ever reaches the receiver."""
    receiver.script("/slow", [Trickle(status=500)])  # the status line, the headers, then 400 bytes: ~45 s
    delivery = due_delivery(project, receiver.url("/slow"))
    first_done = threading.Event()
    others: list[str] = []

    def attempt_again_and_again() -> None:
        try:
            receiver.wait_for(1, path="/slow")  # the first attempt is in flight
            while not first_done.is_set():
                others.append(webhook_attempt(delivery_id=str(delivery.id)))
                first_done.wait(0.1)
        finally:
            connection.close()

    thread = threading.Thread(target=attempt_again_and_again)
    thread.start()
    try:
        outcome, elapsed = attempt_timed(str(delivery.id))
    finally:
        first_done.set()
        thread.join(timeout=60)
    assert len(receiver.requests("/slow")) == 1, "a second attempt posted while the first was in flight"
    assert others and set(others) == {"skipped"}, others
    assert outcome == "retrying" and elapsed < ENDS_WITHIN, (outcome, elapsed)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("pool", ["prefork", "gevent", "threads"])
def test_a_worker_ends_a_trickling_attempt_by_the_deadline(start_worker, project, receiver, pool):
    """Each pool interrupts the exchange its own way (an alarm, a gevent timeout, an asynchronous exception)."""
    from jobs.publishing import publish_webhook_delivery

    env = {
        "WEBHOOK_ALLOW_HTTP": "true",
        "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
        "WEBHOOK_CONNECT_TIMEOUT": "1",
        "WEBHOOK_READ_TIMEOUT": "2",
        "WEBHOOK_ATTEMPT_DEADLINE_SECONDS": str(DEADLINE),
    }
    start_worker(queues="default", pool=pool, concurrency=2, env=env)
    receiver.script("/slow", [Trickle(status=500)])
    delivery = due_delivery(project, receiver.url("/slow"))
    publish_webhook_delivery(delivery.id)
    receiver.wait_for(1, path="/slow")
    wait_until(
        lambda: "deadline" in WebhookDelivery.objects.get(id=delivery.id).last_error,
        timeout=ENDS_WITHIN + 5,  # the worker's attempt started when the receiver got the request
        message="the attempt to end at its deadline",
    )
    assert_scheduled_for_retry(delivery, after=timezone.now())
    assert len(receiver.requests("/slow")) == 1


def test_the_alarm_of_the_deadline_keeps_an_earlier_alarm():
    """pytest-timeout (and anything else) may have set SIGALRM: the deadline puts it back as it found it."""
    import signal

    from jobs.deadline import deadline

    class Late(Exception):
        pass

    previous = signal.getsignal(signal.SIGALRM)
    previous_timer = signal.getitimer(signal.ITIMER_REAL)

    def earlier(signum, frame):
        raise AssertionError("the earlier alarm fired too soon")

    signal.signal(signal.SIGALRM, earlier)
    signal.setitimer(signal.ITIMER_REAL, 50)
    try:
        with pytest.raises(Late):
            with deadline(0.2, Late):
                time.sleep(5)
        assert signal.getsignal(signal.SIGALRM) is earlier
        assert 45 < signal.getitimer(signal.ITIMER_REAL)[0] <= 50
    finally:
        signal.setitimer(signal.ITIMER_REAL, *previous_timer)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.django_db
def test_a_redelivery_does_not_start_a_second_attempt_beside_one_in_flight(project, settings):
    """An operator redelivering a delivery whose attempt is running: the attempt keeps its lease."""
    from jobs.webhooks import webhook_redeliver

    delivery = due_delivery(project, "https://hooks.test/x")
    claimed = _claim(str(delivery.id))  # an attempt is in flight
    assert claimed is not None
    webhook_redeliver(delivery=delivery)
    assert _claim(str(delivery.id)) is None
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == (
        DeliveryStatus.PENDING,
        0,
        claimed.next_attempt_at,
    )

    # Waiting for a retry far away is not an attempt in flight: a redelivery makes it due now.
    later = timezone.now() + timedelta(seconds=settings.WEBHOOK_ATTEMPT_DEADLINE_SECONDS + LEASE_MARGIN_SECONDS + 600)
    WebhookDelivery.objects.filter(id=delivery.id).update(next_attempt_at=later)
    webhook_redeliver(delivery=delivery)
    assert _claim(str(delivery.id)) is not None


def test_the_deadline_must_stay_below_the_soft_time_limit():
    from tests.llm.test_settings_and_worker import settings_error

    error = settings_error(WEBHOOK_ATTEMPT_DEADLINE_SECONDS="300", CELERY_TASK_SOFT_TIME_LIMIT="300")
    assert "WEBHOOK_ATTEMPT_DEADLINE_SECONDS (300.0) must be below CELERY_TASK_SOFT_TIME_LIMIT (300)" in error
    assert settings_error(WEBHOOK_ATTEMPT_DEADLINE_SECONDS="299", CELERY_TASK_SOFT_TIME_LIMIT="300") == ""
    # unset, it follows a lowered soft limit
    assert settings_error(CELERY_TASK_SOFT_TIME_LIMIT="2", DOCUMENT_TRANSFORM_TIMEOUT="1") == ""


def test_an_earlier_alarm_fires_once_inside_the_deadline_and_the_deadline_still_holds():
    import signal

    from jobs.deadline import deadline

    class Late(Exception):
        pass

    previous = signal.getsignal(signal.SIGALRM)
    previous_timer = signal.getitimer(signal.ITIMER_REAL)
    fired = []
    signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(time.monotonic()))
    signal.setitimer(signal.ITIMER_REAL, 0.1)
    try:
        started = time.monotonic()
        with pytest.raises(Late):
            with deadline(0.4, Late):
                while time.monotonic() - started < 5:
                    time.sleep(0.05)
        assert 0.35 < time.monotonic() - started < 2
        assert len(fired) == 1 and fired[0] - started < 0.35
        assert signal.getitimer(signal.ITIMER_REAL)[0] == 0  # fired: not set again
    finally:
        signal.setitimer(signal.ITIMER_REAL, *previous_timer)
        signal.signal(signal.SIGALRM, previous)
