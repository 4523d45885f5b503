"""A provider credential's limits, held by every worker process and host together.

Each credential may limit its requests per minute, tokens per minute and concurrent calls (``ProviderCredential``
fields, set through the API and admin). Before a call, a worker takes a slot in one atomic step on the shared
counters (Redis, a Lua script); a call over a limit waits its turn: in the worker when the turn comes within
``LLM_LIMIT_MAX_INLINE_WAIT`` seconds, otherwise the job goes back to PENDING and its message is published again
when the window frees (``jobs.exceptions.JobDeferred``: a wait, which does not count against the retries). A 429
(or a 503 with Retry-After) from the provider pauses every call of that credential, and only of that credential,
until the provider's Retry-After (``LLM_CREDENTIAL_PAUSE_SECONDS`` when it gives none).

The minute is a sliding window of one-second buckets that counts a little more than 60 s, so that the calls
admitted in any 60 s never exceed the limit as the provider counts them. Tokens are estimated before the call
(about four characters a token, plus the output tokens the call may use) and corrected by the usage it reports.
Without ``REDIS_URL`` the counters live in the database (``CredentialUsage``: one row per credential, locked while
a call counts itself).
"""

from __future__ import annotations

import logging
import math
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from jobs.exceptions import JobDeferred, RetryableJobError
from kaapi import ratelimit

logger = logging.getLogger(__name__)

WINDOW_BUCKETS = 61  # one-second buckets counted as "the last minute": a superset of any 60 s the provider counts
CHARS_PER_TOKEN = 4
OUTPUT_TOKEN_PARAMS = ("max_output_tokens", "max_completion_tokens", "max_tokens")
CONCURRENCY_RETRY_SECONDS = 1.0  # a call over the concurrency limit looks again after this (plus jitter)
POLL_SECONDS = 0.1


@dataclass(frozen=True)
class CredentialLimits:
    credential_id: int
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent_calls: int | None = None


@dataclass
class Slot:
    """A call's place within its credential's limits; ``used(tokens)`` corrects its estimate."""

    limits: CredentialLimits
    call_id: str
    bucket: int
    estimated_tokens: int
    tokens: int | None = field(default=None)

    def used(self, tokens: int) -> None:
        self.tokens = tokens


@dataclass(frozen=True)
class Refusal:
    reason: str
    wait: float | None  # seconds until the turn comes; None: unknown (concurrent calls)


def estimate_tokens(params: dict[str, Any], query: str) -> int:
    """Tokens a call may count for: its text (about four characters a token) and the output it may produce."""
    text = len(query) + len(str(params.get("instructions") or ""))
    output = next((params[name] for name in OUTPUT_TOKEN_PARAMS if isinstance(params.get(name), int)), 0)
    return math.ceil(text / CHARS_PER_TOKEN) + output


