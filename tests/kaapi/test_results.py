"""kaapi.results: the result table's rows, compressed from COMPRESS_MIN_BYTES of JSON, readable either way."""

import base64
import gzip
import json
import warnings

import pytest
from django_celery_results.models import TaskResult

from kaapi.celery import app
from kaapi.results import COMPRESS_MIN_BYTES, COMPRESSED, DatabaseBackend

pytestmark = pytest.mark.django_db


def test_a_small_result_is_stored_as_plain_json():
    app.backend.store_result("small-task", {"answer": 42}, "SUCCESS")
    row = TaskResult.objects.get(task_id="small-task")
    assert row.content_encoding == "utf-8" and json.loads(row.result) == {"answer": 42}
    assert app.backend.get_task_meta("small-task")["result"] == {"answer": 42}


def test_a_large_result_is_stored_gzip_compressed_and_read_back():
    result = {"text": "word " * COMPRESS_MIN_BYTES}
    app.backend.store_result("large-task", result, "SUCCESS")
    row = TaskResult.objects.get(task_id="large-task")
    assert row.content_encoding == COMPRESSED
    assert len(row.result) < COMPRESS_MIN_BYTES  # repetitive text: far smaller than its JSON
    assert json.loads(gzip.decompress(base64.b64decode(row.result))) == result
    assert app.backend.get_task_meta("large-task")["result"] == result


def test_the_limit_is_on_the_json_length():
    just_under = {"t": "x" * (COMPRESS_MIN_BYTES - len(json.dumps({"t": ""})) - 1)}
    assert len(json.dumps(just_under)) == COMPRESS_MIN_BYTES - 1
    app.backend.store_result("under", just_under, "SUCCESS")
    app.backend.store_result("at", {"t": just_under["t"] + "x"}, "SUCCESS")
    encodings = dict(TaskResult.objects.values_list("task_id", "content_encoding"))
    assert encodings == {"under": "utf-8", "at": COMPRESSED}


def test_the_backend_compresses_by_itself_and_celery_neither_compresses_nor_warns():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Celery warns that a database backend cannot hold its compressed payloads
        backend = DatabaseBackend(app=app)
    # Celery from 5.7 compresses payloads itself when ``compression`` is set: never in this backend's columns
    assert app.conf.result_compression == "gzip" and getattr(backend, "compression", None) is None
