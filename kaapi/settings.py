"""Django settings for kaapi.

Every value comes from the environment (read with django-environ) and has a default that works for `make run`;
docs/configuration.md lists them all. This is the only module that reads ``os.environ``; a malformed value stops
start-up with an ``ImproperlyConfigured`` error naming the variable.

Sections, in order: reading the environment, core, HTTPS, database, cache, API, Celery (broker, workers, tasks,
results and beat), jobs, webhooks, periodic maintenance, LLM calls, documents, logging, operations. A new setting
goes into the section of its concern, or as a self-contained block at the end of the file.
"""

from __future__ import annotations

import base64
import builtins
import ipaddress
import os
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


# --- Reading the environment ------------------------------------------------------------------------------------
class Env(environ.Env):
    """django-environ, read strictly: the documented contract is that a malformed value stops start-up.

    django-environ alone reads ``DEBUG=maybe`` as false, ``1e3`` as a float of 13, keeps the spaces of
    ``a, b`` in a list and reads a value starting with ``$`` as the name of another variable (a secret may
    start with one). Here a value that does not parse raises ``ImproperlyConfigured`` naming the variable, an
    empty number means its default (compose passes an unset variable as ""), and ``minimum=`` bounds a number.
    """

    TRUE_STRINGS = frozenset({"1", "true", "yes", "on"})
    FALSE_STRINGS = frozenset({"0", "false", "no", "off", ""})
    EXPECTED = {bool: "a boolean (true/false, 1/0, yes/no)", builtins.int: "an integer", builtins.float: "a number"}

    def get_value(self, var: str, cast: Any = None, default: Any = environ.Env.NOTSET, parse_default: bool = False):
        raw = self.ENVIRON.get(var)
        if raw is None or (cast in (builtins.int, builtins.float) and not raw.strip()):
            if default is self.NOTSET:
                raise ImproperlyConfigured(f"Set the {var} environment variable")
            return default
        try:
            return self.parse_value(raw, cast)
        except ValueError:
            raise ImproperlyConfigured(f"{var} must be {self.EXPECTED.get(cast, 'valid')}, got {raw!r}") from None

    @classmethod
    def parse_value(cls, value: str, cast: Any) -> Any:
        if cast is bool:
            if value.strip().lower() in cls.TRUE_STRINGS:
                return True
            if value.strip().lower() in cls.FALSE_STRINGS:
                return False
            raise ValueError(value)
        if cast is builtins.float:
            return builtins.float(value)
        if cast is list:
            return [item.strip() for item in value.split(",") if item.strip()]
        return super().parse_value(value, cast)

    def int(self, var: str, default: Any = environ.Env.NOTSET, *, minimum: builtins.int | None = None) -> Any:
        return self._at_least(var, super().int(var, default=default), minimum)

    def float(self, var: str, default: Any = environ.Env.NOTSET, *, minimum: builtins.float | None = None) -> Any:
        return self._at_least(var, super().float(var, default=default), minimum)

    @staticmethod
    def _at_least(var: str, value: Any, minimum: builtins.float | None) -> Any:
        if minimum is not None and value is not None and value < minimum:
            raise ImproperlyConfigured(f"{var} must be >= {minimum}, got {value}")
        return value


def require_url_scheme(var: str, value: str, schemes: tuple[str, ...]) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in schemes or not (parsed.hostname or parsed.path):
        raise ImproperlyConfigured(f"{var} must be a URL with scheme {' or '.join(schemes)}, got {value!r}")
    return value


env = Env()

# --- Core ----------------------------------------------------------------------------------------------------------
DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is false")
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

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
    "drf_spectacular_sidecar",  # Swagger UI and ReDoc served from our static files, not from a CDN
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

ROOT_URLCONF = "kaapi.urls"
WSGI_APPLICATION = "kaapi.wsgi.application"
ASGI_APPLICATION = "kaapi.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "kaapi" / "templates"],  # the admin index with the dashboard link
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

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
STATICFILES_DIRS = [BASE_DIR / "kaapi" / "static"]  # vendored JavaScript (Chart.js)
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # filled by `manage.py collectstatic` (the Docker image does)
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(BASE_DIR / "var" / "media")))
# The admin's login form refuses an address and user name (429) after this many failed attempts in this many seconds.
ADMIN_LOGIN_MAX_FAILURES = env.int("ADMIN_LOGIN_MAX_FAILURES", default=5, minimum=1)
ADMIN_LOGIN_FAILURE_WINDOW = env.int("ADMIN_LOGIN_FAILURE_WINDOW", default=900, minimum=1)

