"""The vision-llm transformer: page images to the project's LLM provider (the local fake, which checks that the
image parts arrive in each API's documented shape), Markdown and usage back on the job."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from doctransform import jobs as doctransform_jobs
from doctransform import services
from doctransform.models import Document
from jobs.models import Job, JobStatus
from llm.services import config_create
from tests.llm.conftest import BLOBS

from . import scans

pytestmark = pytest.mark.django_db
URL = "/api/v1/documents/"
PATHS = {"openai": "/v1/responses", "openai-chat": "/v1/chat/completions", "anthropic": "/v1/messages"}


def upload(client, data: bytes, **fields):
    return client.post(URL, {"file": SimpleUploadedFile("scan.pdf", data), **fields}, format="multipart")


def run_job(job_id: str) -> dict:
    """What the worker does with the job, here in the test's process."""
    job = Job.objects.get(id=job_id)
    Job.objects.filter(id=job_id).update(status=JobStatus.PROCESSING)  # so that its progress is recorded
    return doctransform_jobs.execute_job(
        project_id=job.project_id, job_id=str(job.id), task_id="test", task_instance=None, **job.params
    )


@pytest.mark.parametrize("provider", ["openai", "openai-chat", "anthropic"])
def test_pages_go_to_the_vision_model_in_order_and_the_usage_is_recorded(
    api_client, project, provider_credentials, fake_provider, provider, monkeypatch
):
    provider_credentials(project, [provider])
    progress = []
    record = services.job_report_progress
    monkeypatch.setattr(
        services, "job_report_progress", lambda **kw: progress.append((kw["percent"], kw["message"])) or record(**kw)
    )
    resp = upload(
        api_client,
        scans.scanned_pdf(scans.page_image(), scans.page_image()),
        transformer="vision-llm",
        config_blob=json.dumps(BLOBS[provider]),
    )
    assert resp.status_code == 202, resp.content
    result = run_job(resp.json()["job_id"])

    calls = [call for call in fake_provider.calls if call["path"] == PATHS[provider]]
    assert [len(call["images"]) for call in calls] == [1, 1]  # one page image a call, accepted in the API's shape
    assert all(call["images"][0].startswith(b"\xff\xd8\xff") for call in calls)
    markdown = _content(result)
    assert markdown.index("page 1 of 2") < markdown.index("page 2 of 2"), markdown
    assert [page["method"] for page in result["pages"]] == ["vision_model", "vision_model"]
    assert result["ocr_confidence"] is None
    assert result["vision"]["provider"] == provider and result["vision"]["calls"] == 2
    assert result["usage"]["total_tokens"] == result["usage"]["input_tokens"] + result["usage"]["output_tokens"] > 0
    assert [message for _, message in progress if "page" in message] == [
        "read page 1 of 2",
        "read page 2 of 2",
        "transcribed page 1 of 2",
        "transcribed page 2 of 2",
    ]
    assert [percent for percent, _ in progress] == sorted(percent for percent, _ in progress)


def test_a_stored_config_version_is_used_and_named_in_the_result(api_client, project, provider_credentials):
    provider_credentials(project, ["anthropic"])
    config = config_create(project=project, name="scans", blob=BLOBS["anthropic"])
    resp = upload(api_client, scans.image_file("PNG"), transformer="vision-llm", config_id=config.id, config_version=1)
    assert resp.status_code == 202, resp.content
    result = run_job(resp.json()["job_id"])
    assert result["vision"]["config"] == {"id": config.id, "version": 1}
    assert "page 1 of 1" in _content(result)


