"""The ``vision-llm`` transformer's second half, in the worker: page images to a vision model, Markdown back.

The converter process renders the pages (under its memory and time caps, without secrets); the worker sends each
page, in order, to the model of the upload's LLM config with the project's credentials for its provider, within
the credential's limits (``llm.limits``) as an LLM call is, and joins the pages' Markdown.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

from llm import limits, selectors
from llm.pricing import cost_for
from llm.providers import get_provider

from .exceptions import TransformationFailed, markdown_too_large

PROMPT = (
    "This image is page {page} of {pages} of a scanned document. Transcribe it into Markdown: keep its headings, "
    "lists and tables, keep the text in its own language and script, and answer with the Markdown only."
)
# What a page image counts for against a tokens-per-minute limit (OpenAI: up to ~1100 tokens at high detail,
# Anthropic: width x height / 750, ~2300 for a 1568 x 1100 page).
IMAGE_TOKENS_ESTIMATE = 2000
_FENCE = re.compile(r"\A```(?:markdown|md)?[ \t]*\n(.*)\n```\s*\Z", re.DOTALL)


def pages_to_markdown(
    *,
    project_id: int,
    blob: dict[str, Any],
    images: list[bytes],
    on_page: Callable[[int, int], None],
    max_output_bytes: int = 0,
) -> tuple[str, dict[str, Any]]:
    """The Markdown of the pages, and the calls' provider, model and usage (summed over the pages).

    ``MarkdownTooLarge`` as soon as the pages' Markdown passes ``max_output_bytes`` (0: no cap): the pages after
    it are not sent.
    """
    completion = blob["completion"]
    provider = get_provider(completion["provider"])
    found = selectors.credentials_and_limits_for_call(project_id=project_id, provider=provider.name)
    if found is None:
        raise TransformationFailed(f"this project has no credentials for provider {provider.name!r} any more")
    credentials, credential_limits = found
    params = completion["params"]
    texts: list[str] = []
    usage: dict[str, Any] = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    model = ""
    size = 0
    for number, image in enumerate(images, start=1):
        prompt = PROMPT.format(page=number, pages=len(images))
        parts = [  # the image first: Anthropic's advice for a question about an image
            {"type": "image", "media_type": "image/jpeg", "data": base64.b64encode(image).decode("ascii")},
            {"type": "text", "text": prompt},
        ]
        estimated = limits.estimate_tokens({**provider.defaults(), **params}, prompt) + IMAGE_TOKENS_ESTIMATE
        with limits.call_slot(credential_limits, estimated_tokens=estimated) as slot:
            answer = provider.complete(credentials=credentials, params=params, query=parts)
            slot.used(answer.total_tokens)
        texts.append(_unfenced(answer.text.strip()))
        size += len(texts[-1].encode("utf-8")) + 2
        if max_output_bytes and size > max_output_bytes:
            raise markdown_too_large(max_output_bytes)
        model = answer.model
        usage["input_tokens"] += answer.input_tokens
        usage["output_tokens"] += answer.output_tokens
        usage["total_tokens"] += answer.total_tokens
        on_page(number, len(images))
    markdown = "\n\n".join(text for text in texts if text).strip() + "\n"
    # Priced like an LLM_API call (llm's price table); null for a model without a price, never an error.
    cost = cost_for(provider.name, model, usage)
    usage["cost"] = None if cost is None else str(cost)
    return markdown, {"provider": provider.name, "model": model, "calls": len(images), "usage": usage}


def _unfenced(text: str) -> str:
    """Models often wrap their whole answer in a ```markdown fence; the page's Markdown is what is inside."""
    match = _FENCE.match(text)
    return match.group(1).strip() if match else text
