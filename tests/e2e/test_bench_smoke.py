"""Every benchmark in bench/ runs to its table with tiny sizes, so that a broken benchmark is found by CI rather
than by `make bench`. Nothing here measures: the figures of such small runs mean nothing.

The scripts run side by side (most of their time is spent waiting for workers and converters to start and stop),
each on a database and vhost of its own named after this test run (KAAPI_BENCH_ID). Even so this costs about three
minutes on 2 cores, more than the suite's budget allows: `make test` leaves this module out and CI runs it on its
own with `make bench-smoke`."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

# Each benchmark's smallest useful run (its defaults are what `make bench` measures).
SMOKE = {
    "bench/job_overhead.py": ["--jobs", "20", "--rounds", "1"],
    "bench/priority_isolation.py": ["--backlog", "50", "--rate", "5", "--seconds", "2", "--high-concurrency", "5"],
    "bench/submission.py": [
        *("--clients", "2", "--seconds", "1", "--workers", "1", "--rounds", "1"),
        *("--minimum-threads", "1", "--minimum-seconds", "0.5"),
        *("--batch-size", "5", "--batch-rounds", "1", "--scheduled", "5", "--scheduled-window", "2"),
    ],
    "bench/llm_throughput.py": [
        *("--calls", "10", "--rounds", "1", "--latency", "0.05", "--concurrency", "10"),
        *("--web-workers", "1", "--web-threads", "2", "--submitters", "2"),
    ],
    "bench/fairness.py": [
        *("--calls", "20", "--b-calls", "3", "--b-interval", "0.01", "--b-delay", "0.1", "--latency", "0.05"),
        *("--workers", "1", "--concurrency", "5", "--rpm", "3", "--rate-multiple", "1", "--rounds", "1"),
    ],
    "bench/doctransform_throughput.py": ["--documents", "4", "--overhead-rounds", "1"],
    "bench/dashboard.py": [*("--jobs", "200", "--projects", "3", "--running", "5", "--waiting", "5", "--rounds", "1")],
    "bench/drain_baselines.py": ["--jobs", "20", "--rounds", "1"],
    "bench/llm_call_vs_drf.py": ["--clients", "4", "--seconds", "1", "--rounds", "1", "--workers", "1"],
    "bench/ocr_throughput.py": ["--pages", "1", "--rounds", "1"],
    "bench/usage_report.py": ["--jobs", "200", "--projects", "3", "--runs", "1"],
    "bench/job_statements.py": ["--calls", "5", "--rounds", "1"],
}

# What a finished run prints: a markdown table row, or for the documents benchmark its throughput line.
PRINTS = {script: r"^\|.*\|$" for script in SMOKE}
PRINTS["bench/doctransform_throughput.py"] = r"^throughput: \d+ documents in"

# What scripts/test.sh sets for the tests; a benchmark sets up its own environment, as under `make bench`.
TEST_RUN_VARIABLES = re.compile(
    r"KAAPI_.*|DATABASE_.*|RABBITMQ_URL|REDIS_URL|SECRET_KEY|DEBUG|ALLOWED_HOSTS|SECURE_SSL_REDIRECT|CELERY_.*"
    r"|PROMETHEUS_MULTIPROC_DIR"
)


def benchmark_scripts() -> set[str]:
    """The runnable scripts of bench/ (run_all.py runs them all)."""
    return {
        f"bench/{path.name}"
        for path in (ROOT / "bench").glob("*.py")
        if path.name != "run_all.py" and 'if __name__ == "__main__":' in path.read_text()
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_every_benchmark_has_a_smoke_run():
    assert benchmark_scripts() == set(SMOKE), "add the new benchmark's tiny sizes to SMOKE"


def test_every_benchmark_runs_to_its_table_with_tiny_sizes(tmp_path):
    env = {key: value for key, value in os.environ.items() if not TEST_RUN_VARIABLES.fullmatch(key)}
    run_id = re.sub(r"[^a-z0-9_]", "_", os.environ.get("KAAPI_TEST_VHOST", "tests").lower())
    env["KAAPI_BENCH_ID"] = f"smoke_{run_id}"
    env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="kaapi-bench-smoke-metrics-", dir=tmp_path)
    arguments = {**SMOKE, "bench/llm_throughput.py": [*SMOKE["bench/llm_throughput.py"], "--port", str(free_port())]}
    running = {}
    for script, args in arguments.items():
        log = open(tmp_path / f"{os.path.basename(script)}.log", "w+")  # noqa: SIM115 - closed below
        running[script] = (
            subprocess.Popen([sys.executable, script, *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT),
            log,
        )
    deadline = time.monotonic() + 600
    failures = {}
    for script, (process, log) in running.items():
        try:
            process.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.seek(0)
        output = log.read()
        log.close()
        if process.returncode != 0 or not re.search(PRINTS[script], output, re.MULTILINE):
            failures[script] = f"exit {process.returncode}:\n{output[-3000:]}"
    assert not failures, "\n\n".join(f"{script} {failure}" for script, failure in failures.items())
