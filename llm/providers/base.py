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
from requests.adapters import HTTPAdapter

from jobs.exceptions import RetryableJobError
from jobs.webhooks.guard import AddressRefused, GuardedHTTPAdapter
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


# --- HTTP -----------------------------------------------------------------------------------------------
_sessions: dict[bool, requests.Session] = {}  # by LLM_ALLOW_PRIVATE_BASE_URLS
_session_lock = threading.Lock()


def http_session() -> requests.Session:
    """One pooled session per process, shared by its threads/greenlets (urllib3's pool is thread-safe).

    The pool keeps up to ``LLM_HTTP_POOL_MAXSIZE`` keep-alive connections per provider host; cookies are
    refused so that nothing a provider sets for one project is sent on behalf of another. Unless
    ``LLM_ALLOW_PRIVATE_BASE_URLS``, every new connection goes through the SSRF guard of the webhooks (the
    addresses a base URL resolves to are checked when connecting, and the socket is pinned to one that passed):
    a credential's base URL was checked when it was stored, but its name may resolve elsewhere since.
    """
    allow_private = settings.LLM_ALLOW_PRIVATE_BASE_URLS
    session = _sessions.get(allow_private)
    if session is None:
        with _session_lock:
            session = _sessions.get(allow_private)
            if session is None:
                session = requests.Session()
                pool = {"pool_connections": 16, "pool_maxsize": settings.LLM_HTTP_POOL_MAXSIZE, "max_retries": 0}
                adapter = (
                    HTTPAdapter(**pool)
                    if allow_private
                    else GuardedHTTPAdapter(allowed_networks=list, **pool)  # no private network is allowed
                )
                session.mount("https://", adapter)
                session.mount("http://", adapter)
                session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
                session.trust_env = False
                _sessions[allow_private] = session
    return session


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

    def url(self, credentials: Credentials) -> str:
        return (credentials.base_url or self.default_base_url).rstrip("/") + self.path

    def complete(self, *, credentials: Credentials, params: dict[str, Any], query: str) -> Completion:
        body = self.body({**self.defaults(), **params}, query)
        headers = {"content-type": "application/json", **self.headers(credentials)}
        trace_id = current_trace_id()
        if trace_id:
            headers["x-request-id"] = trace_id  # the provider's logs can be matched with ours
        try:
            response = http_session().post(
                self.url(credentials),
                json=body,
                headers=headers,
                timeout=(settings.LLM_CONNECT_TIMEOUT, settings.LLM_READ_TIMEOUT),
                allow_redirects=False,
            )
        except AddressRefused as exc:  # the base URL now resolves to a private address: never retried
            count_provider_error(self.name, "refused")
            raise ProviderError(f"{self.name}: {exc}") from None
        except requests.Timeout as exc:
            count_provider_error(self.name, "timeout")
            raise RetryableJobError(f"{self.name}: the request timed out ({type(exc).__name__})") from None
        except requests.ConnectionError as exc:
            count_provider_error(self.name, "connection")
            raise RetryableJobError(f"{self.name}: could not connect: {exc}") from None
        except requests.RequestException as exc:
            count_provider_error(self.name, "request")
            raise ProviderError(f"{self.name}: the request could not be sent: {exc}") from None

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
            raise ProviderResponseError(
                f"{self.name} returned a malformed response (not JSON): {response.text[:200]!r}"
            ) from None
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            count_provider_error(self.name, "malformed")
            raise ProviderResponseError(
                f"{self.name} returned a malformed response (missing or invalid field {exc})"
            ) from None

    @staticmethod
    def error_message(response: requests.Response) -> str:
        """The provider's own error message (``{"error": {"message"}}`` for OpenAI and Anthropic)."""
        try:
            data = response.json()
        except ValueError:
            return response.text[:500] or response.reason or "no message"
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:2000]
        if isinstance(error, str):
            return error[:2000]
        return str(data)[:500]


def require_str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"'{name}' is not a string")
    return value


def require_int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"'{name}' is not an integer")
    return value
