#!/usr/bin/env bash
# `make run`: the whole system on this machine — SQLite, a project-local RabbitMQ node, the web server,
# a worker for every queue, beat and Flower. Ctrl-C stops everything it started.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY=.venv/bin/python
PORT="${PORT:-8000}"
FLOWER_PORT="${FLOWER_PORT:-5555}"
# One gevent worker process per core for high_priority (a greenlet process uses one core); at most 4 here.
cores="$(nproc 2>/dev/null || echo 1)"
HIGH_WORKERS="${HIGH_WORKERS:-$((cores < 4 ? cores : 4))}"
[ "$HIGH_WORKERS" -ge 1 ] 2>/dev/null || { echo "HIGH_WORKERS must be a number >= 1" >&2; exit 2; }

scripts/services.sh start dev rabbitmq ocr
eval "$(scripts/services.sh env dev)"
export RABBITMQ_URL DEBUG="${DEBUG:-true}" ALLOWED_HOSTS="${ALLOWED_HOSTS:-localhost,127.0.0.1,[::1]}"
mkdir -p var/log

$PY manage.py migrate --noinput >var/log/migrate.log
$PY manage.py setup_periodic_tasks >/dev/null 2>&1 || true

# An admin user and a demo project key, made once and kept in var/.
if [ ! -f var/admin-password ]; then
  $PY -c 'import secrets; print(secrets.token_urlsafe(12))' > var/admin-password
  DJANGO_SUPERUSER_PASSWORD="$(cat var/admin-password)" $PY manage.py createsuperuser --noinput \
    --username admin --email admin@localhost >/dev/null 2>&1 || true
fi
if [ ! -f var/demo-api-key ]; then
  $PY manage.py create_api_key --organization Demo --project demo --name "make run" 2>/dev/null > var/demo-api-key
fi
API_KEY="$(cat var/demo-api-key)"

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "stopping..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  scripts/services.sh stop dev rabbitmq
}
trap cleanup INT TERM EXIT

$PY manage.py runserver "127.0.0.1:$PORT" --noreload >var/log/web.log 2>&1 & pids+=($!)
for i in $(seq 1 "$HIGH_WORKERS"); do
  .venv/bin/celery -A kaapi worker -Q high_priority -P gevent -c 300 --prefetch-multiplier 2 -n "high$i@%h" \
    --without-gossip --without-mingle >"var/log/worker-high$i.log" 2>&1 & pids+=($!)
done
$PY manage.py run_worker --queues low_priority,default,cron --pool prefork --concurrency 2 --hostname low@%h \
  >var/log/worker-low.log 2>&1 & pids+=($!)
$PY manage.py run_beat >var/log/beat.log 2>&1 & pids+=($!)
# Flower's Broker page reads RabbitMQ's management API, which the dev node serves on its own port (services.sh).
rabbit_credentials="${RABBITMQ_URL#amqp://}"; rabbit_credentials="${rabbit_credentials%%@*}"
FLOWER_BROKER_API="http://$rabbit_credentials@127.0.0.1:$KAAPI_RABBITMQ_MANAGEMENT_PORT/api/"
if $PY -c 'import flower' 2>/dev/null; then
  .venv/bin/celery -A kaapi flower --address=127.0.0.1 --port="$FLOWER_PORT" --broker_api="$FLOWER_BROKER_API" \
    >var/log/flower.log 2>&1 & pids+=($!)
fi

for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.2; done

cat <<INFO

Kaapi jobs is running (logs in var/log/, Ctrl-C to stop).

  Admin:    http://127.0.0.1:$PORT/admin/   user: admin   password: $(cat var/admin-password)
  Flower:   http://127.0.0.1:$FLOWER_PORT/
  API key (project Demo/demo): $API_KEY

Submit a job:
  curl -s -X POST http://127.0.0.1:$PORT/api/v1/jobs/echo/ -H 'X-API-KEY: $API_KEY' -H 'Content-Type: application/json' -d '{"params": {"hello": "world"}, "delay": 1}'
Poll it (use the job_id printed by the line above):
  curl -s http://127.0.0.1:$PORT/api/v1/jobs/JOB_ID/ -H 'X-API-KEY: $API_KEY'

INFO
wait -n "${pids[@]}" || true
echo "a process exited; see var/log/" >&2
