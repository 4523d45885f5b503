"""Document transformation throughput: documents per second for a mixed set through a real worker, the
worker's peak memory (the worker, its pool processes and their converter processes), and the cost of running
each conversion in the isolated converter process instead of in the worker itself.

    .venv/bin/python bench/doctransform_throughput.py [--documents 160] [--concurrency 2]

It starts (or reuses) the project-local PostgreSQL and RabbitMQ test nodes (scripts/services.sh), uses its own
database (kaapi_bench_doctransform) and RabbitMQ vhost, and a temporary MEDIA_ROOT.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.harness import run_suffix  # noqa: E402

DB_NAME = "kaapi_bench_doctransform" + run_suffix()
VHOST = "kaapi-bench-doctransform" + run_suffix()


# --- Environment ----------------------------------------------------------------------------------
def prepare_environment(media_root: Path) -> None:
    subprocess.run([str(ROOT / "scripts/services.sh"), "start", "test", "postgres", "rabbitmq"], check=True)
    exports = subprocess.run(
        [str(ROOT / "scripts/services.sh"), "env", "test"], check=True, capture_output=True, text=True
    ).stdout
    env = {}
    for line in exports.splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export ") :].partition("=")
            env[name] = shlex.split(value)[0] if value else ""
    for args in (["add_vhost", VHOST], ["set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*"]):
        subprocess.run(
            [str(ROOT / "scripts/services.sh"), "rabbitmqctl", "test", *args], capture_output=True, check=False
        )
    import psycopg

    with psycopg.connect(f"{env['KAAPI_PG_URL']}/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone():
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "kaapi.settings",
            "DATABASE_URL": f"{env['KAAPI_PG_URL']}/{DB_NAME}",
            "RABBITMQ_URL": f"{env['RABBITMQ_URL'].rstrip('/')}/{VHOST}",
            "SECRET_KEY": "bench-secret-key",
            "MEDIA_ROOT": str(media_root),
            "LOG_LEVEL": "WARNING",
        }
    )
    os.environ.pop("REDIS_URL", None)


# --- The mixed set ----------------------------------------------------------------------------------
def build_documents() -> list[tuple[str, bytes]]:
    """One realistic-sized document of each supported type."""
    import io
    import json

    import docx
    import openpyxl
    import pptx
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate, Table

    sentence = "The quarterly figures show steady growth in every region, led by the northern offices. "
    rows = [["Region", "Quarter", "Units", "Revenue"]] + [
        [f"Region {i % 7}", f"Q{i % 4 + 1}", str(i * 3), f"{i * 101.5:.2f}"] for i in range(60)
    ]

    styles = getSampleStyleSheet()
    story = []
    for page in range(5):
        story += [Paragraph(f"Section {page + 1}", styles["Heading1"])]
        story += [Paragraph(sentence * 6, styles["BodyText"]) for _ in range(4)]
        story += [Table(rows[:20]), PageBreak()]
    pdf = io.BytesIO()
    SimpleDocTemplate(pdf, pagesize=A4).build(story)

    document = docx.Document()
    for section in range(5):
        document.add_heading(f"Section {section + 1}", level=1)
        for _ in range(4):
            document.add_paragraph(sentence * 6)
    table = document.add_table(rows=21, cols=4)
    for r, row in enumerate(rows[:21]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    word = io.BytesIO()
    document.save(word)

    presentation = pptx.Presentation()
    for number in range(10):
        slide = presentation.slides.add_slide(presentation.slide_layouts[1])
        slide.shapes.title.text = f"Slide {number + 1}"
        slide.placeholders[1].text = sentence * 2
    slides = io.BytesIO()
    presentation.save(slides)

    workbook = openpyxl.Workbook()
    for name in ("Sales", "Costs"):
        sheet = workbook.create_sheet(name)
        for row in rows:
            sheet.append(row)
    del workbook["Sheet"]
    sheets = io.BytesIO()
    workbook.save(sheets)

    body = "".join(f"<h2>Part {i}</h2><p>{sentence * 5}</p>" for i in range(10))
    cells = "".join("<tr>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>" for row in rows)
    html = f"<!DOCTYPE html><html><body><h1>Report</h1>{body}<table>{cells}</table></body></html>"
    csv = "".join(",".join(row) + "\n" for row in rows * 5)
    return [
        ("report.pdf", pdf.getvalue()),
        ("report.docx", word.getvalue()),
        ("slides.pptx", slides.getvalue()),
        ("sheets.xlsx", sheets.getvalue()),
        ("page.html", html.encode()),
        ("data.csv", csv.encode()),
        ("data.json", json.dumps({"rows": rows * 5}).encode()),
        ("notes.txt", (sentence * 200).encode()),
    ]


# --- Memory of a process tree -----------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def _kib(path: str, field: str) -> int:
    try:
        with open(path) as fh:
            match = re.search(rf"^{field}:\s+(\d+) kB", fh.read(), re.MULTILINE)
    except OSError:
        return 0
    return int(match.group(1)) if match else 0


class TreeMemorySampler(threading.Thread):
    """Samples RSS and PSS of a process and all its descendants every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_rss = self.peak_pss = self.peak_processes = 0
        self.peak_by_depth: dict[int, int] = {}  # largest RSS of one process at each depth
        self._done = threading.Event()

    def tree(self) -> list[tuple[int, int]]:
        """(pid, depth): 0 the worker, 1 its pool processes, 2 their converter processes."""
        pids, todo = [], [(self.pid, 0)]
        while todo:
            pid, depth = todo.pop()
            pids.append((pid, depth))
            todo.extend((child, depth + 1) for child in _children(pid))
        return pids

    def sample(self) -> tuple[int, int, int]:
        pids = self.tree()
        rss_by_pid = {pid: _kib(f"/proc/{pid}/status", "VmRSS") for pid, _ in pids}
        for pid, depth in pids:
            self.peak_by_depth[depth] = max(self.peak_by_depth.get(depth, 0), rss_by_pid[pid])
        pss = sum(_kib(f"/proc/{pid}/smaps_rollup", "Pss") for pid, _ in pids)
        return sum(rss_by_pid.values()), pss, len(pids)

    def run(self) -> None:
        while not self._done.is_set():
            rss, pss, count = self.sample()
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self.peak_processes = max(self.peak_processes, count)
            time.sleep(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()


# --- Runs -------------------------------------------------------------------------------------------
def purge_queues() -> None:
    from kaapi.celery import app

    with app.connection_for_write() as conn:
        for queue in app.conf.task_queues:
            queue(conn.default_channel).declare()
            queue(conn.default_channel).purge()


def start_worker(concurrency: int) -> subprocess.Popen:
    from kaapi.celery import app

    name = f"bench-{uuid.uuid4().hex[:8]}@localhost"
    argv = [sys.executable, "-m", "celery", "-A", "kaapi", "worker", "-Q", "low_priority", "-P", "prefork"]
    argv += ["-c", str(concurrency), "-n", name, "-l", "warning", "--without-gossip", "--without-mingle"]
    log = open(Path(os.environ["MEDIA_ROOT"]) / "worker.log", "ab")
    process = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"worker exited with {process.returncode}; see {log.name}")
        if app.control.ping(destination=[name], timeout=0.5):
            return process
    raise SystemExit("worker did not answer a ping in 60 s")


