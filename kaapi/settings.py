"""Django settings for kaapi.

Every value comes from the environment and has a default that works for `make run`.
This is the only module that reads ``os.environ``; a malformed value stops start-up
with an ``ImproperlyConfigured`` error naming the variable.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import sys
from pathlib import Path
from urllib.parse import urlparse

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false, 1/0, yes/no), got {raw!r}")


def env_int(name: str, default: int | None, *, minimum: int | None = None) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {value}")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {value}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_url(name: str, default: str, *, schemes: tuple[str, ...]) -> str:
    raw = os.environ.get(name, default)
    parsed = urlparse(raw)
    if parsed.scheme not in schemes or not (parsed.hostname or parsed.path):
        raise ImproperlyConfigured(f"{name} must be a URL with scheme {' or '.join(schemes)}, got {raw!r}")
    return raw


# --- Core -------------------------------------------------------------------------------------
DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is false")
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "django_celery_results",
    "django_celery_beat",
    "drf_spectacular",
    "tenancy",
    "jobs",
    "llm",
    "doctransform",
]

MIDDLEWARE = [
    "kaapi.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Serves the admin's and the API docs' static files under gunicorn (collected into STATIC_ROOT).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# --- HTTPS ----------------------------------------------------------------------------------------
# Behind the TLS reverse proxy in front of docker-compose, gunicorn sees plain HTTP: the proxy states the client's
# scheme in this header (e.g. X-Forwarded-Proto, set to "https"), so that redirects, `Location` and `status_url`
# are https. Empty: no header is trusted. Set it only when every request comes through a proxy that overwrites the
# header; a client reaching gunicorn directly could otherwise claim https.
_proxy_ssl_header = env_str("SECURE_PROXY_SSL_HEADER", "").strip()
if _proxy_ssl_header:
    if not re.fullmatch(r"[A-Za-z0-9-]+", _proxy_ssl_header):
        raise ImproperlyConfigured(f"SECURE_PROXY_SSL_HEADER must be a header name, got {_proxy_ssl_header!r}")
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
# Probes and the Prometheus scrape reach the web container over plain HTTP from inside the deployment.
SECURE_REDIRECT_EXEMPT = [r"^healthz/?$", r"^readyz/?$", r"^metrics/?$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)

ROOT_URLCONF = "kaapi.urls"
WSGI_APPLICATION = "kaapi.wsgi.application"
ASGI_APPLICATION = "kaapi.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}")
try:
    _db = dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0))
except Exception as exc:  # dj-database-url raises several types for a bad URL
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
if not _db.get("ENGINE"):
    raise ImproperlyConfigured(f"DATABASE_URL has an unsupported scheme: {DATABASE_URL!r}")
if _db["ENGINE"] == "django.db.backends.sqlite3":
    Path(_db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # SQLite is the zero-setup default: WAL lets the web server and the worker share the file.
    _db["OPTIONS"] = {"init_command": "PRAGMA journal_mode=WAL;", "timeout": 20}
    _db["CONN_MAX_AGE"] = 0
else:
    _db["CONN_HEALTH_CHECKS"] = True
# The statements every job runs (its INSERT, its dispatch record, the claim, the SUCCESS) and the hot-path lookups
# are prepared on the server (jobs/statements.py, kaapi/sql.py); turn it off behind a pooler that cannot keep
# prepared statements (PgBouncer in transaction mode before 1.21).
DATABASE_PREPARED_STATEMENTS = env_bool("DATABASE_PREPARED_STATEMENTS", True)
if _db["ENGINE"] == "django.db.backends.postgresql":
    _db.setdefault("OPTIONS", {})["prepare_threshold"] = 5 if DATABASE_PREPARED_STATEMENTS else None
_db_test_name = env_str("DATABASE_TEST_NAME", "")
if _db_test_name:
    _db["TEST"] = {"NAME": _db_test_name}
# Greenlet workers (`-P gevent`) run hundreds of tasks in one process and Django keeps one connection per
# greenlet: there the connections come from a bounded psycopg pool instead (0 turns the pool off).
DATABASE_GEVENT_POOL_MAX_SIZE = env_int("DATABASE_GEVENT_POOL_MAX_SIZE", 20, minimum=0)
GEVENT_PATCHED = "gevent.monkey" in sys.modules and sys.modules["gevent.monkey"].is_module_patched("socket")
if GEVENT_PATCHED and DATABASE_GEVENT_POOL_MAX_SIZE and _db["ENGINE"] == "django.db.backends.postgresql":
    _db["CONN_MAX_AGE"] = 0  # required by the pool: close() returns the connection to it
    _db.setdefault("OPTIONS", {})["pool"] = {
        "min_size": 2,
        "max_size": DATABASE_GEVENT_POOL_MAX_SIZE,
        "timeout": 30,
    }
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (Redis when configured) ------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL", "")
if REDIS_URL:
    env_url("REDIS_URL", REDIS_URL, schemes=("redis", "rediss", "unix"))
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Auth, i18n, static -----------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # filled by `manage.py collectstatic` (the Docker image does)
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(BASE_DIR / "var" / "media")))

# --- REST framework ---------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tenancy.authentication.APIKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["tenancy.authentication.HasProject"],
    "DEFAULT_PAGINATION_CLASS": "kaapi.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["kaapi.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "kaapi.api.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"] = "drf_spectacular.openapi.AutoSchema"
# Keyed hash for API keys: HMAC-SHA256 over a 256-bit random secret, keyed by this pepper.
API_KEY_PEPPER = env_str("API_KEY_PEPPER", SECRET_KEY)

# --- API throttling (kaapi/throttling.py) ---------------------------------------------------------
# Requests per API key, counted on the shared cache (Redis when REDIS_URL is set): submissions (POST, PUT, PATCH,
# DELETE) and reads (GET) apart, as "N/s", "N/min", "N/hour" or "N/day" ("off": no limit); above, 429 with
# Retry-After. The defaults only stop a runaway client: they are above what one key sends in the benchmarks.
API_THROTTLE_SUBMIT_RATE = env_str("API_THROTTLE_SUBMIT_RATE", "3000/s")
API_THROTTLE_READ_RATE = env_str("API_THROTTLE_READ_RATE", "10000/s")
for _rate_setting in ("API_THROTTLE_SUBMIT_RATE", "API_THROTTLE_READ_RATE"):
    _rate = globals()[_rate_setting].strip().lower()
    if _rate not in {"", "off", "none"} and not re.fullmatch(r"[1-9][0-9]*\s*/\s*(s|m|h|d)[a-z]*", _rate):
        raise ImproperlyConfigured(f"{_rate_setting} must be a rate such as 600/min, 10/s or off, got {_rate!r}")
REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] = [
    "kaapi.throttling.SubmitRateThrottle",
    "kaapi.throttling.ReadRateThrottle",
]
# The admin's login form refuses an address and user name (429) after this many failed attempts in this many seconds.
ADMIN_LOGIN_MAX_FAILURES = env_int("ADMIN_LOGIN_MAX_FAILURES", 5, minimum=1)
ADMIN_LOGIN_FAILURE_WINDOW = env_int("ADMIN_LOGIN_FAILURE_WINDOW", 900, minimum=1)

# --- Celery: broker -----------------------------------------------------------------------------
RABBITMQ_URL = env_url("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//", schemes=("amqp", "amqps", "pyamqp"))
CELERY_BROKER_URL = RABBITMQ_URL
# Connections kept in the publisher pool.
CELERY_BROKER_POOL_LIMIT = env_int("CELERY_BROKER_POOL_LIMIT", 10, minimum=0)
# Keep retrying the broker at start-up instead of crashing (Celery 6 will stop doing it by default).
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Publisher confirms are not switched on here for every connection: job messages, their retries and webhook
# deliveries are published on confirming connections (kaapi.celery.confirmed_producer), where publish() returns
# only once RabbitMQ has the persistent message. Monitoring events (Flower) and beat's ticks (idempotent sweeps,
# run again at the next tick) go without: a confirm round trip for each event of each task buys nothing.
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {}
# A publish that cannot reach the broker is retried briefly; after that the job stays PENDING
# (undispatched) and the recovery sweep publishes it again.
CELERY_TASK_PUBLISH_RETRY = True
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": env_int("CELERY_TASK_PUBLISH_MAX_RETRIES", 3, minimum=0),
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}

# --- Celery: workers ----------------------------------------------------------------------------
CELERY_WORKER_CONCURRENCY = env_int("CELERY_WORKER_CONCURRENCY", None, minimum=1)
COMPUTED_CELERY_WORKER_CONCURRENCY = CELERY_WORKER_CONCURRENCY or os.cpu_count() or 1
# Messages reserved per worker process; 1 keeps priorities meaningful with long tasks.
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int("CELERY_WORKER_PREFETCH_MULTIPLIER", 1, minimum=0)
# Recycle a child process after this many tasks / this much resident memory (KiB). Memory is the leak guard; the
# count is a backstop: a recycle idles the child ~0.2 s (billiard waits for its last result to be read, then forks
# a new one, which opens its own database connection): ~7 % of a child's time at 1,000 echo jobs of ~2.5 ms.
CELERY_WORKER_MAX_TASKS_PER_CHILD = env_int("CELERY_WORKER_MAX_TASKS_PER_CHILD", 10000, minimum=1)
CELERY_WORKER_MAX_MEMORY_PER_CHILD = env_int("CELERY_WORKER_MAX_MEMORY_PER_CHILD", 200000, minimum=1)
# Django's per-task connection health check (a SELECT 1 before each job) in workers; see jobs/tasks.py.
CELERY_WORKER_DB_HEALTH_CHECKS = env_bool("CELERY_WORKER_DB_HEALTH_CHECKS", False)
# Celery's Django fixup closes every database connection before and after each task (from Celery 5.6) unless told to
# reuse it this many times: never, here. kaapi/celery.py closes them by Django's own rule instead (unusable after an
# error, or older than CONN_MAX_AGE), as Celery did up to 5.5; reconnecting for every job cost the drain 4x.
CELERY_DB_REUSE_MAX = 2**62
# Events so Flower can show tasks and workers.
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_TASK_TRACK_STARTED = True
# Our logging config stays in charge of the root logger.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Celery: tasks ------------------------------------------------------------------------------
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 300, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 600, minimum=1)
if CELERY_TASK_TIME_LIMIT <= CELERY_TASK_SOFT_TIME_LIMIT:
    raise ImproperlyConfigured("CELERY_TASK_TIME_LIMIT must be greater than CELERY_TASK_SOFT_TIME_LIMIT")
# Ack after the task ran, and put the message back when the process running it dies.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# On a lost broker connection, stop tasks whose message will be redelivered anyway (the Celery 6 default).
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_TASK_DEFAULT_RETRY_DELAY = env_int("CELERY_TASK_DEFAULT_RETRY_DELAY", 60, minimum=0)
CELERY_TASK_MAX_RETRIES = env_int("CELERY_TASK_MAX_RETRIES", 3, minimum=0)
# Upper bound of one backoff step (exponential backoff with full jitter).
CELERY_TASK_RETRY_BACKOFF_MAX = env_int("CELERY_TASK_RETRY_BACKOFF_MAX", 600, minimum=1)
# A job whose deliveries keep killing the worker ends FAILED after this many lost deliveries.
JOB_MAX_WORKER_LOST = env_int("JOB_MAX_WORKER_LOST", 3, minimum=1)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]

# --- Celery: results and schedules ------------------------------------------------------------
# django-celery-results' tables ("django-db"), through a subclass that gzips results and writes each with one
# upsert (kaapi/results.py).
CELERY_RESULT_BACKEND = "kaapi.results:DatabaseBackend"
# One backend object for all threads/greenlets. Otherwise Celery builds one per thread, which under the gevent
# pool means one per task (~20 ms of CPU each: it scans every installed package's entry points). The backend
# holds no connection of its own; the ORM keeps one per thread/greenlet.
CELERY_RESULT_BACKEND_THREAD_SAFE = True
CELERY_RESULT_EXTENDED = True
CELERY_RESULT_COMPRESSION = "gzip"
CELERY_RESULT_EXPIRES = env_int("CELERY_RESULT_EXPIRES", 3600, minimum=1)
# The database scheduler (schedules edited in admin) behind a lock so that only one beat fires: jobs/beat.py.
CELERY_BEAT_SCHEDULER = "jobs.beat:LockedDatabaseScheduler"
# Longest sleep of beat between two looks at the schedule table: an edit in admin is picked up within it.
CELERY_BEAT_MAX_LOOP_INTERVAL = env_float("CELERY_BEAT_MAX_LOOP_INTERVAL", 5.0, minimum=0.1)
CELERY_TIMEZONE = env_str("CELERY_TIMEZONE", "UTC")
CELERY_ENABLE_UTC = env_bool("CELERY_ENABLE_UTC", True)
# Run tasks in-process (unit tests of single functions only; never for system tests).
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)

# --- Jobs ---------------------------------------------------------------------------------------
# A PENDING job not dispatched for this long is published again by the recovery sweep.
JOB_DISPATCH_GRACE_SECONDS = env_int("JOB_DISPATCH_GRACE_SECONDS", 60, minimum=1)
# "background": a thread of each process publishes committed jobs in batches, off the request path;
# "inline": the committing thread publishes before the response. See jobs/dispatcher.py.
JOB_DISPATCH_MODE = env_str("JOB_DISPATCH_MODE", "background")
if JOB_DISPATCH_MODE not in {"background", "inline"}:
    raise ImproperlyConfigured(f"JOB_DISPATCH_MODE must be background or inline, got {JOB_DISPATCH_MODE!r}")
# Admission (jobs/dispatcher.py): a project's jobs admitted to the broker and not finished, per queue (high, low),
# at most; the others wait PENDING in the table. A project's own value in admin overrides it.
JOB_MAX_CONCURRENT_JOBS = env_int("JOB_MAX_CONCURRENT_JOBS", 100, minimum=1)
# Admission: a project's jobs admitted in any 60 seconds (both queues), at most; the others wait PENDING. 0: no limit.
# A project's own value in admin overrides it.
JOB_MAX_SUBMISSIONS_PER_MINUTE = env_int("JOB_MAX_SUBMISSIONS_PER_MINUTE", 0, minimum=0)

# --- API request limits (kaapi/parsers.py, kaapi/pagination.py) ---------------------------------
# A JSON body above this many bytes is refused with 413, from its Content-Length before it is read.
API_MAX_JSON_BODY_BYTES = env_int("API_MAX_JSON_BODY_BYTES", 4 * 1024 * 1024, minimum=1024)
# JSON nested deeper than this (objects and arrays) is refused with 400.
API_MAX_JSON_DEPTH = env_int("API_MAX_JSON_DEPTH", 64, minimum=2)
# The largest page a list returns; a larger ?limit= is lowered to it.
API_MAX_PAGE_SIZE = env_int("API_MAX_PAGE_SIZE", 1000, minimum=1)

# --- Documents (doctransform) ----------------------------------------------------------------
# Uploads above this size are refused with 413.
DOCUMENT_MAX_UPLOAD_BYTES = env_int("DOCUMENT_MAX_UPLOAD_BYTES", 25 * 1024 * 1024, minimum=1)
# Non-file form fields and JSON bodies are small; larger file uploads spill from memory to a temporary file.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2_621_440, minimum=1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = env_int("FILE_UPLOAD_MAX_MEMORY_SIZE", 2_621_440, minimum=0)
# Seconds one conversion may take; the converter process is killed after that. It must leave the task time
# to read and store the files, so it has to be below the soft time limit.
DOCUMENT_TRANSFORM_TIMEOUT = env_int("DOCUMENT_TRANSFORM_TIMEOUT", 120, minimum=1)
if DOCUMENT_TRANSFORM_TIMEOUT >= CELERY_TASK_SOFT_TIME_LIMIT:
    raise ImproperlyConfigured(
        f"DOCUMENT_TRANSFORM_TIMEOUT ({DOCUMENT_TRANSFORM_TIMEOUT}) must be less than "
        f"CELERY_TASK_SOFT_TIME_LIMIT ({CELERY_TASK_SOFT_TIME_LIMIT})"
    )
# Address-space cap (MiB) of the converter process: a decompression bomb ends in a clean error. 0: no cap.
DOCUMENT_TRANSFORM_MAX_MEMORY_MB = env_int("DOCUMENT_TRANSFORM_MAX_MEMORY_MB", 2048, minimum=0)
# The converter process is replaced after this many conversions (bounds leaks in the converter libraries).
DOCUMENT_TRANSFORM_MAX_CONVERSIONS = env_int("DOCUMENT_TRANSFORM_MAX_CONVERSIONS", 200, minimum=1)
# A conversion whose Markdown passes this many bytes fails ("the Markdown exceeds N MiB"); the converter checks it.
DOCUMENT_TRANSFORM_MAX_OUTPUT_BYTES = env_int("DOCUMENT_TRANSFORM_MAX_OUTPUT_BYTES", 20 * 1024 * 1024, minimum=1024)
# The whole environment of a converter process (it parses untrusted files): none of the secrets above.
DOCUMENT_CONVERTER_ENVIRONMENT = {
    name: os.environ[name]
    for name in ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "HOME", "PYTHONPATH", "VIRTUAL_ENV")
    if name in os.environ
}
# Bytes of documents (uploaded and derived) a project may store; over it an upload answers 413. Overridable per
# project in admin (Document quotas). 0: no quota.
DOCUMENT_PROJECT_QUOTA_BYTES = env_int("DOCUMENT_PROJECT_QUOTA_BYTES", 10 * 1024**3, minimum=0)
# Documents (uploaded and derived) are deleted with their files this many days after they were stored; 0 keeps them.
DOCUMENT_RETENTION_DAYS = env_int("DOCUMENT_RETENTION_DAYS", 30, minimum=0)
# Where documents are stored: "local" (MEDIA_ROOT) or "s3" (any S3-compatible service, through django-storages).
DOCUMENT_STORAGE = env_str("DOCUMENT_STORAGE", "local").strip().lower()
if DOCUMENT_STORAGE == "local":
    _documents_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
elif DOCUMENT_STORAGE == "s3":
    _documents_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env_str("DOCUMENT_S3_BUCKET", ""),
            "endpoint_url": env_str("DOCUMENT_S3_ENDPOINT_URL", "") or None,
            "region_name": env_str("DOCUMENT_S3_REGION", "") or None,
            "access_key": env_str("DOCUMENT_S3_ACCESS_KEY_ID", "") or None,
            "secret_key": env_str("DOCUMENT_S3_SECRET_ACCESS_KEY", "") or None,
            "location": env_str("DOCUMENT_S3_PREFIX", ""),
            "default_acl": None,
            "file_overwrite": False,
            "querystring_auth": True,
        },
    }
    if not _documents_storage["OPTIONS"]["bucket_name"]:
        raise ImproperlyConfigured("DOCUMENT_S3_BUCKET must be set when DOCUMENT_STORAGE is s3")
else:
    raise ImproperlyConfigured(f"DOCUMENT_STORAGE must be local or s3, got {DOCUMENT_STORAGE!r}")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "documents": _documents_storage,
}

# --- Diagnostic jobs ----------------------------------------------------------------------------
# Longest delay (seconds) of an echo job: it holds a high-priority worker slot that long.
ECHO_MAX_DELAY_SECONDS = env_float("ECHO_MAX_DELAY_SECONDS", 10.0, minimum=0)

# --- Webhooks -----------------------------------------------------------------------------------
# Callback URLs must be https; plain http only where this allows it (development and tests).
WEBHOOK_ALLOW_HTTP = env_bool("WEBHOOK_ALLOW_HTTP", False)
# CIDRs that webhooks may reach although they are loopback/private/link-local/... (e.g. "10.1.2.0/24").
WEBHOOK_ALLOWED_NETWORKS = env_list("WEBHOOK_ALLOWED_NETWORKS", [])
for _network in WEBHOOK_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise ImproperlyConfigured(f"WEBHOOK_ALLOWED_NETWORKS: {_network!r} is not a network (CIDR)") from None
WEBHOOK_CONNECT_TIMEOUT = env_float("WEBHOOK_CONNECT_TIMEOUT", 5.0, minimum=0.1)  # seconds
WEBHOOK_READ_TIMEOUT = env_float("WEBHOOK_READ_TIMEOUT", 10.0, minimum=0.1)  # seconds
# Wall-clock bound of one attempt, connect to last byte read (the timeouts above bound each read only); an attempt
# holds its delivery for this plus a margin, so no second attempt of it starts meanwhile. Below the soft time limit,
# so that a slow receiver ends as a retried attempt, not a killed task.
WEBHOOK_ATTEMPT_DEADLINE_SECONDS = env_float(
    "WEBHOOK_ATTEMPT_DEADLINE_SECONDS", min(30.0, CELERY_TASK_SOFT_TIME_LIMIT * 0.8), minimum=0.1
)
if WEBHOOK_ATTEMPT_DEADLINE_SECONDS >= CELERY_TASK_SOFT_TIME_LIMIT:
    raise ImproperlyConfigured(
        f"WEBHOOK_ATTEMPT_DEADLINE_SECONDS ({WEBHOOK_ATTEMPT_DEADLINE_SECONDS}) must be below "
        f"CELERY_TASK_SOFT_TIME_LIMIT ({CELERY_TASK_SOFT_TIME_LIMIT})"
    )
# Attempts of one delivery, and the exponential backoff (with jitter) between them: with the defaults
# the retries spread over roughly 1.5 to 3 hours.
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 10, minimum=1)
WEBHOOK_RETRY_BASE_DELAY = env_float("WEBHOOK_RETRY_BASE_DELAY", 30.0, minimum=0)
WEBHOOK_RETRY_MAX_DELAY = env_float("WEBHOOK_RETRY_MAX_DELAY", 3600.0, minimum=0)
# After a rotation, deliveries are signed with the new and the previous secret for this long.
WEBHOOK_SECRET_ROTATION_GRACE = env_int("WEBHOOK_SECRET_ROTATION_GRACE", 86400, minimum=0)

# --- Periodic maintenance ---------------------------------------------------------------------------
# Beat lock: "auto" (Redis when REDIS_URL is set, else a PostgreSQL advisory lock, else a file lock for
# SQLite), "redis", "postgres", "file" or "none".
BEAT_LOCK_BACKEND = env_str("BEAT_LOCK_BACKEND", "auto")
if BEAT_LOCK_BACKEND not in {"auto", "redis", "postgres", "file", "none"}:
    raise ImproperlyConfigured(
        f"BEAT_LOCK_BACKEND must be auto, redis, postgres, file or none, got {BEAT_LOCK_BACKEND!r}"
    )
# Name of the lock (default: derived from the database name, so one beat per database).
BEAT_LOCK_NAME = env_str("BEAT_LOCK_NAME", "")
# Redis lock time-to-live (seconds): a standby beat takes over at most this long after the holder died.
BEAT_LOCK_TIMEOUT = env_int("BEAT_LOCK_TIMEOUT", 30, minimum=1)
if BEAT_LOCK_TIMEOUT < 2 * CELERY_BEAT_MAX_LOOP_INTERVAL:
    raise ImproperlyConfigured("BEAT_LOCK_TIMEOUT must be at least twice CELERY_BEAT_MAX_LOOP_INTERVAL")
# A PROCESSING job started longer ago than the hard time limit plus this margin is requeued or failed.
JOB_STALLED_MARGIN_SECONDS = env_int("JOB_STALLED_MARGIN_SECONDS", 300, minimum=0)
# Finished jobs (and their webhook deliveries) are deleted this many days after they finished; 0 keeps them.
JOB_RETENTION_DAYS = env_int("JOB_RETENTION_DAYS", 30, minimum=0)
# Deletions run in batches of this many rows, at most this many batches per run (the next run goes on).
MAINTENANCE_BATCH_SIZE = env_int("MAINTENANCE_BATCH_SIZE", 1000, minimum=1)
MAINTENANCE_MAX_BATCHES = env_int("MAINTENANCE_MAX_BATCHES", 100, minimum=1)

# --- LLM calls ------------------------------------------------------------------------------------
# Fernet keys (comma-separated, newest first) that encrypt provider credentials at rest. Unset: one key derived
# from SECRET_KEY. To rotate, put the new key first and keep the old ones until `manage.py
# rotate_llm_credentials` has re-encrypted every credential.
CREDENTIALS_ENCRYPTION_KEYS = env_list("CREDENTIALS_ENCRYPTION_KEYS", [])
for _key in CREDENTIALS_ENCRYPTION_KEYS:
    try:
        if len(base64.urlsafe_b64decode(_key.encode())) != 32:
            raise ValueError
    except ValueError:
        raise ImproperlyConfigured(
            "CREDENTIALS_ENCRYPTION_KEYS must be Fernet keys (32 url-safe base64-encoded bytes), comma-separated"
        ) from None
# Seconds to connect to / wait for a byte from an LLM provider. The read timeout must stay below the soft time
# limit so that a slow provider ends as a retryable timeout, not a killed task.
LLM_CONNECT_TIMEOUT = env_float("LLM_CONNECT_TIMEOUT", 5.0, minimum=0.1)
LLM_READ_TIMEOUT = env_float("LLM_READ_TIMEOUT", min(120.0, CELERY_TASK_SOFT_TIME_LIMIT * 0.8), minimum=0.1)
if LLM_READ_TIMEOUT >= CELERY_TASK_SOFT_TIME_LIMIT:
    raise ImproperlyConfigured(
        f"LLM_READ_TIMEOUT ({LLM_READ_TIMEOUT}) must be below "
        f"CELERY_TASK_SOFT_TIME_LIMIT ({CELERY_TASK_SOFT_TIME_LIMIT})"
    )
# Bytes of a provider's answer (decompressed) a worker reads; a larger one fails the job.
LLM_MAX_RESPONSE_BYTES = env_int("LLM_MAX_RESPONSE_BYTES", 16 * 1024 * 1024, minimum=1024)
# Keep-alive connections per provider host in a worker process's HTTP pool; size it to the worker concurrency.
LLM_HTTP_POOL_MAXSIZE = env_int("LLM_HTTP_POOL_MAXSIZE", 300, minimum=1)
# Allow provider base URLs on loopback/private networks (a local vLLM or Ollama); off, they are refused
# when the credential is stored, so a client cannot point the workers at internal services.
LLM_ALLOW_PRIVATE_BASE_URLS = env_bool("LLM_ALLOW_PRIVATE_BASE_URLS", DEBUG)
# Provider credential limits (llm/limits.py): a call whose turn comes within this many seconds waits in the worker;
# a longer wait puts the job back to PENDING, published again when the credential's window frees.
LLM_LIMIT_MAX_INLINE_WAIT = env_float("LLM_LIMIT_MAX_INLINE_WAIT", 2.0, minimum=0)
# Seconds a credential's calls pause after the provider answered 429 without Retry-After (with it: that long).
LLM_CREDENTIAL_PAUSE_SECONDS = env_float("LLM_CREDENTIAL_PAUSE_SECONDS", 5.0, minimum=0)
# Greenlets per worker process when `run_worker --pool gevent` (or threads) gets no --concurrency.
CELERY_WORKER_GEVENT_CONCURRENCY = env_int("CELERY_WORKER_GEVENT_CONCURRENCY", 300, minimum=1)

# --- Logging ------------------------------------------------------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {LOG_LEVEL!r}")
# "text" (readable, the default) or "json" (one JSON object per line, for log shippers).
LOG_FORMAT = env_str("LOG_FORMAT", "text").lower()
if LOG_FORMAT not in {"text", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be text or json, got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "kaapi.logging.ContextFilter"}},
    "formatters": {
        "text": {
            "format": "%(asctime)s %(levelname)s %(name)s [trace=%(trace_id)s job=%(job_id)s task=%(task_id)s] "
            "%(message)s"
        },
        "json": {"()": "kaapi.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Operations: health, metrics, API docs --------------------------------------------------------
# Readiness (/readyz) gives the database and the broker this many seconds each.
READYZ_TIMEOUT_SECONDS = env_float("READYZ_TIMEOUT_SECONDS", 2.0, minimum=0.1)
# Prometheus multiprocess mode: every web and worker process writes its samples to files in this directory
# and /metrics adds them up. Processes that should be counted together must share it. Empty: single-process
# mode (/metrics shows only the answering process). prometheus-client reads it from the environment.
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR", str(BASE_DIR / "var" / "prometheus"))
if PROMETHEUS_MULTIPROC_DIR:
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = PROMETHEUS_MULTIPROC_DIR
else:
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
# When set, /metrics requires "Authorization: Bearer <token>" (Prometheus: bearer_token in the scrape config).
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
# Queue depths in /metrics are read from the broker at most this often (seconds).
METRICS_QUEUE_DEPTH_CACHE_SECONDS = env_float("METRICS_QUEUE_DEPTH_CACHE_SECONDS", 10.0, minimum=0)
SPECTACULAR_SETTINGS = {
    "TITLE": "Kaapi jobs API",
    "DESCRIPTION": "Submit background jobs (LLM calls, document transformations), poll them or receive webhooks. "
    "Every request carries a project API key in the X-API-KEY header; X-Request-ID (optional) sets the trace id.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"JobStatusEnum": "jobs.models.JobStatus"},
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "kaapi.schema.postprocess_common"],
}

# --- Worker heartbeat file (a liveness probe that a broker outage cannot fail) -------------------------
# When set, every worker touches this file every WORKER_HEARTBEAT_INTERVAL_SECONDS from a thread of its main
# process (a green thread under gevent), whether or not it is connected to the broker: a probe that reads the
# file's age restarts a worker whose process is frozen (a blocked gevent hub), never one waiting for RabbitMQ.
# Empty: no file (several workers on one host would share it).
WORKER_HEARTBEAT_FILE = env_str("WORKER_HEARTBEAT_FILE", "")
WORKER_HEARTBEAT_INTERVAL_SECONDS = env_float("WORKER_HEARTBEAT_INTERVAL_SECONDS", 10.0, minimum=0.1)
