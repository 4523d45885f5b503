"""Counters shared by every process and host: Redis when ``REDIS_URL`` is set, Django's cache otherwise.

The API's throttles and the admin's login guard count here (fixed windows, one atomic increment per hit), and
the LLM provider limits (llm/limits.py) keep their windows in the same Redis.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
RATE = re.compile(r"^\s*(\d+)\s*/\s*([smhd])[a-z]*\s*$", re.IGNORECASE)

_redis = None
_redis_lock = threading.Lock()


@dataclass(frozen=True)
class Rate:
    """``count`` hits per ``seconds``; written as Django REST framework writes rates ("600/min", "10/s")."""

    count: int
    seconds: int

    @classmethod
    @functools.cache
    def parse(cls, text: str) -> Rate | None:
        """None for an empty value or "off" (no limit); ValueError when it is not a rate."""
        if not text.strip() or text.strip().lower() in ("off", "none"):
            return None
        match = RATE.match(text)
        if not match or int(match.group(1)) < 1:
            raise ValueError(f"{text!r} is not a rate such as 600/min, 10/s, 1000/hour or 'off'")
        return cls(int(match.group(1)), PERIODS[match.group(2).lower()])


def redis_client():
    """One client (and connection pool) per process, or None without ``REDIS_URL``."""
    global _redis
    if not settings.REDIS_URL:
        return None
    if _redis is None:
        with _redis_lock:
            if _redis is None:
                import redis

                _redis = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    return _redis


def namespace() -> str:
    """Keys are named after the database: two deployments (or test runs) sharing one Redis do not count together."""
    return f"kaapi:{settings.DATABASES['default']['NAME']}"


def _name(key: str, window: int, now: float) -> tuple[str, float]:
    index = int(now // window)
    return f"{namespace()}:rl:{key}:{index}", (index + 1) * window - now


def hit(key: str, *, window: int, now: float | None = None) -> tuple[int, float]:
    """Count one hit of ``key`` in the current ``window``-second window: (hits so far in it, seconds until it
    ends). One round trip to Redis (INCR and EXPIRE together)."""
    name, remaining = _name(key, window, time.time() if now is None else now)
    client = redis_client()
    if client is not None:
        pipe = client.pipeline(transaction=False)
        pipe.incr(name)
        pipe.expire(name, window + 1)
        count, _ = pipe.execute()
        return int(count), remaining
    cache.add(name, 0, timeout=window + 1)
    try:
        return cache.incr(name), remaining
    except ValueError:  # expired between add and incr
        cache.set(name, 1, timeout=window + 1)
        return 1, remaining


def count(key: str, *, window: int, now: float | None = None) -> tuple[int, float]:
    """The hits of ``key`` in the current window, without counting one."""
    name, remaining = _name(key, window, time.time() if now is None else now)
    client = redis_client()
    value = client.get(name) if client is not None else cache.get(name)
    return int(value or 0), remaining


def reset(key: str, *, window: int, now: float | None = None) -> None:
    name, _ = _name(key, window, time.time() if now is None else now)
    client = redis_client()
    if client is not None:
        client.delete(name)
    else:
        cache.delete(name)
