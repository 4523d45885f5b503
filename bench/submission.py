"""Submission: POST /api/v1/llm/call under gunicorn with 64 concurrent clients, beside a trivial authenticated
DRF endpoint (GET /api/v1/whoami/) on the same server in the same run; and the poll of a job (GET
/api/v1/jobs/{id}/), the request clients send most, measured the same way (its capacity, no goal).

The server is the documented production web command (gunicorn, sync workers); the client is a small asyncio
HTTP/1.1 client in this process (one connection per request, as gunicorn's sync workers close it). No worker
runs: submission is measured alone, the jobs stay queued and are purged afterwards.

Two phases per endpoint:
  capacity  closed loop: 64 clients send back to back; requests/s is the server's capacity. (Latency here is
            only queueing: with 64 requests always in flight it is 64 / capacity by Little's law.) --rounds
            alternating rounds (trivial, llm/call, then the poll), a ratio per round and their median: on a
            shared machine one pair of phases moves by ±15 %.
  latency   open loop: 64 clients together send --load-fraction of the llm/call capacity at a steady rate,
            each request timed from when it was due (no coordinated omission); p50/p99.
Goal: llm/call capacity at least 0.5x the trivial endpoint's, and p99 under 100 ms under load.

Each capacity round also counts CPU per request: the whole machine's (/proc/stat), the web server's and the
client's, so that the capacity ratio can be read against the CPU each endpoint costs (web, client, and the rest:
PostgreSQL, RabbitMQ, the kernel).

Each round ends with the durable minimum of an accepted job, measured in this process without HTTP or the API
(--minimum-threads threads for --minimum-seconds): the job's INSERT (jobs.sql.insert, the statement the API runs)
and its message published with a publisher confirm (jobs.publishing.publish_job, Celery's send_task as the
dispatcher runs it). Its machine CPU per job bounds the ratio any implementation of these rules can reach here: a
call that cost the trivial request plus exactly that minimum would reach trivial / (trivial + minimum).

Then, in the same run (``--phases``):
  batch      accepted LLM calls per second through one POST /api/v1/llm/call/batch of --batch-size calls against
             the same calls one request each (--clients at a time), --batch-rounds alternating rounds, each
             measured after the previous one's jobs were published (goal: at least 10x, and the batch answered in
             under 1 s p50).
  scheduled  --scheduled delayed jobs (echo) due at random times within the same --scheduled-window seconds, run
             by a real worker, published by a real beat's due-job sweep: how late each started after its
             run_after, p50/p99 (goal: within 2 s).

    python bench/submission.py --clients 64 --seconds 10 --rounds 3
    python bench/submission.py --phases batch,scheduled --batch-size 50 --scheduled 50 --scheduled-window 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import LOG_DIR, percentile, print_table, purge, set_max_concurrent_jobs, setup_environment  # noqa: E402

HOST = "127.0.0.1"
UNLIMITED = 2**31 - 1  # a project's max_concurrent_jobs that no run reaches (the column's largest value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def build_request(method: str, path: str, api_key: str, body: dict | None, port: int) -> bytes:
    payload = json.dumps(body).encode() if body is not None else b""
    head = [
        f"{method} {path} HTTP/1.1",
        f"Host: {HOST}:{port}",
        f"X-API-KEY: {api_key}",
        "Connection: close",
        f"Content-Length: {len(payload)}",
    ]
    if body is not None:
        head.append("Content-Type: application/json")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


async def send(port: int, raw: bytes) -> int | None:
    """One request on a new connection; its status code, or None when the exchange failed."""
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(raw)
        await writer.drain()
        data = await reader.read()
        writer.close()
        return int(data.split(b" ", 2)[1])
    except (OSError, ValueError, IndexError):
        return None


async def load(port: int, raw: bytes, *, clients: int, seconds: float, expect: int) -> tuple[int, list[float], int]:
    """Closed loop: ``clients`` coroutines each send one request after another for ``seconds``."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            status = await send(port, raw)
            if status != expect:
                errors += 1
                if status is None:
                    continue
            latencies.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(client() for _ in range(clients)))
    return len(latencies), latencies, errors


