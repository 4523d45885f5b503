"""Beat with the database scheduler, behind a lock so that only one beat process fires the schedules.

Choice: a scheduler subclass (not a lock taken once around beat's start). Every beat process runs; each
tick, the beat first makes sure it holds the lock — and renews it — and only then looks at the schedule. A
second beat started by mistake stands by, ticking every ``CELERY_BEAT_MAX_LOOP_INTERVAL`` seconds, and takes
over when the holder stops or dies (then reads the schedule afresh from the database). The lock is:

- Redis (when ``REDIS_URL`` is set): ``SET NX`` with a time-to-live of ``BEAT_LOCK_TIMEOUT``, renewed every
  tick by its holder; a dead holder's lock expires;
- otherwise a PostgreSQL session advisory lock on a dedicated connection (not Django's, which beat closes
  and reopens): PostgreSQL releases it the moment the holder's connection ends;
- with SQLite (``make run``), an exclusive ``flock`` on a file next to the database.

Use it with ``manage.py run_beat`` or ``celery -A kaapi beat`` (``CELERY_BEAT_SCHEDULER`` names it).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO

from django.conf import settings
from django.db import DatabaseError, connections
from django_celery_beat.schedulers import DatabaseScheduler

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

logger = logging.getLogger(__name__)


class BeatLock(Protocol):
    name: str

    def acquire(self) -> bool:
        """Take the lock without waiting, or confirm (and renew) it when already held."""

    def release(self) -> None: ...


class NoLock:
    name = "none"

    def acquire(self) -> bool:
        return True

    def release(self) -> None:
        pass


class PostgresAdvisoryLock:
    def __init__(self, name: str) -> None:
        self.name = name
        self.key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        self._connection: BaseDatabaseWrapper | None = None
        self._held = False

    def acquire(self) -> bool:
        try:
            if self._connection is None:
                # A connection of our own: the lock lives exactly as long as this session.
                self._connection = connections.create_connection("default")
            with self._connection.cursor() as cursor:
                if self._held:
                    cursor.execute("SELECT 1")
                else:
                    cursor.execute("SELECT pg_try_advisory_lock(%s)", [self.key])
                    self._held = bool(cursor.fetchone()[0])
            return self._held
        except Exception:
            logger.warning("beat lock: PostgreSQL connection lost; the lock is gone", exc_info=True)
            self._drop()
            return False

    def release(self) -> None:
        if self._held and self._connection is not None:
            try:
                with self._connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [self.key])
            except Exception:
                logger.warning("beat lock: could not unlock", exc_info=True)
        self._drop()

    def _drop(self) -> None:
        self._held = False
        if self._connection is not None:
            try:
                self._connection.close()
            except Exception:
                pass
        self._connection = None


class RedisLock:
    def __init__(self, name: str, *, url: str, timeout: int) -> None:
        import redis

        self.name = name
        self._lock = redis.Redis.from_url(url).lock(f"kaapi:beat-lock:{name}", timeout=timeout, thread_local=False)
        self._held = False

    def acquire(self) -> bool:
        from redis.exceptions import LockError, RedisError

        try:
            if self._held:
                try:
                    self._lock.reacquire()  # back to the full time-to-live, only if we still own it
                    return True
                except LockError:
                    logger.warning("beat lock: our Redis lock expired")
                    self._held = False
            self._held = bool(self._lock.acquire(blocking=False))
        except RedisError:
            logger.warning("beat lock: Redis unreachable", exc_info=True)
            self._held = False
        return self._held

    def release(self) -> None:
        from redis.exceptions import LockError, RedisError

        if self._held:
            try:
                self._lock.release()
            except (LockError, RedisError):
                pass
        self._held = False


class FileLock:
    def __init__(self, name: str, *, path: Path) -> None:
        self.name = name
        self.path = path
        self._file: TextIO | None = None

    def acquire(self) -> bool:
        if self._file is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._file = handle
        return True

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def beat_lock() -> BeatLock:
    """The lock the settings ask for (``BEAT_LOCK_BACKEND``), named after the database by default."""
    database = connections["default"].settings_dict
    name = settings.BEAT_LOCK_NAME or f"kaapi-beat:{Path(str(database['NAME'])).name}"
    backend = settings.BEAT_LOCK_BACKEND
    if backend == "auto":
        if settings.REDIS_URL:
            backend = "redis"
        elif connections["default"].vendor == "postgresql":
            backend = "postgres"
        else:
            backend = "file"
    if backend == "redis":
        return RedisLock(name, url=settings.REDIS_URL, timeout=settings.BEAT_LOCK_TIMEOUT)
    if backend == "postgres":
        return PostgresAdvisoryLock(name)
    if backend == "file":
        return FileLock(name, path=Path(str(database["NAME"])).with_suffix(".beat.lock"))
    return NoLock()


class LockedDatabaseScheduler(DatabaseScheduler):
    """django-celery-beat's DatabaseScheduler that schedules only while it holds the beat lock."""

    def __init__(self, *args, **kwargs) -> None:
        self.lock = beat_lock()
        self._holding: bool | None = None
        super().__init__(*args, **kwargs)

    def setup_schedule(self) -> None:
        # No celery.backend_cleanup entry: jobs_cron_retention deletes expired results in batches.
        self.update_from_dict(self.app.conf.beat_schedule)

    def tick(self, *args, **kwargs) -> float:
        if not self.lock.acquire():
            if self._holding is not False:
                logger.warning(
                    "beat lock %s (%s) is held by another beat: standing by",
                    self.lock.name,
                    type(self.lock).__name__,
                )
            self._holding = False
            return self.max_interval
        if not self._holding:
            try:
                self._reread_schedule()
            except DatabaseError:
                logger.warning("beat lock acquired but the schedule could not be read; retrying", exc_info=True)
                self.lock.release()
                return self.max_interval
            logger.warning("beat lock %s (%s) acquired: this beat schedules", self.lock.name, type(self.lock).__name__)
            self._holding = True
        return super().tick(*args, **kwargs)

    def _reread_schedule(self) -> None:
        """Read the whole schedule afresh (another beat may have run it meanwhile) and note the table's change
        timestamp. django-celery-beat takes the first timestamp it sees for "no change", so with no timestamp
        yet (a fresh database) the first schedule added in admin would wait for its 5-minute full sync: make
        one now."""
        if self.Changes.last_change() is None:
            self.Changes.update_changed()
        self._last_timestamp = self.Changes.last_change()
        self._initial_read = True
        self._heap = None

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.lock.release()
