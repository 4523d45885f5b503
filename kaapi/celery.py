"""The Celery application: the only place Celery is configured.

Queues are declared identically by every publisher and worker (a mismatch in x-max-priority makes
RabbitMQ answer PRECONDITION_FAILED forever), and tasks are routed by name.
"""

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from amqp.exceptions import RecoverableConnectionError
from celery import Celery, bootsteps
from celery.events import EventDispatcher
from celery.signals import task_postrun, task_prerun
from django.db import close_old_connections
from kombu import Connection, Exchange, Queue
from kombu.pools import producers

import kaapi.logging  # noqa: F401  (connects the signals that give every task its logging context)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kaapi.settings")
logger = logging.getLogger(__name__)

HIGH_PRIORITY_QUEUE = "high_priority"
LOW_PRIORITY_QUEUE = "low_priority"
CRON_QUEUE = "cron"
DEFAULT_QUEUE = "default"

HIGH_PRIORITY = 9
LOW_PRIORITY = 1

# name -> x-max-priority (None: a plain queue)
QUEUE_MAX_PRIORITY: dict[str, int | None] = {
    HIGH_PRIORITY_QUEUE: 10,
    LOW_PRIORITY_QUEUE: 1,
    CRON_QUEUE: None,
    DEFAULT_QUEUE: None,
}


def _queue(name: str, max_priority: int | None) -> Queue:
    arguments = {"x-max-priority": max_priority} if max_priority is not None else None
    return Queue(
        name, Exchange(name, type="direct", durable=True), routing_key=name, durable=True, queue_arguments=arguments
    )


app = Celery("kaapi")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = tuple(_queue(name, max_priority) for name, max_priority in QUEUE_MAX_PRIORITY.items())
app.conf.task_default_queue = DEFAULT_QUEUE
app.conf.task_default_exchange = DEFAULT_QUEUE
app.conf.task_default_routing_key = DEFAULT_QUEUE
# Routing by task name; the first matching glob wins.
app.conf.task_routes = (
    {
        "execute_high_priority_task": {"queue": HIGH_PRIORITY_QUEUE, "priority": HIGH_PRIORITY},
        "execute_low_priority_task": {"queue": LOW_PRIORITY_QUEUE, "priority": LOW_PRIORITY},
        "*_cron_*": {"queue": CRON_QUEUE},
        "*": {"queue": DEFAULT_QUEUE},
    },
)
app.autodiscover_tasks()


class WorkerHeartbeatFile(bootsteps.StartStopStep):
    """Touches ``WORKER_HEARTBEAT_FILE`` every ``WORKER_HEARTBEAT_INTERVAL_SECONDS`` for a liveness probe.

    A thread of its own rather than the worker's timer: the prefork worker's timer runs in its event loop, which
    stands still while the consumer reconnects to the broker, and a probe that fails during a broker outage
    restarts every worker at once for nothing. Under gevent the thread is a greenlet, so a hub that a task
    blocks stops the heartbeat, as it should. Started before the consumer, so a worker waiting for the broker
    at start-up is alive too.
    """

    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker, **kwargs) -> None:
        from django.conf import settings

        super().__init__(worker, **kwargs)
        self.path = settings.WORKER_HEARTBEAT_FILE
        self.interval = settings.WORKER_HEARTBEAT_INTERVAL_SECONDS
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def include_if(self, worker) -> bool:
        return bool(self.path)

    def start(self, worker) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._touch()
        self._thread = threading.Thread(target=self._run, name="heartbeat-file", daemon=True)
        self._thread.start()

    def stop(self, worker) -> None:
        # The file is left as it is: a worker in its warm shutdown is still alive until it exits.
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            self._touch()

    def _touch(self) -> None:
        try:
            Path(self.path).touch()
        except OSError:
            logger.warning("could not touch the heartbeat file %s", self.path, exc_info=True)


app.steps["worker"].add(WorkerHeartbeatFile)


@cache
def _confirmed_connection() -> Connection:
    """The broker connection, in confirm mode (a template: the pool below opens clones of it)."""
    return app.connection_for_write(transport_options={**app.conf.broker_transport_options, "confirm_publish": True})


