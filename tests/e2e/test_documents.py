"""Documents through a real `celery -A kaapi worker -Q low_priority`: every supported type becomes Markdown,
and every broken input ends FAILED with a clear error without hurting the worker."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction

from doctransform import services
from doctransform.models import Document
from jobs.models import Job, JobStatus
from tests.conftest import wait_until
from tests.doctransform import files
from tests.doctransform.conftest import WORKER_TRANSFORM_TIMEOUT

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

URL = "/api/v1/documents/"


def upload(client, name: str, data: bytes, **fields) -> dict:
    resp = client.post(URL, {"file": SimpleUploadedFile(name, data), **fields}, format="multipart")
    assert resp.status_code == 202, resp.content
    return resp.json()


def wait_finished(job_ids, timeout=90) -> dict[str, Job]:
    wait_until(
        lambda: (
            Job.objects.filter(id__in=job_ids, status__in=[JobStatus.SUCCESS, JobStatus.FAILED]).count() == len(job_ids)
        ),
        timeout=timeout,
        message=f"{len(job_ids)} transformation jobs to finish",
    )
    return {str(job.id): job for job in Job.objects.filter(id__in=job_ids)}


def markdown_of(client, job: Job) -> str:
    assert job.status == JobStatus.SUCCESS, job.error
    resp = client.get(job.result["content_url"])
    assert resp.status_code == 200
    assert resp["Content-Type"] == "text/markdown; charset=utf-8"
    return b"".join(resp.streaming_content).decode()


def test_every_supported_type_becomes_markdown(doc_worker, api_client):
    submitted = {kind: upload(api_client, name, build()) for kind, (name, build, _) in files.SUPPORTED.items()}
    jobs = wait_finished([body["job_id"] for body in submitted.values()])
    md = {kind: markdown_of(api_client, jobs[body["job_id"]]) for kind, body in submitted.items()}

    heading, body = files.HEADING, files.BODY
    table_rows = ["| Region | Units |", "| North | 42 |", "| South | 17 |"]
    for kind in ("pdf", "docx", "pptx", "html"):
        assert f"# {heading}" in md[kind], md[kind]
    for kind in ("pdf", "docx", "pptx", "html", "xlsx", "csv"):
        for row in table_rows:
            assert row in md[kind], (kind, md[kind])
    for kind in ("pdf", "docx", "pptx", "html", "text"):
        assert body in md[kind], (kind, md[kind])
    assert "## Sales" in md["xlsx"]
    assert "hidden" not in md["html"]  # scripts are dropped
    assert md["json"].startswith("```json\n{\n") and f'"title": "{heading}"' in md["json"]
    assert md["text"].strip() == files.text().decode().strip()

    # the result names the new document, which links back to its source
    body = submitted["docx"]
    result = jobs[body["job_id"]].result
    derived = api_client.get(f"{URL}{result['document_id']}/").json()
    assert derived["source_document_id"] == body["document"]["id"]
    assert derived["job_id"] == body["job_id"]
    assert (derived["filename"], derived["content_type"]) == ("report.md", "text/markdown")
    assert result["content_url"] == f"/api/v1/documents/{result['document_id']}/content/"
    listed = api_client.get(URL, {"source_document": body["document"]["id"]}).json()["results"]
    assert [d["id"] for d in listed] == [result["document_id"]]
    assert Document.objects.derived().count() == len(files.SUPPORTED)


def test_broken_documents_fail_cleanly_and_the_worker_keeps_working(doc_worker, api_client):
    pool_before = set(doc_worker.child_pids())
    pdf = files.pdf()
    cases = {
        "truncated pdf": upload(api_client, "broken.pdf", pdf[: len(pdf) // 2]),
        "encrypted pdf": upload(api_client, "secret.pdf", files.pdf(encrypt="s3cret")),
        "corrupt docx": upload(api_client, "broken.docx", files.docx()[:3000]),
        "hang": upload(api_client, "a.txt", b"some text", transformer="test-hang"),
        "crash": upload(api_client, "a.txt", b"some text", transformer="test-crash"),
    }
    with transaction.atomic():  # deleted before its job is even published
        document, job = services.document_upload(
            project=api_client.project, file=SimpleUploadedFile("gone.txt", b"bye"), filename="gone.txt"
        )
        deleted_id = document.id
        services.document_delete(document=document)
    job_ids = {name: body["job_id"] for name, body in cases.items()} | {"deleted": str(job.id)}
    jobs = wait_finished(list(job_ids.values()))

    errors = {name: jobs[job_id].error for name, job_id in job_ids.items()}
    assert all(jobs[job_id].status == JobStatus.FAILED for job_id in job_ids.values()), errors
    assert errors["truncated pdf"].startswith("DocumentUnreadable: the file could not be read as a PDF; it is corrupt")
    assert errors["encrypted pdf"] == (
        "DocumentEncrypted: the PDF is password-protected; remove the password and upload it again"
    )
    assert "could not be read as a Word document (DOCX)" in errors["corrupt docx"]
    assert errors["hang"] == (
        f"TransformationTimeout: the conversion took longer than {WORKER_TRANSFORM_TIMEOUT} s and was stopped"
    )
    assert errors["crash"].startswith("ConverterCrashed: the converter process crashed while converting")
    assert "SIGSEGV" in errors["crash"]
    assert errors["deleted"] == f"TransformationFailed: document {deleted_id} no longer exists (it was deleted)"
    assert not Job.objects.filter(status__in=[JobStatus.PENDING, JobStatus.PROCESSING]).exists()
    assert not Document.objects.derived().exists()

    # the same worker processes are alive and still convert
    assert doc_worker.process.poll() is None
    assert set(doc_worker.child_pids()) == pool_before
    after = upload(api_client, "ok.csv", files.csv())
    job = wait_finished([after["job_id"]])[after["job_id"]]
    assert "| North | 42 |" in markdown_of(api_client, job)


def test_scans_are_read_by_ocr_in_the_worker_and_the_result_says_how_each_page_was_read(doc_worker, api_client):
    from tests.doctransform import scans

    text = "The minutes of the village council meeting."
    submitted = {
        "mixed": upload(api_client, "minutes.pdf", scans.mixed_pdf(text, scans.page_image()), ocr_languages="eng"),
        "photo": upload(api_client, "form.jpg", scans.image_file("JPEG", rotate=90)),
    }
    jobs = wait_finished([body["job_id"] for body in submitted.values()])
    mixed, photo = (jobs[submitted[name]["job_id"]] for name in ("mixed", "photo"))
    for job in (mixed, photo):
        for word in scans.WORDS:
            assert word in markdown_of(api_client, job)
    assert text in markdown_of(api_client, mixed)
    assert [page["method"] for page in mixed.result["pages"]] == ["text_layer", "ocr"]
    assert mixed.result["ocr_confidence"] > 80
    assert photo.result["transformer"] == "tesseract" and photo.result["pages"][0]["method"] == "ocr"
