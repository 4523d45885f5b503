import threading
import time

from jobs import publishing as dispatcher_module
from jobs.admission import Admission
from jobs.models import Job
from jobs.publishing import BackgroundDispatcher


def test_background_dispatcher_admits_high_priority_before_a_low_priority_backlog(monkeypatch):
    gate = threading.Event()
    at_gate = threading.Event()
    calls: list[tuple[int, str]] = []

    def admit(*, project_id, queue, submitted=()):
        at_gate.set()
        gate.wait(5)
        calls.append((project_id, queue))
        return Admission(len(submitted), True)

    dispatcher = BackgroundDispatcher(admit)
    dispatcher.submit([Job(project_id=1, queue="low_priority")])  # taken at once; the thread waits at the gate
    assert at_gate.wait(5), "the dispatcher thread did not take the first submission"
    dispatcher.submit([Job(project_id=p, queue="low_priority") for p in (2, 3, 4) for _ in range(50)])
    dispatcher.submit([Job(project_id=5, queue="high_priority")])
    gate.set()
    assert dispatcher.flush(timeout=10)
    assert calls == [
        (1, "low_priority"),
        (5, "high_priority"),
        (2, "low_priority"),
        (3, "low_priority"),
        (4, "low_priority"),
    ]


def test_while_the_broker_refuses_the_dispatcher_backs_off_and_loses_nothing(monkeypatch):
    """The first two admissions are refused by the broker: the projects left wait, the thread waits longer after
    each refusal, and every project is admitted in the end."""
    monkeypatch.setattr(dispatcher_module, "BACKOFF_MIN", 0.05)
    tries: list[float] = []
    admitted: list[int] = []

    def admit(*, project_id, queue, submitted=()):
        tries.append(time.monotonic())
        if len(tries) <= 2:
            return Admission(0, False)
        admitted.append(project_id)
        return Admission(len(submitted), True)

    dispatcher = BackgroundDispatcher(admit)
    dispatcher.submit([Job(project_id=p, queue="high_priority") for p in range(1, 4)])
    assert dispatcher.flush(timeout=10)
    assert sorted(admitted) == [1, 2, 3]
    assert tries[1] - tries[0] >= 0.05 and tries[2] - tries[1] >= 0.1


def test_a_process_holds_a_bounded_number_of_job_ids(monkeypatch):
    """The thread holds which projects have new jobs, and at most MAX_QUEUED job ids per project (those it marks
    as waiting when the project is at its limit); the jobs themselves are read from the table."""
    monkeypatch.setattr(dispatcher_module, "MAX_QUEUED", 5)
    seen = []
    dispatcher = BackgroundDispatcher(
        lambda *, project_id, queue, submitted=(): seen.append(len(submitted)) or Admission(0, True)
    )
    dispatcher.submit([Job(project_id=1, queue="high_priority") for _ in range(8)])
    assert dispatcher.flush(timeout=10)
    assert sum(seen) <= 5 and seen


def test_a_project_held_back_by_its_submission_rate_is_admitted_again_when_its_window_frees(monkeypatch):
    """The first admission leaves the project's jobs waiting for the rate's window (admitted again in 0.2 s): the
    thread comes back for them by itself, with nothing else submitted."""
    calls: list[float] = []
    done = threading.Event()

    def admit(*, project_id, queue, submitted=()):
        calls.append(time.monotonic())
        if len(calls) == 1:
            return Admission(2, True, "submission_rate", 0.2)
        done.set()
        return Admission(3, True)

    dispatcher = BackgroundDispatcher(admit)
    dispatcher.submit([Job(project_id=1, queue="high_priority") for _ in range(5)])
    assert dispatcher.flush(timeout=10)  # a pending timer does not hold a flush (nor the process's exit)
    assert done.wait(10), "the dispatcher did not come back for the waiting jobs"
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.2


def test_slots_freed_together_are_filled_by_one_admission():
    """Slots a project's jobs free within the linger are filled by one admission, not one each; a slot freed
    while that admission runs gets the next one; nothing freed is dropped by a flush (the process's exit)."""
    calls: list[tuple[int, str]] = []
    running = threading.Event()
    release = threading.Event()

    def admit(*, project_id, queue, submitted=()):
        calls.append((project_id, queue))
        if len(calls) == 1:
            running.set()
            release.wait(5)
        return Admission(0, True)

    dispatcher = BackgroundDispatcher(admit)
    for _ in range(20):
        dispatcher.request(project_id=1, queue="high_priority", linger=0.2)
    dispatcher.request(project_id=2, queue="high_priority", linger=0.2)
    assert running.wait(5), "the lingering admissions were never made"
    dispatcher.request(project_id=1, queue="high_priority", linger=0.2)  # freed during the admission
    release.set()
    assert dispatcher.flush(timeout=10)
    assert sorted(calls) == [(1, "high_priority"), (1, "high_priority"), (2, "high_priority")]

    calls.clear()
    dispatcher.request(project_id=3, queue="low_priority", linger=60)
    assert dispatcher.flush(timeout=10)  # made now rather than lost with the process
    assert calls == [(3, "low_priority")]


def test_the_background_admission_of_a_freed_slot_with_nothing_waiting_is_one_query(db, project):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from jobs.admission import _admit_in_background

    with CaptureQueriesContext(connection) as queries:
        admission = _admit_in_background(project_id=project.id, queue="high_priority")
    assert admission.handled == 0 and admission.broker_ok
    assert len(queries) == 1, [q["sql"] for q in queries]