async def paced(port: int, raw: bytes, *, clients: int, rate: float, seconds: float, expect: int):
    """Open loop: ``rate`` requests/s in all, spread over ``clients`` connections, timed from their due time."""
    latencies: list[float] = []
    errors = 0
    per_client = rate / clients
    start = time.perf_counter() + 0.1

    async def client(index: int) -> None:
        nonlocal errors
        n = 0
        while True:
            due = start + (index / clients + n) / per_client
            if due > start + seconds:
                return
            n += 1
            if (pause := due - time.perf_counter()) > 0:
                await asyncio.sleep(pause)
            status = await send(port, raw)
            if status != expect:
                errors += 1
                if status is None:
                    continue
            latencies.append((time.perf_counter() - due) * 1000)

    await asyncio.gather(*(client(i) for i in range(clients)))
    return latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (docker-compose uses 4)")
    parser.add_argument("--load-fraction", type=float, default=0.5, help="open-loop rate, as a fraction of capacity")
    parser.add_argument("--rounds", type=int, default=3, help="alternating capacity rounds (default 3)")
    parser.add_argument("--minimum-threads", type=int, default=16, help="threads of the durable-minimum phase")
    parser.add_argument("--minimum-seconds", type=float, default=4.0, help="length of the durable-minimum phase")
    parser.add_argument("--phases", default="capacity,batch,scheduled", help="of capacity, batch, scheduled")
    parser.add_argument("--batch-size", type=int, default=1000, help="calls in one bulk request")
    parser.add_argument("--batch-rounds", type=int, default=3, help="alternating batch / one-by-one rounds")
    parser.add_argument("--scheduled", type=int, default=1000, help="delayed jobs of the lateness phase")
    parser.add_argument("--scheduled-window", type=float, default=60.0, help="seconds the delayed jobs are due in")
    parser.add_argument("--output")
    args = parser.parse_args()
    phases = set(args.phases.split(","))

    setup_environment("submission")
    from jobs.services import job_create
    from kaapi.celery import app
    from tenancy.services import api_key_create, project_get_or_create

    project = project_get_or_create(organization_name="bench", project_name="submission")
    # No worker runs, so no job finishes: every accepted job is published, as the phases measure, only under a limit
    # above all the jobs the run submits.
    set_max_concurrent_jobs(project, UNLIMITED)
    api_key = api_key_create(project=project).plaintext
    call_body = prepare_llm_call(project)
    polled = job_create(project=project, function_path="jobs.functions.echo", params={"polled": True})
    purge(app)

    port = free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "kaapi.wsgi:application",
            "--bind",
            f"{HOST}:{port}",
            "--workers",
            str(args.workers),
            "--log-level",
            "warning",
        ],
        env={**os.environ, "LOG_LEVEL": "WARNING"},
        stdout=open(LOG_DIR / "gunicorn.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("gunicorn did not start; see var/bench-logs/gunicorn.log") from None
                time.sleep(0.2)
        trivial = build_request("GET", "/api/v1/whoami/", api_key, None, port)
        submit = build_request("POST", call_body[0], api_key, call_body[1], port)
        poll = build_request("GET", f"/api/v1/jobs/{polled.id}/", api_key, None, port)
        if "capacity" in phases:
            endpoints = (("trivial", trivial, 200), ("submit", submit, 202), ("poll", poll, 200))
            for _, raw, expect in endpoints:  # warm up every gunicorn worker on each endpoint
                asyncio.run(load(port, raw, clients=8, seconds=2, expect=expect))
            measured: dict[str, list[tuple[float, list[float], int]]] = {name: [] for name, _, _ in endpoints}
            cpu: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _, _ in endpoints}
            minimum: list[tuple[float, float]] = []  # (jobs/s, machine CPU ms per job) of each round
            for _ in range(args.rounds):
                for name, raw, expect in endpoints:
                    before = cpu_now(server.pid)
                    count, latencies, errors = asyncio.run(
                        load(port, raw, clients=args.clients, seconds=args.seconds, expect=expect)
                    )
                    after = cpu_now(server.pid)
                    cpu[name].append(tuple((b - a) / max(count, 1) * 1000 for a, b in zip(before, after, strict=True)))
                    measured[name].append((count / args.seconds, latencies, errors))
                minimum.append(
                    durable_minimum(project, call_body[1], threads=args.minimum_threads, seconds=args.minimum_seconds)
                )
            rate = args.load_fraction * statistics.median(r for r, _, _ in measured["submit"])
            paced_results = {
                name: asyncio.run(
                    paced(port, raw, clients=args.clients, rate=rate, seconds=args.seconds, expect=expect)
                )
                for name, raw, expect in (("trivial", trivial, 200), ("submit", submit, 202))
            }
        if "batch" in phases:
            batch_results = batch_phase(
                port, api_key, call_body, size=args.batch_size, rounds=args.batch_rounds, clients=args.clients
            )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
        purge(app)
    lines = []
    if "batch" in phases:
        lines.append(batch_line(*batch_results, size=args.batch_size, clients=args.clients))
    if "scheduled" in phases:
        lines.append(scheduled_phase(project, count=args.scheduled, window=args.scheduled_window))
    for line in lines:
        print(line)
    if args.output and lines:
        with open(args.output, "a") as fh:
            fh.write("\n\n".join(lines) + "\n\n")
    if "capacity" in phases:
        report_capacity(args, measured, cpu, minimum, paced_results, rate, call_body)


