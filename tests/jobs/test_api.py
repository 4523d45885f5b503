import json
import re
import uuid

import pytest

from jobs.models import Job, JobStatus
from tests.conftest import ROOT
from tests.factories import make_job, set_status

pytestmark = pytest.mark.django_db


def test_list_is_scoped_to_the_project(api_client, other_client, project, other_project):
    mine = make_job(project)
    make_job(other_project)
    resp = api_client.get("/api/v1/jobs/")
    assert resp.status_code == 200
    body = resp.json()
    assert body["count"] == 1
    assert body["results"][0]["id"] == str(mine.id)


def documented_job_fields() -> tuple[set[str], set[str]]:
    """The fields of a job, and of its progress, as the README's poll example shows the answer."""
    readme = (ROOT / "README.md").read_text()
    answer = re.search(r"/api/v1/jobs/\$JOB_ID/ [^\n]*\n# → (\{(?:[^{}]|\{[^{}]*\})*\})", readme)
    assert answer, "the README's poll example (curl .../api/v1/jobs/$JOB_ID/ then # → {...}) is gone"
    progress = re.search(r'"progress": \{([^{}]*)\}', answer[1])
    assert progress, answer[1]
    top_level = re.sub(r"\{[^{}]*\}", "", answer[1][1:-1])
    return set(re.findall(r'"(\w+)"', top_level)), set(re.findall(r'"(\w+)"', progress[1]))


def test_detail_shape(api_client, project):
    job = make_job(project, hello="world")
    body = api_client.get(f"/api/v1/jobs/{job.id}/").json()
    fields, progress_fields = documented_job_fields()
    assert len(fields) > 10 and "status" in fields  # the README example was read
    assert set(body) >= fields
    assert set(body["progress"]) == progress_fields
    assert body["status"] == "PENDING"
    assert body["queue"] == "high_priority" and body["priority"] == 9
    assert body["job_type"] == "ECHO"
    assert body["progress"] == {"percent": 0, "message": ""}


def test_other_projects_job_is_404(other_client, project):
    job = make_job(project)
    assert other_client.get(f"/api/v1/jobs/{job.id}/").status_code == 404
    assert other_client.post(f"/api/v1/jobs/{job.id}/cancel/").status_code == 404
    assert other_client.post(f"/api/v1/jobs/{job.id}/retry/").status_code == 404
    assert Job.objects.get(id=job.id).status == JobStatus.PENDING


@pytest.mark.parametrize("path", ["not-a-uuid/", "123/", f"{uuid.uuid4()}/", "%00/", "x" * 300 + "/"])
def test_malformed_or_unknown_id_is_404(api_client, path):
    resp = api_client.get(f"/api/v1/jobs/{path}")
    assert resp.status_code == 404
    # JSON like every other answer of the API, never Django's HTML page
    assert resp["Content-Type"] == "application/json" and resp.json()["detail"]


@pytest.mark.parametrize(
    "query",
    ["status=DONE", "created_after=yesterday", "created_before=2026-13-45", "job_type=" + "x" * 100, "status="],
)
def test_malformed_filters_are_400(api_client, project, query):
    make_job(project)
    resp = api_client.get(f"/api/v1/jobs/?{query}")
    assert resp.status_code == (200 if query == "status=" else 400), resp.content


def test_filters(api_client, project):
    a = make_job(project)
    b = make_job(project)
    set_status(b, JobStatus.FAILED)
    body = api_client.get("/api/v1/jobs/?status=FAILED&job_type=ECHO").json()
    assert [r["id"] for r in body["results"]] == [str(b.id)]
    body = api_client.get(f"/api/v1/jobs/?created_after={a.created_at.isoformat().replace('+00:00', 'Z')}").json()
    assert body["count"] == 2
    assert api_client.get("/api/v1/jobs/?created_before=2000-01-01T00:00:00Z").json()["count"] == 0


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("created_after=0350-06-25T18:55:22-21:26", 200),
        ("created_before=9999-12-31T23:59:59-23:59", 400),
        ("created_after=0001-01-01T00:00:00+23:00", 400),
    ],
)
def test_datetime_filters_with_extreme_offsets_are_never_500(api_client, project, query, expected):
    make_job(project)
    resp = api_client.get(f"/api/v1/jobs/?{query}".replace("+", "%2B"))
    assert resp.status_code == expected, resp.content
    if expected == 200:
        assert resp.json()["count"] == 1  # the year 350 is before the job
    else:
        assert resp.json() == {"created_at": ["Datetime out of range."]}


