#!/usr/bin/env bash
# The local stack without Docker: Apache Kafka (KRaft, jars from Maven Central),
# PostgreSQL and Redis (Debian packages), each on 127.0.0.1 in a directory the
# project owns. Usage: stack.sh up [redis|postgres|kafka ...] | down | status | deps
#
# Every process we start gets a pid file; `down` stops exactly those pids
# (after checking the pid still runs the program we started), never by name.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
LOCAL="${TIDINGS_LOCAL_DIR:-$ROOT/.local}"
PYTHON="${TIDINGS_PYTHON:-$ROOT/.venv/bin/python}"

KAFKA_VERSION="${TIDINGS_KAFKA_VERSION:-$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/kafka/pom.xml")}"
JAVA="${TIDINGS_JAVA:-java}"
MVN="${TIDINGS_MVN:-mvn}"
# One variable per port serves both `make up` and tidings: the stack listens where tidings'
# own settings point (TIDINGS_KAFKA__BOOTSTRAP_SERVERS, TIDINGS_POSTGRES__PORT,
# TIDINGS_REDIS__URL). The older TIDINGS_KAFKA_PORT / TIDINGS_PG_PORT / TIDINGS_REDIS_PORT
# still work, for the stack only.
port_of() {  # the port of the first host:port in a bootstrap list or a redis:// URL
  printf '%s' "$1" | sed -E -n 's#^([a-z]+://)?([^@/]*@)?\[?[^],/]*\]?:([0-9]+).*#\3#p'
}
KAFKA_PORT="$(port_of "${TIDINGS_KAFKA__BOOTSTRAP_SERVERS:-}")"
KAFKA_PORT="${KAFKA_PORT:-${TIDINGS_KAFKA_PORT:-19092}}"
KAFKA_CONTROLLER_PORT="${TIDINGS_KAFKA_CONTROLLER_PORT:-19093}"
KAFKA_HEAP="${TIDINGS_KAFKA_HEAP:-1g}"
PG_PORT="${TIDINGS_POSTGRES__PORT:-${TIDINGS_PG_PORT:-15432}}"
PG_USER=tidings
PG_PASSWORD=tidings
PG_DB=tidings
REDIS_PORT="$(port_of "${TIDINGS_REDIS__URL:-}")"
REDIS_PORT="${REDIS_PORT:-${TIDINGS_REDIS_PORT:-16379}}"

K_DIR="$LOCAL/kafka"
PG_DIR="$LOCAL/postgres"
# Postgres must see its real path (see pg_reachable_dir).
if [ -L "$PG_DIR" ]; then PG_DIR="$(readlink -f "$PG_DIR")"; fi
R_DIR="$LOCAL/redis"

say() { printf '%s\n' "$*"; }
die() {
    printf 'error: %s\n' "$1" >&2
    [ $# -gt 1 ] && printf '  fix: %s\n' "$2" >&2
    exit 1
}

# ---------------------------------------------------------------- helpers

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

port_owner() {
    # Best effort: which process holds the port (ss may be missing).
    command -v ss >/dev/null 2>&1 && ss -ltnpH "sport = :$1" 2>/dev/null | sed -n 's/.*users:((\(.*\)))/\1/p' | head -1
}

# pid_alive PIDFILE MARKER: the pid in PIDFILE runs and its command line contains MARKER.
pid_alive() {
    local pidfile="$1" marker="$2" pid
    [ -s "$pidfile" ] || return 1
    pid="$(head -1 "$pidfile" | tr -dc 0-9)"
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$marker"
}

pid_of() { head -1 "$1" | tr -dc 0-9; }

# stop_pid PIDFILE MARKER NAME: TERM, wait up to 30 s, then KILL.
stop_pid() {
    local pidfile="$1" marker="$2" name="$3" pid i
    if ! pid_alive "$pidfile" "$marker"; then
        rm -f "$pidfile"
        say "$name: not running"
        return 0
    fi
    pid="$(pid_of "$pidfile")"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 300); do
        [ -d "/proc/$pid" ] || break
        sleep 0.1
    done
    if [ -d "/proc/$pid" ]; then
        say "$name: pid $pid ignored SIGTERM for 30 s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    say "$name: stopped (pid $pid)"
}

