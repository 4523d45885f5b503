#!/usr/bin/env python
"""Fair sharing between projects (issue 18): one project's flood against another's calls, and a provider
credential's requests-per-minute limit against a provider that enforces it, measured side by side in one run.

The documented high-priority layout (one gevent worker per core x 300 greenlets, prefetch x2, as
bench/llm_throughput.py runs it), a fake provider with 0.5 s latency (tests/fakes/llm_provider.py, its own
process), the credentials' counters in Redis. LLM calls are created by the service ``POST /api/v1/llm/call``
runs (``llm.services.llm_call_start``, in this process: the same jobs, admission and messages, without the web
server). Every call must end SUCCESS.

1. B alone: project B sends --b-calls calls, one every --b-interval seconds, to idle workers; each call's time
   from submission to SUCCESS (``finished_at - created_at``).
2. The flood: the workers stop consuming, project A creates --calls calls (admission publishes what A's
   ``max_concurrent_jobs`` allows, the rest wait PENDING), the workers resume; --b-delay seconds later B sends
   its calls as in 1. A's throughput: its calls / (its last ``finished_at`` - its first submission), so that the
   publishing of the whole flood counts in both modes. Measured twice per
   round, in alternating order: fairness on (A's ``max_concurrent_jobs`` --a-limit, near the workers'
   concurrency) and off (A's limit its whole flood: every call in RabbitMQ at once, the layout before admission).
   Goals: B's p95 during the flood at most max(3x B alone, 2 s) with fairness on; A's throughput with fairness on
   at least 0.9x with fairness off.
3. A credential limited to --rpm requests per minute, calling a provider that answers 429 to a key's calls beyond
   --rpm in any 60 s: a project submits --rate-multiple x --rpm calls at once. Goals: all SUCCESS, at most 2 % of
   them answered 429, and the last one finished within 10 % of the time the limit allows: the first --rpm calls
   at once, each next --rpm a minute later, plus one call's latency: 10 x N calls take nine minutes whatever N
   (the limit is per minute), most of this benchmark's time; --rate-multiple 2 measures the same in one minute.

    .venv/bin/python bench/fairness.py [--calls 3000] [--latency 0.5] [--a-limit 300] [--rounds 3] [--rpm 60]
                                       [--rate-multiple 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    LOG_DIR,
    kaapi_worker,
    percentile,
    print_table,
    purge,
    set_max_concurrent_jobs,
    setup_environment,
)

ROOT = Path(__file__).resolve().parent.parent
BLOB = {"completion": {"provider": "openai-chat", "params": {"model": "bench-model"}}}
RATE_WINDOW = 60.0  # the provider's window, and the limiter's minute


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000, help="project A's flood (default 3000)")
    parser.add_argument("--latency", type=float, default=0.5, help="fake provider latency, s (default 0.5)")
    parser.add_argument("--b-calls", type=int, default=20, help="project B's calls (default 20)")
    parser.add_argument("--b-interval", type=float, default=0.1, help="seconds between B's calls (default 0.1)")
    parser.add_argument("--b-delay", type=float, default=1.0, help="B starts this long after the flood (default 1)")
    parser.add_argument(
        "--a-limit", type=int, help="A's max_concurrent_jobs with fairness on (default: one worker's concurrency)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="flood rounds, fairness on and off in each (default 3)")
    parser.add_argument(
        "--workers", type=int, default=min(os.cpu_count() or 1, 4), help="gevent workers (one per core, at most 4)"
    )
    parser.add_argument("--concurrency", type=int, default=300, help="greenlets per worker (default 300)")
    parser.add_argument("--prefetch-multiplier", type=int, default=2, help="messages reserved per greenlet (2)")
    parser.add_argument("--rpm", type=int, default=60, help="the limited credential's requests per minute (60)")
    parser.add_argument("--rate-multiple", type=int, default=10, help="calls against it: this x --rpm (default 10)")
    parser.add_argument("--output", help="append the markdown tables to this file")
    args = parser.parse_args()
    a_limit = args.a_limit or args.concurrency
    if a_limit >= args.calls:
        parser.error("--a-limit must be below --calls: with fairness on, A's flood must wait for admission")

    os.environ.update(
        LLM_ALLOW_PRIVATE_BASE_URLS="true",
        LLM_HTTP_POOL_MAXSIZE=str(args.concurrency),
        CELERY_WORKER_PREFETCH_MULTIPLIER=str(args.prefetch_multiplier),
        PYTHONUNBUFFERED="1",
    )
    setup_environment("fairness", redis=True)
    from django.db.models import Max

    from jobs.admission import dispatcher
    from jobs.models import Job, JobStatus
    from kaapi import ratelimit
    from kaapi.celery import HIGH_PRIORITY_QUEUE, app
    from llm.services import credential_set, llm_call_start
    from tenancy.services import project_get_or_create
    from tests.fakes.llm_provider import FakeProvider

    purge(app)
    # The database is new, so its credentials' ids are too: counters an earlier run left in Redis must not count.
    client = ratelimit.redis_client()
    for key in client.scan_iter(f"{ratelimit.namespace()}:*"):
        client.delete(key)

    LOG_DIR.mkdir(parents=True, exist_ok=True)
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.llm_provider", "--latency", str(args.latency)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=open(LOG_DIR / "fairness-provider.log", "wb"),  # noqa: SIM115 - closed with the process
    )
    rate_limited_provider = FakeProvider(latency=args.latency, rate_limit=args.rpm, rate_window=RATE_WINDOW).start()
    workers = []
    try:
        fake_url = fake.stdout.readline().decode().strip()
        project_a = project_get_or_create(organization_name="bench", project_name="flood-a")
        project_b = project_get_or_create(organization_name="bench", project_name="steady-b")
        project_r = project_get_or_create(organization_name="bench", project_name="rate-limited")
        for project, key in ((project_a, "sk-bench-a-0000"), (project_b, "sk-bench-b-0000")):
            credential_set(project=project, provider="openai-chat", api_key=key, base_url=f"{fake_url}/v1")
        credential_set(
            project=project_r,
            provider="openai-chat",
            api_key="sk-bench-rate-0000",
            base_url=f"{rate_limited_provider.url}/v1",
            requests_per_minute=args.rpm,
        )
        workers = [
            kaapi_worker(HIGH_PRIORITY_QUEUE, pool="gevent", concurrency=args.concurrency, label=f"fair{i + 1}")
            for i in range(args.workers)
        ]
        log(f"{args.workers} gevent worker(s) x {args.concurrency}, prefetch x{args.prefetch_multiplier}; "
            f"fake provider at {fake_url} ({args.latency} s latency)")  # fmt: skip

        def submit(project, count: int, *, interval: float = 0.0, label: str) -> list[str]:
            ids = []
            start = time.perf_counter()
            for i in range(count):
                if interval and (pause := start + i * interval - time.perf_counter()) > 0:
                    time.sleep(pause)
                ids.append(str(llm_call_start(project=project, query=f"{label} {i}", blob=BLOB).id))
            return ids

        def finished(ids: list[str], *, timeout: float) -> list[tuple[datetime, datetime]]:
            """(created_at, finished_at) of ``ids`` once every one is SUCCESS."""
            jobs = Job.objects.filter(id__in=ids)
            deadline = time.monotonic() + timeout
            while jobs.filter(status=JobStatus.SUCCESS).count() < len(ids):
                failed = jobs.filter(status__in=[JobStatus.FAILED, JobStatus.CANCELLED]).first()
                if failed:
                    raise SystemExit(f"a job ended {failed.status}: {failed.error}")
                if time.monotonic() > deadline:
                    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {len(ids)} jobs to succeed")
                time.sleep(0.2)
            return list(jobs.values_list("created_at", "finished_at"))

        def seconds_to_success(rows: list[tuple[datetime, datetime]]) -> list[float]:
            return [(done - created).total_seconds() for created, done in rows]

        names = [worker.name for worker in workers]

        def pause() -> None:
            app.control.cancel_consumer(HIGH_PRIORITY_QUEUE, destination=names, reply=True)

        def resume() -> None:
            app.control.add_consumer(HIGH_PRIORITY_QUEUE, destination=names, reply=True)

        def flood(limit: int) -> dict:
            label = "on" if limit < args.calls else "off"
            set_max_concurrent_jobs(project_a, limit)
            # A's calls queue up while the workers are paused (in-process submission is no faster than the workers,
            # so a flood needs a pause to build). A's time counts from its first submission in both modes: with
            # fairness off its calls are published as they are submitted, with it on most are published later by
            # admission; either way all of the flood's publishing is inside the measured time.
            pause()
            t0 = time.time()
            a_ids = submit(project_a, args.calls, label=f"flood {label}")
            if not dispatcher.flush(timeout=300):
                raise SystemExit("the flood's admitted messages were not all published")
            published = Job.objects.filter(id__in=a_ids, dispatched_at__isnull=False).count()
            resume()
            time.sleep(args.b_delay)
            a_left = Job.objects.filter(id__in=a_ids).exclude(status=JobStatus.SUCCESS).count()
            b_ids = submit(project_b, args.b_calls, interval=args.b_interval, label=f"steady {label}")
            b_rows = finished(b_ids, timeout=600)
            finished(a_ids, timeout=900)
            a_end = Job.objects.filter(id__in=a_ids).aggregate(end=Max("finished_at"))["end"].timestamp()
            result = {
                "limit": limit,
                "published": published,
                "a_left": a_left,
                "a_rate": args.calls / (a_end - t0),
                "a_seconds": a_end - t0,
                "b": seconds_to_success(b_rows),
                "b_during": max(done for _, done in b_rows).timestamp() < a_end,
            }
            log(f"fairness {label} (A's limit {limit}): A {result['a_rate']:.0f} calls/s, "
                f"B p95 {percentile(result['b'], 95):.2f} s")  # fmt: skip
            return result

        # Warm-up (connections, pools, the workers' prepared statements), finished before anything is measured.
        set_max_concurrent_jobs(project_a, args.calls)
        finished(submit(project_a, min(args.calls, 1000), label="warm-up"), timeout=600)
        finished(submit(project_b, args.b_calls, label="warm-up"), timeout=120)
        log("warmed up")

        alone = seconds_to_success(
            finished(submit(project_b, args.b_calls, interval=args.b_interval, label="alone"), timeout=120)
        )
        log(f"B alone: p95 {percentile(alone, 95):.2f} s")
        on, off = [], []
        for i in range(args.rounds):
            for limit in (a_limit, args.calls) if i % 2 == 0 else (args.calls, a_limit):
                (on if limit == a_limit else off).append(flood(limit))

        # The credential limit: the provider's window starts empty, as the limiter's does.
        count = args.rate_multiple * args.rpm
        log(f"rate limit: {count} calls against {args.rpm} requests per minute …")
        rate_rows = finished(submit(project_r, count, label="limited"), timeout=RATE_WINDOW * args.rate_multiple + 300)
        rate_elapsed = (max(done for _, done in rate_rows) - min(created for created, _ in rate_rows)).total_seconds()
        answered_429 = rate_limited_provider.rate_limited
        provider_calls = len(rate_limited_provider.calls)
        most_in_window = rate_limited_provider.max_calls_in_window(RATE_WINDOW)
        started_again = Job.objects.filter(project=project_r, attempts__gt=1).count()  # deferred, or retried
    finally:
        for worker in workers:
            worker.stop()
        fake.terminate()
        fake.wait(30)
        rate_limited_provider.stop()
        purge(app)

    # --- Tables ---------------------------------------------------------------------------------------------
    alone_p95 = percentile(alone, 95)
    goal = max(3 * alone_p95, 2.0)
    note = (
        f"({args.workers} gevent worker(s) x {args.concurrency}, prefetch x{args.prefetch_multiplier}; provider "
        f"latency {args.latency} s; {args.rounds} round(s), fairness on and off in alternating order; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)"
    )

    def each(values: list[float], spec: str) -> str:
        return " / ".join(format(value, spec) for value in values)

    def b_row(label: str, runs: list[dict], *, has_goal: bool) -> tuple[str, ...]:
        p95s = [percentile(run["b"], 95) for run in runs]
        met = "met" if statistics.median(p95s) <= goal else "not met"
        return (
            label,
            each([percentile(run["b"], 50) for run in runs], ".2f"),
            each(p95s, ".2f"),
            each([p95 / alone_p95 for p95 in p95s], ".1f"),
            each([run["a_left"] for run in runs], "d"),
            met if has_goal else "—",
        )

    tables = [
        print_table(
            f"Fair sharing: project B's {args.b_calls} LLM calls during project A's flood of {args.calls} "
            f"(provider latency {args.latency} s), seconds from submission to SUCCESS",
            [
                (
                    "B alone (baseline)",
                    f"{percentile(alone, 50):.2f}",
                    f"{alone_p95:.2f}",
                    "—",
                    "—",
                    "—",
                ),
                b_row(f"B during A's flood, fairness on (A's max_concurrent_jobs {a_limit})", on, has_goal=True),
                b_row(f"B during A's flood, fairness off (A's max_concurrent_jobs {args.calls})", off, has_goal=False),
            ],
            (
                "condition",
                "B p50 s",
                "B p95 s",
                "B p95 / alone",
                "A's calls left when B began",
                f"goal: p95 ≤ max(3x alone, 2 s) = {goal:.2f} s",
            ),
        )
    ]
    print()
    ratios = [a["a_rate"] / b["a_rate"] for a, b in zip(on, off, strict=True)]
    tables.append(
        print_table(
            f"Fair sharing: project A's throughput during its flood of {args.calls} LLM calls, fairness on against off",
            [
                (
                    f"fairness on (A's max_concurrent_jobs {a_limit})",
                    each([run["published"] for run in on], "d"),
                    each([run["a_seconds"] for run in on], ".2f"),
                    each([run["a_rate"] for run in on], ".0f"),
                    f"{each(ratios, '.2f')} (median {statistics.median(ratios):.2f})",
                ),
                (
                    f"fairness off (A's max_concurrent_jobs {args.calls})",
                    each([run["published"] for run in off], "d"),
                    each([run["a_seconds"] for run in off], ".2f"),
                    each([run["a_rate"] for run in off], ".0f"),
                    "—",
                ),
            ],
            ("condition", "in RabbitMQ at the resume", "seconds", "calls/s", "ratio on / off (goal ≥ 0.9)"),
        )
    )
    print()
    if not all(run["b_during"] for run in on):
        print("(with fairness on, B's last call finished after A's flood: B was not measured under it; raise --calls)")
    print(note)
    print()
    allowed = (count - 1) // args.rpm * RATE_WINDOW + args.latency
    share = answered_429 / count * 100
    tables.append(
        print_table(
            f"Credential limit: {count} calls ({args.rate_multiple} x N) at once against a credential limited to "
            f"N = {args.rpm} requests per minute, at a provider that answers 429 beyond N in any 60 s",
            [
                (
                    f"{len(rate_rows)} of {count}",
                    f"{answered_429} ({share:.1f} %)",
                    f"{most_in_window}",
                    f"{started_again}",
                    f"{rate_elapsed:.1f}",
                    f"{allowed:.1f}",
                    f"{rate_elapsed / allowed:.2f}",
                )
            ],
            (
                "SUCCESS",
                "answered 429 (goal ≤ 2 %)",
                "most calls at the provider in any 60 s",
                "jobs started more than once (waited for their turn)",
                "seconds, first submission to last SUCCESS",
                "seconds the limit allows",
                "ratio (goal ≤ 1.10)",
            ),
        )
    )
    print()
    print(
        f"(the limit allows N calls at once and each next N a minute later, plus one call's latency; the provider "
        f"received {provider_calls} calls; the credential's counters in Redis)"
    )
    if args.output:
        with open(args.output, "a") as fh:
            fh.write("\n\n".join(tables) + "\n\n" + note + "\n\n")


if __name__ == "__main__":
    main()