# --- HTTPS ---------------------------------------------------------------------------------------------------------
# Behind the TLS reverse proxy in front of docker-compose, gunicorn sees plain HTTP: the proxy states the client's
# scheme in this header (e.g. X-Forwarded-Proto, set to "https"), so that redirects, `Location` and `status_url`
# are https. Empty: no header is trusted. Set it only when every request comes through a proxy that overwrites the
# header; a client reaching gunicorn directly could otherwise claim https.
_proxy_ssl_header = env.str("SECURE_PROXY_SSL_HEADER", default="").strip()
if _proxy_ssl_header:
    if not re.fullmatch(r"[A-Za-z0-9-]+", _proxy_ssl_header):
        raise ImproperlyConfigured(f"SECURE_PROXY_SSL_HEADER must be a header name, got {_proxy_ssl_header!r}")
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
# Probes and the Prometheus scrape reach the web container over plain HTTP from inside the deployment.
SECURE_REDIRECT_EXEMPT = [r"^healthz/?$", r"^readyz/?$", r"^metrics/?$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)

# --- Database ------------------------------------------------------------------------------------------------------
DATABASE_URL = env.str("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}")
DATABASE_CONN_MAX_AGE = env.int("DATABASE_CONN_MAX_AGE", default=60, minimum=0)
try:
    _db: dict[str, Any] = env.db_url_config(DATABASE_URL)
except Exception as exc:  # django-environ raises several types for a bad URL
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
if _db.get("ENGINE") not in set(Env.DB_SCHEMES.values()):
    raise ImproperlyConfigured(f"DATABASE_URL has an unsupported scheme: {DATABASE_URL!r}")
_db["CONN_MAX_AGE"] = DATABASE_CONN_MAX_AGE
if _db["ENGINE"] == "django.db.backends.sqlite3":
    Path(_db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # SQLite is the zero-setup default: WAL lets the web server and the worker share the file.
    _db["OPTIONS"] = {"init_command": "PRAGMA journal_mode=WAL;", "timeout": 20}
    _db["CONN_MAX_AGE"] = 0
else:
    _db["CONN_HEALTH_CHECKS"] = True
# The statements every job runs (its INSERT, the claim, the SUCCESS) and the hot-path lookups
# are prepared on the server (jobs/sql.py, kaapi/sql.py); turn it off behind a pooler that cannot keep
# prepared statements (PgBouncer in transaction mode before 1.21).
DATABASE_PREPARED_STATEMENTS = env.bool("DATABASE_PREPARED_STATEMENTS", default=True)
if _db["ENGINE"] == "django.db.backends.postgresql":
    _db.setdefault("OPTIONS", {})["prepare_threshold"] = 5 if DATABASE_PREPARED_STATEMENTS else None
DATABASE_TEST_NAME = env.str("DATABASE_TEST_NAME", default="")
if DATABASE_TEST_NAME:
    _db["TEST"] = {"NAME": DATABASE_TEST_NAME}
# Greenlet workers (`-P gevent`) run hundreds of tasks in one process and Django keeps one connection per
# greenlet: there the connections come from a bounded psycopg pool instead (0 turns the pool off).
DATABASE_GEVENT_POOL_MAX_SIZE = env.int("DATABASE_GEVENT_POOL_MAX_SIZE", default=20, minimum=0)
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
if _db["ENGINE"].endswith("sqlite3"):
    # SQLite (make run) builds the usage report's covering index without its INCLUDE columns: slower reports on a
    # demo database, nothing wrong; PostgreSQL, which production runs, keeps them.
    SILENCED_SYSTEM_CHECKS = ["models.W040"]

# --- Cache (Redis when configured) -------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    require_url_scheme("REDIS_URL", REDIS_URL, ("redis", "rediss", "unix"))
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- API: REST framework, keys, throttling, request limits ---------------------------------------------------------
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
    "DEFAULT_SCHEMA_CLASS": "kaapi.schema.AutoSchema",  # operations tagged by their app
    "DEFAULT_THROTTLE_CLASSES": [
        "kaapi.throttling.SubmitRateThrottle",
        "kaapi.throttling.ReadRateThrottle",
    ],
}
# Keyed hash for API keys: HMAC-SHA256 over a 256-bit random secret, keyed by this pepper.
API_KEY_PEPPER = env.str("API_KEY_PEPPER", default=SECRET_KEY)
# Requests per API key (kaapi/throttling.py), counted on the shared cache (Redis when REDIS_URL is set): submissions
# (POST, PUT, PATCH, DELETE) and reads (GET) apart, as "N/s", "N/min", "N/hour" or "N/day" ("off": no limit); above,
# 429 with Retry-After. The defaults only stop a runaway client: they are above what one key sends in the benchmarks.
API_THROTTLE_SUBMIT_RATE = env.str("API_THROTTLE_SUBMIT_RATE", default="3000/s")
API_THROTTLE_READ_RATE = env.str("API_THROTTLE_READ_RATE", default="10000/s")
for _rate_setting in ("API_THROTTLE_SUBMIT_RATE", "API_THROTTLE_READ_RATE"):
    _rate = globals()[_rate_setting].strip().lower()
    if _rate not in {"", "off", "none"} and not re.fullmatch(r"[1-9][0-9]*\s*/\s*(s|m|h|d)[a-z]*", _rate):
        raise ImproperlyConfigured(f"{_rate_setting} must be a rate such as 600/min, 10/s or off, got {_rate!r}")
# Request limits (kaapi/parsers.py, kaapi/pagination.py): a JSON body above this many bytes is refused with 413,
# from its Content-Length before it is read.
API_MAX_JSON_BODY_BYTES = env.int("API_MAX_JSON_BODY_BYTES", default=4 * 1024 * 1024, minimum=1024)
# JSON nested deeper than this (objects and arrays) is refused with 400.
API_MAX_JSON_DEPTH = env.int("API_MAX_JSON_DEPTH", default=64, minimum=2)
# The largest page a list returns; a larger ?limit= is lowered to it.
API_MAX_PAGE_SIZE = env.int("API_MAX_PAGE_SIZE", default=1000, minimum=1)

# --- Celery: broker ------------------------------------------------------------------------------------------------
RABBITMQ_URL = require_url_scheme(
    "RABBITMQ_URL",
    env.str("RABBITMQ_URL", default="amqp://guest:guest@127.0.0.1:5672//"),
    ("amqp", "amqps", "pyamqp"),
)
CELERY_BROKER_URL = RABBITMQ_URL
# Connections kept in the publisher pool.
CELERY_BROKER_POOL_LIMIT = env.int("CELERY_BROKER_POOL_LIMIT", default=10, minimum=0)
# Keep retrying the broker at start-up instead of crashing (Celery 6 will stop doing it by default).
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Publisher confirms are not switched on here for every connection: job messages, their retries and webhook
# deliveries are published on confirming connections (kaapi.celery.confirmed_producer), where publish() returns
# only once RabbitMQ has the persistent message. Monitoring events (Flower) and beat's ticks (idempotent sweeps,
# run again at the next tick) go without: a confirm round trip for each event of each task buys nothing.
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {}
# A publish that cannot reach the broker is retried briefly; after that the job stays PENDING
# (undispatched) and the recovery sweep publishes it again.
CELERY_TASK_PUBLISH_RETRY = True
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": env.int("CELERY_TASK_PUBLISH_MAX_RETRIES", default=3, minimum=0),
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}

