"""The worker's heartbeat file (WORKER_HEARTBEAT_FILE), which the Kubernetes liveness probe reads: a real worker
touches it again and again, and goes on touching it while the broker cannot be reached (a broker outage must not
look like a dead worker and restart them all)."""

import pytest

from tests.conftest import WorkerProcess, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


class HeartbeatWorker(WorkerProcess):
    """A worker that counts as started once its heartbeat file exists (it may never reach the broker)."""

    def __init__(self, *, heartbeat, **kwargs) -> None:
        self.heartbeat = heartbeat
        super().__init__(**kwargs)

    def ready(self) -> bool:
        return self.heartbeat.exists()


def touches(path, count: int) -> None:
    """Wait until the file's modification time has changed ``count`` times."""
    seen = {path.stat().st_mtime_ns}

    def touched_again() -> bool:
        seen.add(path.stat().st_mtime_ns)
        return len(seen) > count

    wait_until(
        touched_again,
        timeout=30,
        interval=0.05,
        message=f"{count} more touches of {path}",
    )


@pytest.mark.parametrize(
    ("pool", "broker"),
    [
        ("prefork", None),  # the test broker: worker-low and worker-cron
        ("gevent", "amqp://guest:guest@127.0.0.1:1//"),  # nothing listens there: a broker outage, worker-high
    ],
)
def test_a_worker_touches_its_heartbeat_file_with_or_without_a_broker(tmp_path, pool, broker):
    heartbeat = tmp_path / "probe" / "heartbeat"
    env = {"WORKER_HEARTBEAT_FILE": str(heartbeat), "WORKER_HEARTBEAT_INTERVAL_SECONDS": "0.2"}
    if broker:
        env["RABBITMQ_URL"] = broker
    worker = HeartbeatWorker(heartbeat=heartbeat, queues="cron", pool=pool, concurrency=1, env=env)
    worker.start()
    try:
        touches(heartbeat, 3)
        if broker:
            assert "Cannot connect to amqp://guest:**@127.0.0.1:1//" in worker.log()
        else:
            assert worker.ready() and WorkerProcess.ready(worker)  # connected and answering pings
    finally:
        worker.kill() if broker else worker.stop()  # a worker retrying its connection is slow to stop