@pytest.mark.parametrize(
    "fields, field, message",
    [
        ({}, "config_id", "needs config_id and config_version, or config_blob"),
        ({"config_id": 999999, "config_version": 1}, "config_id", "does not exist in your project"),
        ({"config_blob": '{"completion": {"provider": "nope"}}'}, "config_blob.completion.provider", "must be one of"),
        ({"config_blob": json.dumps(BLOBS["openai"])}, "credentials", "no credentials for provider 'openai'"),
    ],
)
def test_a_vision_upload_without_a_usable_config_is_400(api_client, fields, field, message):
    resp = upload(api_client, scans.image_file("PNG"), transformer="vision-llm", **fields)
    assert resp.status_code == 400, resp.content
    assert message in " ".join(resp.json()[field])
    assert not Document.objects.exists()


def _content(result: dict) -> str:
    from doctransform.services import document_storage

    document = Document.objects.get(id=result["document_id"])
    with document_storage().open(document.storage_key, "rb") as fh:
        return fh.read().decode()


@pytest.mark.parametrize("provider", ["openai", "openai-chat", "anthropic"])
def test_the_fake_provider_takes_image_parts_only_in_the_api_s_own_shape(fake_provider, provider):
    import requests

    from llm.providers import get_provider
    from llm.providers.base import Credentials
    from tests.llm.conftest import FAKE_API_KEY, base_url_for

    image = {"type": "image", "media_type": "image/jpeg", "data": "/9j/4AAQ"}  # the start of a JPEG
    parts = [image, {"type": "text", "text": "read this"}]
    client = get_provider(provider)
    credentials = Credentials(api_key=FAKE_API_KEY, base_url=base_url_for(fake_provider, provider))
    params = BLOBS[provider]["completion"]["params"]
    headers = client.headers(credentials)

    def post(query) -> requests.Response:
        return requests.post(client.url(credentials), json=client.body(dict(params), query), headers=headers, timeout=5)

    assert post(client.content(parts)).status_code == 200
    for other in PATHS:
        if other != provider:  # another API's parts, in this API's message
            foreign = get_provider(other).content(parts)
            resp = post(foreign[0]["content"] if other == "openai" else foreign)
            assert resp.status_code == 400, (other, resp.text)
    not_a_jpeg = client.content([{**image, "data": "iVBORw0KGgo="}])  # PNG bytes called a JPEG
    assert post(not_a_jpeg).status_code == 400


def test_pages_are_not_sent_once_the_markdown_passes_the_output_cap(project, provider_credentials, fake_provider):
    from doctransform.exceptions import MarkdownTooLarge
    from doctransform.ocr import vision_image
    from doctransform.vision import pages_to_markdown

    provider_credentials(project, ["openai"])
    page = vision_image(scans.page_image())
    with pytest.raises(MarkdownTooLarge):
        pages_to_markdown(
            project_id=project.id, blob=BLOBS["openai"], images=[page] * 3, on_page=lambda *_: None, max_output_bytes=60
        )
    assert fake_provider.count("/v1/responses") == 1


def test_a_vision_transformation_is_priced_and_counted_on_the_job_like_an_llm_call(
    api_client, project, provider_credentials, model_prices
):
    """The pages' usage is priced from llm's price table, and the SUCCESS writes it to the job's usage columns
    (what the project's spend and usage reports read)."""
    from jobs import services as job_services
    from jobs.registry import get_job_function

    provider_credentials(project, ["openai"])
    resp = upload(
        api_client, scans.image_file("PNG"), transformer="vision-llm", config_blob=json.dumps(BLOBS["openai"])
    )
    assert resp.status_code == 202, resp.content
    job_id = resp.json()["job_id"]
    result = run_job(job_id)
    usage = result["vision"]["usage"]
    assert usage["cost"] is not None and Decimal(usage["cost"]) > 0, usage

    accounting = get_job_function(Job.objects.get(id=job_id).function_path).accounting
    assert job_services.job_mark_success(job_id=job_id, result=result, usage=accounting(result))
    job = Job.objects.get(id=job_id)
    assert (job.provider, job.model, job.cost) == ("openai", result["vision"]["model"], Decimal(usage["cost"]))
    assert job.input_tokens == usage["input_tokens"] and job.output_tokens == usage["output_tokens"]
