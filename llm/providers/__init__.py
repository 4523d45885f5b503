"""Provider clients by name; the names are ``llm.models.Provider``'s values."""

from __future__ import annotations

from .anthropic import AnthropicMessages
from .base import Completion, Credentials, Param, Provider, ProviderError, ProviderResponseError
from .openai import OpenAIChat, OpenAIResponses

PROVIDERS: dict[str, Provider] = {p.name: p for p in (OpenAIResponses(), OpenAIChat(), AnthropicMessages())}


def get_provider(name: str) -> Provider:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise ProviderError(f"unknown provider {name!r}; known: {', '.join(PROVIDERS)}") from None


__all__ = [
    "PROVIDERS",
    "Completion",
    "Credentials",
    "Param",
    "Provider",
    "ProviderError",
    "ProviderResponseError",
    "get_provider",
]
