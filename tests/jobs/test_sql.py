"""jobs.sql: each hand-written statement leaves the row its ORM form leaves, and reads it back as the ORM does.

The statements are composed from the model's fields and lean on Django's field preparation, quoting, compilers and
converters: a Django upgrade that changes any of these shows up here as a difference from the ORM's own write.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.models import F
from django.utils import timezone
from django_celery_results.models import TaskResult

from jobs import sql
from jobs.functions import ECHO_PATH
from jobs.models import Job, JobStatus
from jobs.services import _new_jobs
from kaapi.celery import app
from tests.factories import job_row

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the statements run prepared on PostgreSQL"),
]

PARAMS = {"query": "café ✓", "n": [1, 2.5, None], "nested": {"k": True}}


def _twins(project, **fields) -> tuple[Job, Job]:
    return job_row(project, params=PARAMS, **fields), job_row(project, params=PARAMS, **fields)


def _row(job_id, *, without=("id", "task_id", "created_at")) -> dict:
    row = Job.objects.filter(id=job_id).values().get()
    return {key: value for key, value in row.items() if key not in without}


def test_the_insert_writes_what_save_writes(project):
    def new(task_id: str) -> Job:
        [job] = _new_jobs(
            project=project,
            function_path=ECHO_PATH,
            params_list=[PARAMS],
            priority="high",
            trace_id="t",
            job_type=None,
            callback_url="https://hooks.example.com/k",
        )
        job.task_id = task_id
        return job

    hand, orm = new("hand"), new("orm")
    sql.insert(hand)
    orm.save(force_insert=True)
    assert not hand._state.adding
    timestamps = ("id", "task_id", "created_at", "updated_at")
    assert _row(hand.id, without=timestamps) == _row(orm.id, without=timestamps)
    stored = Job.objects.get(id=hand.id)
    assert stored.params == PARAMS and stored.created_at and stored.updated_at


def test_the_claim_writes_what_the_orm_update_writes(project):
    hand, orm = _twins(project)
    now = timezone.now()
    assert sql.claim(job_id=hand.id, task_id="t-1", now=now)
    Job.objects.filter(id=orm.id, status=JobStatus.PENDING).update(
        status=JobStatus.PROCESSING, attempts=F("attempts") + 1, started_at=now, task_id="t-1", updated_at=now
    )
    assert _row(hand.id, without=("id", "created_at")) == _row(orm.id, without=("id", "created_at"))
    assert Job.objects.get(id=hand.id).attempts == 1
    assert not sql.claim(job_id=hand.id, task_id="t-2", now=now)  # PROCESSING now: not claimed twice


def test_the_success_writes_what_the_orm_writes_and_returns_the_row_the_orm_reads(project):
    hand, orm = _twins(project, status=JobStatus.PROCESSING)
    now = timezone.now()
    result = {"answer": [42, "forty-two"]}
    finished = sql.mark_success(
        job_id=hand.id,
        result=result,
        now=now,
        task_result=app.backend.result_row("task-hand", result, "SUCCESS"),
    )
    Job.objects.filter(id=orm.id, status=JobStatus.PROCESSING).update(
        status=JobStatus.SUCCESS, result=result, error="", progress_percent=100, finished_at=now, updated_at=now
    )
    app.backend.store_result("task-orm", result, "SUCCESS")
    assert _row(hand.id) == _row(orm.id)
    read = Job.objects.get(id=hand.id)
    for field in Job._meta.concrete_fields:
        assert getattr(finished, field.attname) == getattr(read, field.attname), field.name
    results = {row.pop("task_id"): row for row in TaskResult.objects.values()}
    without = ("id", "date_created", "date_done")
    assert {k: v for k, v in results["task-hand"].items() if k not in without} == {
        k: v for k, v in results["task-orm"].items() if k not in without
    }


def test_finish_writes_what_the_orm_update_writes_and_returns_the_row_the_orm_reads(project):
    hand, orm = _twins(project, status=JobStatus.PROCESSING)
    now = timezone.now()
    fields = {"status": JobStatus.FAILED, "error": "boom", "finished_at": now, "updated_at": now}
    finished = sql.finish(job_id=hand.id, from_statuses=[JobStatus.PENDING, JobStatus.PROCESSING], **fields)
    Job.objects.filter(id=orm.id, status__in=[JobStatus.PENDING, JobStatus.PROCESSING]).update(**fields)
    assert _row(hand.id) == _row(orm.id)
    read = Job.objects.get(id=hand.id)
    for field in Job._meta.concrete_fields:
        assert getattr(finished, field.attname) == getattr(read, field.attname), field.name
    assert sql.finish(job_id=hand.id, from_statuses=[JobStatus.PROCESSING], error="again") is None