require_port_free() {
    local port="$1" name="$2" var="$3" owner
    if port_open "$port"; then
        owner="$(port_owner "$port" || true)"
        die "port $port (for $name) is already taken${owner:+ by $owner}" \
            "stop that process, or pick another port: $var make up (the same variable tells tidings)"
    fi
}

# ---------------------------------------------------------------- dependencies

# Installs the Debian packages the stack needs, once, when a command is missing.
deps() {
    local missing=() pgbin
    command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null 2>&1 || missing+=(maven)
    pgbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
    [ -n "$pgbin" ] && [ -x "$pgbin/initdb" ] || missing+=(postgresql)
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
    command -v kcat >/dev/null 2>&1 || missing+=(kcat)
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing Debian packages: ${missing[*]}"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "missing packages: ${missing[*]}" \
            "run as root: apt-get update && apt-get install -y ${missing[*]}"
        sudo="sudo"
    fi
    mkdir -p "$LOCAL"
    if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$LOCAL/apt.log" 2>&1; then
        tail -5 "$LOCAL/apt.log" >&2
        die "apt-get could not install ${missing[*]} (full log: $LOCAL/apt.log)" \
            "check the Debian mirror in /etc/apt/sources.list, then rerun make up"
    fi
}

check_java() {
    command -v "$JAVA" >/dev/null 2>&1 || die "Java is missing (Kafka $KAFKA_VERSION needs Java 17+)" \
        "apt-get install -y openjdk-17-jre-headless, then rerun make up"
    local v
    v="$("$JAVA" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
    [ -n "$v" ] && [ "$v" -ge 17 ] || die "Java ${v:-?} found, Kafka $KAFKA_VERSION needs Java 17+" \
        "apt-get install -y openjdk-17-jre-headless and put it first on PATH (or set JAVA_HOME)"
}

# ---------------------------------------------------------------- kafka

kafka_fetch() {
    local libs="$K_DIR/libs-$KAFKA_VERSION"
    [ -f "$libs/.complete" ] && return 0
    command -v "$MVN" >/dev/null 2>&1 || die "Maven is missing: it fetches the Kafka jars" \
        "apt-get install -y maven, then rerun make up"
    say "kafka: fetching Apache Kafka $KAFKA_VERSION jars from Maven Central (once)"
    rm -rf "$libs.tmp"
    mkdir -p "$K_DIR"
    if ! "$MVN" -B -q -f "$HERE/kafka/pom.xml" dependency:copy-dependencies \
        "-Dkafka.version=$KAFKA_VERSION" -DincludeScope=runtime -DoutputDirectory="$libs.tmp" >"$K_DIR/mvn.log" 2>&1; then
        local said
        said="$(grep -m1 -E 'ERROR|Could not' "$K_DIR/mvn.log" | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-300 || true)"
        die "Maven could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION (full log: $K_DIR/mvn.log)${said:+
  maven said: $said}" \
            "check that Maven Central is reachable (proxy/mirror in ~/.m2/settings.xml), then rerun make up"
    fi
    touch "$libs.tmp/.complete"
    mv "$libs.tmp" "$libs"
}

kafka_java() {
    "$JAVA" -Xms256m "-Xmx$KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
        "-Dlog4j2.configurationFile=$HERE/kafka/log4j2.yaml" "-Dkafka.logs.dir=$K_DIR/logs" \
        -cp "$K_DIR/libs-$KAFKA_VERSION/*" "$@"
}

kafka_config() {
    mkdir -p "$K_DIR/logs"
    cat >"$K_DIR/server.properties" <<EOF
# Written by deploy/local/stack.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$K_DIR/data
num.partitions=6
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=6
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
log.segment.bytes=104857600
EOF
}

