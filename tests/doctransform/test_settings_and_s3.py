"""Document settings: validated at start-up; S3-compatible storage through django-storages works end to end."""

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from moto import mock_aws

from doctransform import services
from doctransform.models import Document

from . import files

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "kaapi-documents"


def _settings_in_subprocess(**env) -> subprocess.CompletedProcess:
    code = (
        "import django, json; django.setup(); from django.conf import settings; "
        "print(json.dumps(settings.STORAGES['documents']))"
    )
    full_env = {**os.environ, "DJANGO_SETTINGS_MODULE": "kaapi.settings", **env}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full_env, capture_output=True, text=True)


def test_s3_storage_is_configured_from_the_environment():
    done = _settings_in_subprocess(
        DOCUMENT_STORAGE="s3",
        DOCUMENT_S3_BUCKET=BUCKET,
        DOCUMENT_S3_ENDPOINT_URL="http://127.0.0.1:9000",
        DOCUMENT_S3_PREFIX="kaapi",
    )
    assert done.returncode == 0, done.stderr
    storage = json.loads(done.stdout.strip().splitlines()[-1])
    assert storage["BACKEND"] == "storages.backends.s3.S3Storage"
    assert storage["OPTIONS"]["bucket_name"] == BUCKET
    assert storage["OPTIONS"]["endpoint_url"] == "http://127.0.0.1:9000"
    assert storage["OPTIONS"]["location"] == "kaapi"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DOCUMENT_STORAGE": "s3"}, "DOCUMENT_S3_BUCKET must be set"),
        ({"DOCUMENT_STORAGE": "ftp"}, "DOCUMENT_STORAGE must be local or s3"),
        ({"DOCUMENT_TRANSFORM_TIMEOUT": "300"}, "must be less than CELERY_TASK_SOFT_TIME_LIMIT (300)"),
        ({"DOCUMENT_MAX_UPLOAD_BYTES": "lots"}, "DOCUMENT_MAX_UPLOAD_BYTES must be an integer"),
    ],
)
def test_bad_document_settings_stop_start_up(env, message):
    done = _settings_in_subprocess(CELERY_TASK_SOFT_TIME_LIMIT="300", **env)
    assert done.returncode != 0
    assert message in done.stderr


@pytest.fixture
def s3_documents(settings):
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        settings.STORAGES = {
            **settings.STORAGES,
            "documents": {
                "BACKEND": "storages.backends.s3.S3Storage",
                "OPTIONS": {
                    "bucket_name": BUCKET,
                    "region_name": "us-east-1",
                    "access_key": "test",
                    "secret_key": "test",
                    "location": "kaapi",
                    "file_overwrite": False,
                },
            },
        }
        yield boto3.client("s3", region_name="us-east-1")


@pytest.mark.django_db
def test_documents_round_trip_through_s3(api_client, s3_documents, django_capture_on_commit_callbacks):
    data = files.pdf()
    resp = api_client.post(URL := "/api/v1/documents/", {"file": SimpleUploadedFile("r.pdf", data)}, format="multipart")
    assert resp.status_code == 202, resp.content
    document = Document.objects.get(id=resp.json()["document"]["id"])
    stored = s3_documents.get_object(Bucket=BUCKET, Key=f"kaapi/{document.storage_key}")
    assert stored["Body"].read() == data

    content = api_client.get(f"{URL}{document.id}/content/")
    assert b"".join(content.streaming_content) == data

    with django_capture_on_commit_callbacks(execute=True):
        assert api_client.delete(f"{URL}{document.id}/").status_code == 204
    assert s3_documents.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


@pytest.mark.django_db
def test_retention_deletes_old_documents_from_s3(api_client, s3_documents, settings):
    settings.DOCUMENT_RETENTION_DAYS = 7
    files_sent = [files.pdf(), files.text()]
    for i, data in enumerate(files_sent):
        resp = api_client.post("/api/v1/documents/", {"file": SimpleUploadedFile(f"{i}.bin", data)}, format="multipart")
        assert resp.status_code == 202, resp.content
    assert s3_documents.list_objects_v2(Bucket=BUCKET)["KeyCount"] == 2
    old = Document.objects.order_by("created_at").first()
    Document.objects.filter(id=old.id).update(created_at=timezone.now() - timedelta(days=8))

    assert services.documents_delete_expired() == 1
    keys = [item["Key"] for item in s3_documents.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert keys == [f"kaapi/{Document.objects.get().storage_key}"]