# --- Celery: workers -----------------------------------------------------------------------------------------------
CELERY_WORKER_CONCURRENCY = env.int("CELERY_WORKER_CONCURRENCY", default=None, minimum=1)
COMPUTED_CELERY_WORKER_CONCURRENCY = CELERY_WORKER_CONCURRENCY or os.cpu_count() or 1
# Greenlets per worker process when `run_worker --pool gevent` (or threads) gets no --concurrency.
CELERY_WORKER_GEVENT_CONCURRENCY = env.int("CELERY_WORKER_GEVENT_CONCURRENCY", default=300, minimum=1)
# Messages reserved per worker process; 1 keeps priorities meaningful with long tasks.
CELERY_WORKER_PREFETCH_MULTIPLIER = env.int("CELERY_WORKER_PREFETCH_MULTIPLIER", default=1, minimum=0)
# Recycle a child process after this many tasks / this much resident memory (KiB). Memory is the leak guard; the
# count is a backstop, since a recycle idles the child while billiard forks a new one, which opens its own
# database connection.
CELERY_WORKER_MAX_TASKS_PER_CHILD = env.int("CELERY_WORKER_MAX_TASKS_PER_CHILD", default=10000, minimum=1)
CELERY_WORKER_MAX_MEMORY_PER_CHILD = env.int("CELERY_WORKER_MAX_MEMORY_PER_CHILD", default=200000, minimum=1)
# Django's per-task connection health check (a SELECT 1 before each job) in workers; see jobs/tasks.py.
CELERY_WORKER_DB_HEALTH_CHECKS = env.bool("CELERY_WORKER_DB_HEALTH_CHECKS", default=False)
# Celery's Django fixup closes every database connection before and after each task (from Celery 5.6) unless told to
# reuse it this many times: never, here. kaapi/celery.py closes them by Django's own rule instead (unusable after an
# error, or older than CONN_MAX_AGE), as Celery did up to 5.5, so that a job does not pay for a new connection.
CELERY_DB_REUSE_MAX = 2**62
# Events so Flower can show tasks and workers.
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_TASK_TRACK_STARTED = True
# Our logging config stays in charge of the root logger.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Celery: tasks -------------------------------------------------------------------------------------------------
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=300, minimum=1)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=600, minimum=1)
if CELERY_TASK_TIME_LIMIT <= CELERY_TASK_SOFT_TIME_LIMIT:
    raise ImproperlyConfigured("CELERY_TASK_TIME_LIMIT must be greater than CELERY_TASK_SOFT_TIME_LIMIT")
