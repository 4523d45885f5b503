"""Anthropic: the Messages API (``POST /v1/messages``, ``x-api-key`` and ``anthropic-version`` headers)."""

from __future__ import annotations

from typing import Any

from .base import Completion, Credentials, Param, Provider, optional_int, require_int, require_str

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024


class AnthropicMessages(Provider):
    name = "anthropic"
    default_base_url = "https://api.anthropic.com"
    path = "/v1/messages"
    params = {
        "model": Param(str, required=True, max_length=200),
        "instructions": Param(str, max_length=256_000),
        "max_tokens": Param(int, minimum=1),
        "temperature": Param(float, minimum=0, maximum=1),
        "top_p": Param(float, minimum=0, maximum=1),
        "top_k": Param(int, minimum=0),
        "stop_sequences": Param(list, max_length=8191),
        "metadata": Param(dict),
        "tools": Param(list),
        "tool_choice": Param(dict),
        "thinking": Param(dict),
        "service_tier": Param(str, choices=("auto", "standard_only")),
    }

    def defaults(self) -> dict[str, Any]:
        return {"max_tokens": DEFAULT_MAX_TOKENS}  # required by the API

    def headers(self, credentials: Credentials) -> dict[str, str]:
        return {"x-api-key": credentials.api_key, "anthropic-version": ANTHROPIC_VERSION}

    def content(self, parts: list[dict[str, str]]) -> list[dict[str, Any]]:
        """The user message's ``text`` and ``image`` (base64 source) blocks."""
        return [
            {"type": "text", "text": part["text"]}
            if part["type"] == "text"
            else {"type": "image", "source": {"type": "base64", "media_type": part["media_type"], "data": part["data"]}}
            for part in parts
        ]

    def body(self, params: dict[str, Any], query: str) -> dict[str, Any]:
        params = dict(params)
        instructions = params.pop("instructions", None)
        if instructions:
            params["system"] = instructions
        return {**params, "messages": [{"role": "user", "content": query}]}

    def parse(self, data: dict[str, Any]) -> Completion:
        text = "".join(
            require_str(block["text"], "content.text") for block in data["content"] if block["type"] == "text"
        )
        usage = data["usage"]
        # Anthropic counts cache reads and writes apart from input_tokens: all three are the prompt's tokens.
        cached = optional_int(usage, "cache_read_input_tokens", "usage.cache_read_input_tokens")
        cache_writes = optional_int(usage, "cache_creation_input_tokens", "usage.cache_creation_input_tokens")
        input_tokens = require_int(usage["input_tokens"], "usage.input_tokens") + cached + cache_writes
        output_tokens = require_int(usage["output_tokens"], "usage.output_tokens")
        return Completion(
            provider_response_id=require_str(data["id"], "id"),
            model=require_str(data["model"], "model"),
            text=text,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
            cached_input_tokens=cached,
        )
