"""The API's pagination: ``limit`` and ``offset``, with ``limit`` capped and malformed numbers refused.

DRF's ``LimitOffsetPagination`` has no maximum unless told (``?limit=1000000000`` returned every row, and a limit
beyond PostgreSQL's bigint failed the query) and silently replaces a malformed number by the default.
"""

from __future__ import annotations

from typing import cast

from django.conf import settings
from rest_framework import exceptions, pagination

_BIGINT_MAX = 2**63 - 1  # what LIMIT and OFFSET can take in PostgreSQL


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    """``limit`` from 1 up: above ``API_MAX_PAGE_SIZE`` it is lowered to it (the answer's ``next`` link shows the
    limit used); ``offset`` from 0 up. Anything else (not an integer, negative, zero limit, beyond 64 bits) is 400."""

    @property
    def max_limit(self) -> int:  # type: ignore[override]  # DRF's attribute, read from the settings here
        return settings.API_MAX_PAGE_SIZE

    def get_limit(self, request) -> int:
        raw = request.query_params.get(self.limit_query_param)
        if raw is None:
            return min(cast(int, self.default_limit), self.max_limit)
        return min(_integer(self.limit_query_param, raw, minimum=1), self.max_limit)

    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        bounds = {self.limit_query_param: 1, self.offset_query_param: 0}
        for parameter in parameters:
            if parameter["name"] in bounds:
                parameter["schema"] = {
                    **parameter["schema"],
                    "minimum": bounds[parameter["name"]],
                    "maximum": _BIGINT_MAX,
                }
        return parameters

    def get_offset(self, request) -> int:
        raw = request.query_params.get(self.offset_query_param)
        if raw is None:
            return 0
        return _integer(self.offset_query_param, raw, minimum=0)


def _integer(name: str, raw: str, *, minimum: int) -> int:
    message = f"must be an integer from {minimum} to {_BIGINT_MAX}"
    text = raw.strip()
    # int() also takes "1_000", "+5" and other Unicode digits; the API takes plain decimal digits, and a bounded
    # number of them (converting a string of thousands of digits costs quadratic time).
    if not (text.isascii() and text.isdigit() and len(text) <= 19):
        raise exceptions.ValidationError({name: [message]})
    value = int(text)
    if not minimum <= value <= _BIGINT_MAX:
        raise exceptions.ValidationError({name: [message]})
    return value
