"""The documents API without a worker: validation, scoping, download and deletion."""

from pathlib import Path
from unittest import mock

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext

from doctransform import services
from doctransform.models import Document
from doctransform.views import UploadLimitHandler
from jobs.models import Job, JobStatus

from . import files

pytestmark = pytest.mark.django_db

URL = "/api/v1/documents/"


def upload(client, name: str, data: bytes, **fields):
    return client.post(URL, {"file": SimpleUploadedFile(name, data), **fields}, format="multipart")


def test_upload_stores_the_document_and_creates_a_low_priority_job(api_client, media_root):
    data = files.docx()
    resp = upload(api_client, "plan.docx", data, callback_url="https://example.com/hook")
    assert resp.status_code == 202, resp.content
    body = resp.json()
    assert body["status"] == "PENDING"
    assert body["status_url"].endswith(f"/api/v1/jobs/{body['job_id']}/")
    assert resp["Location"] == body["status_url"]
    document = body["document"]
    assert document["filename"] == "plan.docx"
    assert document["content_type"] == files.SUPPORTED["docx"][2]
    assert document["size"] == len(data)
    assert document["content_url"].endswith(f"/api/v1/documents/{document['id']}/content/")
    job = Job.objects.get(id=body["job_id"])
    assert (job.job_type, job.queue, job.function_path) == (
        "DOC_TRANSFORM",
        "low_priority",
        "doctransform.jobs.execute_job",
    )
    assert job.params == {"document_id": document["id"], "target_format": "markdown", "transformer": "markitdown"}
    assert job.callback_url == "https://example.com/hook"
    stored = Document.objects.get(id=document["id"])
    assert (media_root / stored.storage_key).read_bytes() == data
    assert "plan" not in stored.storage_key  # keys are made of ids, never of the client's file name

    content = api_client.get(f"{URL}{document['id']}/content/", HTTP_ACCEPT="application/pdf")
    assert content.status_code == 200
    assert b"".join(content.streaming_content) == data
    assert content["Content-Type"] == document["content_type"]
    assert 'attachment; filename="plan.docx"' in content["Content-Disposition"]


def test_zero_byte_upload_is_400(api_client):
    resp = upload(api_client, "empty.pdf", b"")
    assert resp.status_code == 400
    assert resp.json() == {"file": ["the file is empty (0 bytes)"]}
    assert not Document.objects.exists() and not Job.objects.exists()


def test_missing_file_and_json_body_are_refused(api_client):
    assert api_client.post(URL, {"target_format": "markdown"}, format="multipart").status_code == 400
    resp = api_client.post(URL, {"file": "x"}, format="json")
    assert resp.status_code == 415
    assert "Unsupported media type" in resp.json()["detail"]


def test_over_limit_upload_is_413_and_nothing_is_stored(api_client, settings, tmp_path, monkeypatch):
    settings.MEDIA_ROOT = tmp_path  # this test's own: the count below is of its files only
    settings.DOCUMENT_MAX_UPLOAD_BYTES = 1000
    chunks = []
    receive = UploadLimitHandler.receive_data_chunk
    monkeypatch.setattr(
        UploadLimitHandler,
        "receive_data_chunk",
        lambda self, raw, start: chunks.append(start) or receive(self, raw, start),
    )
    service = mock.Mock(wraps=services.document_upload)
    monkeypatch.setattr(services, "document_upload", service)

    # just over the limit: refused by the upload handler while the body streams, before the service sees a file
    resp = upload(api_client, "big.txt", b"a" * 1001)
    assert resp.status_code == 413
    assert resp.json() == {"detail": "The file is larger than the upload limit of 1000 bytes."}
    assert chunks and not service.called
    # far over the limit: refused from the Content-Length, before any of the body is read
    chunks.clear()
    resp = upload(api_client, "huge.txt", b"a" * 200_000)
    assert resp.status_code == 413
    assert resp.json() == {"detail": "The file is larger than the upload limit of 1000 bytes."}
    assert chunks == [] and not service.called
    assert not Document.objects.exists() and not [p for p in tmp_path.rglob("*") if p.is_file()]

    assert upload(api_client, "ok.txt", b"a" * 1000).status_code == 202
    assert Document.objects.count() == 1
    assert len([p for p in tmp_path.rglob("*") if p.is_file()]) == 1


def test_unsupported_type_is_415_listing_the_supported_pairs(api_client):
    resp = upload(api_client, "animation.pdf", b"GIF89a" + b"\x00" * 64)
    assert resp.status_code == 415
    body = resp.json()
    assert body["content_type"] == "image/gif"
    assert "image/gif are not supported" in body["detail"]
    pairs = {(p["source_type"], p["target_format"]) for p in body["supported"]}
    for _, _, content_type in files.SUPPORTED.values():
        assert (content_type, "markdown") in pairs
    assert not Document.objects.exists()


def test_unknown_transformer_or_target_is_400(api_client):
    resp = upload(api_client, "a.csv", files.csv(), transformer="nope")
    assert resp.status_code == 400
    assert "no transformer 'nope' for text/csv -> markdown" in resp.json()["detail"]
    assert "supported" in resp.json()
    resp = upload(api_client, "a.csv", files.csv(), target_format="pdf")
    assert resp.status_code == 400
    assert resp.json()["detail"] == "text/csv documents cannot be transformed to 'pdf'."
    assert {
        "source_type": "text/csv",
        "target_format": "markdown",
        "transformers": ["markitdown"],
        "default": "markitdown",
    } in resp.json()["supported"]
    # a named alternative transformer is accepted
    resp = upload(api_client, "a.json", files.json_bytes(), transformer="markitdown")
    assert resp.status_code == 202
    assert Job.objects.get(id=resp.json()["job_id"]).params["transformer"] == "markitdown"