def test_job_messages_are_published_with_confirms_and_events_without(monkeypatch):
    """Job messages go through a connection in publisher-confirm mode (a message the broker did not take raises
    instead of vanishing); the app's own connections, which carry task events to Flower, do not confirm."""
    from contextlib import contextmanager

    from jobs import publishing
    from kaapi.celery import app, confirmed_producer
    from tests.conftest import purge_queues

    used = []

    @contextmanager
    def recording_producer():
        with confirmed_producer() as producer:
            yield producer
            # py-amqp switches a channel to confirm mode on its first confirmed publish, then waits for each ack
            used.append((producer.connection.transport_options, producer.channel._confirm_selected))

    monkeypatch.setattr(publishing, "confirmed_producer", recording_producer)
    publishing.start_low_priority_job("jobs.functions.echo", 1, "00000000-0000-0000-0000-000000000000")
    [(options, confirm_selected)] = used
    assert options.get("confirm_publish") is True and confirm_selected
    with app.connection_for_write() as conn:
        assert not conn.transport_options.get("confirm_publish")
    purge_queues()


def _sent_events_queue(channel):
    """A queue of this test's own for the task-sent events (what Flower consumes)."""
    from celery.events.event import get_exchange
    from kombu import Queue

    from kaapi.celery import app

    exchange = get_exchange(channel.connection.client, name=app.conf.event_exchange)
    queue = Queue("", exchange=exchange, routing_key="task.sent", exclusive=True, auto_delete=True)(channel)
    queue.declare()
    return queue


def test_a_job_message_s_sent_event_goes_out_without_a_confirm_of_its_own(monkeypatch):
    from jobs import publishing
    from kaapi.celery import app, sent_events
    from tests.conftest import purge_queues

    producer = sent_events().producer
    published = []
    publish = producer.publish
    monkeypatch.setattr(producer, "publish", lambda *a, **kw: published.append(kw["routing_key"]) or publish(*a, **kw))
    with app.connection_for_write() as conn:
        queue = _sent_events_queue(conn.default_channel)
        task_id = publishing.start_low_priority_job("jobs.functions.echo", 1, "00000000-0000-0000-0000-000000000000")
        events = []
        deadline = time.monotonic() + 5
        while not events and time.monotonic() < deadline:
            message = queue.get(no_ack=True)
            if message is None:
                time.sleep(0.05)
            elif message.decode().get("uuid") == task_id:
                events.append(message.decode())
    assert [event["type"] for event in events] == ["task-sent"]
    assert events[0]["name"] == "execute_low_priority_task" and events[0]["queue"] == "low_priority"
    assert published == ["task.sent"]  # by the events producer, on its own connection without confirm mode
    assert not producer.connection.transport_options.get("confirm_publish") and not producer.channel._confirm_selected
    purge_queues()


def test_a_sent_event_that_fails_does_not_fail_the_published_job(monkeypatch):
    from jobs import publishing
    from kaapi.celery import app, sent_events
    from tests.conftest import purge_queues

    purge_queues()

    calls = []

    def broken(*args, **kwargs):
        calls.append(kwargs["routing_key"])
        raise ConnectionResetError("the events connection broke")

    monkeypatch.setattr(sent_events().producer, "publish", broken)
    task_id = publishing.start_low_priority_job("jobs.functions.echo", 1, "00000000-0000-0000-0000-000000000000")
    with app.connection_for_write() as conn:
        message = app.amqp.queues["low_priority"](conn.default_channel).get(no_ack=True)
    assert calls == ["task.sent"]
    assert message is not None and message.headers["id"] == task_id  # the job message is in its queue


def test_sent_events_retry_with_the_publish_retry_policy_not_without_end(monkeypatch):
    from celery.events.dispatcher import EventDispatcher

    from kaapi.celery import app, sent_events

    seen = []
    monkeypatch.setattr(EventDispatcher, "publish", lambda self, *args, **kwargs: seen.append(kwargs))
    sent_events().publish("task-sent", {}, None, retry=True, retry_policy=None)  # what Celery passes by default
    assert seen == [{"retry": True, "retry_policy": app.conf.task_publish_retry_policy}]
    assert seen[0]["retry_policy"]["max_retries"] is not None


def test_a_forked_process_gets_its_own_sent_events_dispatcher():
    """Pool children and web workers are forked: they must not share the parent's events connection."""
    import os

    from kaapi.celery import sent_events

    parent = sent_events()
    assert sent_events() is parent  # one per process
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report whether it got a dispatcher of its own, then leave at once
        child = sent_events()
        os.write(write, b"own" if child is not parent and child.connection is not parent.connection else b"shared")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 16) == b"own"
    assert sent_events() is parent


def test_a_job_message_carries_its_trace_id_once_in_a_header():
    from jobs import publishing
    from kaapi.celery import app
    from tests.conftest import purge_queues

    purge_queues()
    task_id = publishing.start_low_priority_job(
        "jobs.functions.echo", 1, "00000000-0000-0000-0000-000000000000", "trace-7", params={"a": 1}
    )
    with app.connection_for_write() as conn:
        message = app.amqp.queues["low_priority"](conn.default_channel).get(no_ack=True)
    assert message is not None and message.headers["id"] == task_id
    _, kwargs, _ = message.decode()
    assert message.headers["trace_id"] == "trace-7"
    assert "trace_id" not in kwargs and kwargs["params"] == {"a": 1}


def test_a_webhook_delivery_message_carries_its_job_s_trace_id_in_a_header():
    from jobs import publishing
    from kaapi.celery import app
    from tests.conftest import purge_queues

    purge_queues()
    publishing.publish_webhook_delivery("00000000-0000-0000-0000-000000000001", trace_id="trace-8")
    with app.connection_for_write() as conn:
        message = app.amqp.queues["default"](conn.default_channel).get(no_ack=True)
    assert message is not None and message.headers["trace_id"] == "trace-8"
    _, kwargs, _ = message.decode()
    assert kwargs == {"delivery_id": "00000000-0000-0000-0000-000000000001"}
