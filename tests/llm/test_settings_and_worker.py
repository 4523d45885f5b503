"""Settings of the llm app and the gevent handling of `manage.py run_worker`."""

import os
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

import manage
from tests.conftest import ROOT


def settings_error(**env) -> str:
    """Import the settings with ``env``; the error printed, or "" when they load."""
    full = {**os.environ, "SECRET_KEY": "x", **env}
    proc = subprocess.run(
        [sys.executable, "-c", "import kaapi.settings"], cwd=ROOT, env=full, capture_output=True, text=True
    )
    return proc.stderr


def test_read_timeout_must_stay_below_the_soft_time_limit():
    error = settings_error(LLM_READ_TIMEOUT="300", CELERY_TASK_SOFT_TIME_LIMIT="300")
    assert "LLM_READ_TIMEOUT (300.0) must be below CELERY_TASK_SOFT_TIME_LIMIT (300)" in error
    assert settings_error(LLM_READ_TIMEOUT="299", CELERY_TASK_SOFT_TIME_LIMIT="300") == ""
    # unset, it follows a lowered soft limit
    assert settings_error(CELERY_TASK_SOFT_TIME_LIMIT="2", DOCUMENT_TRANSFORM_TIMEOUT="1") == ""


def test_encryption_keys_must_be_fernet_keys():
    assert "CREDENTIALS_ENCRYPTION_KEYS must be Fernet keys" in settings_error(CREDENTIALS_ENCRYPTION_KEYS="nope")
    key = "LRkNY1T4mJv3pHcBqCr0aDI3-GWS6m7V7hqJ7zdVZ9w="
    assert settings_error(CREDENTIALS_ENCRYPTION_KEYS=f"{key},{key}") == ""


@pytest.mark.parametrize(
    ("argv", "patched"),
    [
        (["manage.py", "run_worker", "--pool", "gevent"], True),
        (["manage.py", "run_worker", "--queues", "high_priority", "--pool=gevent"], True),
        (["manage.py", "run_worker", "--pool", "prefork"], False),
        (["manage.py", "runserver", "--pool", "gevent"], False),
        (["manage.py"], False),
    ],
)
def test_manage_py_patches_only_gevent_workers(argv, patched):
    assert manage._gevent_worker(argv) is patched


def test_run_worker_refuses_gevent_without_patching():
    with pytest.raises(CommandError, match="must monkey-patch before Django starts"):
        call_command("run_worker", pool="gevent", queues="high_priority")
