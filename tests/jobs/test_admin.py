import re

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs.models import Job, JobStatus
from tenancy.models import APIKey
from tenancy.services import api_key_verify
from tests.factories import make_job, set_status

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    User.objects.create_superuser("admin", "admin@example.com", "pw")
    client.login(username="admin", password="pw")
    return client


@pytest.mark.parametrize(
    "url",
    [
        "/admin/jobs/job/",
        "/admin/tenancy/organization/",
        "/admin/tenancy/project/",
        "/admin/tenancy/apikey/",
        "/admin/tenancy/apikey/add/",
        "/admin/django_celery_beat/periodictask/",
        "/admin/django_celery_beat/intervalschedule/",
        "/admin/django_celery_results/taskresult/",
    ],
)
def test_admin_pages_render(admin_client, project, url):
    make_job(project)
    assert admin_client.get(url).status_code == 200


def test_job_admin_detail_and_search(admin_client, project):
    job = make_job(project)
    assert admin_client.get(f"/admin/jobs/job/{job.id}/change/").status_code == 200
    for term in (str(job.id), job.trace_id, "not-a-uuid"):
        resp = admin_client.get("/admin/jobs/job/", {"q": term})
        assert resp.status_code == 200
        assert (str(job.id) in resp.content.decode()) == (term != "not-a-uuid")


def test_job_admin_search_and_filters_read_indexes_not_the_whole_table(admin_client, project):
    """Django's "=" search compares UPPER(column::text), its filters of a plain CharField run SELECT DISTINCT over the
    table, its date hierarchy reads the table's date bounds: all full scans of a table of millions of jobs."""
    job = make_job(project)
    make_job(project, priority="low")
    with CaptureQueriesContext(connection) as queries:
        resp = admin_client.get("/admin/jobs/job/", {"q": job.task_id, "job_type": "ECHO", "queue": "high_priority"})
    page = resp.content.decode()
    assert resp.status_code == 200 and str(job.id) in page
    assert "job_type=ECHO" in page  # among the filter's choices
    sql = " ".join(q["sql"] for q in queries.captured_queries if "jobs_job" in q["sql"])
    assert "UPPER(" not in sql and "DISTINCT" not in sql and "MIN(" not in sql, sql
    low = admin_client.get("/admin/jobs/job/", {"queue": "low_priority"}).content.decode()
    assert str(job.id) not in low


def test_admin_cancel_and_retry_actions_call_the_services(admin_client, project):
    pending = make_job(project)
    done = set_status(make_job(project), JobStatus.SUCCESS)
    resp = admin_client.post(
        "/admin/jobs/job/", {"action": "cancel_jobs", "_selected_action": [pending.id, done.id]}, follow=True
    )
    assert resp.status_code == 200
    text = resp.content.decode()
    assert "Cancelled 1 job(s)." in text and "already SUCCESS" in text
    assert Job.objects.get(id=pending.id).status == JobStatus.CANCELLED
    assert Job.objects.get(id=done.id).status == JobStatus.SUCCESS

    resp = admin_client.post(
        "/admin/jobs/job/", {"action": "retry_jobs", "_selected_action": [pending.id]}, follow=True
    )
    assert "Retried 1 job(s)." in resp.content.decode()
    assert Job.objects.get(id=pending.id).status == JobStatus.PENDING


def test_admin_new_api_key_is_shown_once(admin_client, project):
    resp = admin_client.post("/admin/tenancy/apikey/add/", {"project": project.id, "name": "ci"}, follow=True)
    assert resp.status_code == 200
    match = re.search(r"kaapi_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", resp.content.decode())
    assert match, "the new key is shown"
    key = api_key_verify(raw=match.group(0))
    assert key is not None and key.name == "ci" and key.project == project
    assert APIKey.objects.count() == 1
    assert match.group(0) not in admin_client.get(f"/admin/tenancy/apikey/{key.pk}/change/").content.decode()


def test_an_operator_sets_a_project_s_submission_rate_in_admin(admin_client, project):
    url = f"/admin/tenancy/project/{project.id}/change/"
    assert 'name="max_submissions_per_minute"' in admin_client.get(url).content.decode()
    form = {"organization": project.organization_id, "name": project.name, "is_active": "on"}
    resp = admin_client.post(url, {**form, "max_concurrent_jobs": "", "max_submissions_per_minute": "0"})
    assert resp.status_code == 200 and "greater than or equal to 1" in resp.content.decode()
    resp = admin_client.post(url, {**form, "max_concurrent_jobs": "", "max_submissions_per_minute": "30"})
    assert resp.status_code == 302
    project.refresh_from_db()
    assert project.max_submissions_per_minute == 30
