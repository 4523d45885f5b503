"""Fixtures of the doctransform tests: a temporary MEDIA_ROOT, and one real worker per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import WorkerProcess, purge_queues
from tests.llm.conftest import fake_provider, model_prices, provider_credentials  # noqa: F401  - the vision-llm transformer's

from . import misbehaving_transformers  # noqa: F401  - registers the test-only transformers here too

# Conversions of the small test files take well under a second; a hang is cut after this.
WORKER_TRANSFORM_TIMEOUT = 5


@pytest.fixture(scope="module")
def media_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(autouse=True)
def _use_media_root(settings, media_root: Path) -> None:
    settings.MEDIA_ROOT = media_root


@pytest.fixture(scope="module")
def doc_worker(django_db_setup, django_db_blocker, media_root: Path) -> Iterator[WorkerProcess]:
    """A `celery -A kaapi worker -Q low_priority` shared by a module's tests (markitdown is slow to import)."""
    with django_db_blocker.unblock():
        purge_queues()
        worker = WorkerProcess(
            queues="low_priority",
            concurrency=2,
            env={"MEDIA_ROOT": str(media_root), "DOCUMENT_TRANSFORM_TIMEOUT": str(WORKER_TRANSFORM_TIMEOUT)},
            extra_args=["-I", "tests.job_functions,tests.doctransform.misbehaving_transformers"],
        ).start()
        try:
            yield worker
        finally:
            worker.discard()
            purge_queues()
