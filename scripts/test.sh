#!/usr/bin/env bash
# The test suite on real PostgreSQL, RabbitMQ and Redis nodes that this script starts.
#
#   scripts/test.sh                 the whole suite: tests/ on the "test" nodes, then tests/chaos (fault injection,
#                                   which stops and restarts its own "chaos" nodes); the benchmarks' smoke run
#                                   (tests/e2e/test_bench_smoke.py, a few minutes) is left to `make bench-smoke`
#   scripts/test.sh ARGS...         pytest ARGS on the "test" nodes (KAAPI_SERVICES_PROFILE=chaos for tests/chaos)
#
# KAAPI_TEST_ID names this run's database and RabbitMQ vhost (default: the checkout's folder name), so that two
# checkouts can share the nodes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ID="${KAAPI_TEST_ID:-$(basename "$ROOT" | tr -c 'a-zA-Z0-9\n' '_' | tr 'A-Z' 'a-z')}"

run_suite() {  # run_suite PROFILE PYTEST_ARGS...
  local profile="$1"; shift
  scripts/services.sh start "$profile" postgres rabbitmq redis
  (
    eval "$(scripts/services.sh env "$profile")"
    scripts/services.sh rabbitmqctl "$profile" add_vhost "kaapi-$ID" >/dev/null 2>&1 || true
    scripts/services.sh rabbitmqctl "$profile" set_permissions -p "kaapi-$ID" guest ".*" ".*" ".*" >/dev/null
    export KAAPI_SERVICES_PROFILE="$profile"
    export KAAPI_TEST_VHOST="kaapi-$ID"
    export RABBITMQ_URL="${RABBITMQ_URL%//}/kaapi-$ID"
    export DATABASE_URL="$KAAPI_PG_URL/kaapi_$ID"
    export DATABASE_TEST_NAME="test_kaapi_$ID"
    export REDIS_URL="$KAAPI_REDIS_URL"
    export SECRET_KEY="test-secret-key-not-for-production"
    export DEBUG=false
    export ALLOWED_HOSTS="localhost,127.0.0.1,testserver"
    # The test client and the test servers speak plain HTTP on 127.0.0.1 (no TLS proxy in front).
    export SECURE_SSL_REDIRECT=false
    # Metrics of this run only (the default, var/prometheus, belongs to make run).
    PROMETHEUS_MULTIPROC_DIR="$(mktemp -d /tmp/kaapi-test-metrics.XXXXXX)"
    export PROMETHEUS_MULTIPROC_DIR
    export CELERY_TASK_DEFAULT_RETRY_DELAY=1
    export CELERY_TASK_RETRY_BACKOFF_MAX=4
    exec .venv/bin/python -m pytest "$@"
  )
}

if [ $# -eq 0 ]; then
  run_suite test --ignore=tests/chaos --ignore=tests/e2e/test_bench_smoke.py
  run_suite chaos tests/chaos
else
  run_suite "${KAAPI_SERVICES_PROFILE:-test}" "$@"
fi
