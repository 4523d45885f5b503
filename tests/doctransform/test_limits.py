"""What documents may cost: the converter's output, a project's storage, their age, and the converter's environment.

Conversions here run in a real converter process, started by this test process.
"""

import json
import uuid
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

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


# --- Retention ---------------------------------------------------------------------------------------------
def _age(document_id, days: int) -> None:
    Document.objects.filter(id=document_id).update(created_at=timezone.now() - timedelta(days=days))


def test_retention_deletes_old_documents_and_their_files_in_batches(api_client, settings, media_root):
    settings.DOCUMENT_RETENTION_DAYS = 30
    old = [upload(api_client, f"{i}.txt", b"old").json() for i in range(3)]
    derived = transform(old[0]["document"]["id"], old[0]["job_id"])
    recent = upload(api_client, "recent.txt", b"recent").json()["document"]["id"]
    for body in old:
        _age(body["document"]["id"], 31)
    _age(derived["document_id"], 31)
    keys = list(Document.objects.exclude(id=recent).values_list("storage_key", flat=True))
    assert len(keys) == 4 and all((media_root / key).exists() for key in keys)

    assert services.documents_delete_expired(batch_size=3, max_batches=1) == 3  # one batch per run at most
    assert services.documents_delete_expired(batch_size=3, max_batches=5) == 1
    assert list(Document.objects.values_list("id", flat=True)) == [uuid.UUID(recent)]
    assert not any((media_root / key).exists() for key in keys)

    settings.DOCUMENT_RETENTION_DAYS = 0  # keeps documents
    _age(recent, 365)
    assert services.documents_delete_expired() == 0


def test_document_retention_is_a_cron_task_among_the_default_schedules():
    from django_celery_beat.models import PeriodicTask

    from jobs.maintenance import periodic_tasks_install
    from kaapi.celery import app

    assert periodic_tasks_install()["kaapi: document retention"] == "created"
    task = PeriodicTask.objects.get(name="kaapi: document retention")
    assert (task.task, task.enabled, task.interval.every, task.interval.period) == (
        "doctransform_cron_retention",
        True,
        3600,
        "seconds",
    )
    assert app.amqp.router.route({}, task.task)["queue"].name == "cron"
    app.loader.import_default_modules()  # what a worker does at start: autodiscovery finds doctransform.tasks
    assert app.tasks[task.task].apply().get() == 0