kafka_check_data() {
    [ -f "$K_DIR/data/meta.properties" ] || return 0
    local made
    made="$(cat "$K_DIR/data/.tidings-kafka-version" 2>/dev/null || echo unknown)"
    if [ "$made" != "$KAFKA_VERSION" ]; then
        die "the Kafka data directory $K_DIR/data was made by Kafka $made, this stack runs $KAFKA_VERSION" \
            "make down && rm -rf $K_DIR/data (drops local topics), or pin kafka.version=$made in deploy/local/kafka/pom.xml"
    fi
}

kafka_format() {
    [ -f "$K_DIR/data/meta.properties" ] && return 0
    local cid
    cid="$(kafka_java org.apache.kafka.tools.StorageTool random-uuid 2>/dev/null \
        || kafka_java kafka.tools.StorageTool random-uuid)"
    kafka_java kafka.tools.StorageTool format -t "$cid" -c "$K_DIR/server.properties" \
        >"$K_DIR/logs/format.log" 2>&1 || {
        tail -5 "$K_DIR/logs/format.log" >&2
        die "formatting Kafka storage failed (log: $K_DIR/logs/format.log)" \
            "rm -rf $K_DIR/data and rerun make up"
    }
    echo "$KAFKA_VERSION" >"$K_DIR/data/.tidings-kafka-version"
}

kafka_ready() {
    # Readiness is a metadata request that succeeds, not a sleep.
    "$PYTHON" - "$KAFKA_PORT" <<'PY' >/dev/null 2>&1
import sys
from confluent_kafka.admin import AdminClient
md = AdminClient({"bootstrap.servers": f"127.0.0.1:{sys.argv[1]}"}).list_topics(timeout=2)
sys.exit(0 if md.brokers else 1)
PY
}

kafka_up() {
    if pid_alive "$K_DIR/kafka.pid" kafka.Kafka; then
        say "kafka: already running (pid $(pid_of "$K_DIR/kafka.pid"), 127.0.0.1:$KAFKA_PORT)"
        return 0
    fi
    check_java
    kafka_check_data
    kafka_fetch
    require_port_free "$KAFKA_PORT" kafka "TIDINGS_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:<port>"
    require_port_free "$KAFKA_CONTROLLER_PORT" "kafka controller" "TIDINGS_KAFKA_CONTROLLER_PORT=<port>"
    kafka_config
    kafka_format
    nohup bash -c 'exec "$@"' _ "$JAVA" -Xms256m "-Xmx$KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
        "-Dlog4j2.configurationFile=$HERE/kafka/log4j2.yaml" "-Dkafka.logs.dir=$K_DIR/logs" \
        -cp "$K_DIR/libs-$KAFKA_VERSION/*" kafka.Kafka "$K_DIR/server.properties" \
        >"$K_DIR/logs/stdout.log" 2>&1 </dev/null &
    echo $! >"$K_DIR/kafka.pid"
    local i
    for i in $(seq 1 120); do
        if kafka_ready; then
            say "kafka: ready, Apache Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (pid $(pid_of "$K_DIR/kafka.pid"))"
            return 0
        fi
        if ! pid_alive "$K_DIR/kafka.pid" kafka.Kafka; then
            tail -15 "$K_DIR/logs/server.log" "$K_DIR/logs/stdout.log" >&2 2>/dev/null || true
            die "kafka exited during start-up (logs: $K_DIR/logs/)" "read the log above; rm -rf $K_DIR/data if the storage is damaged"
        fi
        sleep 0.5
    done
    die "kafka did not answer a metadata request within 60 s (logs: $K_DIR/logs/)" "make down, read the log, make up"
}

# ---------------------------------------------------------------- postgres

pg_bin() {
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
    [ -n "$d" ] && [ -x "$d/initdb" ] || die "PostgreSQL server binaries are missing" \
        "apt-get install -y postgresql (make up does it when run as root)"
    echo "$d"
}

