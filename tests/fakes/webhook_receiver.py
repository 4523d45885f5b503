"""A real HTTP server on 127.0.0.1 that records webhook requests and answers as a test scripts it.

with WebhookReceiver() as receiver:
    receiver.script("/flaky", [500, 500])           # fails twice, then the default 200
    receiver.script("/gone", [410])
    receiver.script("/moved", [(302, {"Location": "http://127.0.0.1:1/"})] * 5)
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

Response = int | tuple[int, dict[str, str]]


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
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, headers = receiver._next_response(self.path)
                receiver._record(
                    ReceivedRequest("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body, status)
                )
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
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _next_response(self, path: str) -> tuple[int, dict[str, str]]:
        with self._lock:
            script = self._scripts.get(path)
            answer = script.popleft() if script else self.default_status
        return answer if isinstance(answer, tuple) else (answer, {})

    def _record(self, request: ReceivedRequest) -> None:
        with self._lock:
            self._requests.append(request)
