"""The baseline of bench/llm_throughput.py: a bare Celery task that only sleeps (loaded with -I).

Like ``llm.jobs.execute_job`` it gives its database connection back before waiting: with the gevent pool the
connections come from a bounded pool, and the STARTED result write has just taken one.
"""

import time

from celery import shared_task
from django.db import connection


@shared_task(name="bench_sleep_task")
def bench_sleep_task(seconds: float) -> float:
    connection.close()
    time.sleep(seconds)
    return seconds
