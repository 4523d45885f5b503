"""/healthz (no I/O) and /readyz (database and broker), with the broker reached through a proxy we can stop."""

import contextlib
import selectors
import socket
import threading
from urllib.parse import urlparse, urlunparse

import pytest
from django.db import OperationalError

from kaapi import health

pytestmark = pytest.mark.django_db


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; ``stop()`` refuses new connections and cuts open ones."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = None
        self._server = None
        self._open: list[socket.socket] = []

    def start(self) -> "TcpProxy":
        self._server = socket.create_server(("127.0.0.1", self.port or 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, args=(self._server,), daemon=True).start()
        return self

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._open += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        try:
            while True:
                for key, _ in sel.select():
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
        self._server.close()
        for s in self._open:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
                s.close()
        self._open.clear()


def _via(url: str, port: int) -> str:
    parsed = urlparse(url)
    netloc = parsed.netloc.rsplit("@", 1)
    return urlunparse(
        parsed._replace(netloc=f"{netloc[0]}@127.0.0.1:{port}" if len(netloc) == 2 else f"127.0.0.1:{port}")
    )


def test_healthz_answers_without_api_key_or_io(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}


def test_readyz_follows_the_broker_down_and_back(client, settings):
    broker = urlparse(settings.CELERY_BROKER_URL)
    proxy = TcpProxy((broker.hostname, broker.port or 5672)).start()
    settings.CELERY_BROKER_URL = _via(settings.CELERY_BROKER_URL, proxy.port)
    settings.READYZ_TIMEOUT_SECONDS = 1
    try:
        up = client.get("/readyz")
        assert up.status_code == 200, up.content
        assert up.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}, "failed": []}

        proxy.stop()
        down = client.get("/readyz")
        assert down.status_code == 503
        body = down.json()
        assert body["status"] == "unavailable" and body["failed"] == ["broker"]
        assert body["checks"]["database"] == "ok"
        assert body["checks"]["broker"] == "error"

        proxy.start()  # same port: the broker is back
        assert client.get("/readyz").status_code == 200
    finally:
        proxy.stop()


def test_readyz_names_a_failed_database_and_logs_why_without_saying_it(client, monkeypatch, caplog):
    """/readyz needs no key: it says which dependency is down; the driver's text (hosts, users) is only logged."""
    reason = 'connection to server at "db.internal" (10.0.0.5), port 5432 failed: password for user "kaapi"'

    def database_down():
        raise OperationalError(reason)

    monkeypatch.setitem(health.CHECKS, "database", database_down)
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.json() == {
        "status": "unavailable",
        "checks": {"database": "error", "broker": "ok"},
        "failed": ["database"],
    }
    assert "db.internal" not in resp.content.decode() and "OperationalError" not in resp.content.decode()
    assert reason in caplog.text


def test_check_database_really_queries(django_assert_num_queries):
    with django_assert_num_queries(1):
        health.check_database()
