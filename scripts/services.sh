#!/usr/bin/env bash
# Project-local RabbitMQ, PostgreSQL and Redis nodes for `make run` and `make test`.
#
#   scripts/services.sh start PROFILE SERVICE...   start (or reuse) the nodes; installs missing packages
#                                                  (SERVICE "ocr" only installs Tesseract's packages)
#   scripts/services.sh stop PROFILE [SERVICE...]  stop them
#   scripts/services.sh env PROFILE                print the export lines for the profile's URLs
#   scripts/services.sh rabbitmqctl PROFILE ARGS   run rabbitmqctl against the profile's node
#
# PROFILE is "dev" (make run), "test" (make test) or "chaos" (the fault-injection tests, which stop and restart
# their nodes); each has its own ports and data under .services/PROFILE.
# Ports can be moved with KAAPI_<PROFILE>_{AMQP,PG,REDIS}_PORT.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cmd="${1:?usage: services.sh start|stop|restart|env|rabbitmqctl PROFILE [SERVICE...]}"
profile="${2:?profile (dev or test) required}"
shift 2

case "$profile" in
  dev)  amqp_default=5673; pg_default=55431; redis_default=6391 ;;
  test) amqp_default=5674; pg_default=55432; redis_default=6392 ;;
  chaos) amqp_default=5675; pg_default=55433; redis_default=6393 ;;
  *) echo "unknown profile $profile" >&2; exit 2 ;;
esac
P="${profile^^}"
amqp_var="KAAPI_${P}_AMQP_PORT"; pg_var="KAAPI_${P}_PG_PORT"; redis_var="KAAPI_${P}_REDIS_PORT"
AMQP_PORT="${!amqp_var:-$amqp_default}"
PG_PORT="${!pg_var:-$pg_default}"
REDIS_PORT="${!redis_var:-$redis_default}"
DIST_PORT=$((AMQP_PORT + 20000))
NODE="kaapi-${profile}-${AMQP_PORT}@localhost"
DIR="$ROOT/.services/$profile"

log() { echo "[services:$profile] $*" >&2; }

