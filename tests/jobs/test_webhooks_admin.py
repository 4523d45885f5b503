"""Admin: redeliver a webhook, rotate a project's secret; the sweep of due deliveries."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import DeliveryStatus, WebhookDelivery
from jobs.publishing import DELIVER_WEBHOOK_TASK as DELIVER_TASK
from jobs.webhooks import webhook_deliveries_publish_due, webhook_secret_get
from kaapi.celery import app
from tests.conftest import purge_queues
from tests.factories import WebhookDeliveryFactory

pytestmark = pytest.mark.django_db


def default_queue_deliveries() -> list[str]:
    """The delivery ids of the webhook messages on the real broker's default queue (taken off it)."""
    ids = []
    with app.connection_for_write() as conn:
        while (message := conn.default_channel.basic_get("default", no_ack=True)) is not None:
            assert message.headers["task"] == DELIVER_TASK
            ids.append(json.loads(message.body)[1]["delivery_id"])
    return ids


@pytest.fixture
def published() -> Iterator[Callable[[], list[str]]]:
    """What the real publish put on the broker (nothing is faked: the message a worker would take)."""
    purge_queues()
    yield default_queue_deliveries
    purge_queues()


def make_delivery(project, **fields) -> WebhookDelivery:
    return WebhookDeliveryFactory(job__project=project, payload={"success": True}, **fields)


def test_admin_redeliver_rearms_the_same_message(admin_client, project, published, django_capture_on_commit_callbacks):
    delivery = make_delivery(project, status=DeliveryStatus.FAILED, attempts=10, last_status_code=500)
    with django_capture_on_commit_callbacks(execute=True):
        resp = admin_client.post(
            "/admin/jobs/webhookdelivery/",
            {"action": "redeliver", "_selected_action": [str(delivery.id)]},
            follow=True,
        )
    assert resp.status_code == 200
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.PENDING, 0)
    assert delivery.next_attempt_at <= timezone.now()
    assert published() == [str(delivery.id)]
    assert admin_client.get(f"/admin/jobs/job/{delivery.job_id}/change/").status_code == 200


def test_admin_rotates_a_secret(admin_client, project):
    secret = webhook_secret_get(project=project)
    before = secret.secret
    resp = admin_client.post(
        "/admin/jobs/webhooksecret/", {"action": "rotate", "_selected_action": [str(secret.pk)]}, follow=True
    )
    assert resp.status_code == 200
    secret.refresh_from_db()
    assert secret.secret != before and secret.previous_secret == before
    assert admin_client.get(f"/admin/jobs/webhooksecret/{secret.pk}/change/").status_code == 200


def test_sweep_publishes_only_overdue_deliveries(project, published):
    now = timezone.now()
    overdue = make_delivery(project, next_attempt_at=now - timedelta(minutes=5))
    make_delivery(project, next_attempt_at=now + timedelta(minutes=5))  # a retry not due yet
    make_delivery(project, next_attempt_at=now - timedelta(seconds=2))  # its own message is on the way
    make_delivery(project, status=DeliveryStatus.DELIVERED, next_attempt_at=None)
    assert webhook_deliveries_publish_due() == 1
    assert published() == [str(overdue.id)]
    # Its message may wait in a busy queue: the next runs do not publish it again until it is overdue again.
    assert webhook_deliveries_publish_due() == 0
    overdue.refresh_from_db()
    assert overdue.status == DeliveryStatus.PENDING and overdue.next_attempt_at <= timezone.now()  # still due
