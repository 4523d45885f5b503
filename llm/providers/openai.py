"""OpenAI: the Responses API (``POST /v1/responses``) and Chat Completions (``POST /v1/chat/completions``)."""

from __future__ import annotations

from typing import Any

from .base import Completion, Credentials, Param, Provider, ProviderError, optional_int, require_int, require_str

_EFFORTS = ("minimal", "low", "medium", "high")
_SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority")

# Fields shared by both OpenAI APIs, as documented.
_COMMON = {
    "model": Param(str, required=True, max_length=200),
    "instructions": Param(str, max_length=256_000),
    "temperature": Param(float, minimum=0, maximum=2),
    "top_p": Param(float, minimum=0, maximum=1),
    "tools": Param(list, max_length=128),
    "tool_choice": Param((str, dict)),
    "parallel_tool_calls": Param(bool),
    "store": Param(bool),
    "metadata": Param(dict, max_length=16),
    "user": Param(str, max_length=256),
    "service_tier": Param(str, choices=_SERVICE_TIERS),
    "top_logprobs": Param(int, minimum=0, maximum=20),
    "prompt_cache_key": Param(str, max_length=256),
    "safety_identifier": Param(str, max_length=256),
}


class OpenAIAuth:
    def headers(self, credentials: Credentials) -> dict[str, str]:
        headers = {"authorization": f"Bearer {credentials.api_key}"}
        if credentials.organization:
            headers["openai-organization"] = credentials.organization
        return headers


class OpenAIResponses(OpenAIAuth, Provider):
    name = "openai"
    default_base_url = "https://api.openai.com/v1"
    path = "/responses"
    params = {
        **_COMMON,
        "max_output_tokens": Param(int, minimum=16),
        "max_tool_calls": Param(int, minimum=1),
        "reasoning": Param(dict),
        "text": Param(dict),
        "truncation": Param(str, choices=("auto", "disabled")),
        "include": Param(list),
    }

    def body(self, params: dict[str, Any], query: str) -> dict[str, Any]:
        return {**params, "input": query}

    def content(self, parts: list[dict[str, str]]) -> list[dict[str, Any]]:
        """One user message of ``input_text`` and ``input_image`` (a data URL) parts."""
        content = [
            {"type": "input_text", "text": part["text"]}
            if part["type"] == "text"
            else {"type": "input_image", "image_url": _data_url(part), "detail": "high"}
            for part in parts
        ]
        return [{"role": "user", "content": content}]

    def parse(self, data: dict[str, Any]) -> Completion:
        if data.get("status") == "failed":
            raise ProviderError(
                f"openai: the response failed: {(data.get('error') or {}).get('message', 'no message')}"
            )
        parts: list[str] = []
        for item in data["output"]:
            if item.get("type") == "message":
                parts.extend(c["text"] for c in item["content"] if c.get("type") == "output_text")
        usage = data["usage"]
        return Completion(
            provider_response_id=require_str(data["id"], "id"),
            model=require_str(data["model"], "model"),
            text="".join(require_str(p, "output_text") for p in parts),
            input_tokens=require_int(usage["input_tokens"], "usage.input_tokens"),
            output_tokens=require_int(usage["output_tokens"], "usage.output_tokens"),
            total_tokens=require_int(usage["total_tokens"], "usage.total_tokens"),
            cached_input_tokens=optional_int(
                usage.get("input_tokens_details"), "cached_tokens", "usage.input_tokens_details.cached_tokens"
            ),
            reasoning_tokens=optional_int(
                usage.get("output_tokens_details"), "reasoning_tokens", "usage.output_tokens_details.reasoning_tokens"
            ),
        )


class OpenAIChat(OpenAIAuth, Provider):
    """Chat Completions: OpenAI itself or any OpenAI-compatible server (vLLM, Ollama, LiteLLM)."""

    name = "openai-chat"
    default_base_url = "https://api.openai.com/v1"
    path = "/chat/completions"
    params = {
        **_COMMON,
        "max_completion_tokens": Param(int, minimum=1),
        "max_tokens": Param(int, minimum=1),
        "frequency_penalty": Param(float, minimum=-2, maximum=2),
        "presence_penalty": Param(float, minimum=-2, maximum=2),
        "stop": Param((str, list)),
        "seed": Param(int),
        "response_format": Param(dict),
        "logprobs": Param(bool),
        "logit_bias": Param(dict, max_length=300),
        "reasoning_effort": Param(str, choices=_EFFORTS),
    }

    def content(self, parts: list[dict[str, str]]) -> list[dict[str, Any]]:
        """The user message's ``text`` and ``image_url`` (a data URL) parts."""
        return [
            {"type": "text", "text": part["text"]}
            if part["type"] == "text"
            else {"type": "image_url", "image_url": {"url": _data_url(part), "detail": "high"}}
            for part in parts
        ]

    def body(self, params: dict[str, Any], query: str) -> dict[str, Any]:
        params = dict(params)
        messages = []
        instructions = params.pop("instructions", None)
        if instructions:
            messages.append({"role": "system", "content": instructions})
        messages.append({"role": "user", "content": query})
        return {**params, "messages": messages}

    def parse(self, data: dict[str, Any]) -> Completion:
        message = data["choices"][0]["message"]
        text = message.get("content") or message.get("refusal") or ""
        usage = data["usage"]
        return Completion(
            provider_response_id=require_str(data["id"], "id"),
            model=require_str(data["model"], "model"),
            text=require_str(text, "choices[0].message.content"),
            input_tokens=require_int(usage["prompt_tokens"], "usage.prompt_tokens"),
            output_tokens=require_int(usage["completion_tokens"], "usage.completion_tokens"),
            total_tokens=require_int(usage["total_tokens"], "usage.total_tokens"),
            cached_input_tokens=optional_int(
                usage.get("prompt_tokens_details"), "cached_tokens", "usage.prompt_tokens_details.cached_tokens"
            ),
            reasoning_tokens=optional_int(
                usage.get("completion_tokens_details"),
                "reasoning_tokens",
                "usage.completion_tokens_details.reasoning_tokens",
            ),
        )


def _data_url(part: dict[str, str]) -> str:
    return f"data:{part['media_type']};base64,{part['data']}"