def submit_and_wait(project, documents: list[tuple[str, bytes]], count: int) -> float:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from doctransform.services import document_upload
    from jobs.models import Job, JobStatus

    job_ids = []
    started = time.perf_counter()
    for i in range(count):
        name, data = documents[i % len(documents)]
        _, job = document_upload(project=project, file=SimpleUploadedFile(name, data), filename=name)
        job_ids.append(job.id)
    while True:
        done = Job.objects.filter(id__in=job_ids, status__in=[JobStatus.SUCCESS, JobStatus.FAILED])
        if done.count() == len(job_ids):
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    failed = list(Job.objects.filter(id__in=job_ids, status=JobStatus.FAILED).values_list("error", flat=True)[:3])
    if failed:
        raise SystemExit(f"{len(failed)}+ jobs failed, e.g. {failed}")
    return elapsed


def isolation_overhead(documents: list[tuple[str, bytes]], rounds: int) -> tuple[float, float, float, float]:
    """Mean ms per conversion in this process vs through a converter process, the converter's start-up (s),
    and the round trip of a 5-byte conversion (ms): the pure cost of the isolation."""
    from doctransform.converter import ConverterProcess
    from doctransform.detection import detect_bytes
    from doctransform.services import conversion_options as settings_options
    from doctransform.transformers import conversion_options, get_transformer, load_function

    # The options a worker gives each conversion (OCR languages and models, page limits), here to both sides.
    options = settings_options()
    conversion_options.set(options)

    jobs = []
    for name, data in documents:
        detected = detect_bytes(data, filename=name)
        transformer = get_transformer(source_type=detected.content_type)
        jobs.append((transformer.function_path, data, {"charset": detected.charset, "filename": name}))
    converter = ConverterProcess(max_memory_mb=2048, max_conversions=10**6)
    started = time.perf_counter()
    converter.start()
    startup = time.perf_counter() - started
    for path, data, hints in jobs:  # warm the imports of both processes
        load_function(path)(data, **hints)
        converter.run(function_path=path, data=data, hints=hints, timeout=60, options=options)
    in_process = isolated = 0.0
    for _ in range(rounds):  # interleaved, so load changes on the machine hit both alike
        for path, data, hints in jobs:
            started = time.perf_counter()
            load_function(path)(data, **hints)
            in_process += time.perf_counter() - started
            started = time.perf_counter()
            converter.run(function_path=path, data=data, hints=hints, timeout=60, options=options)
            isolated += time.perf_counter() - started
    in_process = in_process / (rounds * len(jobs)) * 1000
    isolated = isolated / (rounds * len(jobs)) * 1000
    tiny = get_transformer(source_type="text/plain").function_path
    started = time.perf_counter()
    for _ in range(200):
        load_function(tiny)(b"hello", charset="utf-8", filename="a.txt")
    tiny_in_process = (time.perf_counter() - started) / 200 * 1000
    started = time.perf_counter()
    for _ in range(200):
        converter.convert(function_path=tiny, data=b"hello", hints={"charset": "utf-8"}, timeout=60)
    tiny_isolated = (time.perf_counter() - started) / 200 * 1000
    converter.close()
    return in_process, isolated, startup, tiny_isolated - tiny_in_process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=160, help="documents in the measured run")
    parser.add_argument("--concurrency", type=int, default=2, help="worker pool processes")
    parser.add_argument("--overhead-rounds", type=int, default=5, help="rounds of the isolation-overhead test")
    args = parser.parse_args()

    media_root = Path(tempfile.mkdtemp(prefix="kaapi-bench-doc-"))
    prepare_environment(media_root)
    import django

    django.setup()
    from django.core.management import call_command

    from bench.harness import set_max_concurrent_jobs
    from tenancy.services import project_get_or_create

    call_command("migrate", verbosity=0)
    purge_queues()
    project = project_get_or_create(organization_name="Bench", project_name="doctransform")
    documents = build_documents()
    # every document of a run is submitted at once; the worker's throughput is measured, not admission's window
    set_max_concurrent_jobs(project, max(args.documents, args.concurrency * len(documents) // 2))
    sizes = ", ".join(f"{name} {len(data) // 1024} KiB" for name, data in documents)
    print(f"mixed set: {sizes}")

    worker = start_worker(args.concurrency)
    sampler = TreeMemorySampler(worker.pid)
    try:
        idle_rss, idle_pss, _ = sampler.sample()
        sampler.start()
        warmup = submit_and_wait(project, documents, args.concurrency * len(documents) // 2)
        measured = submit_and_wait(project, documents, args.documents)
        sampler.stop()
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
        purge_queues()

    in_process, isolated, startup, round_trip = isolation_overhead(documents, args.overhead_rounds)
    print()
    print(f"worker: celery prefork -c {args.concurrency}, queue low_priority, {os.cpu_count()} CPUs")
    print(f"warm-up ({args.concurrency * len(documents) // 2} documents, includes converter start-up): {warmup:.2f} s")
    print(f"throughput: {args.documents} documents in {measured:.2f} s = {args.documents / measured:.1f} documents/s")
    print(f"worker memory idle (before any conversion): RSS {idle_rss / 1024:.0f} MiB, PSS {idle_pss / 1024:.0f} MiB")
    print(
        f"worker memory peak (worker + pool + converters, {sampler.peak_processes} processes): "
        f"RSS {sampler.peak_rss / 1024:.0f} MiB, PSS {sampler.peak_pss / 1024:.0f} MiB"
    )
    roles = ("worker main process", "largest pool process", "largest converter process")
    print(", ".join(f"{role} {sampler.peak_by_depth.get(depth, 0) / 1024:.0f} MiB" for depth, role in enumerate(roles)))
    print(
        f"isolation: {in_process:.1f} ms/document in-process vs {isolated:.1f} ms through the converter process "
        f"(mixed set); round trip of a tiny conversion +{round_trip:.2f} ms; "
        f"converter start-up {startup:.2f} s once per pool process"
    )


if __name__ == "__main__":
    main()