apt_install() {
  log "installing $*"
  if [ "$(id -u)" != 0 ]; then echo "need root to apt-get install $*" >&2; exit 1; fi
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_for() {  # wait_for DESCRIPTION SECONDS COMMAND...
  local what="$1" limit="$2"; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then log "$what did not come up in ${limit}s"; return 1; fi
    sleep 0.3
  done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- RabbitMQ -------------------------------------------------------------------------------------
rabbit_env() {
  echo "RABBITMQ_NODENAME=$NODE RABBITMQ_NODE_PORT=$AMQP_PORT RABBITMQ_DIST_PORT=$DIST_PORT \
RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_MNESIA_BASE=$DIR/rabbitmq/mnesia RABBITMQ_LOG_BASE=$DIR/rabbitmq/log \
RABBITMQ_PID_FILE=$DIR/rabbitmq/pid RABBITMQ_ENABLED_PLUGINS_FILE=$DIR/rabbitmq/enabled_plugins \
RABBITMQ_CONFIG_FILE=$DIR/rabbitmq/rabbitmq HOME=/var/lib/rabbitmq"
}

as_rabbitmq() {  # run a rabbitmq binary as the rabbitmq user with the node's environment
  if [ "$(id -u)" = 0 ]; then
    su rabbitmq -s /bin/sh -c "cd /var/lib/rabbitmq && env $(rabbit_env) $(printf '%q ' "$@")"
  else
    env $(rabbit_env) "$@"
  fi
}

rabbitmqctl_node() { as_rabbitmq /usr/lib/rabbitmq/bin/rabbitmqctl -n "$NODE" "$@"; }

start_rabbitmq() {
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  if port_open "$AMQP_PORT"; then log "rabbitmq already on $AMQP_PORT"; return; fi
  mkdir -p "$DIR/rabbitmq/mnesia" "$DIR/rabbitmq/log"
  echo "[rabbitmq_management]." > "$DIR/rabbitmq/enabled_plugins"
  cat > "$DIR/rabbitmq/rabbitmq.conf" <<EOF
loopback_users = none
management.tcp.port = $((AMQP_PORT + 10000))
management.tcp.ip = 127.0.0.1
EOF
  [ "$(id -u)" = 0 ] && chown -R rabbitmq:rabbitmq "$DIR/rabbitmq"
  log "starting rabbitmq node $NODE on 127.0.0.1:$AMQP_PORT"
  as_rabbitmq /usr/lib/rabbitmq/bin/rabbitmq-server -detached
  wait_for "rabbitmq" 90 port_open "$AMQP_PORT"
  wait_for "rabbitmq" 60 rabbitmqctl_node await_startup
}

stop_rabbitmq() {
  if port_open "$AMQP_PORT"; then rabbitmqctl_node stop >/dev/null 2>&1 || true; fi
}

# --- PostgreSQL -------------------------------------------------------------------------------------
pg_bin() {
  local bin
  bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
  if [ -z "$bin" ]; then apt_install postgresql; bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"; fi
  echo "$bin"
}

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
  local bin; bin="$(pg_bin)"
  if "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then log "postgres already on $PG_PORT"; return; fi
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
  mkdir -p "$DIR/postgres"
  [ "$(id -u)" = 0 ] && chown -R postgres "$DIR/postgres"
  if [ ! -f "$DIR/postgres/data/PG_VERSION" ]; then
    log "initdb"
    as_postgres "$bin/initdb" -D "$DIR/postgres/data" -U postgres -A trust -E UTF8 >/dev/null
  fi
  log "starting postgres on 127.0.0.1:$PG_PORT"
  as_postgres "$bin/pg_ctl" -D "$DIR/postgres/data" -l "$DIR/postgres/log" -w -t 60 start \
    -o "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c listen_addresses=127.0.0.1 \
-p $PG_PORT -k /tmp -c max_connections=400 -c shared_buffers=256MB" >/dev/null
  wait_for "postgres" 60 "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"
}

stop_postgres() {
  local bin; bin="$(pg_bin)"
  if [ -f "$DIR/postgres/data/postmaster.pid" ]; then
    as_postgres "$bin/pg_ctl" -D "$DIR/postgres/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
}

# --- Redis ------------------------------------------------------------------------------------------
start_redis() {
  command -v redis-server >/dev/null || apt_install redis-server
  if port_open "$REDIS_PORT"; then log "redis already on $REDIS_PORT"; return; fi
  mkdir -p "$DIR/redis"
  log "starting redis on 127.0.0.1:$REDIS_PORT"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --dir "$DIR/redis" --logfile "$DIR/redis/log" --pidfile "$DIR/redis/pid"
  wait_for "redis" 20 port_open "$REDIS_PORT"
}

stop_redis() {
  if [ -f "$DIR/redis/pid" ]; then kill "$(cat "$DIR/redis/pid")" 2>/dev/null || true; rm -f "$DIR/redis/pid"; fi
}

# OCR (doctransform): Tesseract with the English and Hindi models; nothing to start or stop.
OCR_PACKAGES=(tesseract-ocr tesseract-ocr-eng tesseract-ocr-hin)
start_ocr() {
  local missing=()
  for package in "${OCR_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
}
stop_ocr() { :; }

case "$cmd" in
  start)
    for s in "$@"; do "start_$s"; done ;;
  stop)
    [ $# -eq 0 ] && set -- rabbitmq postgres redis
    for s in "$@"; do "stop_$s"; done ;;
  env)
    echo "export RABBITMQ_URL=amqp://guest:guest@127.0.0.1:$AMQP_PORT//"
    echo "export KAAPI_RABBITMQ_NODE=$NODE"
    echo "export KAAPI_RABBITMQ_MANAGEMENT_PORT=$((AMQP_PORT + 10000))"
    echo "export KAAPI_PG_URL=postgres://postgres@127.0.0.1:$PG_PORT"
    echo "export KAAPI_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0" ;;
  rabbitmqctl)
    rabbitmqctl_node "$@" ;;
  restart)  # restart one service's node in place (fault injection)
    for s in "$@"; do "stop_$s"; "start_$s"; done ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
