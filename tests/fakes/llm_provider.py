"""A fake LLM provider on 127.0.0.1 speaking the three APIs the `llm` app calls.

- ``POST /v1/responses`` (OpenAI Responses), ``POST /v1/chat/completions`` (Chat Completions),
  ``POST /v1/messages`` (Anthropic Messages), with the providers' documented bodies and auth headers.
- Every answer waits ``latency`` seconds (one thread per connection, so hundreds of calls wait at once).
- Errors are injected by a directive in the user's text: ``[fake:status=429,retry_after=1,times=2]`` answers
  429 with ``Retry-After: 1`` to the first two calls carrying that exact text, then succeeds. Keys:
  ``status`` (an HTTP error status), ``times`` (how many calls fail; default all), ``retry_after``,
  ``retry_after_ms`` (sent as the ``retry-after-ms`` header, as OpenAI does),
  ``error=timeout`` (wait ``sleep`` seconds, default 5, before answering), ``error=malformed`` (200 with a
  body that is not JSON), ``error=shape`` (200 JSON without the documented fields), ``latency`` (seconds),
  ``model`` (the directive applies only to calls for that model: ``[fake:status=503,model=gpt-4o]`` is one model
  down while the others answer, as when a fallback serves).
- ``down = 503`` (or any status) makes the whole server answer that status to every call until set back to None.

- A user message may be a list of parts with images (a page of a scanned document), each in its API's documented
  shape: Responses ``input_text`` / ``input_image`` (``image_url`` a base64 data URL, ``detail``), Chat
  ``text`` / ``image_url`` (``{"url", "detail"}``), Messages ``text`` / ``image`` (``source``: ``base64``,
  ``media_type``, ``data``). Any other shape, or bytes that are not the image type they claim, is a 400; the decoded
  images are recorded (``calls[i]["images"]``) and the answer echoes the text parts.

- ``rate_limit=N`` (with ``rate_window`` seconds, default 60) makes it a provider with a quota: per API key, a
  call beyond N in the last ``rate_window`` seconds (a sliding window, as the real ones count) gets 429 with a
  ``Retry-After``; every call's arrival time is recorded (``calls[i]["at"]``) to count calls per window.

Run it alone with ``python -m tests.fakes.llm_provider --latency 1``: it prints its URL on stdout.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import re
import sys
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DIRECTIVE = re.compile(r"\[fake:([^\]]*)\]")
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
    529: "overloaded_error",
}


def parse_directive(text: str) -> dict[str, str]:
    match = DIRECTIVE.search(text)
    if not match:
        return {}
    pairs = (item.split("=", 1) for item in match.group(1).split(",") if "=" in item)
    return {key.strip(): value.strip() for key, value in pairs}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 2048
    allow_reuse_address = True


class FakeProvider:
    """The server object; ``start()`` serves in a background thread."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        api_key: str | None = None,
        port: int = 0,
        record: bool = True,
        rate_limit: int | None = None,
        rate_window: float = 60.0,
    ):
        self.latency = latency
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self._accepted: dict[str, list[float]] = {}  # per API key: when the calls within the quota arrived
        self.rate_limited = 0  # calls answered 429 because of rate_limit
        self.api_key = api_key  # when set, calls with another key get 401
        self.down: int | None = None  # when set, every call gets this status (an outage)
        self.record = record
        self.calls: list[dict[str, Any]] = []
        self._seen: Counter[str] = Counter()
        self.in_flight = 0
        self.peak_in_flight = 0  # the most calls answered at the same time
        # Cleared by a test to hold every call until it sets it again (bounded: a forgotten gate cannot hang)
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", port), _handler_for(self))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeProvider:
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-llm-provider", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def count(self, path: str | None = None, text: str | None = None) -> int:
        with self._lock:
            return sum(
                1 for c in self.calls if (path is None or c["path"] == path) and (text is None or text in c["text"])
            )

    # --- one call ---------------------------------------------------------------------------------
    def answer(self, path: str, headers: Any, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            self.gate.wait(60)
            return self._answer(path, headers, raw)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _answer(self, path: str, headers: Any, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self._error(path, 400, "We could not parse the JSON body of your request.")
        try:
            text, images = _user_content(path, body)
        except ValueError as exc:
            return self._error(path, 400, str(exc))
        directive = parse_directive(text)
        now = time.monotonic()
        with self._lock:
            self._seen[text] += 1
            nth = self._seen[text]
            over_quota = self._over_quota(headers, now)
            if self.record:
                self.calls.append(
                    {
                        "path": path,
                        "headers": dict(headers),
                        "body": body,
                        "text": text,
                        "images": images,
                        "n": nth,
                        "at": now,
                    }
                )
        if over_quota is not None:
            return self._error(path, 429, "Rate limit reached for requests", {"retry-after": f"{over_quota:.3f}"})
        time.sleep(float(directive.get("latency", self.latency)))

        auth_error = self._check_auth(path, headers)
        if auth_error:
            return auth_error
        if not isinstance(body.get("model"), str) or not body["model"]:
            return self._error(path, 400, "you must provide a model parameter")
        if self.down is not None:
            return self._error(path, self.down, "the server is down (fake outage)")

        failing = nth <= int(directive.get("times", "1000000000"))
        if "model" in directive and directive["model"] != body["model"]:
            failing = False
        if failing and "status" in directive:
            status = int(directive["status"])
            extra = {"retry-after": directive["retry_after"]} if "retry_after" in directive else {}
            if "retry_after_ms" in directive:
                extra["retry-after-ms"] = directive["retry_after_ms"]
            message = directive.get("message", f"fake {status} error").replace("_", " ")
            if status == 400 and "message" not in directive:
                message = "Invalid value for 'temperature': must be between 0 and 2."
            return self._error(path, status, message, extra)
        error = directive.get("error")
        if failing and error == "timeout":
            time.sleep(float(directive.get("sleep", "5")))
        if failing and error == "malformed":
            return 200, {"content-type": "application/json"}, b'{"id": "resp_broken", "output": [tru'
        if failing and error == "shape":
            return 200, {"content-type": "application/json"}, json.dumps({"id": "x", "object": "unknown"}).encode()
        return 200, {"content-type": "application/json"}, json.dumps(_success(path, body, text)).encode()

    def _over_quota(self, headers: Any, now: float) -> float | None:
        """With ``rate_limit``: None when the call is within the key's quota (and counted), else the seconds
        until it would be. Called under the lock."""
        if self.rate_limit is None:
            return None
        key = headers.get("x-api-key") or headers.get("authorization", "")
        accepted = self._accepted.setdefault(key, [])
        while accepted and accepted[0] <= now - self.rate_window:
            accepted.pop(0)
        if len(accepted) >= self.rate_limit:
            self.rate_limited += 1
            return accepted[len(accepted) - self.rate_limit] + self.rate_window - now
        accepted.append(now)
        return None

    def max_calls_in_window(self, window: float) -> int:
        """The most calls that arrived within any ``window`` seconds."""
        with self._lock:
            times = sorted(c["at"] for c in self.calls)
        most, start = 0, 0
        for end, at in enumerate(times):
            while times[start] <= at - window:
                start += 1
            most = max(most, end - start + 1)
        return most

    def _check_auth(self, path: str, headers: Any) -> tuple[int, dict[str, str], bytes] | None:
        if path == "/v1/messages":
            key = headers.get("x-api-key")
            if not headers.get("anthropic-version"):
                return self._error(path, 400, "anthropic-version: header is required")
        else:
            bearer = headers.get("authorization", "")
            key = bearer[7:] if bearer.startswith("Bearer ") else None
        if not key or (self.api_key is not None and key != self.api_key):
            return self._error(path, 401, "Incorrect API key provided.")
        return None

    @staticmethod
    def _error(path: str, status: int, message: str, headers: dict[str, str] | None = None):
        kind = ERROR_TYPES.get(status, "api_error")
        if path == "/v1/messages":
            body = {"type": "error", "error": {"type": kind, "message": message}}
        else:
            body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        return status, {"content-type": "application/json", **(headers or {})}, json.dumps(body).encode()


_IMAGE_MAGIC = {"image/jpeg": b"\xff\xd8\xff", "image/png": b"\x89PNG", "image/gif": b"GIF8", "image/webp": b"RIFF"}
_DETAILS = ("low", "high", "auto")


def _user_content(path: str, body: dict[str, Any]) -> tuple[str, list[bytes]]:
    """The text of the user's message and its images; ``ValueError`` for a part not in the API's documented shape."""
    if path == "/v1/responses":
        value = body.get("input", "")
        if isinstance(value, str):
            return value, []
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise ValueError("Invalid type for 'input': expected a string or an array of input items.")
        roles = ("user", "assistant", "system", "developer")
        if not value or any(item.get("role") not in roles or "content" not in item for item in value):
            raise ValueError("Invalid 'input': expected messages with a role and content.")
        content = value[-1]["content"]
        if isinstance(content, str) or value[-1]["role"] != "user":
            return json.dumps(value), []
    else:
        messages = body.get("messages") or [{}]
        content = messages[-1].get("content", "") if isinstance(messages[-1], dict) else ""
        if isinstance(content, str):
            return content, []
    if not isinstance(content, list):
        raise ValueError("Invalid type for 'content': expected a string or an array of content parts.")
    texts: list[str] = []
    images: list[bytes] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        text_kind = "input_text" if path == "/v1/responses" else "text"
        if kind == text_kind and isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            images.append(_image_of(path, part, index))
    return "\n".join(texts), images


def _image_of(path: str, part: Any, index: int) -> bytes:
    where = f"content[{index}]"
    kind = part.get("type") if isinstance(part, dict) else None
    if path == "/v1/responses" and kind == "input_image":
        if part.get("detail") not in _DETAILS:
            raise ValueError(f"Invalid value for '{where}.detail': expected one of {', '.join(_DETAILS)}.")
        return _data_url(part.get("image_url"), f"{where}.image_url")
    if path == "/v1/chat/completions" and kind == "image_url":
        image_url = part.get("image_url")
        if not isinstance(image_url, dict) or image_url.get("detail", "auto") not in _DETAILS:
            raise ValueError(f"Invalid value for '{where}.image_url': expected an object with url and detail.")
        return _data_url(image_url.get("url"), f"{where}.image_url.url")
    if path == "/v1/messages" and kind == "image":
        source = part.get("source")
        if not isinstance(source, dict) or source.get("type") != "base64":
            raise ValueError(f"messages.0.{where}.image.source: expected a base64 source")
        return _decoded(source.get("media_type"), source.get("data"), f"messages.0.{where}.image.source")
    raise ValueError(f"Invalid content part '{where}': type {kind!r} is not accepted here.")


def _data_url(url: Any, where: str) -> bytes:
    match = re.fullmatch(r"data:([\w/.+-]+);base64,(.*)", url, re.DOTALL) if isinstance(url, str) else None
    if not match:
        raise ValueError(f"Invalid '{where}': expected a base64-encoded data URL.")
    return _decoded(match.group(1), match.group(2), where)


def _decoded(media_type: Any, data: Any, where: str) -> bytes:
    if media_type not in _IMAGE_MAGIC:
        raise ValueError(f"{where}: unsupported image media type {media_type!r}")
    try:
        raw = base64.b64decode(data, validate=True)
    except (TypeError, ValueError, binascii.Error):
        raise ValueError(f"{where}: the image data is not valid base64") from None
    if not raw.startswith(_IMAGE_MAGIC[media_type]):
        raise ValueError(f"{where}: the image data is not a valid {media_type} image")
    return raw


def _success(path: str, body: dict[str, Any], text: str) -> dict[str, Any]:
    reply = f"Echo: {DIRECTIVE.sub('', text).strip()}"
    input_tokens = max(1, len(text.split()) + len(str(body.get("instructions") or body.get("system") or "").split()))
    output_tokens = max(1, len(reply.split()))
    model = body["model"]
    now = int(time.time())
    if path == "/v1/responses":
        return {
            "id": f"resp_{uuid.uuid4().hex}",
            "object": "response",
            "created_at": now,
            "status": "completed",
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": f"{model}-2025-01-01",
            "output": [
                {
                    "type": "message",
                    "id": f"msg_{uuid.uuid4().hex}",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": reply, "annotations": []}],
                }
            ],
            "parallel_tool_calls": True,
            "temperature": body.get("temperature", 1.0),
            "tool_choice": "auto",
            "tools": [],
            "top_p": body.get("top_p", 1.0),
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            },
            "metadata": body.get("metadata", {}),
        }
    if path == "/v1/chat/completions":
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": now,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply, "refusal": None, "annotations": []},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": input_tokens,
                "completion_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
            },
            "system_fingerprint": "fp_fake",
        }
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": reply}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


ROUTES = {"/v1/responses", "/v1/chat/completions", "/v1/messages"}


def _handler_for(provider: FakeProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like the real APIs

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self.path not in ROUTES:
                status, headers, body = 404, {"content-type": "application/json"}, b'{"error": {"message": "no route"}}'
            else:
                headers_lower = {k.lower(): v for k, v in self.headers.items()}
                status, headers, body = provider.answer(self.path, headers_lower, raw)
            try:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. its read timeout)
                self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=1.0)
    args = parser.parse_args(argv)
    provider = FakeProvider(latency=args.latency, port=args.port, record=False)
    print(provider.url, flush=True)
    try:
        provider.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
