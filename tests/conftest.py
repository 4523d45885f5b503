"""Shared fixtures: tenants and API clients, and real Celery worker and web server processes for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from django.conf import settings
from rest_framework.test import APIClient

from kaapi.celery import QUEUE_MAX_PRIORITY, app
from tenancy.services import api_key_create, project_get_or_create

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / "var" / "test-logs"


# --- Random order -----------------------------------------------------------------------------------
def pytest_terminal_summary(terminalreporter, config) -> None:
    """pytest-randomly runs the tests in a random order; its header line is hidden by -q, so the seed that repeats
    this run's order is printed at the end whatever the verbosity (-p no:randomly keeps the file order)."""
    if config.pluginmanager.hasplugin("randomly"):
        seed = config.option.randomly_seed
        terminalreporter.write_line(f"random order: repeat it with --randomly-seed={seed}")


# --- The process's job dispatcher ----------------------------------------------------------------------
@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item) -> None:
    """Before any fixture is torn down (the test database's flush among them): this process's dispatcher thread
    finishes admitting what the test submitted, and forgets the admissions it had scheduled for later (a project
    held back by its submission rate). Left running, an admission of one test deadlocks with the next flush's
    TRUNCATE, or admits for a project of the next test."""
    import sys

    module = sys.modules.get("jobs.admission")
    if module is None:  # never imported: nothing was dispatched
        return
    dispatcher = module.dispatcher
    dispatcher.flush(timeout=10)  # bounded: a broker kept down by a fault-injection test is its own test's concern
    with dispatcher._lock:
        dispatcher._due.clear()


# --- Caches of this process --------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _forget_prices() -> None:
    """The price table each process keeps for a minute (llm/pricing.py): a test's rows, rolled back or updated
    without a signal, are not the next test's."""
    from llm.pricing import forget_prices

    forget_prices()


# --- Tenancy ----------------------------------------------------------------------------------------
@pytest.fixture
def project(db):
    return project_get_or_create(organization_name="Org A", project_name="Project A")


@pytest.fixture
def other_project(db):
    return project_get_or_create(organization_name="Org B", project_name="Project B")


def _client_for(project) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=api_key_create(project=project).plaintext)
    client.project = project
    return client


@pytest.fixture
def api_client(project) -> Iterator[APIClient]:
    yield _client_for(project)
    # This process's dispatcher thread may still be admitting what the test submitted: let it finish before the
    # test database is flushed, or its admission transaction and the flush's TRUNCATE can deadlock.
    from jobs.admission import dispatcher

    dispatcher.flush(timeout=5)


@pytest.fixture
def other_client(other_project) -> APIClient:
    return _client_for(other_project)


# --- Migrations -------------------------------------------------------------------------------------
@pytest.fixture
def migrate_to(transactional_db) -> Iterator[Callable[..., None]]:
    """``migrate_to(("app", "migration"), ...)`` moves the test database's schema; when the test ends (passed or
    not) it is back at the latest migrations, which the rest of the session (and a reused database) relies on."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    def migrate(*targets: tuple[str, str]) -> None:
        MigrationExecutor(connection).migrate(list(targets))

    try:
        yield migrate
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
        executor = MigrationExecutor(connection)
        assert not executor.migration_plan(executor.loader.graph.leaf_nodes()), "not back at the latest migrations"


# --- Real workers -----------------------------------------------------------------------------------
def worker_environment(**extra: str) -> dict[str, str]:
    """The environment of a worker process: the same settings, pointed at the test database."""
    db = settings.DATABASES["default"]
    env = dict(os.environ)
    env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env.pop("DATABASE_TEST_NAME", None)
    env["PYTHONUNBUFFERED"] = "1"
    env["LLM_ALLOW_PRIVATE_BASE_URLS"] = "true"  # the fake LLM provider listens on 127.0.0.1
    env.update(extra)
    return env


class ServiceProcess:
    """A process of the system started as an operator would start it, in a session of its own, logging to
    ``var/test-logs``; ``ready()`` says when it serves."""

    kind = "process"

    def __init__(self, *, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{name}.log"
        self.argv = argv
        self.env = worker_environment(**(env or {}))
        self.process: subprocess.Popen | None = None
        self.pass_fds: tuple[int, ...] = ()  # sockets the process inherits (bound here, so no other can take them)

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 60):
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=self.pass_fds,
        )
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.kind} exited with {self.process.returncode}; see {self.log_path}")
                if self.ready():
                    return self
                time.sleep(0.2)
            raise RuntimeError(f"{self.kind} was not ready in {timeout}s; see {self.log_path}")
        except BaseException:
            self.kill()  # never left running (and serving) after the test that gave up on it
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self._log.close()
        if getattr(self, "socket", None) is not None:
            self.socket.close()

    def kill(self) -> None:
        """SIGKILL the process and its children at once: whatever they held in memory is gone."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:  # the whole group has exited already
            pass
        self.process.wait(10)
        self._log.close()
        if getattr(self, "socket", None) is not None:
            self.socket.close()

    def discard(self) -> None:
        """End a process whose test is over (its assertions made): at once, as ``kill()``. A warm shutdown waits
        seconds for the event loop and the pool, which is what the fixtures' teardowns spent most of their time
        on; a test that checks the warm shutdown itself calls ``stop()``."""
        if self.process is not None:
            self.kill()


