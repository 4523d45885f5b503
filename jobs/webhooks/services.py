"""Webhook services: per-project secrets, delivery records, one signed attempt, redelivery."""

from __future__ import annotations

import base64
import json
import logging
import secrets
from datetime import datetime, timedelta
from typing import Any

import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone
from standardwebhooks import Webhook

from kaapi import metrics, outbound
from kaapi.logging import log_context
from kaapi.middleware import REQUEST_ID_HEADER as TRACE_HEADER  # the trace id, as in API requests
from tenancy.models import Project

from ..backoff import backoff_delay
from ..deadline import deadline
from ..models import DeliveryStatus, Job, JobStatus, WebhookDelivery, WebhookEvent, WebhookSecret
from ..publishing import publish_webhook_delivery

logger = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
USER_AGENT = "Kaapi-Webhooks/1.0"
# Retries further away than this are not held as ETA messages (RabbitMQ's consumer timeout is 30 min);
# the webhook sweep publishes them when they are due.
COUNTDOWN_LIMIT_SECONDS = 600
# The sweep publishes a due delivery only once it is this late: normally its own message is on the way.
SWEEP_GRACE = timedelta(seconds=30)
# The lease of an attempt is its deadline (WEBHOOK_ATTEMPT_DEADLINE_SECONDS) plus this headroom (recording the
# outcome, a worker's clock ahead of the database's): a duplicate message or the sweep arriving meanwhile skips the
# delivery, and the attempt is over before the lease ends.
LEASE_MARGIN_SECONDS = 30

_EVENTS: dict[str, WebhookEvent] = {
    JobStatus.SUCCESS: WebhookEvent.SUCCEEDED,
    JobStatus.FAILED: WebhookEvent.FAILED,
    JobStatus.CANCELLED: WebhookEvent.CANCELLED,
}


# --- Secrets ------------------------------------------------------------------------------------------
def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def webhook_secret_get(*, project: Project) -> WebhookSecret:
    """The project's webhook secret, made on first use."""
    secret, _ = WebhookSecret.objects.get_or_create(project=project, defaults={"secret": new_secret()})
    return secret


@transaction.atomic
def webhook_secrets_reencrypt() -> int:
    """Store every webhook secret again, encrypted under the newest ``CREDENTIALS_ENCRYPTION_KEYS`` key (after a
    key rotation, before the old key leaves the list); returns how many."""
    count = 0
    for secret in WebhookSecret.objects.select_for_update().order_by("pk").iterator():
        secret.save(update_fields=["secret", "previous_secret"])
        count += 1
    return count


@transaction.atomic
def webhook_secret_rotate(*, project: Project) -> WebhookSecret:
    """A new secret; the previous one keeps signing for ``WEBHOOK_SECRET_ROTATION_GRACE`` seconds."""
    webhook_secret_get(project=project)
    secret = WebhookSecret.objects.select_for_update().get(project=project)
    now = timezone.now()
    secret.previous_secret = secret.secret
    secret.previous_valid_until = now + timedelta(seconds=settings.WEBHOOK_SECRET_ROTATION_GRACE)
    secret.secret = new_secret()
    secret.rotated_at = now
    secret.save(update_fields=["secret", "previous_secret", "previous_valid_until", "rotated_at"])
    return secret


def signing_secrets(secret: WebhookSecret, *, now: datetime) -> list[str]:
    current = [secret.secret]
    if secret.previous_secret and secret.previous_valid_until and secret.previous_valid_until > now:
        current.append(secret.previous_secret)
    return current


def sign(*, secrets: list[str], msg_id: str, timestamp: datetime, body: str) -> str:
    """The ``webhook-signature`` header: one ``v1,<base64>`` per secret, space separated."""
    return " ".join(Webhook(secret).sign(msg_id, timestamp, body) for secret in secrets)


# --- Callback URLs ------------------------------------------------------------------------------------
def _allowed_networks() -> list[outbound.Network]:
    return outbound.networks(settings.WEBHOOK_ALLOWED_NETWORKS)


