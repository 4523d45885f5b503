"""Shared set-up of the benchmarks: real service nodes, a bench database and vhost, real worker processes.

Each benchmark measures our path and its baseline side by side in one run and prints the ratio; absolute
numbers on a shared 2-core machine mean little on their own.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / "var" / "bench-logs"


def _sh(*args: str) -> str:
    return subprocess.run(args, cwd=ROOT, check=True, capture_output=True, text=True).stdout


def run_suffix() -> str:
    """``KAAPI_BENCH_ID`` (the test suite's smoke run sets it) suffixes the benchmarks' database and vhost names, so
    that runs from two checkouts on the shared nodes never drop each other's database; empty by default."""
    suffix = os.environ.get("KAAPI_BENCH_ID", "")
    return f"_{suffix}" if suffix else ""


def setup_environment(name: str, *, redis: bool = False) -> dict[str, str]:
    """Start the test-profile nodes, give this bench its own database and vhost, configure Django; with ``redis``,
    the counters shared by every process (provider credentials' limits, API throttling) live in Redis, as in
    deployments that set ``REDIS_URL`` (its keys are named after the database)."""
    _sh("scripts/services.sh", "start", "test", "postgres", "rabbitmq", "redis")
    env_lines = _sh("scripts/services.sh", "env", "test")
    for line in env_lines.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        os.environ[key] = value
    name += run_suffix()
    vhost = f"bench-{name}"
    subprocess.run([str(ROOT / "scripts/services.sh"), "rabbitmqctl", "test", "add_vhost", vhost], capture_output=True)
    _sh("scripts/services.sh", "rabbitmqctl", "test", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    db = f"bench_{name}"
    pg = os.environ["KAAPI_PG_URL"]
    subprocess.run(
        ["psql", f"{pg}/postgres", "-qc", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], capture_output=True, check=True
    )
    subprocess.run(["psql", f"{pg}/postgres", "-qc", f"CREATE DATABASE {db}"], capture_output=True, check=True)
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="kaapi-bench-metrics-"))
    os.environ.update(
        RABBITMQ_URL=os.environ["RABBITMQ_URL"].rstrip("/") + f"/{vhost}",
        DATABASE_URL=f"{pg}/{db}",
        SECRET_KEY="bench-secret",
        DEBUG="false",
        SECURE_SSL_REDIRECT="false",  # gunicorn is reached over plain HTTP on 127.0.0.1
        LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="kaapi.settings",
        ALLOWED_HOSTS="127.0.0.1,localhost",
    )
    if redis:
        os.environ["REDIS_URL"] = os.environ["KAAPI_REDIS_URL"]
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return dict(os.environ)


class Worker:
    def __init__(self, argv: list[str], *, name: str, env: dict[str, str] | None = None) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = LOG_DIR / f"{name.split('@')[0]}.log"
        self.process = subprocess.Popen(
            argv + ["-n", name],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=open(self.log_path, "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, app, timeout: float = 60) -> Worker:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited; see {self.log_path}")
            if app.control.ping(destination=[self.name], timeout=0.5):
                return self
        raise RuntimeError(f"worker not ready; see {self.log_path}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _worker_argv(app_path: str, queues: str, pool: str, concurrency: int) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", app_path, "worker", "-Q", queues, "-P", pool, "-c", str(concurrency),
        "-l", "warning", "--without-gossip", "--without-mingle",
    ]  # fmt: skip


def kaapi_worker(
    queues: str,
    *,
    pool: str = "prefork",
    concurrency: int = 2,
    env: dict[str, str] | None = None,
    label: str = "kaapi",
    include: str | None = None,
) -> Worker:
    """kaapi's worker; ``include``: a module of extra tasks to import (``celery worker --include``)."""
    from kaapi.celery import app

    argv = _worker_argv("kaapi", queues, pool, concurrency) + (["--include", include] if include else [])
    return Worker(argv, name=f"{label}-{uuid.uuid4().hex[:6]}@localhost", env=env).wait_ready(app)


def raw_worker(*, pool: str = "prefork", concurrency: int = 2) -> Worker:
    from bench.raw_celery_app import app

    argv = _worker_argv("bench.raw_celery_app", "raw", pool, concurrency)
    return Worker(argv, name=f"raw-{uuid.uuid4().hex[:6]}@localhost").wait_ready(app)


def set_max_concurrent_jobs(project, limit: int) -> None:
    """Admission (jobs/admission.py) publishes at most ``max_concurrent_jobs`` of a project's jobs per queue
    (``JOB_MAX_CONCURRENT_JOBS`` by default): a benchmark that publishes a whole backlog before its workers start
    raises its project's limit above the backlog. Written on the Project row, which every process reads."""
    from tenancy.models import Project

    Project.objects.filter(id=project.id).update(max_concurrent_jobs=limit)
    project.max_concurrent_jobs = limit


def queue_depth(app, queue: str) -> int:
    """Ready messages in ``queue`` (a passive declare: what the broker has right now)."""
    with app.connection_for_write() as conn:
        return conn.default_channel.queue_declare(queue=queue, passive=True).message_count


def purge(app) -> None:
    with app.connection_for_write() as conn:
        for queue in app.conf.task_queues or ():
            queue(conn.default_channel).declare()
            queue(conn.default_channel).purge()


def wait(predicate, timeout: float = 600, interval: float = 0.02) -> float:
    """Poll ``predicate`` until it holds; the ``perf_counter`` time it was seen to (TimeoutError after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark did not finish")
        time.sleep(interval)
    return time.perf_counter()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_table(title: str, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    text = "\n".join(lines)
    print(text, flush=True)
    return text