# --- Redis ---------------------------------------------------------------------------------------------
# KEYS: window hash (fields "r:<second>" requests, "t:<second>" tokens), concurrent calls (zset, score = expiry),
# pause (the time until which the credential is paused). ARGV: rpm, tpm, concurrency, estimated tokens, call id,
# seconds a concurrent call's entry lasts (a killed worker's call is forgotten after it), window buckets.
# Returns {"ok", bucket} or {reason, seconds to wait or ""}. The time is Redis's: one clock for every host.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rpm, tpm, conc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local est, id, ttl, window = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local paused = tonumber(redis.call('GET', KEYS[3]) or '0')
if paused > now then return {'paused', tostring(paused - now)} end
local sec = math.floor(now)
local oldest = sec - window + 1
local reqs, toks, rsum, tsum = {}, {}, 0, 0
if rpm > 0 or tpm > 0 then
  local fields = redis.call('HGETALL', KEYS[1])
  for i = 1, #fields, 2 do
    local b, v = tonumber(string.sub(fields[i], 3)), tonumber(fields[i + 1])
    if b < oldest then
      redis.call('HDEL', KEYS[1], fields[i])
    elseif string.sub(fields[i], 1, 1) == 'r' then
      reqs[#reqs + 1] = {b, v}; rsum = rsum + v
    else
      toks[#toks + 1] = {b, v}; tsum = tsum + v
    end
  end
end
local function free_after(buckets, excess)
  table.sort(buckets, function(x, y) return x[1] < y[1] end)
  local freed = 0
  for _, bucket in ipairs(buckets) do
    freed = freed + bucket[2]
    if freed >= excess then return bucket[1] + window - now end
  end
  return window
end
local wait = 0
if rpm > 0 and rsum + 1 > rpm then wait = math.max(wait, free_after(reqs, rsum + 1 - rpm)) end
if tpm > 0 and tsum > 0 and tsum + est > tpm then wait = math.max(wait, free_after(toks, tsum + est - tpm)) end
if wait > 0 then
  if rpm > 0 and rsum + 1 > rpm then return {'requests_per_minute', tostring(wait)} end
  return {'tokens_per_minute', tostring(wait)}
end
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= conc then return {'max_concurrent_calls', ''} end
  redis.call('ZADD', KEYS[2], now + ttl, id)
  redis.call('EXPIRE', KEYS[2], math.ceil(ttl) + 5)
end
if rpm > 0 or tpm > 0 then
  redis.call('HINCRBY', KEYS[1], 'r:' .. sec, 1)
  redis.call('HINCRBY', KEYS[1], 't:' .. sec, est)
  redis.call('EXPIRE', KEYS[1], window + 5)
end
return {'ok', tostring(sec)}
"""

_PAUSE = """
local t = redis.call('TIME')
local until_ = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
if until_ > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], string.format('%.6f', until_), 'PX', math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
end
return 1
"""

_scripts: dict[str, Any] = {}


def _script(name: str, source: str):
    script = _scripts.get(name)
    if script is None:
        script = _scripts[name] = ratelimit.redis_client().register_script(source)
    return script


def _keys(credential_id: int) -> list[str]:
    base = f"{ratelimit.namespace()}:llm-credential:{credential_id}"
    return [f"{base}:window", f"{base}:calls", f"{base}:pause"]


class RedisCounters:
    def acquire(self, limits: CredentialLimits, *, estimated_tokens: int, call_id: str) -> int | Refusal:
        status, value = _script("acquire", _ACQUIRE)(
            keys=_keys(limits.credential_id),
            args=[
                limits.requests_per_minute or 0,
                limits.tokens_per_minute or 0,
                limits.max_concurrent_calls or 0,
                estimated_tokens,
                call_id,
                settings.CELERY_TASK_SOFT_TIME_LIMIT + 5,
                WINDOW_BUCKETS,
            ],
        )
        status, value = status.decode(), value.decode()
        if status == "ok":
            return int(value)
        return Refusal(status, float(value) if value else None)

    def release(self, slot: Slot) -> None:
        window, calls, _ = _keys(slot.limits.credential_id)
        pipe = ratelimit.redis_client().pipeline(transaction=False)
        if slot.limits.max_concurrent_calls:
            pipe.zrem(calls, slot.call_id)
        if slot.limits.tokens_per_minute and slot.tokens is not None and slot.tokens != slot.estimated_tokens:
            # a bucket already out of the window comes back for a moment: the next acquire drops it
            pipe.hincrby(window, f"t:{slot.bucket}", slot.tokens - slot.estimated_tokens)
        pipe.execute()

    def pause(self, credential_id: int, *, seconds: float) -> None:
        _script("pause", _PAUSE)(keys=_keys(credential_id)[2:], args=[repr(float(seconds))])


# --- PostgreSQL (no Redis) -----------------------------------------------------------------------------
def _free_after(buckets: dict[str, int], excess: int, now: float) -> float:
    freed = 0
    for second in sorted(buckets, key=int):
        freed += buckets[second]
        if freed >= excess:
            return int(second) + WINDOW_BUCKETS - now
    return float(WINDOW_BUCKETS)


def decide(state: dict[str, Any], limits: CredentialLimits, *, estimated_tokens: int, call_id: str, now: float):
    """The Redis script's decision, on a credential's state as ``CredentialUsage`` keeps it (changed in place)."""
    if state.get("paused_until", 0) > now:
        return Refusal("paused", state["paused_until"] - now)
    second, oldest = math.floor(now), math.floor(now) - WINDOW_BUCKETS + 1
    requests = {k: v for k, v in state.get("r", {}).items() if int(k) >= oldest}
    tokens = {k: v for k, v in state.get("t", {}).items() if int(k) >= oldest}
    calls = {k: v for k, v in state.get("calls", {}).items() if v > now}
    state.update(r=requests, t=tokens, calls=calls)
    rpm, tpm, concurrency = limits.requests_per_minute, limits.tokens_per_minute, limits.max_concurrent_calls
    used_requests, used_tokens = sum(requests.values()), sum(tokens.values())
    if rpm and used_requests + 1 > rpm:
        return Refusal("requests_per_minute", _free_after(requests, used_requests + 1 - rpm, now))
    if tpm and used_tokens and used_tokens + estimated_tokens > tpm:
        return Refusal("tokens_per_minute", _free_after(tokens, used_tokens + estimated_tokens - tpm, now))
    if concurrency and len(calls) >= concurrency:
        return Refusal("max_concurrent_calls", None)
    if concurrency:
        calls[call_id] = now + settings.CELERY_TASK_SOFT_TIME_LIMIT + 5
    if rpm or tpm:
        requests[str(second)] = requests.get(str(second), 0) + 1
        tokens[str(second)] = tokens.get(str(second), 0) + estimated_tokens
    return second


class PostgresCounters:
    """The same counters in one ``CredentialUsage`` row per credential, locked (SELECT … FOR UPDATE) while a call
    counts itself: a round trip more than Redis, for deployments that run without it."""

    @contextmanager
    def _state(self, credential_id: int) -> Iterator[dict[str, Any]]:
        from django.db import IntegrityError, connection, transaction

        from .models import CredentialUsage

        with transaction.atomic():
            usage = CredentialUsage.objects.select_for_update().filter(credential_id=credential_id).first()
            if usage is None:
                try:
                    with transaction.atomic():
                        usage = CredentialUsage.objects.create(credential_id=credential_id, state={})
                except IntegrityError:  # another worker created it first
                    usage = CredentialUsage.objects.select_for_update().get(credential_id=credential_id)
            yield usage.state
            CredentialUsage.objects.filter(credential_id=credential_id).update(state=usage.state)
        if not connection.in_atomic_block:
            connection.close()  # as llm/jobs.py does: no connection held while the call waits on the provider

    def acquire(self, limits: CredentialLimits, *, estimated_tokens: int, call_id: str) -> int | Refusal:
        if not (limits.requests_per_minute or limits.tokens_per_minute or limits.max_concurrent_calls):
            return self._unlimited(limits.credential_id)
        with self._state(limits.credential_id) as state:
            return decide(state, limits, estimated_tokens=estimated_tokens, call_id=call_id, now=time.time())

    def _unlimited(self, credential_id: int) -> int | Refusal:
        # Nothing to count: only a pause (after a 429) holds the call, and reading it takes no lock, so the calls of
        # a credential without limits do not queue on its row.
        from django.db import connection

        from .models import CredentialUsage

        state = CredentialUsage.objects.filter(credential_id=credential_id).values_list("state", flat=True).first()
        if not connection.in_atomic_block:
            connection.close()  # as llm/jobs.py does: no connection held while the call waits on the provider
        now = time.time()
        paused = (state or {}).get("paused_until", 0) - now
        return Refusal("paused", paused) if paused > 0 else math.floor(now)

    def release(self, slot: Slot) -> None:
        if not slot.limits.max_concurrent_calls and not slot.limits.tokens_per_minute:
            return
        with self._state(slot.limits.credential_id) as state:
            state.get("calls", {}).pop(slot.call_id, None)
            bucket = str(slot.bucket)
            if slot.tokens is not None and bucket in state.get("t", {}):
                state["t"][bucket] += slot.tokens - slot.estimated_tokens

    def pause(self, credential_id: int, *, seconds: float) -> None:
        with self._state(credential_id) as state:
            state["paused_until"] = max(state.get("paused_until", 0), time.time() + seconds)


def _counters() -> RedisCounters | PostgresCounters:
    return RedisCounters() if settings.REDIS_URL else PostgresCounters()


# --- The call ---------------------------------------------------------------------------------------------
def _describe(refusal: Refusal, limits: CredentialLimits) -> str:
    if refusal.reason == "paused":
        return "the provider rate-limited this credential; its calls are paused"
    return f"the credential's {refusal.reason.replace('_', ' ')} limit ({getattr(limits, refusal.reason)}) is reached"


def _jitter(wait: float) -> float:
    return random.uniform(0, min(1.0, 0.1 * wait + 0.05))


@contextmanager
def call_slot(limits: CredentialLimits, *, estimated_tokens: int) -> Iterator[Slot]:
    """Take a slot for one call within the credential's limits, for the time of the ``with`` block.

    Waits in the worker while the turn comes within ``LLM_LIMIT_MAX_INLINE_WAIT`` seconds; beyond, raises
    ``JobDeferred`` with the time until the window frees. A ``RetryableJobError`` from the call that says the
    provider is rate-limiting (429, or 503 with Retry-After) pauses the credential's calls.
    """
    counters = _counters()
    call_id = uuid.uuid4().hex
    deadline = time.monotonic() + settings.LLM_LIMIT_MAX_INLINE_WAIT
    while True:
        try:
            taken = counters.acquire(limits, estimated_tokens=estimated_tokens, call_id=call_id)
        except Exception:  # the counters are unreachable: the call goes ahead rather than every job failing
            logger.warning("credential %s: limits not checked, counters down", limits.credential_id, exc_info=True)
            taken = -1
        if not isinstance(taken, Refusal):
            break
        wait = taken.wait if taken.wait is not None else CONCURRENCY_RETRY_SECONDS
        step = min(wait, POLL_SECONDS) if taken.wait is None else wait
        if time.monotonic() + step > deadline:
            raise JobDeferred(_describe(taken, limits), delay=wait + _jitter(wait))
        time.sleep(step + random.uniform(0, 0.02))
    slot = Slot(limits=limits, call_id=call_id, bucket=taken, estimated_tokens=estimated_tokens)
    try:
        yield slot
    except RetryableJobError as exc:
        if exc.status == 429 or (exc.status == 503 and exc.retry_after is not None):
            pause = exc.retry_after if exc.retry_after is not None else settings.LLM_CREDENTIAL_PAUSE_SECONDS
            try:
                counters.pause(limits.credential_id, seconds=min(pause, settings.CELERY_TASK_RETRY_BACKOFF_MAX))
            except Exception:
                logger.warning("could not pause credential %s", limits.credential_id, exc_info=True)
        raise
    finally:
        try:
            counters.release(slot)
        except Exception:  # the entry expires on its own; the call's outcome must not be lost over it
            logger.warning("could not release the call's slot of credential %s", limits.credential_id, exc_info=True)