# Ack after the task ran, and put the message back when the process running it dies.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# On a lost broker connection, stop tasks whose message will be redelivered anyway (the Celery 6 default).
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_TASK_DEFAULT_RETRY_DELAY = env.int("CELERY_TASK_DEFAULT_RETRY_DELAY", default=60, minimum=0)
CELERY_TASK_MAX_RETRIES = env.int("CELERY_TASK_MAX_RETRIES", default=3, minimum=0)
# Upper bound of one backoff step (exponential backoff with full jitter).
CELERY_TASK_RETRY_BACKOFF_MAX = env.int("CELERY_TASK_RETRY_BACKOFF_MAX", default=600, minimum=1)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Run tasks in-process (unit tests of single functions only; never for system tests).
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)

# --- Celery: results and beat --------------------------------------------------------------------------------------
# django-celery-results' tables ("django-db"), through a subclass that gzips results and writes each with one
# upsert (kaapi/results.py).
CELERY_RESULT_BACKEND = "kaapi.results:DatabaseBackend"
# One backend object for all threads/greenlets. Otherwise Celery builds one per thread, which under the gevent
# pool means one per task, each scanning every installed package's entry points. The backend holds no connection
# of its own; the ORM keeps one per thread/greenlet.
CELERY_RESULT_BACKEND_THREAD_SAFE = True
CELERY_RESULT_EXTENDED = True
CELERY_RESULT_COMPRESSION = "gzip"
CELERY_RESULT_EXPIRES = env.int("CELERY_RESULT_EXPIRES", default=3600, minimum=1)
# The database scheduler (schedules edited in admin) behind a lock so that only one beat fires: jobs/beat.py.
CELERY_BEAT_SCHEDULER = "jobs.beat:LockedDatabaseScheduler"
# Longest sleep of beat between two looks at the schedule table: an edit in admin is picked up within it.
CELERY_BEAT_MAX_LOOP_INTERVAL = env.float("CELERY_BEAT_MAX_LOOP_INTERVAL", default=5.0, minimum=0.1)
CELERY_TIMEZONE = env.str("CELERY_TIMEZONE", default="UTC")
CELERY_ENABLE_UTC = env.bool("CELERY_ENABLE_UTC", default=True)

# --- Jobs ----------------------------------------------------------------------------------------------------------
# A job whose deliveries keep killing the worker ends FAILED after this many lost deliveries.
JOB_MAX_WORKER_LOST = env.int("JOB_MAX_WORKER_LOST", default=3, minimum=1)
# A PENDING job not dispatched for this long is published again by the recovery sweep.
JOB_DISPATCH_GRACE_SECONDS = env.int("JOB_DISPATCH_GRACE_SECONDS", default=60, minimum=1)
# "background": a thread of each process publishes committed jobs in batches, off the request path;
# "inline": the committing thread publishes before the response. See jobs/admission.py.
JOB_DISPATCH_MODE = env.str("JOB_DISPATCH_MODE", default="background")
if JOB_DISPATCH_MODE not in {"background", "inline"}:
    raise ImproperlyConfigured(f"JOB_DISPATCH_MODE must be background or inline, got {JOB_DISPATCH_MODE!r}")
# Admission (jobs/admission.py): a project's jobs admitted to the broker and not finished, per queue (high, low),
# at most; the others wait PENDING in the table. A project's own value in admin overrides it.
JOB_MAX_CONCURRENT_JOBS = env.int("JOB_MAX_CONCURRENT_JOBS", default=100, minimum=1)
# Admission: a project's jobs admitted in any 60 seconds (both queues), at most; the others wait PENDING. 0: no limit.
# A project's own value in admin overrides it.
JOB_MAX_SUBMISSIONS_PER_MINUTE = env.int("JOB_MAX_SUBMISSIONS_PER_MINUTE", default=0, minimum=0)
# Longest delay (seconds) of a diagnostic echo job: it holds a high-priority worker slot that long.
ECHO_MAX_DELAY_SECONDS = env.float("ECHO_MAX_DELAY_SECONDS", default=10.0, minimum=0)