@pytest.mark.parametrize(
    ("query", "expected"), [("limit=abc", 400), ("offset=-5", 400), ("limit=100000", 200), ("ordering=;drop", 200)]
)
def test_bad_pagination_never_500(api_client, project, query, expected):
    make_job(project)
    resp = api_client.get(f"/api/v1/jobs/?{query}")
    assert resp.status_code == expected, resp.content
    if expected == 400:
        assert resp.json() == {
            query.split("=")[0]: [f"must be an integer from {int(query.startswith('limit'))} to {2**63 - 1}"]
        }


def test_page_size_is_capped(api_client, project, settings):
    settings.API_MAX_PAGE_SIZE = 2
    for _ in range(3):
        make_job(project)
    body = api_client.get("/api/v1/jobs/?limit=100000").json()
    assert body["count"] == 3 and len(body["results"]) == 2
    assert "limit=2" in body["next"]


def test_cancel_pending_job(api_client, project):
    job = make_job(project)
    resp = api_client.post(f"/api/v1/jobs/{job.id}/cancel/")
    assert resp.status_code == 200
    assert resp.json()["status"] == "CANCELLED"
    assert Job.objects.get(id=job.id).finished_at is not None


@pytest.mark.parametrize("status", [JobStatus.SUCCESS, JobStatus.FAILED, JobStatus.CANCELLED])
def test_cancel_finished_job_is_409(api_client, project, status):
    job = set_status(make_job(project), status)
    resp = api_client.post(f"/api/v1/jobs/{job.id}/cancel/")
    assert resp.status_code == 409
    assert status in resp.json()["detail"]
    assert Job.objects.get(id=job.id).status == status


@pytest.mark.parametrize("body", [{"terminate": "perhaps"}, [1, 2]])
def test_cancel_with_bad_body_is_400(api_client, project, body):
    job = make_job(project)
    assert api_client.post(f"/api/v1/jobs/{job.id}/cancel/", body, format="json").status_code == 400
    assert Job.objects.get(id=job.id).status == JobStatus.PENDING


@pytest.mark.parametrize("status", [JobStatus.PENDING, JobStatus.PROCESSING, JobStatus.SUCCESS])
def test_retry_unless_failed_or_cancelled_is_409(api_client, project, status):
    job = set_status(make_job(project), status)
    resp = api_client.post(f"/api/v1/jobs/{job.id}/retry/")
    assert resp.status_code == 409
    assert resp.json() == {"detail": f"only FAILED or CANCELLED jobs can be retried; this job is {status}"}
    assert Job.objects.get(id=job.id).status == status


def test_retry_failed_job(api_client, project):
    job = set_status(make_job(project), JobStatus.FAILED, error="boom", attempts=1)
    resp = api_client.post(f"/api/v1/jobs/{job.id}/retry/")
    assert resp.status_code == 202
    assert resp.json()["status"] == "PENDING"
    assert resp["Location"] == resp.json()["status_url"]
    job.refresh_from_db()
    assert job.status == JobStatus.PENDING and job.error == "" and job.finished_at is None