@contextmanager
def confirmed_producer() -> Iterator:
    """A producer from a pool of connections in publisher-confirm mode: each publish returns once RabbitMQ has
    the persistent message, or raises. For every message that carries work: job messages, retries, webhook
    deliveries. The app's own connections (task events, beat) do not confirm; a job message's task-sent event
    goes on one of those (``sent_events``)."""
    with producers[_confirmed_connection()].acquire(block=True) as producer:
        yield producer


# Seconds a ConfirmBatch waits for the broker's confirms of its messages before it counts the rest as not taken;
# once a publish failed, only BROKEN_CONFIRM_TIMEOUT (the confirms of what went out before are read, and a message
# that did not go out is never confirmed).
CONFIRM_TIMEOUT = 30.0
BROKEN_CONFIRM_TIMEOUT = 1.0


@cache
def _batch_connection() -> Connection:
    """The broker connection for ``confirm_batch`` (a template, as above). Confirm mode is switched on per channel
    there, and a publish does not wait; the name sets the pool apart from the app's own connections (whose
    publishes nobody confirms) and names the connections in RabbitMQ's management UI."""
    options = {**app.conf.broker_transport_options, "client_properties": {"connection_name": "kaapi confirm batches"}}
    return app.connection_for_write(transport_options=options)


class _ConfirmChannel:
    """The confirm-mode state of one channel: RabbitMQ numbers the messages published on it from 1 (the delivery
    tags its confirms name), and so does this, by wrapping the channel's publish (as py-amqp itself does to wait
    for each confirm), so that a message that failed before it was sent takes no number."""

    def __init__(self, channel) -> None:
        channel.confirm_select()
        self.next_tag = 1
        self.sent: list[int] = []  # tags of the messages sent since the caller last looked
        publish = channel._basic_publish

        def numbered_publish(*args, **kwargs):
            self.sent.append(self.next_tag)
            self.next_tag += 1
            return publish(*args, **kwargs)

        channel.basic_publish = numbered_publish


_confirm_channels: weakref.WeakKeyDictionary[Any, _ConfirmChannel] = weakref.WeakKeyDictionary()


class ConfirmBatch:
    """Messages published one after the other without waiting, then confirmed by the broker together.

    A confirming producer (``confirmed_producer``) waits for each message's confirm before the next one goes
    out: a broker round trip per message. Admission publishes up to a batch of job messages while it holds its
    project's lock, and in a busy gevent worker each of those round trips also waits for the hub to come back to
    it (bench/fairness.py measured 2.6-3.8 ms a message, the lock held most of the time). Here every ``publish``
    goes out at once and ``wait`` reads the confirms, which RabbitMQ sends as it takes the messages (one frame can
    confirm many). The guarantee is the same: a message is ``confirmed`` only once the broker has it.
    """

    def __init__(self, producer) -> None:
        self.producer = producer
        self.channel = producer.channel
        state = _confirm_channels.get(self.channel)
        if state is None:
            state = _confirm_channels[self.channel] = _ConfirmChannel(self.channel)
        self._state = state
        self._pending: dict[int, Hashable] = {}  # delivery tag -> the caller's key
        self.confirmed: list[Hashable] = []
        self.refused: list[Hashable] = []  # nacked: the broker could not take them
        self.broken = False  # the channel's numbering can no longer be trusted: its connection is dropped
        self.channel.events["basic_ack"].add(self._on_ack)
        self.channel.events["basic_nack"].add(self._on_nack)

    def publish(self, key: Hashable, send: Callable[[Any], object]) -> None:
        """``send(producer)`` publishes one message (with ``retry=False``: a reconnection would publish on another
        channel); ``key`` names it in ``confirmed`` or ``refused``. An exception raised after the message was
        sent breaks the batch; a broken batch sends nothing more."""
        if self.broken:
            raise RecoverableConnectionError("an earlier message of this batch failed: its channel is dropped")
        self._state.sent.clear()
        try:
            send(self.producer)
        except BaseException:
            self.broken = self.broken or bool(self._state.sent)
            raise
        finally:
            for tag in self._state.sent:
                self._pending[tag] = key
            self._state.sent.clear()

    def wait(self, timeout: float = CONFIRM_TIMEOUT) -> None:
        """Read the broker's confirms until every message sent is confirmed or refused; raises (and breaks the
        batch) when the connection fails or ``timeout`` (for a broken batch at most BROKEN_CONFIRM_TIMEOUT) passes
        first."""
        if self.broken:
            timeout = min(timeout, BROKEN_CONFIRM_TIMEOUT)
        deadline = time.monotonic() + timeout
        try:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"the broker did not confirm {len(self._pending)} messages in {timeout:.0f} s")
                connection = self.channel.connection
                if connection is None:  # py-amqp let go of it: the broker closed the connection
                    raise RecoverableConnectionError("the connection was closed before every message was confirmed")
                try:
                    connection.drain_events(timeout=remaining)
                except TimeoutError:
                    continue  # raised above, with what is missing
        except BaseException:
            self.broken = True
            raise

    def _settle(self, tag: int, multiple: bool, into: list) -> None:
        for pending in [t for t in self._pending if t <= tag] if multiple else [tag]:
            if pending in self._pending:
                into.append(self._pending.pop(pending))

    def _on_ack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple, self.confirmed)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple, self.refused)

    def close(self) -> None:
        self.channel.events["basic_ack"].discard(self._on_ack)
        self.channel.events["basic_nack"].discard(self._on_nack)
        if self.broken or self._pending:
            # Confirms still owed (or a half-sent message) would be read as the next batch's: start afresh.
            _confirm_channels.pop(self.channel, None)
            self.producer.connection.collect()


