"""Support for greenlet workers (`-P gevent`, the high-priority pool).

Celery's gevent pool enforces only the hard time limit (it kills the greenlet, leaving the job PROCESSING); the
soft limit, which ends a job FAILED cleanly, is enforced here instead, as a gevent timeout that raises
``SoftTimeLimitExceeded`` in the greenlet running the job.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from celery.exceptions import SoftTimeLimitExceeded


def gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey and monkey.is_module_patched("socket"))


@contextlib.contextmanager
def soft_time_limit(seconds: float | None) -> Iterator[None]:
    """Raise ``SoftTimeLimitExceeded`` in this greenlet after ``seconds`` (only in a gevent-patched process)."""
    if not seconds or not gevent_patched():
        yield
        return
    from gevent import Timeout

    with Timeout(seconds, SoftTimeLimitExceeded(f"soft time limit ({seconds} s) exceeded")):
        yield
