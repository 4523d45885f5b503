"""The drain's bound: a bare task that runs exactly the two statements a job costs its worker, and nothing else.

The architecture gives every job two database writes in the worker: the claim (PENDING → PROCESSING, attempt + 1,
committed before the function runs) and the SUCCESS with Celery's result row (one statement here). This task runs
those two statements (``jobs.statements``, as the generic tasks run them) without the registry, the logging
context, the function call, metrics or webhooks. bench/job_overhead.py drains it with kaapi's own worker
(``--include bench.job_statements``), beside raw no-op tasks and real echo jobs: raw Celery plus the two
statements is as fast as the full path can get, whatever the rest of the job code costs.
"""

from __future__ import annotations

from celery import shared_task, states
from django.utils import timezone

from jobs import statements


@shared_task(name="bench.job_statements", bind=True, ignore_result=True, track_started=False)
def job_statements(self, job_id: str) -> None:
    statements.claim(job_id=job_id, task_id=self.request.id, now=timezone.now())
    result = {"job_id": job_id}
    row = self.backend.result_upsert(self.request.id, result, states.SUCCESS, request=self.request)
    statements.mark_success(job_id=job_id, result=result, now=timezone.now(), also=row)
