"""Uploads of scans: OCR languages per upload, and the page limits answered before anything is stored."""

from __future__ import annotations

import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from doctransform.models import Document
from jobs.models import Job

from . import scans

pytestmark = pytest.mark.django_db
URL = "/api/v1/documents/"


def upload(client, name: str, data: bytes, **fields):
    return client.post(URL, {"file": SimpleUploadedFile(name, data), **fields}, format="multipart")


def test_the_ocr_languages_of_an_upload_travel_with_its_job(api_client):
    resp = upload(api_client, "scan.png", scans.image_file("PNG"), ocr_languages="eng+hin")
    assert resp.status_code == 202, resp.content
    job = Job.objects.get(id=resp.json()["job_id"])
    assert job.params["ocr_languages"] == ["eng", "hin"]
    assert job.params["transformer"] == "tesseract"


def test_an_unknown_ocr_language_is_400_naming_the_installed_ones(api_client):
    resp = upload(api_client, "scan.png", scans.image_file("PNG"), ocr_languages="eng,klingon")
    assert resp.status_code == 400, resp.content
    [message] = resp.json()["ocr_languages"]
    assert "no OCR model for 'klingon'" in message and "eng" in message and "hin" in message
    assert not Document.objects.exists()


def test_an_image_over_the_pixel_limit_is_413(api_client, settings):
    settings.DOCUMENT_MAX_PAGE_PIXELS = 100_000
    resp = upload(api_client, "scan.png", scans.image_file("PNG"))
    assert resp.status_code == 413, resp.content
    assert "900 x 260 pixels, more than the 100000 pixels" in resp.json()["detail"]
    assert not Document.objects.exists()


def test_a_tiff_with_more_pages_than_the_limit_is_413(api_client, settings):
    settings.DOCUMENT_MAX_PAGES = 2
    buffer = io.BytesIO()
    scans.page_image().save(buffer, format="TIFF", save_all=True, append_images=[scans.page_image()] * 2)
    resp = upload(api_client, "scan.tif", buffer.getvalue())
    assert resp.status_code == 413, resp.content
    assert "The image has more than 2 pages; at most 2 are converted" in resp.json()["detail"]


def test_a_config_for_a_transformer_that_uses_none_is_400(api_client):
    blob = {"completion": {"provider": "openai", "params": {"model": "gpt-4o"}}}
    resp = upload(api_client, "scan.png", scans.image_file("PNG"), config_blob=json.dumps(blob))
    assert resp.status_code == 400, resp.content
    assert "vision-llm transformer only" in resp.json()["transformer"][0]
