"""What every provider client shares: the parameter specs, the pooled HTTP session and the error mapping.

A provider turns (params, query) into one HTTP request and the answer into a ``Completion``. Errors:
429, 5xx, timeouts and connection errors raise ``RetryableJobError`` (the job platform retries with backoff,
honouring Retry-After); any other 4xx raises ``ProviderError`` with the provider's own message; a body that is
not the documented shape raises ``ProviderResponseError``.
"""

from __future__ import annotations

import email.utils
import http.cookiejar
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests
from django.conf import settings

from jobs.exceptions import RetryableJobError
from kaapi import outbound
from kaapi.logging import current_trace_id
from kaapi.metrics import count_provider_error


class ProviderError(Exception):
    """The provider refused the request (a 4xx other than 429): the job fails with the provider's message."""


class ProviderResponseError(ProviderError):
    """The provider answered with a body that is not the documented shape."""


# --- Parameters -------------------------------------------------------------------------------------
_KIND_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    dict: "an object",
    list: "a list",
}


@dataclass(frozen=True)
class Param:
    """One documented parameter: its JSON type, range or choices."""

    kind: type | tuple[type, ...]
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    required: bool = False
    max_length: int | None = None

    def error(self, value: Any) -> str | None:
        """Why ``value`` is not acceptable, or None."""
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        if not any(_is_kind(value, kind) for kind in kinds):
            return "must be " + " or ".join(_KIND_NAMES[kind] for kind in kinds)
        if self.choices is not None and value not in self.choices:
            return "must be one of " + ", ".join(repr(c) for c in self.choices)
        if isinstance(value, int | float) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum:
                return f"must be >= {self.minimum}" + (f" and <= {self.maximum}" if self.maximum is not None else "")
            if self.maximum is not None and value > self.maximum:
                return f"must be <= {self.maximum}" + (f" and >= {self.minimum}" if self.minimum is not None else "")
        if self.max_length is not None and isinstance(value, str | list | dict) and len(value) > self.max_length:
            return (
                f"must have at most {self.max_length} items"
                if not isinstance(value, str)
                else (f"must be at most {self.max_length} characters")
            )
        if isinstance(value, str) and self.required and not value.strip():
            return "must not be empty"
        return None


