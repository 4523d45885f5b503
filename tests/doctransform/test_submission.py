"""An upload with an Idempotency-Key or a delay (docs/submission.md)."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from doctransform.models import Document
from jobs.models import Job, JobStatus

from . import files

pytestmark = pytest.mark.django_db

URL = "/api/v1/documents/"


def upload(client, data: bytes, key: str | None = None, **fields):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post(URL, {"file": SimpleUploadedFile("plan.docx", data), **fields}, format="multipart", **headers)


def test_a_retried_upload_with_its_key_answers_the_same_document_and_job(api_client, media_root):
    data = files.docx()
    first = upload(api_client, data, key="upload-1")
    again = upload(api_client, data, key="upload-1")  # a new multipart boundary, the same fields and file
    assert first.status_code == again.status_code == 202, first.content
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert (Document.objects.count(), Job.objects.count()) == (1, 1)
    other = upload(api_client, data + b"another file", key="upload-1")
    assert other.status_code == 422
    assert (Document.objects.count(), Job.objects.count()) == (1, 1)


def test_an_upload_may_be_scheduled(api_client, media_root):
    response = upload(api_client, files.docx(), delay_seconds=600)
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "SCHEDULED"
    assert Job.objects.get().status == JobStatus.SCHEDULED