# --- Webhooks ------------------------------------------------------------------------------------------------------
# Callback URLs must be https; plain http only where this allows it (development and tests).
WEBHOOK_ALLOW_HTTP = env.bool("WEBHOOK_ALLOW_HTTP", default=False)
# CIDRs that webhooks may reach although they are loopback/private/link-local/... (e.g. "10.1.2.0/24").
WEBHOOK_ALLOWED_NETWORKS = env.list("WEBHOOK_ALLOWED_NETWORKS", default=[])
for _network in WEBHOOK_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise ImproperlyConfigured(f"WEBHOOK_ALLOWED_NETWORKS: {_network!r} is not a network (CIDR)") from None
WEBHOOK_CONNECT_TIMEOUT = env.float("WEBHOOK_CONNECT_TIMEOUT", default=5.0, minimum=0.1)  # seconds
WEBHOOK_READ_TIMEOUT = env.float("WEBHOOK_READ_TIMEOUT", default=10.0, minimum=0.1)  # seconds
# Wall-clock bound of one attempt, connect to last byte read (the timeouts above bound each read only); an attempt
# holds its delivery for this plus a margin, so no second attempt of it starts meanwhile. Below the soft time limit,
# so that a slow receiver ends as a retried attempt, not a killed task.
WEBHOOK_ATTEMPT_DEADLINE_SECONDS = env.float(
    "WEBHOOK_ATTEMPT_DEADLINE_SECONDS", default=min(30.0, CELERY_TASK_SOFT_TIME_LIMIT * 0.8), minimum=0.1
)
if WEBHOOK_ATTEMPT_DEADLINE_SECONDS >= CELERY_TASK_SOFT_TIME_LIMIT:
    raise ImproperlyConfigured(
        f"WEBHOOK_ATTEMPT_DEADLINE_SECONDS ({WEBHOOK_ATTEMPT_DEADLINE_SECONDS}) must be below "
        f"CELERY_TASK_SOFT_TIME_LIMIT ({CELERY_TASK_SOFT_TIME_LIMIT})"
    )
# Attempts of one delivery, and the exponential backoff (with jitter) between them: with the defaults
# the retries spread over roughly 1.5 to 3 hours.
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=10, minimum=1)
WEBHOOK_RETRY_BASE_DELAY = env.float("WEBHOOK_RETRY_BASE_DELAY", default=30.0, minimum=0)
WEBHOOK_RETRY_MAX_DELAY = env.float("WEBHOOK_RETRY_MAX_DELAY", default=3600.0, minimum=0)
# After a rotation, deliveries are signed with the new and the previous secret for this long.
WEBHOOK_SECRET_ROTATION_GRACE = env.int("WEBHOOK_SECRET_ROTATION_GRACE", default=86400, minimum=0)

# --- Periodic maintenance ------------------------------------------------------------------------------------------
# Beat lock: "auto" (Redis when REDIS_URL is set, else a PostgreSQL advisory lock, else a file lock for
# SQLite), "redis", "postgres", "file" or "none".
BEAT_LOCK_BACKEND = env.str("BEAT_LOCK_BACKEND", default="auto")
if BEAT_LOCK_BACKEND not in {"auto", "redis", "postgres", "file", "none"}:
    raise ImproperlyConfigured(
        f"BEAT_LOCK_BACKEND must be auto, redis, postgres, file or none, got {BEAT_LOCK_BACKEND!r}"
    )
# Name of the lock (default: derived from the database name, so one beat per database).
BEAT_LOCK_NAME = env.str("BEAT_LOCK_NAME", default="")
# Redis lock time-to-live (seconds): a standby beat takes over at most this long after the holder died.
BEAT_LOCK_TIMEOUT = env.int("BEAT_LOCK_TIMEOUT", default=30, minimum=1)
if BEAT_LOCK_TIMEOUT < 2 * CELERY_BEAT_MAX_LOOP_INTERVAL:
    raise ImproperlyConfigured("BEAT_LOCK_TIMEOUT must be at least twice CELERY_BEAT_MAX_LOOP_INTERVAL")
# A PROCESSING job started longer ago than the hard time limit plus this margin is requeued or failed.
JOB_STALLED_MARGIN_SECONDS = env.int("JOB_STALLED_MARGIN_SECONDS", default=300, minimum=0)
# Finished jobs (and their webhook deliveries) are deleted this many days after they finished; 0 keeps them.
JOB_RETENTION_DAYS = env.int("JOB_RETENTION_DAYS", default=30, minimum=0)
# Deletions run in batches of this many rows, at most this many batches per run (the next run goes on).
MAINTENANCE_BATCH_SIZE = env.int("MAINTENANCE_BATCH_SIZE", default=1000, minimum=1)
MAINTENANCE_MAX_BATCHES = env.int("MAINTENANCE_MAX_BATCHES", default=100, minimum=1)

