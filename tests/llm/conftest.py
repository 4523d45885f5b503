"""Fixtures of the llm tests: a fake provider server and credentials pointing at it."""

from __future__ import annotations

import uuid
from importlib import import_module

import pytest

from llm.services import credential_set
from tests.fakes.llm_provider import FakeProvider

FAKE_API_KEY = "sk-test-0123456789abcdef"
BLOBS = {
    "openai": {"completion": {"provider": "openai", "params": {"model": "gpt-4o-mini", "temperature": 0.2}}},
    "openai-chat": {
        "completion": {"provider": "openai-chat", "params": {"model": "llama3", "instructions": "Be brief."}}
    },
    "anthropic": {"completion": {"provider": "anthropic", "params": {"model": "claude-sonnet-4", "max_tokens": 64}}},
}


@pytest.fixture
def fake_provider(settings):
    """The fake provider on 127.0.0.1; loopback base URLs are allowed while it runs (a local vLLM or Ollama)."""
    settings.LLM_ALLOW_PRIVATE_BASE_URLS = True
    server = FakeProvider(latency=0.05, api_key=FAKE_API_KEY).start()
    yield server
    server.stop()


def base_url_for(server: FakeProvider, provider: str) -> str:
    """Like the SDKs: OpenAI base URLs end in /v1, Anthropic's is the bare host."""
    return server.url if provider == "anthropic" else f"{server.url}/v1"


@pytest.fixture
def provider_credentials(settings, fake_provider):
    """Give a project credentials for every provider, pointing at the fake server."""
    settings.LLM_ALLOW_PRIVATE_BASE_URLS = True

    def give(project, providers=tuple(BLOBS)):
        for provider in providers:
            credential_set(
                project=project,
                provider=provider,
                api_key=FAKE_API_KEY,
                base_url=base_url_for(fake_provider, provider),
            )

    return give


def unique(text: str = "") -> str:
    """A query no other test sends (the fake server counts calls per exact text)."""
    return f"{text} #{uuid.uuid4().hex[:10]}".strip()


@pytest.fixture
def model_prices(db):
    """The price table as its data migration fills it (a transactional test's flush empties the table)."""
    from django.apps import apps

    import_module("llm.migrations.0004_model_prices_list").add_prices(apps, None)
