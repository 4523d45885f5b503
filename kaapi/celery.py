"""The Celery application: the only place Celery is configured.

Queues are declared identically by every publisher and worker (a mismatch in x-max-priority makes
RabbitMQ answer PRECONDITION_FAILED forever), and tasks are routed by name.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from celery import Celery
from kombu import Connection, Exchange, Queue
from kombu.pools import producers

import kaapi.logging  # noqa: F401  (connects the signals that give every task its logging context)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kaapi.settings")

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


@cache
def _confirmed_connection() -> Connection:
    """The broker connection, in confirm mode (a template: the pool below opens clones of it)."""
    return app.connection_for_write(transport_options={**app.conf.broker_transport_options, "confirm_publish": True})


@contextmanager
def confirmed_producer() -> Iterator:
    """A producer from a pool of connections in publisher-confirm mode: each publish returns once RabbitMQ has
    the persistent message, or raises. For every message that carries work: job messages (and their sent
    event), retries, webhook deliveries. The app's own connections (task events, beat) do not confirm."""
    with producers[_confirmed_connection()].acquire(block=True) as producer:
        yield producer