# --- LLM calls -----------------------------------------------------------------------------------------------------
# Fernet keys (comma-separated, newest first) that encrypt provider credentials at rest. Unset: one key derived
# from SECRET_KEY. To rotate, put the new key first and keep the old ones until `manage.py
# rotate_llm_credentials` has re-encrypted every credential.
CREDENTIALS_ENCRYPTION_KEYS = env.list("CREDENTIALS_ENCRYPTION_KEYS", default=[])
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
LLM_CONNECT_TIMEOUT = env.float("LLM_CONNECT_TIMEOUT", default=5.0, minimum=0.1)
LLM_READ_TIMEOUT = env.float("LLM_READ_TIMEOUT", default=min(120.0, CELERY_TASK_SOFT_TIME_LIMIT * 0.8), minimum=0.1)
if LLM_READ_TIMEOUT >= CELERY_TASK_SOFT_TIME_LIMIT:
    raise ImproperlyConfigured(
        f"LLM_READ_TIMEOUT ({LLM_READ_TIMEOUT}) must be below "
        f"CELERY_TASK_SOFT_TIME_LIMIT ({CELERY_TASK_SOFT_TIME_LIMIT})"
    )
# Bytes of a provider's answer (decompressed) a worker reads; a larger one fails the job.
LLM_MAX_RESPONSE_BYTES = env.int("LLM_MAX_RESPONSE_BYTES", default=16 * 1024 * 1024, minimum=1024)
# Keep-alive connections per provider host in a worker process's HTTP pool; size it to the worker concurrency.
LLM_HTTP_POOL_MAXSIZE = env.int("LLM_HTTP_POOL_MAXSIZE", default=300, minimum=1)
# Allow provider base URLs on loopback/private networks (a local vLLM or Ollama); off, they are refused
# when the credential is stored, so a client cannot point the workers at internal services.
LLM_ALLOW_PRIVATE_BASE_URLS = env.bool("LLM_ALLOW_PRIVATE_BASE_URLS", default=DEBUG)
# Provider credential limits (llm/limits.py): a call whose turn comes within this many seconds waits in the worker;
# a longer wait puts the job back to PENDING, published again when the credential's window frees.
LLM_LIMIT_MAX_INLINE_WAIT = env.float("LLM_LIMIT_MAX_INLINE_WAIT", default=2.0, minimum=0)
# Seconds a credential's calls pause after the provider answered 429 without Retry-After (with it: that long).
LLM_CREDENTIAL_PAUSE_SECONDS = env.float("LLM_CREDENTIAL_PAUSE_SECONDS", default=5.0, minimum=0)

# --- Documents (doctransform) --------------------------------------------------------------------------------------
# Uploads above this size are refused with 413.
DOCUMENT_MAX_UPLOAD_BYTES = env.int("DOCUMENT_MAX_UPLOAD_BYTES", default=25 * 1024 * 1024, minimum=1)
# Non-file form fields and JSON bodies are small; larger file uploads spill from memory to a temporary file.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=2_621_440, minimum=1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = env.int("FILE_UPLOAD_MAX_MEMORY_SIZE", default=2_621_440, minimum=0)
# Seconds one conversion may take; the converter process is killed after that. It must leave the task time
# to read and store the files, so it has to be below the soft time limit.
DOCUMENT_TRANSFORM_TIMEOUT = env.int("DOCUMENT_TRANSFORM_TIMEOUT", default=120, minimum=1)
if DOCUMENT_TRANSFORM_TIMEOUT >= CELERY_TASK_SOFT_TIME_LIMIT:
    raise ImproperlyConfigured(
        f"DOCUMENT_TRANSFORM_TIMEOUT ({DOCUMENT_TRANSFORM_TIMEOUT}) must be less than "
        f"CELERY_TASK_SOFT_TIME_LIMIT ({CELERY_TASK_SOFT_TIME_LIMIT})"
    )
