"""``POST /api/v1/llm/call`` against the obvious DRF view (bench/drf_llm_call.py: a serializer,
``Job.objects.create``, ``transaction.on_commit(task.delay)``), both on the same gunicorn server in the same run.

The server is the production web command (gunicorn, sync workers) started with bench/drf_settings.py, which mounts
the baseline beside the whole API; the client is bench/submission.py's (64 concurrent clients, one connection per
request). No worker runs: the jobs stay queued and are purged afterwards.
  capacity  closed loop, --rounds alternating rounds (ours, then the baseline): a ratio per round, their median.
  latency   open loop at --load-fraction of our capacity, the same rate for both: p50/p99 from each request's
            due time.
Goal: ours at least 1.0x the baseline's capacity, and our p99 under 100 ms under that load.

    python bench/llm_call_vs_drf.py --clients 64 --seconds 10 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
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
from bench.submission import HOST, UNLIMITED, build_request, free_port, load, paced, prepare_llm_call  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (docker-compose uses 4)")
    parser.add_argument("--load-fraction", type=float, default=0.5, help="open-loop rate, as a fraction of capacity")
    parser.add_argument("--rounds", type=int, default=3, help="alternating capacity rounds (default 3)")
    parser.add_argument("--output")
    args = parser.parse_args()

    setup_environment("drfcall")
    from kaapi.celery import app
    from tenancy.services import api_key_create, project_get_or_create

    project = project_get_or_create(organization_name="bench", project_name="drfcall")
    set_max_concurrent_jobs(project, UNLIMITED)  # no worker runs: every accepted job is published
    api_key = api_key_create(project=project).plaintext
    path, body = prepare_llm_call(project)
    purge(app)

    port = free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "kaapi.wsgi:application", "--bind", f"{HOST}:{port}",
         "--workers", str(args.workers), "--log-level", "warning"],
        env={**os.environ, "LOG_LEVEL": "WARNING", "DJANGO_SETTINGS_MODULE": "bench.drf_settings"},
        stdout=open(LOG_DIR / "gunicorn-drf.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    endpoints = (
        ("ours", build_request("POST", path, api_key, body, port)),
        ("drf", build_request("POST", "/bench/drf/llm/call", api_key, body, port)),
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("gunicorn did not start; see var/bench-logs/gunicorn-drf.log") from None
                time.sleep(0.2)
        for _, raw in endpoints:  # warm up every gunicorn worker on both
            asyncio.run(load(port, raw, clients=8, seconds=min(2.0, args.seconds), expect=202))
        capacity: dict[str, list[float]] = {name: [] for name, _ in endpoints}
        errors = dict.fromkeys(capacity, 0)
        for _ in range(args.rounds):
            for name, raw in endpoints:
                count, _, failed = asyncio.run(load(port, raw, clients=args.clients, seconds=args.seconds, expect=202))
                capacity[name].append(count / args.seconds)
                errors[name] += failed
        rate = args.load_fraction * statistics.median(capacity["ours"])
        latency = {}
        for name, raw in endpoints:
            latency[name], failed = asyncio.run(
                paced(port, raw, clients=args.clients, rate=rate, seconds=args.seconds, expect=202)
            )
            errors[name] += failed
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
        purge(app)

    ratios = [o / d for o, d in zip(capacity["ours"], capacity["drf"], strict=True)]
    median = statistics.median(ratios)
    p99 = percentile(latency["ours"], 99)
    met = "met" if median >= 1.0 and p99 < 100 else "not met"

    def per_round(values: list[float], spec: str) -> str:
        return " / ".join(format(v, spec) for v in values)

    rows: list[tuple[str, ...]] = [
        (
            f"POST {path} (ours)",
            per_round(capacity["ours"], ",.0f"),
            per_round(ratios, ".2f"),
            f"{median:.2f}",
            f"{percentile(latency['ours'], 50):.1f}",
            f"{p99:.1f}",
            str(errors["ours"]),
            met,
        ),
        (
            "POST /bench/drf/llm/call (the obvious DRF view)",
            per_round(capacity["drf"], ",.0f"),
            "—",
            "—",
            f"{percentile(latency['drf'], 50):.1f}",
            f"{percentile(latency['drf'], 99):.1f}",
            str(errors["drf"]),
            "—",
        ),
    ]
    table = print_table(
        f"LLM call submission against the obvious DRF view, gunicorn ({args.workers} sync workers), {args.clients} "
        f"concurrent clients: capacity (closed loop, {args.rounds} alternating rounds) and latency at {rate:,.0f} "
        f"requests/s (open loop, {args.load_fraction:g} of our capacity), {args.seconds:g} s each",
        rows,
        (
            "endpoint",
            "capacity req/s per round",
            "ratio per round",
            "median ratio (goal ≥ 1.0)",
            "p50 ms",
            "p99 ms (goal < 100)",
            "errors",
            "goals",
        ),
    )
    if args.output:
        with open(args.output, "a") as fh:
            fh.write(table + "\n\n")


if __name__ == "__main__":
    main()
