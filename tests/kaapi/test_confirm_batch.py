"""kaapi.celery.ConfirmBatch on the real broker: messages sent together, confirmed together, and a refusal or a
dead connection seen as such."""

from __future__ import annotations

import socket
import uuid

import pytest
from kombu import Exchange, Queue

from kaapi.celery import app, confirm_batch


@pytest.fixture
def queue():
    """A queue of this test's own that takes at most 3 messages and refuses the next ones: RabbitMQ then nacks
    them (``x-overflow: reject-publish``)."""
    name = f"test-confirm-{uuid.uuid4().hex[:8]}"
    declared = Queue(
        name,
        Exchange(""),
        routing_key=name,
        queue_arguments={"x-max-length": 3, "x-overflow": "reject-publish"},
    )
    with app.connection_for_write() as conn:
        declared(conn.default_channel).declare()
        yield declared
        conn.default_channel.queue_delete(name)


def _send(body, queue):
    def send(producer) -> None:
        producer.publish(body, exchange="", routing_key=queue.name, retry=False, delivery_mode=2)

    return send


def _depth(queue) -> int:
    with app.connection_for_write() as conn:
        return conn.default_channel.queue_declare(queue=queue.name, passive=True).message_count


def test_a_batch_s_messages_are_all_confirmed_and_those_the_broker_refuses_are_named(queue):
    with confirm_batch() as batch:
        for n in range(5):
            batch.publish(n, _send({"n": n}, queue))
        batch.wait(timeout=10)
    assert sorted(batch.confirmed) == [0, 1, 2]
    assert sorted(batch.refused) == [3, 4]
    assert _depth(queue) == 3
    assert not batch.broken


def test_the_channel_s_numbering_carries_on_from_one_batch_to_the_next(queue):
    for first in (0, 2):
        with confirm_batch() as batch:
            for n in range(first, first + 2):
                batch.publish(n, _send({"n": n}, queue))
            batch.wait(timeout=10)
        channel = batch.channel
        # the second batch used the same channel, its tags numbered on: one more message than the queue takes
        assert (batch.confirmed, batch.refused) == (([0, 1], []) if first == 0 else ([2], [3]))
    with confirm_batch() as batch:
        assert batch.channel is channel


def test_a_message_that_fails_before_it_is_sent_takes_no_number(queue):
    def not_encodable(producer) -> None:
        producer.publish({"n": object()}, exchange="", routing_key=queue.name, retry=False, serializer="json")

    with confirm_batch() as batch:
        batch.publish(0, _send({"n": 0}, queue))
        with pytest.raises(Exception):  # noqa: B017, PT011 - kombu's EncodeError, from the json serializer
            batch.publish(1, not_encodable)
        batch.publish(2, _send({"n": 2}, queue))
        batch.wait(timeout=10)
    assert sorted(batch.confirmed) == [0, 2] and not batch.broken


def test_a_dead_connection_breaks_the_batch_and_the_next_one_gets_a_fresh_connection(queue):
    with confirm_batch() as batch:
        batch.publish(0, _send({"n": 0}, queue))
        batch.wait(timeout=10)
        dead = batch.channel.connection
        dead.sock.shutdown(socket.SHUT_RDWR)  # as a broker restart leaves a pooled connection
    with pytest.raises(OSError), confirm_batch() as batch:
        batch.publish(1, _send({"n": 1}, queue))
        batch.wait(timeout=10)
    assert batch.broken and batch.confirmed == []
    with confirm_batch() as batch:
        assert batch.channel.connection is not dead
        batch.publish(2, _send({"n": 2}, queue))
        batch.wait(timeout=10)
    assert batch.confirmed == [2]


def test_a_batch_waits_no_longer_than_its_timeout_and_its_connection_is_then_dropped(queue):
    with confirm_batch() as batch:
        batch.publish(0, _send({"n": 0}, queue))
        batch.channel.events["basic_ack"].clear()  # the confirm is read, and nobody hears it
        with pytest.raises(TimeoutError, match="did not confirm 1 messages in 0 s"):
            batch.wait(timeout=0.5)
        connection = batch.channel.connection
    assert batch.broken and batch.confirmed == []
    with confirm_batch() as batch:  # the owed confirm would have been read as this batch's
        assert batch.channel.connection is not connection


def test_jobs_published_after_a_broker_restart_go_out_on_a_fresh_connection(project):
    """A pooled connection that died (the broker restarted since) fails the first try; the jobs are sent once more
    on a fresh connection and recorded."""
    from jobs.models import Job
    from jobs.publishing import publish_and_record
    from tests.conftest import purge_queues
    from tests.factories import job_row

    purge_queues()
    with confirm_batch() as batch:
        batch.channel.connection.sock.shutdown(socket.SHUT_RDWR)
    jobs = [job_row(project) for _ in range(3)]
    assert publish_and_record(jobs) == 3
    assert Job.objects.filter(id__in=[job.id for job in jobs], dispatched_at__isnull=False).count() == 3
    with app.connection_for_write() as conn:
        assert conn.default_channel.queue_declare(queue="high_priority", passive=True).message_count == 3
    purge_queues()


def test_jobs_published_after_the_broker_closed_the_connection_go_out_on_a_fresh_one(project):
    """A broker that restarts gracefully closes its connections (CONNECTION_FORCED): the pooled connection reads
    the close at its next publish, and py-amqp lets go of it. The jobs go out on a fresh one."""
    import os
    import subprocess
    import time

    from jobs.models import Job
    from jobs.publishing import publish_and_record
    from tests.conftest import ROOT, purge_queues
    from tests.factories import job_row

    def rabbitmqctl(*args: str) -> str:
        profile = os.environ.get("KAAPI_SERVICES_PROFILE", "test")
        command = [str(ROOT / "scripts/services.sh"), "rabbitmqctl", profile, *args]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout

    purge_queues()
    assert publish_and_record([job_row(project)]) == 1  # the pool's connection is open and in confirm mode
    with confirm_batch() as batch:
        port = str(batch.channel.connection.sock.getsockname()[1])
    # that connection only: the process's other connections (the app's pool) are other tests' too
    listed = rabbitmqctl("list_connections", "-p", os.environ["KAAPI_TEST_VHOST"], "-q", "pid", "peer_port")
    [pid] = [line.split()[0] for line in listed.splitlines() if line.split()[1:] == [port]]
    rabbitmqctl("close_connection", pid, "a test closes it")
    time.sleep(0.5)  # the close reaches the client's socket
    jobs = [job_row(project) for _ in range(3)]
    assert publish_and_record(jobs) == 3
    assert Job.objects.filter(id__in=[job.id for job in jobs], dispatched_at__isnull=False).count() == 3
    purge_queues()


def test_no_job_to_publish_asks_nothing_of_the_broker(monkeypatch):
    from jobs import publishing

    def no_broker():
        raise AssertionError("a batch was opened")

    monkeypatch.setattr(publishing, "confirm_batch", no_broker)
    assert publishing.publish_and_record([]) == 0


def test_a_connection_that_fails_as_a_batch_sets_up_its_channel_is_dropped(queue):
    from kaapi import celery

    with confirm_batch() as batch:
        channel = batch.channel
        dead = channel.connection
    celery._confirm_channels.pop(channel)  # as for a channel not yet in confirm mode
    dead.sock.shutdown(socket.SHUT_RDWR)
    with pytest.raises(OSError), confirm_batch():
        pass
    with confirm_batch() as batch:
        assert batch.channel.connection is not dead
        batch.publish(0, _send({"n": 0}, queue))
        batch.wait(timeout=10)
    assert batch.confirmed == [0]