# Address-space cap (MiB) of the converter process: a decompression bomb ends in a clean error. 0: no cap.
DOCUMENT_TRANSFORM_MAX_MEMORY_MB = env.int("DOCUMENT_TRANSFORM_MAX_MEMORY_MB", default=2048, minimum=0)
# The converter process is replaced after this many conversions (bounds leaks in the converter libraries).
DOCUMENT_TRANSFORM_MAX_CONVERSIONS = env.int("DOCUMENT_TRANSFORM_MAX_CONVERSIONS", default=200, minimum=1)
# A conversion whose Markdown passes this many bytes fails ("the Markdown exceeds N MiB"); the converter checks it.
DOCUMENT_TRANSFORM_MAX_OUTPUT_BYTES = env.int(
    "DOCUMENT_TRANSFORM_MAX_OUTPUT_BYTES", default=20 * 1024 * 1024, minimum=1024
)
# The whole environment of a converter process (it parses untrusted files): none of the secrets above.
DOCUMENT_CONVERTER_ENVIRONMENT = {
    name: os.environ[name]
    for name in ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "HOME", "PYTHONPATH", "VIRTUAL_ENV")
    if name in os.environ
}
# Bytes of documents (uploaded and derived) a project may store; over it an upload answers 413. Overridable per
# project in admin (Document quotas). 0: no quota.
DOCUMENT_PROJECT_QUOTA_BYTES = env.int("DOCUMENT_PROJECT_QUOTA_BYTES", default=10 * 1024**3, minimum=0)
# Documents (uploaded and derived) are deleted with their files this many days after they were stored; 0 keeps them.
DOCUMENT_RETENTION_DAYS = env.int("DOCUMENT_RETENTION_DAYS", default=30, minimum=0)
# Where documents are stored: "local" (MEDIA_ROOT) or "s3" (any S3-compatible service, through django-storages).
DOCUMENT_STORAGE = env.str("DOCUMENT_STORAGE", default="local").strip().lower()
# The S3 bucket and its credentials (DOCUMENT_STORAGE=s3); empty ones fall back to boto3's defaults.
DOCUMENT_S3_BUCKET = env.str("DOCUMENT_S3_BUCKET", default="")
DOCUMENT_S3_ENDPOINT_URL = env.str("DOCUMENT_S3_ENDPOINT_URL", default="")
DOCUMENT_S3_REGION = env.str("DOCUMENT_S3_REGION", default="")
DOCUMENT_S3_ACCESS_KEY_ID = env.str("DOCUMENT_S3_ACCESS_KEY_ID", default="")
DOCUMENT_S3_SECRET_ACCESS_KEY = env.str("DOCUMENT_S3_SECRET_ACCESS_KEY", default="")
DOCUMENT_S3_PREFIX = env.str("DOCUMENT_S3_PREFIX", default="")
_documents_storage: dict[str, Any]
if DOCUMENT_STORAGE == "local":
    _documents_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
elif DOCUMENT_STORAGE == "s3":
    if not DOCUMENT_S3_BUCKET:
        raise ImproperlyConfigured("DOCUMENT_S3_BUCKET must be set when DOCUMENT_STORAGE is s3")
    _documents_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": DOCUMENT_S3_BUCKET,
            "endpoint_url": DOCUMENT_S3_ENDPOINT_URL or None,
            "region_name": DOCUMENT_S3_REGION or None,
            "access_key": DOCUMENT_S3_ACCESS_KEY_ID or None,
            "secret_key": DOCUMENT_S3_SECRET_ACCESS_KEY or None,
            "location": DOCUMENT_S3_PREFIX,
            "default_acl": None,
            "file_overwrite": False,
            "querystring_auth": True,
        },
    }
else:
    raise ImproperlyConfigured(f"DOCUMENT_STORAGE must be local or s3, got {DOCUMENT_STORAGE!r}")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "documents": _documents_storage,
}

# --- Logging -------------------------------------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {LOG_LEVEL!r}")
# "text" (readable, the default) or "json" (one JSON object per line, for log shippers).
LOG_FORMAT = env.str("LOG_FORMAT", default="text").lower()
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

# --- Operations: health, metrics, API docs -------------------------------------------------------------------------
# Readiness (/readyz) gives the database and the broker this many seconds each.
READYZ_TIMEOUT_SECONDS = env.float("READYZ_TIMEOUT_SECONDS", default=2.0, minimum=0.1)
# Prometheus multiprocess mode: every web and worker process writes its samples to files in this directory
# and /metrics adds them up. Processes that should be counted together must share it. Empty: single-process
# mode (/metrics shows only the answering process). prometheus-client reads it from the environment.
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default=str(BASE_DIR / "var" / "prometheus"))
if PROMETHEUS_MULTIPROC_DIR:
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = PROMETHEUS_MULTIPROC_DIR
else:
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
# When set, /metrics requires "Authorization: Bearer <token>" (Prometheus: bearer_token in the scrape config).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# Queue depths in /metrics are read from the broker at most this often (seconds).
METRICS_QUEUE_DEPTH_CACHE_SECONDS = env.float("METRICS_QUEUE_DEPTH_CACHE_SECONDS", default=10.0, minimum=0)
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

# --- Submission: idempotency keys, bulk LLM calls, delayed jobs ---------------------------------------------------
# Seconds a submission's Idempotency-Key is kept (its replay answers the same job); the retention task removes it after.
IDEMPOTENCY_KEY_TTL = env.int("IDEMPOTENCY_KEY_TTL", default=86_400, minimum=1)
# Most calls in one POST /api/v1/llm/call/batch (more is a 400).
LLM_BATCH_MAX_CALLS = env.int("LLM_BATCH_MAX_CALLS", default=1000, minimum=1)
# Furthest run_after (or delay_seconds) a submission may ask for, in days (further is a 400).
JOB_SCHEDULE_HORIZON_DAYS = env.int("JOB_SCHEDULE_HORIZON_DAYS", default=30, minimum=1)
# Seconds between two runs of the sweep that publishes due SCHEDULED jobs (its beat schedule's interval).
JOB_SCHEDULED_SWEEP_SECONDS = env.int("JOB_SCHEDULED_SWEEP_SECONDS", default=1, minimum=1)

