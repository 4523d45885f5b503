"""What documents may cost: the converter's output, a project's storage, their age, and the converter's environment.

Conversions here run in a real converter process, started by this test process.
"""

import json
import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from doctransform import services
from doctransform.converter import ConverterProcess
from doctransform.exceptions import MarkdownTooLarge, TransformationFailed
from doctransform.models import Document, DocumentQuota
from doctransform.transformers import get_transformer
from jobs.models import Job

from . import files

pytestmark = pytest.mark.django_db

URL = "/api/v1/documents/"
MIB = 1024 * 1024
TEXT = "text/plain"
XLSX = files.SUPPORTED["xlsx"][2]


def upload(client, name: str, data: bytes):
    return client.post(URL, {"file": SimpleUploadedFile(name, data)}, format="multipart")


def transform(document_id: str, job_id: str):
    job = Job.objects.get(id=job_id)
    return services.document_transform(
        project_id=job.project_id,
        job_id=job_id,
        document_id=document_id,
        target_format="markdown",
        transformer=job.params["transformer"],
    )


@pytest.fixture
def converter():
    process = ConverterProcess(max_memory_mb=2048, max_conversions=10)
    yield process
    process.close()


# --- The output cap -----------------------------------------------------------------------------------
def test_a_small_xlsx_that_expands_to_100_mb_fails_above_the_output_cap_and_nothing_is_stored(api_client, settings):
    settings.DOCUMENT_TRANSFORM_MAX_OUTPUT_BYTES = MIB
    data = files.xlsx_expanding()  # one 10 KB shared string in 10,000 cells
    assert len(data) < 30_000
    body = upload(api_client, "bomb.xlsx", data).json()

    with pytest.raises(MarkdownTooLarge, match=r"^the Markdown exceeds 1 MiB$"):
        transform(body["document"]["id"], body["job_id"])
    assert list(Document.objects.values_list("id", flat=True)) == [uuid.UUID(body["document"]["id"])]


def test_the_converter_checks_any_output_against_the_cap_before_sending_it_and_keeps_serving(converter):
    text = get_transformer(source_type=TEXT).function_path
    with pytest.raises(MarkdownTooLarge, match=r"^the Markdown exceeds 1 MiB$"):
        converter.convert(function_path=text, data=b"a" * (MIB + 1), hints={}, timeout=30, max_output_bytes=MIB)
    pid = converter.pid
    assert converter.convert(function_path=text, data=b"a" * MIB, hints={}, timeout=30, max_output_bytes=MIB) == (
        "a" * MIB
    )
    # multi-byte characters count as their UTF-8 bytes, which is what is stored
    with pytest.raises(MarkdownTooLarge):
        converter.convert(
            function_path=text, data="é".encode() * (MIB // 2 + 1), hints={}, timeout=30, max_output_bytes=MIB
        )
    xlsx = get_transformer(source_type=XLSX).function_path
    assert "North" in converter.convert(
        function_path=xlsx, data=files.xlsx(), hints={}, timeout=30, max_output_bytes=MIB
    )
    assert converter.pid == pid


def test_the_xlsx_conversion_counts_the_cells_and_stops_at_the_cap_before_markitdown_expands_them(monkeypatch):
    from doctransform import transformers

    monkeypatch.setattr(transformers, "_markitdown", lambda *args, **kwargs: pytest.fail("markitdown ran"))
    token = transformers.output_limit.set(MIB)
    try:
        with pytest.raises(MarkdownTooLarge, match=r"^the Markdown exceeds 1 MiB$"):
            transformers.xlsx_to_markdown(files.xlsx_expanding())
    finally:
        transformers.output_limit.reset(token)


# --- The converter's environment ----------------------------------------------------------------------
def test_the_converter_process_gets_no_secrets_from_the_worker(monkeypatch, converter):
    secrets = {
        "SECRET_KEY": "s3cr3t",
        "DATABASE_URL": "postgres://kaapi:password@127.0.0.1/kaapi",
        "RABBITMQ_URL": "amqp://guest:guest@127.0.0.1//",
        "REDIS_URL": "redis://:password@127.0.0.1:6379/0",
        "CREDENTIALS_ENCRYPTION_KEYS": "key",
        "DOCUMENT_S3_ACCESS_KEY_ID": "AKIA",
        "DOCUMENT_S3_SECRET_ACCESS_KEY": "secret",
        "AWS_ACCESS_KEY_ID": "AKIA",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "WEBHOOK_SIGNING_SECRET": "whsec",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    path = get_transformer(source_type=TEXT, name="test-environment").function_path
    names = set(json.loads(converter.convert(function_path=path, data=b"x", hints={}, timeout=30)))
    assert not names & set(secrets)
    assert not {name for name in names if any(word in name for word in ("SECRET", "KEY", "PASSWORD", "TOKEN"))}
    assert "PATH" in names


# --- The storage quota ----------------------------------------------------------------------------------
def test_an_upload_over_the_project_quota_is_413_with_the_quota_and_the_usage(api_client, other_client, settings):
    settings.DOCUMENT_PROJECT_QUOTA_BYTES = 1000
    assert upload(api_client, "a.txt", b"a" * 600).status_code == 202
    resp = upload(api_client, "b.txt", b"b" * 500)
    assert resp.status_code == 413
    assert resp.json() == {
        "detail": "The project's documents may use 1000 bytes of storage and use 600 bytes: this file (500 bytes) "
        "does not fit. Delete documents to make room."
    }
    assert Document.objects.count() == 1 and Job.objects.count() == 1
    assert upload(other_client, "b.txt", b"b" * 500).status_code == 202  # each project has its own usage

    # an operator raises this project's quota in admin
    DocumentQuota.objects.create(project=api_client.project, quota_bytes=2000)
    assert upload(api_client, "b.txt", b"b" * 500).status_code == 202
    settings.DOCUMENT_PROJECT_QUOTA_BYTES = 0  # no quota by default; the project's own still holds
    assert upload(api_client, "c.txt", b"c" * 1000).status_code == 413


def test_derived_documents_count_and_a_transformation_over_the_quota_fails(api_client, settings):
    settings.DOCUMENT_PROJECT_QUOTA_BYTES = 1000
    body = upload(api_client, "a.txt", b"a" * 600).json()
    with pytest.raises(TransformationFailed, match="may use 1000 bytes of storage and use 600 bytes"):
        transform(body["document"]["id"], body["job_id"])
    assert Document.objects.count() == 1

    settings.DOCUMENT_PROJECT_QUOTA_BYTES = 1300
    result = transform(body["document"]["id"], body["job_id"])
    assert result["size"] == 600
    assert services.document_storage_usage(project=api_client.project) == 1200  # source + derived


def test_the_quota_is_overridden_per_project_in_admin(admin_client, api_client):
    resp = admin_client.post(
        "/admin/doctransform/documentquota/add/", {"project": api_client.project.id, "quota_bytes": "5000"}
    )
    assert resp.status_code == 302, resp.content
    assert DocumentQuota.objects.get(project=api_client.project).quota_bytes == 5000
    upload(api_client, "a.txt", b"a" * 600)
    listing = admin_client.get("/admin/doctransform/documentquota/")
    assert listing.status_code == 200
    assert b"600" in listing.content  # the project's usage beside its quota
