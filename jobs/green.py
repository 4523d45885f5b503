"""Support for greenlet workers (`-P gevent`, the high-priority pool).

Celery's gevent pool enforces only the hard time limit, by raising a gevent timeout in the greenlet (which the
job runner records as FAILED before letting it through); the soft limit, which ends a job FAILED cleanly, is
enforced here instead, as a gevent timeout that raises ``SoftTimeLimitExceeded`` in the greenlet running the job.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from celery.exceptions import SoftTimeLimitExceeded


def gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey and monkey.is_module_patched("socket"))


def is_hard_time_limit(exc: BaseException) -> bool:
    """True for the gevent timeout with which Celery's gevent pool kills a task at its hard time limit."""
    gevent = sys.modules.get("gevent")
    return gevent is not None and isinstance(exc, gevent.Timeout)


@contextlib.contextmanager
def soft_time_limit(seconds: float | None) -> Iterator[None]:
    """Raise ``SoftTimeLimitExceeded`` in this greenlet after ``seconds`` (only in a gevent-patched process)."""
    if not seconds or not gevent_patched():
        yield
        return
    from gevent import Timeout

    with Timeout(seconds, SoftTimeLimitExceeded(f"soft time limit ({seconds} s) exceeded")):
        yield
