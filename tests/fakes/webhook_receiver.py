"""A real HTTP server on 127.0.0.1 that records webhook requests and answers as a test scripts it.

with WebhookReceiver() as receiver:
    receiver.script("/flaky", [500, 500])           # fails twice, then the default 200
    receiver.script("/gone", [410])
    receiver.script("/moved", [(302, {"Location": "http://127.0.0.1:1/"})] * 5)
    receiver.script("/slow", [Trickle(interval=0.1)])  # answers one byte every 0.1 s
    url = receiver.url("/flaky")
    ...
    receiver.wait_for(3, path="/flaky")
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Trickle:
    """An answer sent one byte every ``interval`` seconds, slower than any deadline but never idle long enough for
    a per-read timeout: the whole response, or with ``body_only`` the status line and headers at once and then the
    body. It stops when the client goes away or the receiver closes."""

    status: int = 200
    interval: float = 0.1
    body: bytes = b"x" * 400
    body_only: bool = False


Response = int | tuple[int, dict[str, str]] | Trickle


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    received_at: float = field(default_factory=time.monotonic)

    @property
    def text(self) -> str:
        return self.body.decode()


class WebhookReceiver:
    def __init__(self, *, default_status: int = 200) -> None:
        self.default_status = default_status
        self._scripts: dict[str, deque[Response]] = defaultdict(deque)
        self._requests: list[ReceivedRequest] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = receiver._next_response(self.path)
                status, headers = (answer.status, {}) if isinstance(answer, Trickle) else answer
                receiver._record(
                    ReceivedRequest("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body, status)
                )
                if isinstance(answer, Trickle):
                    receiver._trickle(self, answer)
                    return
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str = "/hook", *, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def script(self, path: str, responses: list[Response]) -> None:
        """Answer the next requests to ``path`` with these statuses (or (status, headers)), then the default."""
        with self._lock:
            self._scripts[path].extend(responses)

    def requests(self, path: str | None = None) -> list[ReceivedRequest]:
        with self._lock:
            return [r for r in self._requests if path is None or r.path == path]

    def wait_for(self, count: int, *, path: str | None = None, timeout: float = 30) -> list[ReceivedRequest]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            received = self.requests(path)
            if len(received) >= count:
                return received
            time.sleep(0.05)
        raise AssertionError(f"expected {count} request(s) to {path or 'any path'}, got {len(self.requests(path))}")

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _next_response(self, path: str) -> tuple[int, dict[str, str]] | Trickle:
        with self._lock:
            script = self._scripts.get(path)
            answer = script.popleft() if script else self.default_status
        return answer if isinstance(answer, tuple | Trickle) else (answer, {})

    def _trickle(self, handler: BaseHTTPRequestHandler, answer: Trickle) -> None:
        handler.close_connection = True
        head = (
            f"HTTP/1.1 {answer.status} {handler.responses.get(answer.status, ('',))[0]}\r\n"
            f"Content-Type: text/plain\r\nContent-Length: {len(answer.body)}\r\n\r\n"
        ).encode()
        try:
            if answer.body_only:
                handler.wfile.write(head)
            for byte in answer.body if answer.body_only else head + answer.body:
                if self._closing.wait(answer.interval):
                    return
                handler.wfile.write(bytes([byte]))
        except OSError:  # the client hung up: what a deadline does
            return

    def _record(self, request: ReceivedRequest) -> None:
        with self._lock:
            self._requests.append(request)
