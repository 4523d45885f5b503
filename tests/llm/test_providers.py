"""The provider clients against the fake server, in-process: request shapes and error mapping."""

import pytest

from jobs.exceptions import RetryableJobError
from kaapi import outbound
from llm.providers import PROVIDERS, Credentials, ProviderError, ProviderResponseError
from tests.llm.conftest import BLOBS, FAKE_API_KEY, base_url_for, unique


def complete(server, provider, query, **params):
    client = PROVIDERS[provider]
    credentials = Credentials(api_key=FAKE_API_KEY, base_url=base_url_for(server, provider), organization="org-9")
    return client.complete(
        credentials=credentials, params={**BLOBS[provider]["completion"]["params"], **params}, query=query
    )


@pytest.mark.parametrize(
    ("provider", "path"),
    [("openai", "/v1/responses"), ("openai-chat", "/v1/chat/completions"), ("anthropic", "/v1/messages")],
)
def test_each_provider_sends_its_documented_request(fake_provider, provider, path):
    query = unique("What is AI?")
    answer = complete(fake_provider, provider, query, instructions="Be brief.")
    assert answer.text == f"Echo: {query}"
    assert answer.provider_response_id and answer.model.startswith(BLOBS[provider]["completion"]["params"]["model"])
    assert answer.total_tokens == answer.input_tokens + answer.output_tokens > 0
    (sent,) = [c for c in fake_provider.calls if c["text"] == query]
    assert sent["path"] == path
    body, headers = sent["body"], sent["headers"]
    assert "x-request-id" not in headers  # no trace id outside a request or job
    if provider == "openai":
        assert body["input"] == query and body["instructions"] == "Be brief." and body["temperature"] == 0.2
        assert headers["authorization"] == f"Bearer {FAKE_API_KEY}" and headers["openai-organization"] == "org-9"
    elif provider == "openai-chat":
        assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": query}]
        assert "instructions" not in body
    else:
        assert body["messages"] == [{"role": "user", "content": query}]
        assert body["system"] == "Be brief." and body["max_tokens"] == 64
        assert headers["x-api-key"] == FAKE_API_KEY and headers["anthropic-version"] == "2023-06-01"
        assert "authorization" not in headers


@pytest.mark.parametrize("provider", sorted(BLOBS))
def test_rate_limits_and_server_errors_are_retryable(fake_provider, provider):
    with pytest.raises(RetryableJobError) as info:
        complete(fake_provider, provider, unique("[fake:status=429,retry_after=3]"))
    assert info.value.retry_after == 3.0 and "returned 429" in str(info.value)
    with pytest.raises(RetryableJobError) as info:
        complete(fake_provider, provider, unique("[fake:status=503]"))
    assert info.value.retry_after is None and "returned 503" in str(info.value)


def test_timeouts_and_refused_connections_are_retryable(fake_provider, settings):
    settings.LLM_READ_TIMEOUT = 0.2
    with pytest.raises(RetryableJobError, match="timed out"):
        complete(fake_provider, "openai", unique("[fake:error=timeout,sleep=1]"))
    fake_provider.stop()
    with pytest.raises(RetryableJobError, match="could not connect"):
        complete(fake_provider, "openai", unique())


@pytest.mark.parametrize("provider", sorted(BLOBS))
def test_client_errors_fail_with_the_providers_message(fake_provider, provider, monkeypatch):
    monkeypatch.setattr(outbound, "peer_is_public", lambda response: True)  # as a provider on the internet
    with pytest.raises(ProviderError) as info:
        complete(fake_provider, provider, unique("[fake:status=400]"))
    assert not isinstance(info.value, RetryableJobError)
    assert str(info.value) == f"{provider} returned 400: Invalid value for 'temperature': must be between 0 and 2."
    with pytest.raises(ProviderError, match="returned 401: Incorrect API key provided."):
        PROVIDERS[provider].complete(
            credentials=Credentials(api_key="wrong", base_url=base_url_for(fake_provider, provider)),
            params={"model": "m"},
            query=unique(),
        )