@contextmanager
def confirm_batch() -> Iterator[ConfirmBatch]:
    """A ``ConfirmBatch`` on a producer from a pool of its own."""
    with producers[_batch_connection()].acquire(block=True) as producer:
        batch = ConfirmBatch(producer)
        try:
            yield batch
        finally:
            batch.close()


class _SentEvents(EventDispatcher):
    """Task-sent events on a connection of their own, without publisher confirms.

    Celery publishes a task's sent event with the producer that published the task. On a confirming producer
    that is a second broker round trip per job, for a transient monitoring message that a confirm does not make
    any safer. This dispatcher publishes it with its own producer instead, and never raises: the task message is
    already confirmed, and a lost event must not make the caller think the job was not published (it would be
    published again).
    """

    def publish(self, type, fields, producer, *args, **kwargs):
        # Celery passes the caller's retry policy, None by default: kombu would then retry without end.
        kwargs["retry_policy"] = kwargs.get("retry_policy") or self.app.conf.task_publish_retry_policy
        try:
            return super().publish(type, fields, self.producer, *args, **kwargs)
        except Exception:
            logger.warning("could not send the %s event; the task message itself is published", type, exc_info=True)
            return None


_sent_events_lock = threading.Lock()
_sent_events_by_pid: dict[int, EventDispatcher] = {}


def sent_events() -> EventDispatcher:
    """This process's dispatcher for task-sent events: ``app.send_task(..., event_dispatcher=sent_events())``."""
    pid = os.getpid()  # a forked process (pool child, web worker) opens its own connection
    dispatcher = _sent_events_by_pid.get(pid)
    if dispatcher is None:
        with _sent_events_lock:
            dispatcher = _sent_events_by_pid.get(pid)
            if dispatcher is None:
                _sent_events_by_pid.clear()
                dispatcher = _sent_events_by_pid[pid] = _SentEvents(
                    app.connection_for_write(), app=app, buffer_while_offline=False
                )
    return dispatcher


@task_prerun.connect
@task_postrun.connect
def _close_old_database_connections(sender=None, **kwargs) -> None:
    """Around each task, Django's rule for a request: a connection is closed when it is unusable (an error
    occurred) or older than CONN_MAX_AGE, and otherwise kept for the next task (CELERY_DB_REUSE_MAX keeps Celery's
    fixup from closing it every time). Not for an eager task, which runs inside its caller's transaction."""
    if sender is not None and getattr(sender.request, "is_eager", False):
        return
    close_old_connections()
