"""Admin actions that change state need the change permission: a view-only staff user is not offered them, and a
forged POST of one changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from doctransform.models import Document
from jobs.models import DeliveryStatus, Job, JobStatus, WebhookDelivery
from jobs.webhooks import webhook_secret_get
from tenancy.models import APIKey
from tenancy.services import api_key_create
from tests.factories import job_row

pytestmark = pytest.mark.django_db


@dataclass
class Case:
    app: str
    model: str
    action: str
    make: Callable  # project -> the object the action would change
    state: Callable  # object -> what the action would change


def _document(project) -> Document:
    return Document.objects.create(
        project=project,
        filename="a.html",
        content_type="text/html",
        size=3,
        checksum_sha256="0" * 64,
        storage_key=f"{project.id}/a.html",
    )


def _delivery(project) -> WebhookDelivery:
    job = job_row(project, status=JobStatus.SUCCESS, callback_url="https://hooks.example.com/k")
    return WebhookDelivery.objects.create(
        job=job, url=job.callback_url, event="job.succeeded", payload={}, status=DeliveryStatus.FAILED, attempts=10
    )


CASES = [
    Case("jobs", "job", "cancel_jobs", lambda p: job_row(p), lambda o: Job.objects.get(pk=o.pk).status),
    Case(
        "jobs",
        "job",
        "retry_jobs",
        lambda p: job_row(p, status=JobStatus.FAILED, finished_at=timezone.now()),
        lambda o: Job.objects.get(pk=o.pk).status,
    ),
    Case(
        "jobs",
        "webhookdelivery",
        "redeliver",
        _delivery,
        lambda o: WebhookDelivery.objects.values_list("status", "attempts").get(pk=o.pk),
    ),
    Case(
        "jobs",
        "webhooksecret",
        "rotate",
        lambda p: webhook_secret_get(project=p),
        lambda o: type(o).objects.get(pk=o.pk).secret,
    ),
    Case("doctransform", "document", "transform_documents", _document, lambda o: Job.objects.count()),
    Case(
        "tenancy",
        "apikey",
        "revoke_keys",
        lambda p: api_key_create(project=p).api_key,
        lambda o: APIKey.objects.get(pk=o.pk).revoked_at,
    ),
]


def staff_client(client, *codenames: str):
    user = User.objects.create_user("operator", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    return client


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.action)
def test_view_permission_does_not_run_state_changing_actions(client, project, case):
    obj = case.make(project)
    before = case.state(obj)
    viewer = staff_client(client, f"view_{case.model}")
    url = f"/admin/{case.app}/{case.model}/"

    page = viewer.get(url)
    assert page.status_code == 200 and str(obj.pk) in page.content.decode()
    assert f'value="{case.action}"' not in page.content.decode()

    forged = viewer.post(url, {"action": case.action, "_selected_action": [str(obj.pk)]})
    assert forged.status_code in (200, 302, 403)
    assert case.state(obj) == before


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.action)
def test_the_change_permission_offers_the_action(client, project, case):
    case.make(project)
    operator = staff_client(client, f"view_{case.model}", f"change_{case.model}")
    assert f'value="{case.action}"' in operator.get(f"/admin/{case.app}/{case.model}/").content.decode()
