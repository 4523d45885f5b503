"""A wall-clock deadline for a block of blocking I/O (an outbound HTTP exchange).

Socket timeouts bound each read, not the exchange: a peer sending one byte a second keeps a call alive for as long
as it likes. ``deadline(seconds, exc)`` raises ``exc`` in the running code once ``seconds`` have passed, by the
means the process allows:

- a gevent-patched process (the high-priority pool): a gevent timeout in the greenlet;
- the main thread (prefork and solo pools, management commands): ``SIGALRM``, which also interrupts a blocked
  ``recv``; an alarm set by someone else (pytest-timeout) is kept and still fires when it was due;
- any other thread (the threads pool): an asynchronous exception, delivered between two bytes of a slow peer; a
  silent peer is cut off by the per-read timeout, which callers clip to the deadline (at most one deadline late).

Keep database work out of the block: only the exchange itself may be interrupted.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from . import green


@contextlib.contextmanager
def deadline(seconds: float, exc: type[BaseException]) -> Iterator[None]:
    """Raise ``exc()`` in this block after ``seconds`` of wall-clock time."""
    if green.gevent_patched():
        from gevent import Timeout

        with Timeout(seconds, exc()):
            yield
    elif threading.current_thread() is threading.main_thread():
        with _alarm(seconds, exc):
            yield
    else:
        with _async_exception(seconds, exc):
            yield


@contextlib.contextmanager
def _alarm(seconds: float, exc: type[BaseException]) -> Iterator[None]:
    now = time.monotonic()
    due = now + seconds
    previous_handler = signal.getsignal(signal.SIGALRM)
    previous_delay, previous_interval = signal.getitimer(signal.ITIMER_REAL)
    # Which alarm the timer is set for, and when the earlier one (if any) is due.
    state: dict[str, Any] = {"active": True, "previous_first": 0 < previous_delay < seconds, "previous_due": None}
    if previous_delay:
        state["previous_due"] = now + previous_delay

    def on_alarm(signum, frame) -> None:
        if not state["previous_first"]:
            if state["active"]:
                raise exc()
            return
        state["previous_first"] = False
        state["previous_due"] = time.monotonic() + previous_interval if previous_interval else None
        signal.setitimer(signal.ITIMER_REAL, max(due - time.monotonic(), 0.001))
        if callable(previous_handler):
            previous_handler(signum, frame)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, previous_delay if state["previous_first"] else seconds)
    try:
        yield
    finally:
        try:
            state["active"] = False
        finally:  # also when the alarm's exception lands on the line above
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL if previous_handler is None else previous_handler)
            if state["previous_due"] is not None:
                remaining = max(state["previous_due"] - time.monotonic(), 0.001)
                signal.setitimer(signal.ITIMER_REAL, remaining, previous_interval)


@contextlib.contextmanager
def _async_exception(seconds: float, exc: type[BaseException]) -> Iterator[None]:
    thread_id = ctypes.c_ulong(threading.get_ident())
    lock = threading.Lock()
    state = {"active": True, "fired": False}

    def fire() -> None:
        with lock:
            if state["active"]:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(thread_id, ctypes.py_object(exc))
                state["fired"] = True

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        with lock:
            state["active"] = False
            if state["fired"]:  # raised in the block, or still pending: never let it escape past the block
                ctypes.pythonapi.PyThreadState_SetAsyncExc(thread_id, None)
        timer.cancel()