def validate_callback_url(url: str) -> None:
    """Refuse, at submission, a callback URL that can never be delivered (the scheme, and the address of an IP
    literal). Host names are checked when the delivery connects, after DNS resolution: that is the real guard."""
    if not url:
        return
    schemes = ("https", "http") if settings.WEBHOOK_ALLOW_HTTP else ("https",)
    problem = outbound.url_problem(url, schemes=schemes, allowed=_allowed_networks())
    if problem:
        raise ValidationError({"callback_url": [f"the callback URL {problem}"]})


# --- Deliveries ---------------------------------------------------------------------------------------
def webhook_payload(job: Job) -> dict[str, Any]:
    """``{"success", "data", "error", "metadata"}``; metadata carries the client's request metadata too."""
    success = job.status == JobStatus.SUCCESS
    metadata: dict[str, Any] = {
        "job_id": str(job.id),
        "job_type": job.job_type,
        "status": job.status,
        "trace_id": job.trace_id,
    }
    request_metadata = job.params.get("request_metadata") if isinstance(job.params, dict) else None
    if isinstance(request_metadata, dict):
        metadata.update({key: value for key, value in request_metadata.items() if key not in metadata})
    return {
        "success": success,
        "data": job.result if success else None,
        "error": None if success else (job.error or job.status.lower()),
        "metadata": metadata,
    }


def webhook_enqueue_for_job(*, job: Job) -> WebhookDelivery | None:
    """Record the delivery of a finished job's webhook and publish it after commit (None: no callback URL)."""
    if not job.callback_url or job.status not in _EVENTS:
        return None
    delivery = WebhookDelivery.objects.create(
        job=job,
        url=job.callback_url,
        event=_EVENTS[job.status],
        payload=webhook_payload(job),
        next_attempt_at=timezone.now(),
    )
    transaction.on_commit(lambda: publish_webhook_delivery(delivery.id, trace_id=job.trace_id))
    return delivery


def webhook_enqueue_for_project(*, project: Project, url: str, event: str, payload: dict[str, Any]) -> WebhookDelivery:
    """Record the delivery of an event about a project (not a job), signed with the project's secret like job
    webhooks and delivered, retried and recorded the same way; published after commit."""
    delivery = WebhookDelivery.objects.create(
        project=project, url=url, event=event, payload=payload, next_attempt_at=timezone.now()
    )
    transaction.on_commit(lambda: publish_webhook_delivery(delivery.id))
    return delivery


