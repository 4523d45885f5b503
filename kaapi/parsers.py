"""The API's JSON parser: bounded in size and depth, and only values PostgreSQL can store.

DRF's ``JSONParser`` reads the whole stream (``DATA_UPLOAD_MAX_MEMORY_SIZE`` applies only to ``request.body``
and forms), lets Python's recursive decoder fail on deep nesting with a ``RecursionError`` (a 500), and accepts
NUL characters, unpaired surrogates and numbers that overflow to infinity, which every text and jsonb column
refuses at INSERT time. This parser is the default parser of every JSON endpoint, so each of them answers those
bodies with a 4xx.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from rest_framework import exceptions, status
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer
from rest_framework.settings import api_settings
from rest_framework.utils import json

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable_text(text: str) -> bool:
    """Whether PostgreSQL refuses ``text`` in a text or jsonb column: a NUL character, or an unpaired surrogate
    (valid in JSON as an escape, not encodable as UTF-8)."""
    return _UNSTORABLE.search(text) is not None


# The only way a NUL or a surrogate gets into parsed JSON: as raw bytes they are not valid JSON text (control
# characters) or not valid UTF-8 (surrogates).
_UNSTORABLE_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


class RequestBodyTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_body_too_large"


def _too_large() -> RequestBodyTooLarge:
    limit = settings.API_MAX_JSON_BODY_BYTES
    return RequestBodyTooLarge(f"The JSON body is larger than the limit of {limit} bytes (API_MAX_JSON_BODY_BYTES).")


def _declared_length(parser_context: dict | None) -> int | None:
    request = (parser_context or {}).get("request")
    if request is None:
        return None
    meta = request.META
    try:
        return int(meta.get("CONTENT_LENGTH") or meta.get("HTTP_CONTENT_LENGTH") or 0)
    except (TypeError, ValueError):
        return None


class JSONParser(BaseParser):
    """Accepts what DRF's JSONParser accepts (its media type, its strictness). Not a subclass of it: for its own JSON
    parser DRF reads ``request.body`` whole before parsing, and this one must get the stream to refuse an oversized
    body without reading it."""

    media_type = "application/json"
    renderer_class = JSONRenderer
    strict = api_settings.STRICT_JSON

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        limit = settings.API_MAX_JSON_BODY_BYTES
        declared = _declared_length(parser_context)
        if declared is not None and declared > limit:
            raise _too_large()  # before reading a byte of it
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:  # no or a false Content-Length: never more than the limit is held
            raise _too_large()
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = raw.decode(encoding)
            data = json.loads(text, parse_constant=json.strict_constant if self.strict else None)
        except RecursionError:
            raise exceptions.ParseError(_too_deep()) from None
        except (ValueError, LookupError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
        _check(data, text=_UNSTORABLE_ESCAPE.search(text) is not None)
        return data


def _too_deep() -> str:
    return f"JSON parse error - nested deeper than {settings.API_MAX_JSON_DEPTH} levels (API_MAX_JSON_DEPTH)."


def _check(data: Any, *, text: bool = True) -> None:
    """Refuse nesting beyond ``API_MAX_JSON_DEPTH`` and values PostgreSQL cannot store, naming the field (the
    top-level key) and the path to the value; ``text=False`` when the body holds no escape that could make an
    unstorable string. Iterative, with one iterator per open container: a walk that recursed would fail on the
    depth it checks, and one that queued every value would hold a copy of the body. Up to millions of values
    per body pass through the loop: it does no more than a type check for each."""
    if type(data) is not dict and type(data) is not list:
        if problem := _unstorable(data):
            _refuse((), *problem)
        return
    max_depth = settings.API_MAX_JSON_DEPTH
    stack: list[tuple[Any, Iterator]] = [(None, _members(data))]

    def path_to(key: Any) -> tuple:
        return tuple(name for name, _ in stack[1:]) + (key,)

    while stack:
        for key, value in stack[-1][1]:
            kind = type(value)
            if kind is str:
                if text and unstorable_text(value):
                    _refuse(path_to(key), "Text")
            elif kind is dict or kind is list:
                if len(stack) >= max_depth:
                    raise exceptions.ParseError(_too_deep())
                stack.append((key, _members(value)))
                break
            elif kind is float and not math.isfinite(value):
                _refuse(path_to(key), *_unstorable(value))  # type: ignore[misc]  # a tuple for a non-finite float
            if text and type(key) is str and unstorable_text(key):
                _refuse(path_to(key), "A key")
        else:
            stack.pop()


def _members(container: dict | list) -> Iterator:
    return iter(container.items()) if type(container) is dict else enumerate(container)


def _unstorable(value: Any) -> tuple[str, str] | None:
    """What is wrong with a scalar PostgreSQL cannot store, for ``_refuse``; None when it is fine."""
    if isinstance(value, str):
        return ("Text", _TEXT_PROBLEM) if unstorable_text(value) else None
    if isinstance(value, float) and not math.isfinite(value):
        return "A number", "must be finite (a literal beyond the range of a double, such as 1e400)"
    return None


_TEXT_PROBLEM = "may not contain NUL characters or unpaired surrogates"


def _refuse(path: tuple, what: str, why: str = _TEXT_PROBLEM) -> None:
    field = _escaped(path[0]) if path and isinstance(path[0], str) else "non_field_errors"
    where = ".".join(_escaped(str(part)) for part in path) or "the body"
    raise exceptions.ValidationError({field: [f"{what} {why} (at {where})."]})


def _escaped(name: str) -> str:
    """``name`` as the answer can carry it: an unpaired surrogate cannot be encoded as UTF-8, a NUL is not read."""
    return name.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode("utf-8")