def report_capacity(args, measured, cpu, minimum, paced_results, rate, call_body) -> None:
    t_rates = [r for r, _, _ in measured["trivial"]]
    s_rates = [r for r, _, _ in measured["submit"]]
    p_rates = [r for r, _, _ in measured["poll"]]
    ratios = [s / t for s, t in zip(s_rates, t_rates, strict=True)]
    p_ratios = [p / t for p, t in zip(p_rates, t_rates, strict=True)]
    t_err = sum(e for _, _, e in measured["trivial"])
    s_err = sum(e for _, _, e in measured["submit"])
    p_err = sum(e for _, _, e in measured["poll"])
    tp_lat, tp_err = paced_results["trivial"]
    sp_lat, sp_err = paced_results["submit"]

    def per_round(values: list[float], spec: str) -> str:
        return " / ".join(format(v, spec) for v in values)

    rows = [
        (
            "GET /api/v1/whoami/ (trivial, authenticated)",
            per_round(t_rates, ",.0f"),
            "—",
            "—",
            f"{percentile(tp_lat, 50):.1f}",
            f"{percentile(tp_lat, 99):.1f}",
            str(t_err + tp_err),
        ),
        (
            f"POST {call_body[0]}",
            per_round(s_rates, ",.0f"),
            per_round(ratios, ".2f"),
            f"{statistics.median(ratios):.2f}",
            f"{percentile(sp_lat, 50):.1f}",
            f"{percentile(sp_lat, 99):.1f}",
            str(s_err + sp_err),
        ),
        (
            "GET /api/v1/jobs/{id}/ (poll)",
            per_round(p_rates, ",.0f"),
            per_round(p_ratios, ".2f"),
            f"{statistics.median(p_ratios):.2f} (no goal)",
            "—",
            "—",
            str(p_err),
        ),
    ]
    table = print_table(
        f"Submission under gunicorn ({args.workers} sync workers), {args.clients} concurrent clients: capacity "
        f"(closed loop) and latency at {rate:,.0f} requests/s (open loop, {args.load_fraction:g} of llm/call "
        f"capacity), {args.seconds:g} s each, {args.rounds} alternating capacity rounds",
        rows,
        (
            "endpoint",
            "capacity req/s per round",
            "ratio per round",
            "median ratio (goal ≥ 0.5)",
            "p50 ms",
            "p99 ms (goal < 100)",
            "errors",
        ),
    )
    t_lat = [ms for _, latencies, _ in measured["trivial"] for ms in latencies]
    s_lat = [ms for _, latencies, _ in measured["submit"] for ms in latencies]
    print(
        f"(closed-loop latency, queueing only: trivial p50 {percentile(t_lat, 50):.0f} ms, "
        f"llm/call p50 {percentile(s_lat, 50):.0f} ms)"
    )
    print(cpu_line(cpu))
    print(minimum_line(minimum, cpu, threads=args.minimum_threads))
    if args.output:
        with open(args.output, "a") as fh:
            fh.write(table + "\n\n" + cpu_line(cpu) + "\n\n" + minimum_line(minimum, cpu, threads=args.minimum_threads))
            fh.write("\n\n")


