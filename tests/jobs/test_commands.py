from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from jobs.models import Job
from jobs.publishing import get_task_status

pytestmark = pytest.mark.django_db


def test_submit_job_creates_echo_jobs(project):
    out = StringIO()
    call_command(
        "submit_job",
        organization="Org A",
        project="Project A",
        priority="low",
        delay=0.5,
        params='{"x": 1}',
        count=3,
        stdout=out,
    )
    ids = out.getvalue().split()
    assert len(ids) == 3
    jobs = Job.objects.filter(id__in=ids)
    assert {(j.queue, j.job_type) for j in jobs} == {("low_priority", "ECHO")}
    assert all(j.params == {"x": 1, "delay": 0.5} for j in jobs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"params": "{nope"}, "not JSON"),
        ({"params": "[1]"}, "JSON object"),
        ({"delay": -1.0}, "--delay"),
        ({"project": "missing"}, "no project"),
    ],
)
def test_submit_job_refuses_bad_arguments(project, kwargs, message):
    options = {"organization": "Org A", "project": "Project A", **kwargs}
    with pytest.raises(CommandError, match=message):
        call_command("submit_job", **options, stdout=StringIO())
    assert Job.objects.count() == 0


def test_run_worker_refuses_unknown_queues():
    with pytest.raises(CommandError, match="unknown queue"):
        call_command("run_worker", queues="high_priority,nope")


def test_get_task_status_of_unknown_task_is_pending():
    status = get_task_status("0b1e6b5e-0000-0000-0000-000000000000")
    assert status["status"] == "PENDING" and status["result"] is None and status["ready"] is False


def test_wait_for_migrations_returns_once_every_migration_is_applied():
    out = StringIO()
    call_command("wait_for_migrations", timeout=0, stdout=out)
    assert "every migration is applied" in out.getvalue()


def test_wait_for_migrations_gives_up_while_a_migration_is_missing():
    from django.db import connection
    from django.db.migrations.loader import MigrationLoader
    from django.db.migrations.recorder import MigrationRecorder

    # the newest migration of jobs, as a new version of the code brings it before its migrations Job has run
    (app, name) = MigrationLoader(connection).graph.leaf_nodes("jobs")[0]
    MigrationRecorder.Migration.objects.filter(app=app, name=name).delete()  # rolled back after the test
    with pytest.raises(CommandError, match=rf"gave up after 0 s: 1 migration\(s\) not applied yet, first jobs.{name}"):
        call_command("wait_for_migrations", timeout=0, stdout=StringIO())
