"""`make bench`: every benchmark in one go, each printing its figures beside its baseline measured in the same
run; the tables are collected in bench/RESULTS.md (which docs/benchmarks.md shows). About 9-11 minutes on 2 cores.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"

BENCHMARKS = [
    ["bench/job_overhead.py", "--jobs", "2000"],
    ["bench/drain_baselines.py", "--jobs", "2000"],
    ["bench/priority_isolation.py", "--backlog", "10000", "--rate", "20", "--seconds", "15"],
    ["bench/submission.py", "--clients", "64", "--seconds", "10"],
    ["bench/llm_call_vs_drf.py", "--clients", "64", "--seconds", "10"],
    ["bench/llm_throughput.py"],
    ["bench/fairness.py"],
    ["bench/doctransform_throughput.py"],
    ["bench/dashboard.py", "--jobs", "1000000", "--rounds", "5"],
    ["bench/ocr_throughput.py"],
]


def tables_of(output: str) -> str:
    """The markdown tables of a benchmark's output, with their titles and notes."""
    lines = []
    for line in output.splitlines():
        if line.startswith("###"):
            lines += [line, ""]
        elif line.startswith("|"):
            lines.append(line)
        elif line.startswith("(") or (lines and lines[-1].startswith("|") and line.strip()):
            lines += ["", line]
    if not lines:  # a benchmark that prints plain lines: keep them as they are
        plain = [line for line in output.splitlines() if line.strip() and not line.startswith("[")]
        lines = ["```", *plain, "```"]
    return "\n".join(lines)


def main() -> int:
    # The benchmarks' metrics go to a scratch directory, not to make run's var/prometheus.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="kaapi-bench-metrics-"))
    sections = []
    failed = []
    load = os.getloadavg()[0]
    for argv in BENCHMARKS:
        if not (ROOT / argv[0]).exists():
            continue
        print(f"\n=== {' '.join(argv)}", flush=True)
        started = time.monotonic()
        proc = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True)
        print(proc.stdout[-6000:], flush=True)
        if proc.returncode != 0:
            print(proc.stderr[-4000:], file=sys.stderr)
            failed.append(argv[0])
            continue
        sections.append(f"`{' '.join(argv)}` ({time.monotonic() - started:.0f} s)\n\n" + tables_of(proc.stdout))
    header = (
        f"# Benchmark results\n\nMeasured by `make bench` on {datetime.date.today()} "
        f"({os.cpu_count()} cores, load average {load:.1f} at the start). Each table compares our path with "
        f"its baseline measured side by side in the same run; the ratios are the figures to read.\n\n"
    )
    RESULTS.write_text(header + "\n\n".join(sections) + "\n")
    print(f"\nwrote {RESULTS.relative_to(ROOT)}" + (f"; FAILED: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
