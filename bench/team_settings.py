"""Settings of the drain's baselines (bench/drain_baselines.py): kaapi's, with Celery's results where a Django team
would keep them, in django-celery-results' stock ``django-db`` backend (``BENCH_RESULT_BACKEND=django-db``) or in
Redis (``BENCH_RESULT_BACKEND=redis://...``, as the system we rebuild ran). ``task_track_started`` stays on, as in
kaapi's settings: every task writes STARTED, then SUCCESS. Bench only: never a product setting."""

import os

from kaapi.settings import *  # noqa: F403

CELERY_RESULT_BACKEND = os.environ.get("BENCH_RESULT_BACKEND", "django-db")
CELERY_RESULT_EXTENDED = False  # django-celery-results' default
CELERY_TASK_TRACK_STARTED = True
