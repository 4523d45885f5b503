"""The dashboard's list of workers online, from a real worker process on the real broker."""

from __future__ import annotations

import kombu.exceptions

from jobs import dashboard


def test_the_dashboard_finds_a_running_worker_and_pings_once_per_cache_period(start_worker, settings, monkeypatch):
    worker = start_worker(queues="high_priority", concurrency=1)
    settings.DASHBOARD_WORKERS_CACHE_SECONDS = 60
    online = dashboard._WorkersOnline()
    pings = []
    ping = dashboard._WorkersOnline._ping
    monkeypatch.setattr(dashboard._WorkersOnline, "_ping", staticmethod(lambda: pings.append(1) or ping()))
    first = online.get()
    assert first["reached"] and worker.name in first["names"]
    assert online.get() == first and len(pings) == 1  # the next page load within the period asks nobody


def test_the_dashboard_says_the_broker_is_unreachable_instead_of_failing(monkeypatch):
    from kaapi.celery import app

    def broker_down(**kwargs):
        raise kombu.exceptions.OperationalError("[Errno 111] Connection refused")

    monkeypatch.setattr(app.control, "ping", broker_down)
    assert dashboard._WorkersOnline().get() == {"reached": False, "names": []}