@pytest.mark.parametrize("provider", sorted(BLOBS))
def test_malformed_answers_fail_clearly(fake_provider, provider):
    with pytest.raises(ProviderResponseError, match=r"malformed response \(not JSON\)"):
        complete(fake_provider, provider, unique("[fake:error=malformed]"))
    with pytest.raises(ProviderResponseError, match="malformed response .missing or invalid field"):
        complete(fake_provider, provider, unique("[fake:error=shape]"))


def test_retry_after_forms():
    from llm.providers.base import parse_retry_after

    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_trace_id_is_sent_and_errors_are_counted(fake_provider):
    from kaapi.logging import log_context
    from kaapi.metrics import PROVIDER_ERRORS

    query = unique()
    with log_context(trace_id="trace-abc"):
        complete(fake_provider, "openai", query)
    (sent,) = [c for c in fake_provider.calls if c["text"] == query]
    assert sent["headers"]["x-request-id"] == "trace-abc"

    counter = PROVIDER_ERRORS.labels(provider="anthropic", kind="rate_limited")
    before = counter._value.get()
    with pytest.raises(RetryableJobError):
        complete(fake_provider, "anthropic", unique("[fake:status=429]"))
    assert counter._value.get() == before + 1


def test_a_base_url_that_now_resolves_to_a_private_address_is_refused_when_connecting(fake_provider, settings):
    """A base URL is checked when the credentials are stored; a name can resolve elsewhere later (DNS rebinding).
    Without LLM_ALLOW_PRIVATE_BASE_URLS the provider client connects only to public addresses, checked at
    connect time: the loopback fake provider is refused before any request reaches it, and not retried.
    WEBHOOK_ALLOWED_NETWORKS (the webhooks' exceptions) does not open it for providers."""
    settings.LLM_ALLOW_PRIVATE_BASE_URLS = False
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    query = unique("What is AI?")
    credentials = Credentials(
        api_key=FAKE_API_KEY, base_url=fake_provider.url.replace("127.0.0.1", "localhost") + "/v1"
    )
    with pytest.raises(
        ProviderError, match="refused to connect to localhost: .*127.0.0.1 is a loopback address"
    ) as info:
        PROVIDERS["openai-chat"].complete(credentials=credentials, params={"model": "m"}, query=query)
    assert not isinstance(info.value, RetryableJobError)
    assert [c for c in fake_provider.calls if c["text"] == query] == []
    settings.LLM_ALLOW_PRIVATE_BASE_URLS = True  # development: the same call goes through
    assert complete(fake_provider, "openai-chat", query).text == f"Echo: {query}"


def test_a_response_larger_than_the_limit_is_refused_without_being_held(settings):
    """A credential's base URL is the tenant's to choose: its server's answer (here 64 MiB of JSON, 64 KiB on the
    wire with gzip) must not fill the worker process that every project's calls share."""
    import gzip
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    settings.LLM_ALLOW_PRIVATE_BASE_URLS = True
    settings.LLM_MAX_RESPONSE_BYTES = 1024 * 1024
    compressed = gzip.compress(b'{"pad": "' + b"x" * (64 * 1024 * 1024) + b'"}', compresslevel=9)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-encoding", "gzip")
            self.send_header("content-length", str(len(compressed)))
            self.end_headers()
            try:
                self.wfile.write(compressed)
            except OSError:  # the client stopped reading: what it should do
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        credentials = Credentials(api_key=FAKE_API_KEY, base_url=f"http://127.0.0.1:{server.server_port}/v1")
        with pytest.raises(ProviderResponseError) as raised:
            PROVIDERS["openai-chat"].complete(credentials=credentials, params={"model": "m"}, query="hi")
    finally:
        server.shutdown()
        server.server_close()
    assert "larger than 1048576 bytes" in str(raised.value)