# initdb and postgres refuse to run as root: use the postgres account the Debian package creates.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_up() {
    local bin major
    bin="$(pg_bin)"
    major="$(basename "$(dirname "$bin")")"
    if [ -f "$PG_DIR/data/PG_VERSION" ] && [ "$(cat "$PG_DIR/data/PG_VERSION")" != "$major" ]; then
        die "the Postgres data directory $PG_DIR/data was made by PostgreSQL $(cat "$PG_DIR/data/PG_VERSION"), this machine has $major" \
            "make down && rm -rf $PG_DIR (drops the local audit log), then make up"
    fi
    if [ -f "$PG_DIR/data/postmaster.pid" ] && pid_alive "$PG_DIR/data/postmaster.pid" postgres; then
        say "postgres: already running (pid $(pid_of "$PG_DIR/data/postmaster.pid"), 127.0.0.1:$PG_PORT)"
        return 0
    fi
    require_port_free "$PG_PORT" postgres "TIDINGS_POSTGRES__PORT=<port>"
    pg_reachable_dir
    mkdir -p "$PG_DIR/run"
    [ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$PG_DIR"
    if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
        local pw="$PG_DIR/.pw"
        echo "$PG_PASSWORD" >"$pw"
        [ "$(id -u)" -eq 0 ] && chown postgres "$pw"
        as_pg "$bin/initdb" -D "$PG_DIR/data" -U "$PG_USER" --pwfile="$pw" \
            --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 \
            >"$PG_DIR/initdb.log" 2>&1 || {
            tail -5 "$PG_DIR/initdb.log" >&2
            die "initdb failed (log: $PG_DIR/initdb.log)" "rm -rf $PG_DIR and rerun make up"
        }
        rm -f "$pw"
    fi
    as_pg "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" -w -t 60 \
        -o "-p $PG_PORT -k $PG_DIR/run -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null || {
        tail -10 "$PG_DIR/postgres.log" >&2
        die "postgres did not start (log: $PG_DIR/postgres.log)" "read the log above, then make down && make up"
    }
    # Readiness: a real query over TCP with the credentials tidings uses.
    local i
    for i in $(seq 1 60); do
        PGPASSWORD="$PG_PASSWORD" psql -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -Atqc 'select 1' >/dev/null 2>&1 && break
        sleep 0.5
    done
    if ! PGPASSWORD="$PG_PASSWORD" psql -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -Atqc \
        "select 1 from pg_database where datname = '$PG_DB'" | grep -q 1; then
        PGPASSWORD="$PG_PASSWORD" psql -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -qc "create database $PG_DB" >/dev/null
    fi
    say "postgres: ready, PostgreSQL $major on 127.0.0.1:$PG_PORT, database $PG_DB (pid $(pid_of "$PG_DIR/data/postmaster.pid"))"
}

# As root, the cluster runs as `postgres`, which must be able to reach its directory. A
# checkout inside a private directory (mode 0700, like /root or a mktemp -d) is out of its
# reach: then the cluster lives in /var/tmp and .local/postgres is a symlink to it.
pg_reachable_dir() {
    [ "$(id -u)" -eq 0 ] || return 0
    mkdir -p "$LOCAL"
    [ "$PG_DIR" != "$LOCAL/postgres" ] && return 0  # already resolved to its real place
    if runuser -u postgres -- test -x "$LOCAL"; then
        return 0
    fi
    local target
    target="/var/tmp/tidings-postgres-$(printf '%s' "$PG_DIR" | sha256sum | cut -c1-12)"
    [ -e "$PG_DIR" ] && rm -rf "$PG_DIR"  # nothing usable: postgres could never have written it
    mkdir -p "$target"
    chown postgres:postgres "$target"
    chmod 0700 "$target"
    ln -s "$target" "$PG_DIR"
    PG_DIR="$target"
    say "postgres: $LOCAL is not reachable by the postgres account; the cluster lives in $target"
}

