"""The API's JSON parser: bounded in size and depth, and only values PostgreSQL can store.

DRF's ``JSONParser`` reads the whole stream (``DATA_UPLOAD_MAX_MEMORY_SIZE`` applies only to ``request.body``
and forms), lets Python's recursive decoder fail on deep nesting with a ``RecursionError`` (a 500), and accepts
NUL characters, unpaired surrogates and numbers that overflow to infinity, which every text and jsonb column
refuses at INSERT time. This parser is the default parser of every JSON endpoint, so each of them answers those
bodies with a 4xx.
"""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser as DRFJSONParser
from rest_framework.utils import json

from .api import unstorable_text


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


class JSONParser(DRFJSONParser):
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
        _check(data)
        return data


def _too_deep() -> str:
    return f"JSON parse error - nested deeper than {settings.API_MAX_JSON_DEPTH} levels (API_MAX_JSON_DEPTH)."


def _check(data: Any) -> None:
    """Refuse nesting beyond ``API_MAX_JSON_DEPTH`` and text PostgreSQL cannot store, naming the field (the
    top-level key) and the path to the value. Iterative: a walk that recursed would fail on the depth it checks."""
    max_depth = settings.API_MAX_JSON_DEPTH
    stack: list[tuple[Any, int, tuple]] = [(data, 0, ())]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, dict):
            if depth >= max_depth:
                raise exceptions.ParseError(_too_deep())
            for key, item in value.items():
                if unstorable_text(key):
                    _refuse(path + (key,), "A key")
                stack.append((item, depth + 1, path + (key,)))
        elif isinstance(value, list):
            if depth >= max_depth:
                raise exceptions.ParseError(_too_deep())
            stack.extend((item, depth + 1, path + (index,)) for index, item in enumerate(value))
        elif isinstance(value, str) and unstorable_text(value):
            _refuse(path, "Text")
        elif isinstance(value, float) and not math.isfinite(value):
            _refuse(path, "A number", "must be finite (a literal beyond the range of a double, such as 1e400)")


def _refuse(path: tuple, what: str, why: str = "may not contain NUL characters or unpaired surrogates") -> None:
    field = _escaped(path[0]) if path and isinstance(path[0], str) else "non_field_errors"
    where = ".".join(_escaped(str(part)) for part in path) or "the body"
    raise exceptions.ValidationError({field: [f"{what} {why} (at {where})."]})


def _escaped(name: str) -> str:
    """``name`` as the answer can carry it: an unpaired surrogate cannot be encoded as UTF-8, a NUL is not read."""
    return name.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode("utf-8")