def cpu_now(server_pid: int) -> tuple[float, float, float]:
    """CPU seconds so far: the whole machine (/proc/stat: user, nice, system, irq, softirq), the web server
    (gunicorn's master and workers), and this process (the client)."""
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in Path("/proc/stat").read_text().split()[1:8])
    busy = user + nice + system + irq + softirq
    children = subprocess.run(["pgrep", "-P", str(server_pid)], capture_output=True, text=True).stdout.split()
    web = 0
    for pid in [server_pid, *map(int, children)]:
        try:
            web += sum(int(x) for x in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13])
        except (FileNotFoundError, IndexError):
            continue
    client = sum(os.times()[:2])
    return busy / tick, web / tick, client


def cpu_line(cpu: dict[str, list[tuple[float, float, float]]]) -> str:
    """Median CPU ms per request of each endpoint: the machine's, the web server's, the client's, the rest's."""

    def parts(name: str) -> str:
        machine, web, client = (statistics.median(values) for values in zip(*cpu[name], strict=True))
        return f"{machine:.1f} (web server {web:.1f}, client {client:.1f}, the rest {machine - web - client:.1f})"

    return (
        f"(CPU ms per request, medians of the capacity rounds, the whole machine and of it the web server, the "
        f"client, and the rest (PostgreSQL, RabbitMQ, the kernel): trivial {parts('trivial')}; llm/call "
        f"{parts('submit')}; poll {parts('poll')})"
    )


def durable_minimum(project, params: dict, *, threads: int, seconds: float) -> tuple[float, float]:
    """Jobs/s and machine CPU ms per job of the two things an accepted job cannot go without here, from ``threads``
    threads for ``seconds``: its INSERT, and its message published and confirmed by the broker (no HTTP, no API,
    no validation, no dispatch record): jobs of ``project`` with ``params`` (the LLM call's body, for its size)."""
    import threading

    from django.db import connection

    from jobs.models import Job
    from jobs.publishing import new_task_id, publish_job
    from jobs.sql import insert

    counts: list[int] = []
    failures: list[int] = []

    def run(stop_at: float) -> None:
        done = failed = 0
        try:
            while time.perf_counter() < stop_at:
                job = Job(
                    project=project,
                    job_type="echo",
                    function_path="jobs.functions.echo",
                    queue="high_priority",
                    priority=9,
                    params=params,
                    task_id=new_task_id(),
                )
                insert(job)
                if publish_job(job):
                    done += 1
                else:
                    failed += 1
        finally:
            connection.close()
            counts.append(done)
            failures.append(failed)

    stop_at = time.perf_counter() + seconds
    workers = [threading.Thread(target=run, args=(stop_at,)) for _ in range(threads)]
    before, started = cpu_now(os.getpid())[0], time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed, machine = time.perf_counter() - started, cpu_now(os.getpid())[0] - before
    if sum(failures):
        raise RuntimeError(f"{sum(failures)} job messages were not confirmed by the broker")
    return sum(counts) / elapsed, machine / max(sum(counts), 1) * 1000