def _is_kind(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


# --- Results ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Credentials:
    api_key: str = field(repr=False)
    base_url: str = ""
    organization: str = ""


@dataclass(frozen=True)
class Completion:
    provider_response_id: str
    model: str
    text: str
    input_tokens: int
    output_tokens: int
    total_tokens: int
    # Parts of the above, as the providers report them: input tokens read from the prompt cache, output tokens
    # spent reasoning. Both priced by llm.pricing (cached input at its own price, reasoning as output).
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0


def optional_int(container: Any, key: str, name: str) -> int:
    """A token count that a provider may leave out (0 then); present, it must be an integer."""
    if not isinstance(container, dict) or container.get(key) is None:
        return 0
    return require_int(container[key], name)


# --- HTTP -----------------------------------------------------------------------------------------------
_sessions: dict[bool, requests.Session] = {}  # by LLM_ALLOW_PRIVATE_BASE_URLS
_session_lock = threading.Lock()
BASE_URL_SCHEMES = ("https", "http")


def allowed_networks() -> list[outbound.Network]:
    """Networks a provider base URL may reach although not public: all of them with LLM_ALLOW_PRIVATE_BASE_URLS
    (a local vLLM or Ollama), none otherwise."""
    return list(outbound.ANY_NETWORK) if settings.LLM_ALLOW_PRIVATE_BASE_URLS else []


def base_url_problem(base_url: str) -> str | None:
    """What makes ``base_url`` unusable (checked when stored and again before each call), or None."""
    return outbound.url_problem(base_url, schemes=BASE_URL_SCHEMES, allowed=allowed_networks(), bare=True)


def http_session() -> requests.Session:
    """One pooled session per process, shared by its threads/greenlets (urllib3's pool is thread-safe).

    The pool keeps up to ``LLM_HTTP_POOL_MAXSIZE`` keep-alive connections per provider host; cookies are
    refused so that nothing a provider sets for one project is sent on behalf of another. Every new connection
    goes through the outbound guard (kaapi.outbound: the addresses a base URL resolves to are checked when
    connecting, and the socket is pinned to one that passed): a credential's base URL was checked when it was
    stored, but its name may resolve elsewhere since. With ``LLM_ALLOW_PRIVATE_BASE_URLS`` every address passes.
    """
    allow_private = settings.LLM_ALLOW_PRIVATE_BASE_URLS
    session = _sessions.get(allow_private)
    if session is None:
        with _session_lock:
            session = _sessions.get(allow_private)
            if session is None:
                policy = list(outbound.ANY_NETWORK) if allow_private else []
                session = outbound.guarded_session(
                    allowed_networks=lambda: policy,
                    pool_connections=16,
                    pool_maxsize=settings.LLM_HTTP_POOL_MAXSIZE,
                )
                session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
                _sessions[allow_private] = session
    return session


def read_bounded_body(response: requests.Response, name: str) -> None:
    """Read a streamed response's body, at most ``LLM_MAX_RESPONSE_BYTES`` of it once decompressed: a base URL
    is the tenant's choice, and its server's answer must not fill a worker process shared by every project.
    The body is kept where ``response.json()`` and ``response.text`` read it."""
    limit = settings.LLM_MAX_RESPONSE_BYTES
    body = bytearray()
    for chunk in response.iter_content(64 * 1024):  # urllib3 bounds each chunk after decompression
        body += chunk
        if len(body) > limit:
            response.close()
            count_provider_error(name, "malformed")
            raise ProviderResponseError(
                f"{name} returned a response larger than {limit} bytes (LLM_MAX_RESPONSE_BYTES)"
            )
    response._content = bytes(body)


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date); None when absent."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Provider:
    """A client for one provider API: subclasses say where to post, what to send and how to read the answer."""

    name: str = ""
    default_base_url: str = ""
    path: str = ""
    params: dict[str, Param] = {}

    def headers(self, credentials: Credentials) -> dict[str, str]:
        raise NotImplementedError

    def body(self, params: dict[str, Any], query: str) -> dict[str, Any]:
        raise NotImplementedError

    def parse(self, data: dict[str, Any]) -> Completion:
        """Read the provider's answer; KeyError/TypeError/ValueError/IndexError mean a malformed body."""
        raise NotImplementedError

    def defaults(self) -> dict[str, Any]:
        """Values filled in when a config omits them (e.g. Anthropic's required max_tokens)."""
        return {}

    def content(self, parts: list[dict[str, str]]) -> Any:
        """A query made of parts, in the provider's shape: ``{"type": "text", "text": ...}`` and
        ``{"type": "image", "media_type": "image/jpeg", "data": BASE64}`` (a page of a scanned document)."""
        raise ProviderError(f"{self.name}: this provider takes text only")

    def url(self, credentials: Credentials) -> str:
        """Where to post; ``ProviderError`` for a base URL that is no longer acceptable (stored before a rule)."""
        base = credentials.base_url or self.default_base_url
        problem = base_url_problem(base)
        if problem:
            raise ProviderError(f"{self.name}: the credential's base URL {problem}")
        return base.rstrip("/") + self.path

    def complete(
        self, *, credentials: Credentials, params: dict[str, Any], query: str | list[dict[str, str]]
    ) -> Completion:
        body = self.body({**self.defaults(), **params}, query if isinstance(query, str) else self.content(query))
        headers = {"content-type": "application/json", **self.headers(credentials)}
        if not all(value.isascii() and value.isprintable() for value in headers.values()):
            # Credentials stored before they were checked: refused here, since the HTTP library's own error
            # would quote the offending header value.
            count_provider_error(self.name, "refused")
            raise ProviderError(
                f"{self.name}: the stored credentials contain characters that an HTTP header cannot carry; "
                "set them again"
            )
        trace_id = current_trace_id()
        if trace_id:
            headers["x-request-id"] = trace_id  # the provider's logs can be matched with ours
        url = self.url(credentials)
        try:
            response = http_session().post(
                url,
                json=body,
                headers=headers,
                timeout=(settings.LLM_CONNECT_TIMEOUT, settings.LLM_READ_TIMEOUT),
                allow_redirects=False,
                stream=True,
            )
            read_bounded_body(response, self.name)
        except outbound.AddressRefused as exc:  # the base URL now resolves to a private address: never retried
            count_provider_error(self.name, "refused")
            raise ProviderError(outbound.short(f"{self.name}: {exc}")) from None
        except requests.Timeout as exc:
            count_provider_error(self.name, "timeout")
            raise RetryableJobError(f"{self.name}: the request timed out ({type(exc).__name__})") from None
        except requests.ConnectionError as exc:
            count_provider_error(self.name, "connection")
            raise RetryableJobError(outbound.short(f"{self.name}: could not connect: {exc}")) from None
        except requests.RequestException as exc:
            # Its text may quote the request's headers (InvalidHeader does), and so the key: only the type goes
            # into the job's error, the logs and the task result.
            count_provider_error(self.name, "request")
            raise ProviderError(f"{self.name}: the request could not be sent ({type(exc).__name__})") from None

        status = response.status_code
        if status == 429 or status >= 500:
            count_provider_error(self.name, "rate_limited" if status == 429 else "server_error")
            raise RetryableJobError(
                f"{self.name} returned {status}: {self.error_message(response)}",
                retry_after=parse_retry_after(response.headers),
                status=status,
            )
        if status >= 300:
            count_provider_error(self.name, "client_error")
            raise ProviderError(f"{self.name} returned {status}: {self.error_message(response)}")
        try:
            data = response.json()
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return self.parse(data)
        except ProviderError:
            count_provider_error(self.name, "failed")
            raise
        except requests.JSONDecodeError:
            count_provider_error(self.name, "malformed")
            excerpt = outbound.body_excerpt(response, response.text, 200)
            raise ProviderResponseError(f"{self.name} returned a malformed response (not JSON): {excerpt}") from None
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            count_provider_error(self.name, "malformed")
            raise ProviderResponseError(
                outbound.short(f"{self.name} returned a malformed response (missing or invalid field {exc})")
            ) from None

    @staticmethod
    def error_message(response: requests.Response) -> str:
        """The provider's own error message (``{"error": {"message"}}`` for OpenAI and Anthropic), short, and only
        from a public address (see kaapi.outbound.body_excerpt)."""
        try:
            data = response.json()
        except ValueError:
            return outbound.body_excerpt(response, response.text) if response.text else response.reason or "no message"
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict) and error.get("message"):
            return outbound.body_excerpt(response, str(error["message"]))
        if isinstance(error, str):
            return outbound.body_excerpt(response, error)
        return outbound.body_excerpt(response, str(data))


def require_str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"'{name}' is not a string")
    return value


def require_int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"'{name}' is not an integer")
    return value