def test_documents_are_scoped_to_the_project(api_client, other_client):
    document_id = upload(api_client, "a.txt", files.text()).json()["document"]["id"]
    for path in (f"{URL}{document_id}/", f"{URL}{document_id}/content/"):
        assert other_client.get(path).status_code == 404
    assert other_client.delete(f"{URL}{document_id}/").status_code == 404
    assert other_client.get(URL).json()["results"] == []
    listed = api_client.get(URL).json()
    assert [d["id"] for d in listed["results"]] == [document_id]
    assert api_client.get(f"{URL}{document_id}/").json()["filename"] == "a.txt"
    assert api_client.get(f"{URL}not-a-uuid/").status_code == 404
    assert Document.objects.filter(id=document_id).exists()


def test_delete_removes_the_row_and_the_file(api_client, media_root, django_capture_on_commit_callbacks):
    document_id = upload(api_client, "a.txt", files.text()).json()["document"]["id"]
    path = Path(media_root) / Document.objects.get(id=document_id).storage_key
    assert path.exists()
    with django_capture_on_commit_callbacks(execute=True):
        assert api_client.delete(f"{URL}{document_id}/").status_code == 204
    assert not path.exists()
    assert api_client.get(f"{URL}{document_id}/").status_code == 404
    assert Job.objects.get().status == JobStatus.PENDING  # it will fail: "document ... was deleted"


def test_supported_transformations_are_listed(api_client):
    resp = api_client.get(f"{URL}transformers/")
    assert resp.status_code == 200
    by_type = {p["source_type"]: p for p in resp.json()}
    assert by_type["application/json"]["default"] == "json-codeblock"
    assert by_type["application/pdf"]["transformers"] == ["pdfplumber", "markitdown", "vision-llm"]
    assert by_type["image/png"]["transformers"] == ["tesseract", "vision-llm"]


def test_missing_api_key_is_401(client):
    assert client.get(URL).status_code == 401


def test_admin_lists_and_deletes_documents_with_their_files(
    admin_client, api_client, media_root, django_capture_on_commit_callbacks
):
    document_id = upload(api_client, "a.txt", files.text()).json()["document"]["id"]
    path = Path(media_root) / Document.objects.get(id=document_id).storage_key
    assert admin_client.get("/admin/doctransform/document/").status_code == 200
    assert admin_client.get(f"/admin/doctransform/document/{document_id}/change/").status_code == 200
    resp = admin_client.post(  # the new job is published on commit, which this test never reaches
        "/admin/doctransform/document/", {"action": "transform_documents", "_selected_action": [document_id]}
    )
    assert resp.status_code == 302
    assert Job.objects.filter(params__document_id=document_id).count() == 2
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            "/admin/doctransform/document/", {"action": "delete_documents", "_selected_action": [document_id]}
        )
    assert not Document.objects.filter(id=document_id).exists()
    assert not path.exists()


def test_admin_search_finds_documents_by_identifier_from_indexes_or_by_part_of_a_name(admin_client, api_client):
    uploaded = upload(api_client, "quarterly-report.txt", files.text()).json()
    document = Document.objects.get(id=uploaded["document"]["id"])
    upload(api_client, "other.txt", b"something else entirely\n")
    url = "/admin/doctransform/document/"
    for term in (str(document.id), document.checksum_sha256.upper(), document.storage_key, "quarterly"):
        with CaptureQueriesContext(connection) as queries:
            page = admin_client.get(url, {"q": term}).content.decode()
        assert str(document.id) in page and "other.txt" not in page, term
        sql = " ".join(q["sql"] for q in queries.captured_queries if "doctransform_document" in q["sql"])
        assert "MIN(" not in sql, sql  # no date hierarchy reading the table's date bounds
        if term != "quarterly":  # an identifier, from its index: not compared as upper-cased text
            assert "UPPER(" not in sql, sql
    assert "quarterly" not in admin_client.get(url, {"q": "no-such-name"}).content.decode()


@pytest.mark.parametrize(
    "data",
    [b"[" * 100_000 + b"]" * 100_000, b"<!--" + b"--><!--" * 9000 + b"x"],
    ids=["json-nested-100000-deep", "html-comments-that-backtracked"],
)
def test_hostile_documents_are_answered_not_500(api_client, media_root, data):
    resp = upload(api_client, "upload.json", data)
    assert resp.status_code in (202, 415), resp.content


@pytest.mark.parametrize(
    ("fields", "setting"),
    [
        ({f"f{i}": "x" for i in range(1200)}, "DATA_UPLOAD_MAX_NUMBER_FIELDS"),
        ({f"file{i}": SimpleUploadedFile("a.txt", b"hello") for i in range(150)}, "DATA_UPLOAD_MAX_NUMBER_FILES"),
        ({"target_format": "x" * 3_000_000}, "DATA_UPLOAD_MAX_MEMORY_SIZE"),
    ],
    ids=["fields", "files", "form-data"],
)
def test_a_form_over_django_limits_is_a_json_400_naming_the_limit(api_client, media_root, fields, setting):
    resp = upload(api_client, "a.txt", b"hello", **fields)
    assert resp.status_code == 400
    assert resp["Content-Type"] == "application/json"
    assert setting in resp.json()["detail"]