def minimum_line(
    minimum: list[tuple[float, float]], cpu: dict[str, list[tuple[float, float, float]]], *, threads: int
) -> str:
    """The durable minimum's figures and the ratio it leaves room for, beside the trivial request's CPU."""
    rate = statistics.median(r for r, _ in minimum)
    per_job = statistics.median(c for _, c in minimum)
    trivial = statistics.median(machine for machine, _, _ in cpu["trivial"])
    call = statistics.median(machine for machine, _, _ in cpu["submit"])
    return (
        f"(the durable minimum of an accepted job, in-process with {threads} threads, no HTTP or API: its INSERT and "
        f"its confirmed message, {per_job:.2f} ms of machine CPU per job ({rate:,.0f} jobs/s), medians of the "
        f"rounds. The trivial request costs {trivial:.2f} ms: a call costing it plus exactly that minimum would "
        f"reach {trivial / (trivial + per_job):.2f}x; llm/call costs {call:.2f} ms, "
        f"{call - trivial - per_job:.2f} ms above that bound)"
    )


# --- Bulk LLM calls ------------------------------------------------------------------------------------
def wait_published(timeout: float = 300) -> None:
    """Until the web server's dispatchers have published every accepted job (none left PENDING undispatched), so
    that one phase's publishing does not run into the next phase's measurement."""
    from jobs.models import Job

    deadline = time.monotonic() + timeout
    while Job.objects.undispatched().exists():
        if time.monotonic() > deadline:
            raise RuntimeError("accepted jobs were not published")
        time.sleep(0.2)


def batch_phase(port: int, api_key: str, call_body: tuple[str, dict], *, size: int, rounds: int, clients: int):
    """Seconds to accept ``size`` LLM calls through one bulk request and one request each, per round."""
    from kaapi.celery import app

    calls = [{**call_body[1], "query": f"What is AI? #{i}"} for i in range(size)]
    bulk = build_request("POST", "/api/v1/llm/call/batch", api_key, {"calls": calls}, port)
    singles = [build_request("POST", call_body[0], api_key, call, port) for call in calls]

    async def one_by_one() -> int:
        pending = list(reversed(singles))
        errors = 0

        async def client() -> None:
            nonlocal errors
            while pending:
                if await send(port, pending.pop()) != 202:
                    errors += 1

        await asyncio.gather(*(client() for _ in range(min(clients, size))))
        return errors

    asyncio.run(send(port, bulk))  # warm up
    wait_published()
    bulk_seconds, single_seconds, errors = [], [], 0
    for _ in range(rounds):
        started = time.perf_counter()
        if asyncio.run(send(port, bulk)) != 202:
            errors += 1
        bulk_seconds.append(time.perf_counter() - started)
        wait_published()
        started = time.perf_counter()
        errors += asyncio.run(one_by_one())
        single_seconds.append(time.perf_counter() - started)
        wait_published()
        purge(app)
    return bulk_seconds, single_seconds, errors


def batch_line(bulk_seconds: list[float], single_seconds: list[float], errors: int, *, size: int, clients: int) -> str:
    ratios = [single / bulk for bulk, single in zip(bulk_seconds, single_seconds, strict=True)]
    return (
        f"Bulk LLM calls, {size} calls accepted per round, {len(ratios)} alternating rounds: one POST "
        f"/api/v1/llm/call/batch {statistics.median(size / t for t in bulk_seconds):,.0f} calls/s "
        f"(answered in p50 {statistics.median(bulk_seconds) * 1000:.0f} ms, max {max(bulk_seconds) * 1000:.0f} ms; "
        f"goal < 1 s), one request each with {min(clients, size)} clients "
        f"{statistics.median(size / t for t in single_seconds):,.0f} calls/s; ratio per round "
        f"{' / '.join(f'{r:.1f}' for r in ratios)}, median {statistics.median(ratios):.1f}x (goal ≥ 10x); "
        f"errors {errors}"
    )


