#!/usr/bin/env python
"""LLM calls per second through the whole system, beside raw Celery tasks on the same pool, in one run.

Starts the test PostgreSQL and RabbitMQ nodes (scripts/services.sh, own database ``kaapi_bench`` and vhost
``kaapi-bench``), a fake provider with 1 s latency (tests/fakes/llm_provider.py), gunicorn, and Celery workers
for high_priority with the gevent pool. Then:

1. LLM calls, queued first: the workers stop consuming, N LLM calls (openai-chat against the fake provider) are
   created by the service ``POST /api/v1/llm/call`` runs (``llm.services.llm_call_start``, in this process: the
   same jobs and messages, without waiting for the web server), the workers resume; jobs/s from the resume until
   every job is SUCCESS (the last ``finished_at``);
2. raw sleep tasks, queued first: the same with N ``bench_sleep_task(1 s)`` published straight to high_priority
   (tasks/s until every result is SUCCESS, the last ``date_done``) — the baseline of the same pool;
   1 and 2 alternate for --rounds rounds; each round gives a ratio, and their median is the figure (the machine
   is shared: one pair of phases moved by up to ±15 % in a day);
3. LLM calls through the API: N ``POST /api/v1/llm/call`` while the workers run, jobs/s from the first POST until
   every job is SUCCESS: the whole system (web server included) on this machine.

Worker CPU per job (and web CPU per request) is printed too: it does not depend on what else the machine runs.

    .venv/bin/python bench/llm_throughput.py [--calls 3000] [--workers 2] [--concurrency 300]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.harness import run_suffix  # noqa: E402

PY = str(ROOT / ".venv" / "bin" / "python")
LOG_DIR = ROOT / "var" / "bench"
VHOST = "kaapi-bench" + run_suffix()
DB_NAME = "kaapi_bench" + run_suffix()


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def services_env() -> dict[str, str]:
    subprocess.run([str(ROOT / "scripts/services.sh"), "start", "test", "postgres", "rabbitmq"], check=True)
    out = subprocess.run([str(ROOT / "scripts/services.sh"), "env", "test"], check=True, capture_output=True, text=True)
    env = {}
    for line in out.stdout.splitlines():
        if line.startswith("export "):
            key, _, value = line[7:].partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    ctl = [str(ROOT / "scripts/services.sh"), "rabbitmqctl", "test"]
    subprocess.run([*ctl, "add_vhost", VHOST], capture_output=True)
    subprocess.run([*ctl, "set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*"], check=True, capture_output=True)
    return env


def create_database(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(f"{pg_url}/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone():
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')


class Processes:
    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []
        LOG_DIR.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str], **kwargs) -> subprocess.Popen:
        logfile = open(LOG_DIR / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=kwargs.pop("stdout", logfile), stderr=logfile, **kwargs)
        self.started.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.started):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.started):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes and their waited-for children (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, IndexError):
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / tick


def wait_for(predicate, *, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description="LLM jobs/s versus raw Celery tasks/s, same pool, same run.")
    parser.add_argument("--calls", type=int, default=3000, help="LLM calls, and as many raw tasks (default 3000)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating queued-first rounds (default 3)")
    parser.add_argument("--latency", type=float, default=1.0, help="fake provider latency and raw sleep (s)")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(os.cpu_count() or 1, 4),
        help="worker processes (default: one per core, at most 4, as make run and docker-compose run them)",
    )
    parser.add_argument("--concurrency", type=int, default=300, help="greenlets per worker process (default 300)")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn worker processes (default 2)")
    parser.add_argument("--web-threads", type=int, default=8, help="threads per gunicorn worker (default 8)")
    parser.add_argument("--submitters", type=int, default=16, help="client threads submitting (default 16)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--prefetch-multiplier", type=int, default=2, help="messages reserved per greenlet (default 2, see docs/llm.md)"
    )
    parser.add_argument("--pool", default="gevent", choices=["gevent", "prefork", "threads"], help="worker pool")
    parser.add_argument("--profile", action="store_true", help="run the workers under cProfile (var/bench/*.prof)")
    args = parser.parse_args()

    env = services_env()
    create_database(env["KAAPI_PG_URL"])
    os.environ.update(
        DJANGO_SETTINGS_MODULE="kaapi.settings",
        DATABASE_URL=f"{env['KAAPI_PG_URL']}/{DB_NAME}",
        RABBITMQ_URL=f"{env['RABBITMQ_URL'].rstrip('/')}/{VHOST}",
        SECRET_KEY="bench-secret-key-not-for-production",
        DEBUG="false",
        SECURE_SSL_REDIRECT="false",  # gunicorn is reached over plain HTTP on 127.0.0.1
        ALLOWED_HOSTS="127.0.0.1,localhost",
        LLM_ALLOW_PRIVATE_BASE_URLS="true",
        LOG_LEVEL="WARNING",
        LLM_HTTP_POOL_MAXSIZE=str(args.concurrency),
        PYTHONUNBUFFERED="1",
    )
    os.environ.pop("REDIS_URL", None)
    subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, check=True)

    import django

    django.setup()
    import requests
    from django.db.models import Max
    from django_celery_results.models import TaskResult

    from bench.harness import set_max_concurrent_jobs
    from jobs.admission import dispatcher
    from jobs.models import Job, JobStatus
    from kaapi.celery import HIGH_PRIORITY, HIGH_PRIORITY_QUEUE, app
    from llm.services import credential_set, llm_call_start
    from tenancy.services import api_key_create, project_get_or_create

    with app.connection_for_write() as conn:
        for queue in app.conf.task_queues:
            if queue.name == HIGH_PRIORITY_QUEUE:
                queue(conn.default_channel).declare()
                queue(conn.default_channel).purge()

    procs = Processes()
    try:
        fake = procs.start(
            "fake-provider",
            [PY, "-m", "tests.fakes.llm_provider", "--latency", str(args.latency)],
            stdout=subprocess.PIPE,
        )
        fake_url = fake.stdout.readline().decode().strip()
        log(f"fake provider at {fake_url} ({args.latency} s latency)")

        project = project_get_or_create(organization_name="Bench", project_name=f"bench-{uuid.uuid4().hex[:6]}")
        set_max_concurrent_jobs(project, args.calls)  # "queued first" publishes every call before the resume
        api_key = api_key_create(project=project).plaintext
        credential_set(
            project=project, provider="openai-chat", api_key="sk-bench-0000000000", base_url=fake_url + "/v1"
        )
        base = f"http://127.0.0.1:{args.port}"
        web = procs.start(
            "web",
            [str(ROOT / ".venv/bin/gunicorn"), "kaapi.wsgi:application", "-b", f"127.0.0.1:{args.port}",
             "-w", str(args.web_workers), "--threads", str(args.web_threads), "--backlog", "2048",
             "--log-level", "warning"],
        )  # fmt: skip
        names = [f"bench{i}-{uuid.uuid4().hex[:6]}@localhost" for i in range(args.workers)]
        workers = []
        for i, name in enumerate(names):
            profile = ["-m", "cProfile", "-o", str(LOG_DIR / f"worker{i}.prof")] if args.profile else []
            workers.append(
                procs.start(
                    name.split("@")[0],
                    [
                        PY,
                        *profile,
                        "-m",
                        "celery",
                        "-A",
                        "kaapi",
                        "worker",
                        "-Q",
                        HIGH_PRIORITY_QUEUE,
                        "-P",
                        args.pool,
                        "-c",
                        str(args.concurrency),
                        "--prefetch-multiplier",
                        str(args.prefetch_multiplier),
                        "-n",
                        name,
                        "-l",
                        "warning",
                        "-I",
                        "bench.raw_tasks",
                        "--without-gossip",
                        "--without-mingle",
                    ],
                )  # fmt: skip
            )
        worker_pids = [w.pid for w in workers]
        wait_for(lambda: len(app.control.ping(destination=names, timeout=0.5)) == len(names), timeout=90,
                 what="the workers")  # fmt: skip

        def web_pids() -> list[int]:
            out = subprocess.run(["pgrep", "-P", str(web.pid)], capture_output=True, text=True).stdout
            return [web.pid, *map(int, out.split())]

        def web_up() -> bool:
            try:
                return requests.get(f"{base}/api/v1/jobs/", headers={"X-API-KEY": api_key}, timeout=1).ok
            except requests.RequestException:
                return False

        wait_for(web_up, timeout=60, what="the web server")
        log(
            f"{args.workers} {args.pool} worker(s) x {args.concurrency}; "
            f"gunicorn {args.web_workers} x {args.web_threads} threads; {args.submitters} client threads"
        )

        local = threading.local()

        def post_call(i: int) -> str:
            if not hasattr(local, "session"):
                local.session = requests.Session()
            resp = local.session.post(
                f"{base}/api/v1/llm/call",
                json={"config": {"blob": BLOB}, "query": f"What is AI? ({i})"},
                headers={"X-API-KEY": api_key},
                timeout=60,
            )
            if resp.status_code != 202:
                raise SystemExit(f"submission failed: {resp.status_code} {resp.text[:300]}")
            return resp.json()["job_id"]

        def submit_calls(count: int = args.calls) -> list[str]:
            with ThreadPoolExecutor(args.submitters) as pool:
                return list(pool.map(post_call, range(count)))

        def queue_calls() -> list[str]:
            ids = [
                str(llm_call_start(project=project, query=f"What is AI? ({i})", blob=BLOB).id)
                for i in range(args.calls)
            ]
            if not dispatcher.flush(timeout=300):
                raise SystemExit("the LLM jobs' messages were not all published")
            return ids

        def publish_sleeps() -> list[str]:
            def publish(i: int) -> str:
                return app.send_task(
                    "bench_sleep_task", args=[args.latency], queue=HIGH_PRIORITY_QUEUE, priority=HIGH_PRIORITY
                ).id

            with ThreadPoolExecutor(args.submitters) as pool:
                return list(pool.map(publish, range(args.calls)))

        def llm_finished(ids: list[str]) -> float:
            jobs = Job.objects.filter(id__in=ids)

            def done() -> bool:
                failed = jobs.filter(status=JobStatus.FAILED).first()
                if failed:
                    raise SystemExit(f"an LLM job failed: {failed.error}")
                return jobs.filter(status=JobStatus.SUCCESS).count() == len(ids)

            wait_for(done, timeout=900, what="all LLM jobs to succeed", interval=0.25)
            return jobs.aggregate(end=Max("finished_at"))["end"].timestamp()

        def raw_finished(ids: list[str]) -> float:
            results = TaskResult.objects.filter(task_id__in=ids)
            wait_for(lambda: results.filter(status="SUCCESS").count() == len(ids), timeout=900,
                     what="all raw tasks", interval=0.25)  # fmt: skip
            return results.aggregate(end=Max("date_done"))["end"].timestamp()

        def pause() -> None:
            app.control.cancel_consumer(HIGH_PRIORITY_QUEUE, destination=names, reply=True)

        def resume() -> float:
            app.control.add_consumer(HIGH_PRIORITY_QUEUE, destination=names, reply=True)
            log("workers resumed")
            return time.time()

        def measure(label: str, queue_first: bool, submit, finished) -> Row:
            log(f"{label}: {args.calls} …")
            if queue_first:
                pause()
                ids = submit()
                cpu0, fake0 = cpu_seconds(worker_pids), cpu_seconds([fake.pid])
                t0 = resume()
            else:
                cpu0, web0, fake0 = cpu_seconds(worker_pids), cpu_seconds(web_pids()), cpu_seconds([fake.pid])
                t0 = time.time()
                ids = submit()
                web_ms = (cpu_seconds(web_pids()) - web0) / args.calls * 1000
            seconds = finished(ids) - t0
            row = Row(label, args.calls, seconds, (cpu_seconds(worker_pids) - cpu0) / args.calls * 1000)
            row.provider_cpu_ms = (cpu_seconds([fake.pid]) - fake0) / args.calls * 1000
            if not queue_first:
                row.web_cpu_ms = web_ms
            log(f"{label}: {row.rate:.0f}/s")
            return row

        peak = {"connections": 0}
        stop_sampling = threading.Event()

        def sample_connections() -> None:
            import psycopg

            with psycopg.connect(f"{env['KAAPI_PG_URL']}/postgres", autocommit=True) as conn:
                while not stop_sampling.wait(0.2):
                    sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                    peak["connections"] = max(peak["connections"], conn.execute(sql, [DB_NAME]).fetchone()[0])

        threading.Thread(target=sample_connections, daemon=True).start()
        # Warm-up (connections, pools, caches), finished before anything is measured.
        llm_finished(submit_calls(min(args.calls, 1000)))
        llm_rows, raw_rows = [], []
        for _ in range(args.rounds):
            llm_rows.append(measure("LLM calls, queued first", True, queue_calls, llm_finished))
            raw_rows.append(measure("raw sleep tasks, queued first", True, publish_sleeps, raw_finished))
        api_row = measure("LLM calls, through the API", False, submit_calls, llm_finished)
        stop_sampling.set()
    finally:
        procs.stop()

    ratios = [llm.rate / raw.rate for llm, raw in zip(llm_rows, raw_rows, strict=True)]
    print()
    print(
        f"### LLM calls: {args.calls} calls against a provider with {args.latency} s latency, same pool as raw Celery"
        f" ({args.rounds} alternating queued-first rounds)"
    )
    print()
    print("| | count | seconds | per second | worker CPU ms each | web CPU ms each | fake provider CPU ms each |")
    print("|---|---|---|---|---|---|---|")

    def each(values: list[float], spec: str) -> str:
        return " / ".join(format(value, spec) for value in values)

    for rows in (llm_rows, raw_rows, [api_row]):
        web_cpu = each([row.web_cpu_ms for row in rows], ".1f") if rows[0].web_cpu_ms is not None else "-"
        print(
            f"| {rows[0].label} | {rows[0].count} | {each([row.seconds for row in rows], '.2f')} "
            f"| {each([row.rate for row in rows], '.0f')} | {each([row.worker_cpu_ms for row in rows], '.1f')} "
            f"| {web_cpu} | {each([row.provider_cpu_ms for row in rows], '.1f')} |"
        )
    print()
    print(
        f"(ratio LLM / raw, both queued first, per round: {' / '.join(f'{r:.2f}' for r in ratios)}; "
        f"median {statistics.median(ratios):.2f}; "
        f"{args.workers} {args.pool} worker(s) x {args.concurrency}, prefetch x{args.prefetch_multiplier}, "
        f"peak PostgreSQL connections {peak['connections']}; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)"
    )


@dataclass
class Row:
    label: str
    count: int
    seconds: float
    worker_cpu_ms: float
    web_cpu_ms: float | None = None
    provider_cpu_ms: float = 0.0

    @property
    def rate(self) -> float:
        return self.count / self.seconds


BLOB = {"completion": {"provider": "openai-chat", "params": {"model": "bench-model"}}}


if __name__ == "__main__":
    main()
