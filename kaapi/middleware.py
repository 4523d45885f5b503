"""Request ids: every request runs with a trace id, which every log line and every job it creates carries."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from .logging import is_valid_trace_id, log_context, new_trace_id

REQUEST_ID_HEADER = "X-Request-ID"
_META_KEY = "HTTP_X_REQUEST_ID"

logger = logging.getLogger("kaapi.request")
# Probes and scrapes come every few seconds: their request lines are DEBUG, not INFO.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class RequestIdMiddleware:
    """Use the client's ``X-Request-ID`` when it is safe (1–128 of ``A-Z a-z 0-9 . _ -``), else a new id.

    The id is the request's trace id: set in the logging context while the request runs, stored on the jobs
    it creates, and returned in the ``X-Request-ID`` response header. An unsafe id is replaced, not refused,
    so a client's tracing never makes its request fail.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        supplied = request.META.get(_META_KEY)
        trace_id = supplied if is_valid_trace_id(supplied) else new_trace_id()
        started = time.monotonic()
        with log_context(trace_id=trace_id):
            if supplied is not None and supplied != trace_id:
                logger.info("replaced an invalid %s header with %s", REQUEST_ID_HEADER, trace_id)
            response = self.get_response(request)
            logger.log(
                logging.DEBUG if request.path in QUIET_PATHS else logging.INFO,
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.monotonic() - started) * 1000, 1),
                },
            )
        response[REQUEST_ID_HEADER] = trace_id
        return response
