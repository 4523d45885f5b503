"""A job in admin: the list's columns, the search by id prefix, the job's page and its links, Cancel and Retry."""

import json
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone
from django_celery_results.models import TaskResult

from jobs import selectors, services
from jobs.models import DeliveryStatus, Job, JobStatus, WaitingReason, WebhookDelivery, WebhookEvent
from tests.factories import job_row, make_job, set_status

pytestmark = pytest.mark.django_db


def row_of(page: str, job: Job) -> str:
    rows = [row for row in re.findall(r"<tr[^>]*>.*?</tr>", page, re.S) if str(job.id) in row]
    assert len(rows) == 1, page
    return rows[0]


def test_the_list_shows_short_ids_seconds_durations_and_the_error(admin_client, project):
    created = timezone.now().replace(microsecond=0) - timedelta(minutes=5)
    job = job_row(
        project,
        status=JobStatus.FAILED,
        error="ValueError: the model said no\nTraceback line 2",
        started_at=created + timedelta(seconds=3),
        finished_at=created + timedelta(seconds=65),
    )
    Job.objects.filter(id=job.id).update(created_at=created)
    row = row_of(admin_client.get("/admin/jobs/job/").content.decode(), job)
    assert f'title="{job.id}">{str(job.id)[:8]}</span>' in row
    assert f'data-copy="{job.id}"' in row
    assert timezone.localtime(created).strftime("%H:%M:%S") in row  # times to the second
    assert "3.0 s" in row and "1 min 02 s" in row  # waited, ran
    assert "ValueError: the model said no" in row and "Traceback line 2</span>" not in row


def test_a_job_waiting_for_its_retry_says_when(admin_client, project):
    job = set_status(make_job(project), JobStatus.PROCESSING)
    assert services.job_mark_retrying(job_id=job.id, error="timed out", delay=30)
    job.refresh_from_db()
    retry_at = selectors.job_retry_at(job=job)
    assert job.waiting_reason == WaitingReason.RETRY and retry_at == job.updated_at + timedelta(seconds=30)
    row = row_of(admin_client.get("/admin/jobs/job/").content.decode(), job)
    assert f"retrying at {timezone.localtime(retry_at).strftime('%H:%M:%S')}" in row
    assert selectors.job_retry_at(job=make_job(project)) is None


def test_search_finds_a_job_by_the_first_characters_of_its_id(admin_client, project):
    jobs = [make_job(project) for _ in range(3)]
    target = jobs[1]
    for term in (str(target.id)[:8], str(target.id)[:13].upper(), str(target.id)):
        page = admin_client.get("/admin/jobs/job/", {"q": term}).content.decode()
        found = {job.id for job in jobs if f'data-copy="{job.id}"' in page}
        assert found == {target.id}, term


def test_the_list_filters_by_project(admin_client, project, other_project):
    mine, theirs = make_job(project), make_job(other_project)
    page = admin_client.get("/admin/jobs/job/", {"project__id__exact": project.id}).content.decode()
    assert str(mine.id) in page and str(theirs.id) not in page


def test_the_jobs_page_shows_its_json_and_links_to_its_task_result_and_deliveries(admin_client, project):
    job = set_status(make_job(project, nested={"deep": [1, 2]}), JobStatus.SUCCESS, result={"answer": 42})
    result = TaskResult.objects.create(task_id=job.task_id, status="SUCCESS", task_name="execute_high_priority_task")
    WebhookDelivery.objects.create(job=job, url="https://example.com/hook", event=WebhookEvent.SUCCEEDED, payload={})
    page = admin_client.get(f"/admin/jobs/job/{job.id}/change/").content.decode()
    assert '<details class="job-json" open>' in page
    assert json.dumps({"answer": 42}, indent=2) in page.replace("&quot;", '"')
    assert f"/admin/django_celery_results/taskresult/{result.pk}/change/" in page
    assert f'<a href="/admin/jobs/webhookdelivery/?job__id__exact={job.id}">webhook deliveries (1)</a>' in page
    assert "/admin/doctransform/document/?job__id__exact=" in page
    # and back from each
    results = admin_client.get("/admin/django_celery_results/taskresult/").content.decode()
    assert f"/admin/jobs/job/{job.id}/change/" in results and f"ECHO {str(job.id)[:8]}" in results
    deliveries = admin_client.get("/admin/jobs/webhookdelivery/", {"job__id__exact": job.id}).content.decode()
    assert f"/admin/jobs/job/{job.id}/change/" in deliveries


def test_cancel_and_retry_buttons_on_the_jobs_page(admin_client, project):
    job = make_job(project)
    page = admin_client.get(f"/admin/jobs/job/{job.id}/change/").content.decode()
    assert 'id="job-cancel"' in page and 'id="job-retry"' not in page
    assert admin_client.get(f"/admin/jobs/job/{job.id}/cancel/").status_code == 405
    response = admin_client.post(f"/admin/jobs/job/{job.id}/cancel/", follow=True)
    assert "Cancelled 1 job(s)." in response.content.decode()
    assert Job.objects.get(id=job.id).status == JobStatus.CANCELLED
    assert 'id="job-retry"' in response.content.decode()
    admin_client.post(f"/admin/jobs/job/{job.id}/retry/")
    assert Job.objects.get(id=job.id).status == JobStatus.PENDING


def test_cancel_and_retry_need_the_change_permission_and_nobody_deletes(client, admin_client, project):
    job = make_job(project)
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_job"))
    client.force_login(viewer)
    page = client.get(f"/admin/jobs/job/{job.id}/change/").content.decode()
    assert 'id="job-cancel"' not in page
    assert client.post(f"/admin/jobs/job/{job.id}/cancel/").status_code == 403
    assert Job.objects.get(id=job.id).status == JobStatus.PENDING
    listing = admin_client.get("/admin/jobs/job/").content.decode()
    assert "delete_selected" not in listing
    assert admin_client.get(f"/admin/jobs/job/{job.id}/delete/").status_code == 403


def test_a_delivery_without_a_response_still_lists(admin_client, project):
    job = make_job(project)
    WebhookDelivery.objects.create(
        job=job, url="https://example.com/hook", event=WebhookEvent.FAILED, payload={}, status=DeliveryStatus.PENDING
    )
    assert admin_client.get("/admin/jobs/webhookdelivery/").status_code == 200