# --- Operator's view: API docs, dashboard --------------------------------------------------------
# Swagger UI and ReDoc from drf-spectacular-sidecar's static files (pinned in requirements.txt), not from a CDN.
SPECTACULAR_SETTINGS |= {
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "TAGS": [
        {"name": "jobs", "description": "Jobs of the project: poll, list, cancel, retry; the echo job."},
        {"name": "llm", "description": "LLM configs, provider credentials and calls."},
        {"name": "doctransform", "description": "Documents and their transformations."},
        {"name": "webhooks", "description": "The project's webhook signing secret."},
        {"name": "tenancy", "description": "Who the caller is."},
        {"name": "operations", "description": "Health checks (no API key)."},
    ],
}
# The admin dashboard (jobs/dashboard.py): the workers online are pinged at most this often (seconds), each ping
# waiting this long for replies.
DASHBOARD_WORKERS_CACHE_SECONDS = env.float("DASHBOARD_WORKERS_CACHE_SECONDS", default=15.0, minimum=0)
DASHBOARD_WORKERS_PING_TIMEOUT_SECONDS = env.float("DASHBOARD_WORKERS_PING_TIMEOUT_SECONDS", default=0.5, minimum=0.05)
# How often the dashboard page refreshes itself (seconds).
DASHBOARD_REFRESH_SECONDS = env.float("DASHBOARD_REFRESH_SECONDS", default=10.0, minimum=1)

# --- LLM gateway: budgets and usage reports -------------------------------------------------------
# Share of a monthly budget (project or organization) at which one budget.threshold webhook is sent that month.
LLM_BUDGET_THRESHOLD_PERCENT = env.int("LLM_BUDGET_THRESHOLD_PERCENT", default=80, minimum=1)
# The longest period GET /api/v1/usage/ reports on at once, in days.
LLM_USAGE_MAX_DAYS = env.int("LLM_USAGE_MAX_DAYS", default=366, minimum=1)

# --- Scanned documents: OCR and vision models (doctransform) -----------------------------------------
# Tesseract languages a scan is read in when the upload names none (ocr_languages), e.g. "eng,hin".
DOCUMENT_OCR_LANGUAGES = env.list("DOCUMENT_OCR_LANGUAGES", default=["eng"])
# Where Tesseract's language models (LANG.traineddata) are: Debian's tesseract-ocr-LANG packages put them here.
DOCUMENT_OCR_TESSDATA_PATH = env.str("DOCUMENT_OCR_TESSDATA_PATH", default="/usr/share/tesseract-ocr/5/tessdata")
# Resolution PDF pages are rasterized at for OCR (dots per inch).
DOCUMENT_OCR_DPI = env.int("DOCUMENT_OCR_DPI", default=300, minimum=72)
# A PDF or TIFF with more pages is not converted (an image upload: 413; a PDF: the job FAILED).
DOCUMENT_MAX_PAGES = env.int("DOCUMENT_MAX_PAGES", default=200, minimum=1)
# An image page with more pixels is refused (upload 413, or FAILED); a PDF page is rasterized at a lower DPI instead.
DOCUMENT_MAX_PAGE_PIXELS = env.int("DOCUMENT_MAX_PAGE_PIXELS", default=40_000_000, minimum=10_000)
for _language in DOCUMENT_OCR_LANGUAGES:
    if not _language.replace("_", "").isalnum():
        raise ImproperlyConfigured(f"DOCUMENT_OCR_LANGUAGES: {_language!r} is not a Tesseract language name")

# --- Worker heartbeat file (a liveness probe that a broker outage cannot fail) -------------------------
# When set, every worker touches this file every WORKER_HEARTBEAT_INTERVAL_SECONDS from a thread of its main
# process (a green thread under gevent), whether or not it is connected to the broker: a probe that reads the
# file's age restarts a worker whose process is frozen (a blocked gevent hub), never one waiting for RabbitMQ.
# Empty: no file (several workers on one host would share it).
WORKER_HEARTBEAT_FILE = env.str("WORKER_HEARTBEAT_FILE", default="")
WORKER_HEARTBEAT_INTERVAL_SECONDS = env.float("WORKER_HEARTBEAT_INTERVAL_SECONDS", default=10.0, minimum=0.1)
