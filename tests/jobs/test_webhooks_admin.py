"""Admin: redeliver a webhook, rotate a project's secret; the sweep of due deliveries."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import DeliveryStatus, WebhookDelivery
from jobs.webhooks import services as webhook_services
from jobs.webhooks import webhook_deliveries_publish_due, webhook_secret_get
from tests.factories import WebhookDeliveryFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def published(monkeypatch) -> list[str]:
    sent: list[str] = []
    monkeypatch.setattr(
        webhook_services, "publish_webhook_delivery", lambda delivery_id, **options: sent.append(str(delivery_id))
    )
    return sent


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
    assert published == [str(delivery.id)]
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
    assert published == [str(overdue.id)]
    # Its message may wait in a busy queue: the next runs do not publish it again until it is overdue again.
    assert webhook_deliveries_publish_due() == 0
    overdue.refresh_from_db()
    assert overdue.status == DeliveryStatus.PENDING and overdue.next_attempt_at <= timezone.now()  # still due