def webhook_redeliver(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a delivery again (same webhook-id and body), with a fresh set of attempts.

    A pending delivery due within one lease may have an attempt in flight: it keeps its time (its next attempt is
    that close anyway), so that no second attempt starts beside the first.
    """
    now = timezone.now()
    in_flight = Q(
        status=DeliveryStatus.PENDING,
        next_attempt_at__gt=now,
        next_attempt_at__lte=now + timedelta(seconds=lease_seconds()),
    )
    WebhookDelivery.objects.filter(id=delivery.id).update(
        status=DeliveryStatus.PENDING,
        attempts=0,
        next_attempt_at=Case(When(in_flight, then=F("next_attempt_at")), default=Value(now)),
        updated_at=now,
    )
    # Only the job's trace id (a project's delivery, a budget alert, has no job): not its params and result.
    trace_id = ""
    if delivery.job_id is not None:
        trace_id = Job.objects.filter(id=delivery.job_id).values_list("trace_id", flat=True).first() or ""
    transaction.on_commit(lambda: publish_webhook_delivery(delivery.id, trace_id=trace_id))
    delivery.refresh_from_db()
    return delivery


def webhook_deliveries_publish_due(*, limit: int = 500) -> int:
    """Publish deliveries whose attempt is overdue (long backoffs, lost messages); returns how many.

    Each one's ``next_attempt_at`` becomes now first: still due for its attempt, but not overdue again for
    ``SWEEP_GRACE``, so a message waiting in a busy queue is not joined by another at every run. The update is a
    compare-and-set, by primary key, on the value read: a delivery claimed meanwhile is left to its attempt.
    """
    now = timezone.now()
    overdue = list(
        WebhookDelivery.objects.due(before=now - SWEEP_GRACE)
        .order_by("next_attempt_at")
        .values_list("id", "next_attempt_at", "job__trace_id")[:limit]
    )
    published = 0
    for delivery_id, due_at, trace_id in overdue:
        if WebhookDelivery.objects.filter(id=delivery_id, next_attempt_at=due_at).update(
            next_attempt_at=now, updated_at=now
        ):
            publish_webhook_delivery(delivery_id, trace_id=trace_id or "")
            published += 1
    return published


# --- One attempt --------------------------------------------------------------------------------------
_session: requests.Session | None = None


def _get_session() -> requests.Session:
    # Made lazily in the process that uses it (never shared across a prefork fork).
    global _session
    if _session is None:
        _session = outbound.guarded_session(allowed_networks=_allowed_networks)
    return _session


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.strip().isdigit() else None


class AttemptDeadlineExceeded(Exception):
    """The receiver did not answer in full within ``WEBHOOK_ATTEMPT_DEADLINE_SECONDS``."""


def lease_seconds() -> float:
    """How long a claimed attempt holds its delivery: longer than the attempt can last."""
    return settings.WEBHOOK_ATTEMPT_DEADLINE_SECONDS + LEASE_MARGIN_SECONDS


def _send(delivery: WebhookDelivery) -> tuple[int | None, str, bool, float | None]:
    """POST the signed body once: (status code, error, permanent failure, retry-after).

    The whole exchange (connect, send, the status line, headers and error excerpt) ends by the attempt's deadline,
    however slowly the receiver trickles its answer: timeouts alone bound each read, not the sum of them.
    """
    job = delivery.job
    project = job.project if job is not None else delivery.project
    assert project is not None  # a delivery is made for a job or, without one, for a project (webhook_enqueue_for_*)
    try:
        validate_callback_url(delivery.url)  # the settings may have changed since the job was submitted
    except ValidationError as exc:
        return None, "; ".join(exc.messages), True, None
    now = timezone.now()
    body = json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False)
    msg_id = str(delivery.id)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": sign(
            secrets=signing_secrets(webhook_secret_get(project=project), now=now),
            msg_id=msg_id,
            timestamp=now,
            body=body,
        ),
    }
    if job is not None:
        headers[TRACE_HEADER] = job.trace_id
    limit = settings.WEBHOOK_ATTEMPT_DEADLINE_SECONDS
    try:
        with deadline(limit, AttemptDeadlineExceeded):
            return _exchange(delivery.url, body=body.encode(), headers=headers, limit=limit)
    except AttemptDeadlineExceeded:
        return None, f"no complete answer within the attempt deadline ({limit:g} s)", False, None


def _exchange(
    url: str, *, body: bytes, headers: dict[str, str], limit: float
) -> tuple[int | None, str, bool, float | None]:
    try:
        response = _get_session().post(
            url,
            data=body,
            headers=headers,
            timeout=(min(settings.WEBHOOK_CONNECT_TIMEOUT, limit), min(settings.WEBHOOK_READ_TIMEOUT, limit)),
            allow_redirects=False,
            stream=True,
        )
    except outbound.AddressRefused as exc:
        return None, outbound.short(str(exc)), True, None
    except AttemptDeadlineExceeded:
        raise
    except Exception as exc:  # timeouts, refused connections, TLS, malformed URLs: a failed attempt, recorded
        return None, outbound.short(f"{type(exc).__name__}: {exc}"), False, None
    with response:
        code = response.status_code
        if 200 <= code < 300:
            return code, "", False, None
        if code == 410:
            return code, "the receiver answered 410 Gone: not retrying", True, None
        if 300 <= code < 400:
            location = outbound.body_excerpt(response, response.headers.get("Location", "?"), 200)
            return code, f"redirect ({code}) to {location} not followed", False, None
        text = next(response.iter_content(outbound.ERROR_TEXT_CHARS, decode_unicode=False), b"")
        excerpt = outbound.body_excerpt(response, text.decode("utf-8", "replace"))
        return code, f"HTTP {code}: {excerpt}".strip(), False, _retry_after(response)


def _retry_delay(attempts: int, retry_after: float | None) -> float:
    return backoff_delay(
        attempts - 1,
        base=settings.WEBHOOK_RETRY_BASE_DELAY,
        cap=settings.WEBHOOK_RETRY_MAX_DELAY,
        retry_after=retry_after,
    )


def _claim(delivery_id: str) -> WebhookDelivery | None:
    """Take the delivery for one attempt if it is due: attempts + 1, and a lease (``next_attempt_at`` moved past the
    attempt's timeouts) so that no other worker takes it meanwhile. None when it is not PENDING or not due yet.

    The row is locked and updated by primary key only. A conditional ``UPDATE … WHERE id = %s AND status = 'PENDING'
    AND next_attempt_at <= now`` could be served from the (status, next_attempt_at) index instead, reading every due
    delivery's entry for each claim whenever the planner's statistics predate a burst of them.
    """
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_related("job__project", "project")
            .select_for_update(of=("self",))
            .filter(id=delivery_id)
            .first()
        )
        now = timezone.now()
        # Celery may fire an ETA a moment early: a second of tolerance.
        if (
            delivery is None
            or delivery.status != DeliveryStatus.PENDING
            or delivery.next_attempt_at is None
            or delivery.next_attempt_at > now + timedelta(seconds=1)
        ):
            return None
        delivery.attempts += 1
        delivery.next_attempt_at = now + timedelta(seconds=lease_seconds())
        delivery.updated_at = now
        # Conditional on the attempt number read (under the row lock it holds; without it, the claim fails rather
        # than start a second attempt). Not on status or time: those would invite the index named above.
        claimed = WebhookDelivery.objects.filter(id=delivery.id, attempts=delivery.attempts - 1).update(
            attempts=delivery.attempts, next_attempt_at=delivery.next_attempt_at, updated_at=now
        )
    return delivery if claimed else None


def webhook_attempt(*, delivery_id: str) -> str:
    """Claim a due delivery, POST it once, record the outcome and schedule the retry; returns the outcome."""
    delivery = _claim(delivery_id)
    if delivery is None:
        return "skipped"
    with log_context(job_id=str(delivery.job_id or "")):  # its trace id: from the message's header (kaapi.logging)
        code, error, permanent, retry_after = _send(delivery)
        done = timezone.now()
        fields: dict[str, Any] = {"last_status_code": code, "last_error": outbound.short(error), "updated_at": done}
        if code is not None and 200 <= code < 300:
            fields.update(status=DeliveryStatus.DELIVERED, delivered_at=done, next_attempt_at=None)
            outcome = "delivered"
        elif permanent or delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
            fields.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
            outcome = "failed"
        else:
            delay = _retry_delay(delivery.attempts, retry_after)
            fields.update(next_attempt_at=done + timedelta(seconds=delay))
            outcome = "retrying"
        # Only while the delivery is still this attempt's: every claim and redelivery changes the attempt number.
        if not WebhookDelivery.objects.filter(id=delivery.id, attempts=delivery.attempts).update(**fields):
            logger.warning(
                "webhook attempt %s ended after its delivery moved on; outcome not recorded", delivery.attempts
            )
            outcome = "superseded"
        metrics.count_webhook(outcome)
        if outcome == "retrying":
            logger.warning("webhook attempt %s failed (%s); retrying in %.1f s", delivery.attempts, error, delay)
            if delay <= COUNTDOWN_LIMIT_SECONDS:
                trace_id = delivery.job.trace_id if delivery.job else ""
                publish_webhook_delivery(delivery.id, trace_id=trace_id, countdown=delay)
        elif outcome == "failed":
            logger.error("webhook delivery gave up after %s attempt(s): %s", delivery.attempts, error)
        elif outcome == "delivered":
            logger.info("webhook delivered (%s) after %s attempt(s)", code, delivery.attempts)
        return outcome