# --- Delayed jobs -----------------------------------------------------------------------------------------
def scheduled_phase(project, *, count: int, window: float) -> str:
    """Lateness (start minus run_after) of ``count`` echo jobs due at random times within ``window`` seconds, run by
    a real worker and published by a real beat's due-job sweep."""
    import random
    from datetime import timedelta

    from django.db import transaction
    from django.db.models import F
    from django.utils import timezone

    from bench.harness import kaapi_worker
    from jobs.models import Job, JobStatus
    from jobs.services import job_create_many
    from kaapi.celery import app

    purge(app)
    worker = kaapi_worker("high_priority,low_priority,cron", concurrency=2)
    beat_log = LOG_DIR / "beat.log"
    beat = subprocess.Popen(
        [sys.executable, "manage.py", "run_beat", "--max-interval", "1", "--loglevel", "info"],
        env={**os.environ, "BEAT_LOCK_BACKEND": "postgres", "LOG_LEVEL": "INFO"},
        stdout=open(beat_log, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while b"this beat schedules" not in beat_log.read_bytes():
            if time.monotonic() > deadline or beat.poll() is not None:
                raise RuntimeError(f"beat did not start; see {beat_log}")
            time.sleep(0.2)
        rng = random.Random(20)
        start = timezone.now() + timedelta(seconds=5)
        run_afters = sorted(start + timedelta(seconds=rng.uniform(0, window)) for _ in range(count))
        with transaction.atomic():
            jobs = job_create_many(
                project=project,
                function_path="jobs.functions.echo",
                params_list=[{"delay": 0, "i": i} for i in range(count)],
                priority="high",
                run_afters=run_afters,
            )
        ids = [job.id for job in jobs]
        deadline = time.monotonic() + window + 300
        while Job.objects.filter(id__in=ids, status=JobStatus.SUCCESS).count() < count:
            if time.monotonic() > deadline:
                raise RuntimeError("the delayed jobs did not all run")
            time.sleep(1)
    finally:
        os.killpg(beat.pid, signal.SIGTERM)
        beat.wait(30)
        worker.stop()
        purge(app)
    lateness = [
        (started - due).total_seconds() * 1000
        for started, due in Job.objects.filter(id__in=ids).values_list("started_at", "run_after")
    ]
    early = Job.objects.filter(id__in=ids, started_at__lt=F("run_after")).count()
    return (
        f"Delayed jobs: {count} echo jobs due at random within {window:g} s, published by beat's due-job sweep "
        f"(every JOB_SCHEDULED_SWEEP_SECONDS), run by one prefork worker (2 processes): start minus run_after p50 "
        f"{percentile(lateness, 50):.0f} ms, p99 {percentile(lateness, 99):.0f} ms, max {max(lateness):.0f} ms "
        f"(goal: within 2 s); started early: {early}"
    )


def prepare_llm_call(project) -> tuple[str, dict]:
    """Credentials and a versioned config for ``project``; the path and body of an LLM call that uses them.

    The credentials keep the provider's default base URL: no worker runs here, so nothing is ever sent to it."""
    from llm.services import config_create, credential_set

    credential_set(project=project, provider="openai", api_key="sk-bench-not-a-real-key-0000")
    config = config_create(
        project=project,
        name=f"bench-{time.time_ns()}",
        blob={"completion": {"provider": "openai", "params": {"model": "gpt-4o-mini", "temperature": 0.2}}},
    )
    return "/api/v1/llm/call", {
        "config": {"id": config.id, "version": 1},
        "query": "What is AI?",
        "request_metadata": {"conversation": 42},
    }


if __name__ == "__main__":
    main()
