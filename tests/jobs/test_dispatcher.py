import threading
import time

from jobs import dispatcher as dispatcher_module
from jobs.dispatcher import PUBLISH_BATCH_SIZE, BackgroundDispatcher
from jobs.models import Job


def test_background_dispatcher_publishes_high_priority_before_a_low_priority_batch(monkeypatch):
    gate = threading.Event()
    batches: list[list[int]] = []

    def publish_and_record(jobs):
        gate.wait(5)
        batches.append([job.priority for job in jobs])
        return len(jobs)

    monkeypatch.setattr(dispatcher_module, "publish_and_record", publish_and_record)
    dispatcher = BackgroundDispatcher()
    dispatcher.submit([Job(priority=1)])  # taken at once; the thread then waits at the gate
    time.sleep(0.2)
    dispatcher.submit([Job(priority=1) for _ in range(3 * PUBLISH_BATCH_SIZE)])
    dispatcher.submit([Job(priority=9)])
    gate.set()
    assert dispatcher.flush(timeout=10)
    assert batches[0] == [1]
    assert batches[1][0] == 9, "the high-priority job waited behind the low-priority batch"
    assert sum(len(b) for b in batches) == 2 + 3 * PUBLISH_BATCH_SIZE
    assert max(len(b) for b in batches) <= PUBLISH_BATCH_SIZE
