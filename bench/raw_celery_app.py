"""Raw Celery, no Django: the baseline our full job path is compared with in the same run.

Configured like kaapi's app where it matters for throughput: same broker, JSON, late acks, prefetch 1,
events on (without publisher confirms, as kaapi's), task messages published with confirms (``publish``, as kaapi
publishes job messages). No result backend (a raw no-op task stores nothing).
"""

import os
import time

from celery import Celery
from kombu import Queue
from kombu.pools import producers

app = Celery("raw", broker=os.environ["RABBITMQ_URL"])
app.conf.update(
    task_queues=(Queue("raw"),),
    task_default_queue="raw",
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    worker_send_task_events=True,
    task_send_sent_event=True,
    broker_connection_retry_on_startup=True,
)


@app.task(name="raw.noop")
def noop(n=None):
    return None


@app.task(name="raw.sleep")
def sleep(seconds=1.0):
    time.sleep(seconds)


_confirmed = app.connection_for_write(transport_options={"confirm_publish": True})


def publish(task, *args) -> None:
    """``task.apply_async(args)`` on a connection in publisher-confirm mode."""
    with producers[_confirmed].acquire(block=True) as producer:
        task.apply_async(args, producer=producer)