def test_echo_submission(api_client, project):
    resp = api_client.post("/api/v1/jobs/echo/", {"params": {"a": 1}, "priority": "low", "delay": 0.5}, format="json")
    assert resp.status_code == 202
    body = resp.json()
    assert body["status"] == "PENDING"
    assert body["status_url"].endswith(f"/api/v1/jobs/{body['job_id']}/")
    assert resp["Location"] == body["status_url"]
    job = Job.objects.get(id=body["job_id"])
    assert job.project == project
    assert job.queue == "low_priority" and job.priority == 1
    assert job.params == {"a": 1, "delay": 0.5}
    assert job.trace_id


def test_the_submission_body_is_what_its_serializer_documents(project, rf):
    """Submissions answer with a dict built directly (jobs.serializers.submitted); the schema has the serializer."""
    from jobs.serializers import JobSubmittedSerializer, submitted

    job = make_job(project)
    request = rf.get("/", HTTP_HOST="localhost")
    body = submitted(job, request)
    assert body == JobSubmittedSerializer(job, context={"request": request}).data
    assert body == {
        "job_id": str(job.id),
        "status": "PENDING",
        "status_url": f"http://localhost/api/v1/jobs/{job.id}/",
    }
    assert json.loads(json.dumps(body)) == body


@pytest.mark.parametrize(
    "body",
    [
        {"params": [1, 2]},
        {"params": "x"},
        {"delay": -1},
        {"delay": 10**9},
        {"delay": "soon"},
        {"priority": "urgent"},
        {"callback_url": "not a url"},
        {"params": {"delay": 5}},
        [1, 2, 3],
        "just a string",
    ],
)
def test_echo_bad_input_is_400_and_creates_nothing(api_client, body):
    resp = api_client.post("/api/v1/jobs/echo/", body, format="json")
    assert resp.status_code == 400, resp.content
    assert Job.objects.count() == 0


def test_malformed_json_is_400(api_client):
    resp = api_client.generic("POST", "/api/v1/jobs/echo/", "{not json", content_type="application/json")
    assert resp.status_code == 400
    assert "JSON" in resp.json()["detail"]


def test_wrong_content_type_is_415(api_client):
    resp = api_client.generic("POST", "/api/v1/jobs/echo/", "a=1", content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 415


def test_wrong_method_is_405(api_client, project):
    job = make_job(project)
    assert api_client.delete(f"/api/v1/jobs/{job.id}/").status_code == 405
    assert api_client.get(f"/api/v1/jobs/{job.id}/cancel/").status_code == 405


@pytest.mark.parametrize("text", ["nul\x00byte", "lone \ud800 surrogate"])
def test_echo_params_that_postgres_cannot_store_are_400(api_client, text):
    def post(body):  # json.dumps escapes both as \u0000 / \ud800, as a client's JSON would
        return api_client.generic("POST", "/api/v1/jobs/echo/", json.dumps(body), content_type="application/json")

    resp = post({"params": {"a": [text]}})
    assert resp.status_code == 400 and "NUL" in str(resp.json())
    assert post({"params": {text: 1}}).status_code == 400
    assert Job.objects.count() == 0


def test_unknown_api_url_is_json_404(api_client):
    resp = api_client.get("/api/v1/nothing-here/")
    assert resp.status_code == 404 and resp.json() == {"detail": "Not found."}


def test_a_job_of_another_project_is_404_and_lookups_are_one_query(api_client, project, django_assert_num_queries):
    from jobs import selectors
    from tenancy.services import project_get_or_create

    job = api_client.post("/api/v1/jobs/echo/", {"params": {"n": 1}}, format="json").json()
    other = project_get_or_create(organization_name=project.organization.name, project_name="other")
    with django_assert_num_queries(1):
        found = selectors.job_get(project=project, job_id=job["job_id"])
    assert str(found.id) == job["job_id"] and found.params["n"] == 1 and not found._state.adding
    assert found.created_at.tzinfo is not None and found.project_id == project.pk
    assert selectors.job_get(project=other, job_id=job["job_id"]) is None
    assert api_client.get(f"/api/v1/jobs/{job['job_id']}/").json()["id"] == job["job_id"]