pg_down() {
    if [ -f "$PG_DIR/data/postmaster.pid" ] && pid_alive "$PG_DIR/data/postmaster.pid" postgres; then
        local pid
        pid="$(pid_of "$PG_DIR/data/postmaster.pid")"
        as_pg "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 30 stop >/dev/null 2>&1 || kill -KILL "$pid" 2>/dev/null || true
        say "postgres: stopped (pid $pid)"
    else
        say "postgres: not running"
    fi
}

# ---------------------------------------------------------------- redis

redis_up() {
    if pid_alive "$R_DIR/redis.pid" redis-server; then
        say "redis: already running (pid $(pid_of "$R_DIR/redis.pid"), 127.0.0.1:$REDIS_PORT)"
        return 0
    fi
    command -v redis-server >/dev/null 2>&1 || die "redis-server is missing" "apt-get install -y redis-server"
    require_port_free "$REDIS_PORT" redis "TIDINGS_REDIS__URL=redis://127.0.0.1:<port>/0"
    mkdir -p "$R_DIR"
    # Redis holds only losable state (Postgres is the backstop), so no persistence.
    cat >"$R_DIR/redis.conf" <<EOF
bind 127.0.0.1
port $REDIS_PORT
protected-mode yes
daemonize yes
pidfile $R_DIR/redis.pid
logfile $R_DIR/redis.log
dir $R_DIR
save ""
appendonly no
EOF
    redis-server "$R_DIR/redis.conf" || die "redis-server failed to start (log: $R_DIR/redis.log)" "read the log, then make up"
    local i
    for i in $(seq 1 60); do
        if [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; then
            say "redis: ready, $(redis-server --version | awk '{print $3}') on 127.0.0.1:$REDIS_PORT (pid $(pid_of "$R_DIR/redis.pid"))"
            return 0
        fi
        sleep 0.2
    done
    die "redis did not answer PING within 12 s (log: $R_DIR/redis.log)" "make down && make up"
}

# ---------------------------------------------------------------- commands

status() {
    local rc=0
    if pid_alive "$K_DIR/kafka.pid" kafka.Kafka; then
        say "kafka     running  pid $(pid_of "$K_DIR/kafka.pid")  127.0.0.1:$KAFKA_PORT  (Apache Kafka $KAFKA_VERSION)"
    else say "kafka     stopped"; rc=1; fi
    if [ -f "$PG_DIR/data/postmaster.pid" ] && pid_alive "$PG_DIR/data/postmaster.pid" postgres; then
        say "postgres  running  pid $(pid_of "$PG_DIR/data/postmaster.pid")  127.0.0.1:$PG_PORT"
    else say "postgres  stopped"; rc=1; fi
    if pid_alive "$R_DIR/redis.pid" redis-server; then
        say "redis     running  pid $(pid_of "$R_DIR/redis.pid")  127.0.0.1:$REDIS_PORT"
    else say "redis     stopped"; rc=1; fi
    return $rc
}

case "${1:-}" in
up)
    shift
    [ "${TIDINGS_SKIP_DEPS:-0}" = 1 ] || deps
    [ -x "$PYTHON" ] || die "no virtualenv at $ROOT/.venv" "run make venv (make up does it for you)"
    mkdir -p "$LOCAL"
    for svc in "${@:-redis postgres kafka}"; do
        for one in $svc; do
            case "$one" in
            redis) redis_up ;;
            postgres) pg_up ;;
            kafka) kafka_up ;;
            *) die "unknown service '$one'" "use redis, postgres or kafka" ;;
            esac
        done
    done
    ;;
down)
    stop_pid "$K_DIR/kafka.pid" kafka.Kafka kafka
    pg_down
    stop_pid "$R_DIR/redis.pid" redis-server redis
    ;;
status) status ;;
deps) deps ;;
*)
    echo "usage: $0 up|down|status|deps" >&2
    exit 2
    ;;
esac