class WorkerProcess(ServiceProcess):
    """A `celery -A kaapi worker` process, as an operator would start it."""

    kind = "worker"

    def __init__(
        self,
        *,
        queues: str,
        pool: str = "prefork",
        concurrency: int = 2,
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.name = f"test-{uuid.uuid4().hex[:8]}@localhost"
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "kaapi",
            "worker",
            "-Q",
            queues,
            "-P",
            pool,
            "-c",
            str(concurrency),
            "-n",
            self.name,
            "-l",
            "info",
            "--without-gossip",
            "--without-mingle",
            "-I",
            "tests.job_functions",
            *(extra_args or []),
        ]
        super().__init__(name=self.name.split("@")[0], argv=argv, env=env)

    def ready(self) -> bool:
        try:
            return bool(app.control.ping(destination=[self.name], timeout=0.5))
        except OSError:  # a pooled broker connection broken by an earlier broker restart: the next one reconnects
            return False

    def child_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]


def purge_queues() -> None:
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in app.conf.task_queues:
            queue(channel).declare()
            queue(channel).purge()


@pytest.fixture
def start_worker(transactional_db) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real worker processes; all are stopped (and the queues purged) when the test ends."""
    purge_queues()
    started: list[WorkerProcess] = []

    def start(queues: str = ",".join(QUEUE_MAX_PRIORITY), **kwargs) -> WorkerProcess:
        worker = WorkerProcess(queues=queues, **kwargs).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.discard()
    purge_queues()


class WebServerProcess(ServiceProcess):
    """The production web command (gunicorn, as docker-compose runs it) on a free port of 127.0.0.1."""

    kind = "gunicorn"

    def __init__(self, *, workers: int = 2, env: dict[str, str] | None = None) -> None:
        # Bound and listening here, and handed to gunicorn (fd://): no other process can take the port between the
        # choice and gunicorn's start, so whatever answers on it is this server.
        self.socket = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.socket.set_inheritable(True)
        self.port = self.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "kaapi.wsgi:application",
            "--bind",
            f"fd://{self.socket.fileno()}",
            "--workers",
            str(workers),
            "--timeout",
            "60",
        ]
        super().__init__(
            name=f"web-{uuid.uuid4().hex[:8]}", argv=argv, env={"ALLOWED_HOSTS": "127.0.0.1", **(env or {})}
        )
        self.pass_fds = (self.socket.fileno(),)

    def ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:  # refused before the bind, or a timeout while the workers still boot
            return False


@pytest.fixture
def start_web(transactional_db) -> Iterator[Callable[..., WebServerProcess]]:
    """Start real web server processes; all are stopped when the test ends."""
    started: list[WebServerProcess] = []

    def start(**kwargs) -> WebServerProcess:
        web = WebServerProcess(**kwargs).start()
        started.append(web)
        return web

    yield start
    for web in started:
        web.discard()


def wait_until(
    predicate: Callable[[], object], *, timeout: float = 60, interval: float = 0.1, message: str = ""
) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")
