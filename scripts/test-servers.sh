#!/usr/bin/env bash
# Installs (once, into a cache outside the clone), starts and stops the wire-compatible servers
# the SQL Server and MongoDB tests run against: Iridium SQL (SQL Server) and SecantusDB (MongoDB).
#
#   scripts/test-servers.sh start   # install if needed, start both, wait for their ports
#   scripts/test-servers.sh stop    # stop both by PID
#   scripts/test-servers.sh env     # print the variables the tests read
#
# A server that cannot be installed or started fails with a clear message: nothing is skipped.
set -euo pipefail

TOOLS_DIR=${DBMANAGER_TOOLS_DIR:-$HOME/.cache/dbmanager-tools}
RUN_DIR=${DBMANAGER_RUN_DIR:-${TMPDIR:-/tmp}/dbmanager-test-servers}
IRIDIUM_VERSION=0.1.13
SECANTUS_VERSION=0.7.0b3

MSSQL_PORT=${DBMANAGER_TEST_MSSQL_PORT:-14331}
MSSQL_USER=sa
MSSQL_PASSWORD='Dbm-Test;Pass={w0rd}'
MONGO_PORT=${DBMANAGER_TEST_MONGO_PORT:-27018}
MONGO_USER=dbm_user
MONGO_PASSWORD='dbm-Pass:w@rd/é%'

log() { printf '[test-servers] %s\n' "$*" >&2; }
die() { printf '[test-servers] error: %s\n' "$*" >&2; exit 1; }

wait_port() { # port name pidfile logfile
    for _ in $(seq 1 150); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        if ! kill -0 "$(cat "$3")" 2>/dev/null; then
            die "$2 exited during start-up; its log ($4):
$(tail -n 30 "$4" 2>/dev/null)"
        fi
        sleep 0.2
    done
    die "$2 did not listen on 127.0.0.1:$1 within 30 s; its log ($4):
$(tail -n 30 "$4" 2>/dev/null)"
}

install_iridium() {
    local bin="$TOOLS_DIR/bin/iridium-server"
    if [ -x "$bin" ] && [ "$(cat "$TOOLS_DIR/iridium.version" 2>/dev/null)" = "$IRIDIUM_VERSION" ]; then
        return 0
    fi
    log "installing iridium_server $IRIDIUM_VERSION into $TOOLS_DIR (about 14 min the first time)"
    mkdir -p "$TOOLS_DIR"
    cargo install iridium_server --version "$IRIDIUM_VERSION" --locked --root "$TOOLS_DIR" >&2 \
        || die "cargo install iridium_server $IRIDIUM_VERSION failed"
    echo "$IRIDIUM_VERSION" > "$TOOLS_DIR/iridium.version"
}

install_secantus() {
    local venv="$TOOLS_DIR/secantus"
    if [ -x "$venv/bin/secantusd-py" ] && [ "$(cat "$TOOLS_DIR/secantus.version" 2>/dev/null)" = "$SECANTUS_VERSION" ]; then
        return 0
    fi
    log "installing secantusdb $SECANTUS_VERSION into $venv"
    mkdir -p "$TOOLS_DIR"
    python3 -m venv "$venv" >&2 || die "python3 -m venv failed"
    "$venv/bin/pip" install -q "secantusdb==$SECANTUS_VERSION" >&2 || die "pip install secantusdb failed"
    echo "$SECANTUS_VERSION" > "$TOOLS_DIR/secantus.version"
}

stop_pid() { # pidfile
    [ -f "$1" ] || return 0
    local pid; pid=$(cat "$1")
    # A pid file left by an earlier machine session may name a pid reused by another process.
    if ! tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" | grep -qE 'iridium-server|secantusd-py'; then
        rm -f "$1"
        return 0
    fi
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$1"
}

start_iridium() {
    stop_pid "$RUN_DIR/iridium.pid"
    RUST_LOG=warn nohup "$TOOLS_DIR/bin/iridium-server" --host 127.0.0.1 --port "$MSSQL_PORT" \
        --memory --no-tls -u "$MSSQL_USER" -P "$MSSQL_PASSWORD" \
        > "$RUN_DIR/iridium.log" 2>&1 < /dev/null &
    echo $! > "$RUN_DIR/iridium.pid"
    wait_port "$MSSQL_PORT" "Iridium SQL" "$RUN_DIR/iridium.pid" "$RUN_DIR/iridium.log"
    log "Iridium SQL (SQL Server) on 127.0.0.1:$MSSQL_PORT, pid $(cat "$RUN_DIR/iridium.pid")"
}

start_secantus() {
    local venv="$TOOLS_DIR/secantus" data="$RUN_DIR/mongo-data"
    stop_pid "$RUN_DIR/secantus.pid"
    rm -rf "$data"; mkdir -p "$data"
    # SecantusDB has no localhost exception: create the user without --auth, then restart with it.
    nohup "$venv/bin/secantusd-py" --host 127.0.0.1 --port "$MONGO_PORT" --storage-path "$data" \
        --standalone --log-level WARNING > "$RUN_DIR/secantus.log" 2>&1 < /dev/null &
    echo $! > "$RUN_DIR/secantus.pid"
    wait_port "$MONGO_PORT" "SecantusDB" "$RUN_DIR/secantus.pid" "$RUN_DIR/secantus.log"
    MONGO_PORT="$MONGO_PORT" MONGO_USER="$MONGO_USER" MONGO_PASSWORD="$MONGO_PASSWORD" \
        "$venv/bin/python" - <<'PY' || die "creating the MongoDB test user failed"
import os
from pymongo import MongoClient
client = MongoClient("127.0.0.1", int(os.environ["MONGO_PORT"]), serverSelectionTimeoutMS=10000)
client.admin.command("createUser", os.environ["MONGO_USER"], pwd=os.environ["MONGO_PASSWORD"],
                     roles=[{"role": "root", "db": "admin"}])
PY
    stop_pid "$RUN_DIR/secantus.pid"
    nohup "$venv/bin/secantusd-py" --host 127.0.0.1 --port "$MONGO_PORT" --storage-path "$data" \
        --standalone --auth --log-level WARNING > "$RUN_DIR/secantus.log" 2>&1 < /dev/null &
    echo $! > "$RUN_DIR/secantus.pid"
    wait_port "$MONGO_PORT" "SecantusDB" "$RUN_DIR/secantus.pid" "$RUN_DIR/secantus.log"
    log "SecantusDB (MongoDB) on 127.0.0.1:$MONGO_PORT with auth, pid $(cat "$RUN_DIR/secantus.pid")"
}

print_env() {
    cat <<ENV
export DBMANAGER_TEST_MSSQL_PORT=$MSSQL_PORT
export DBMANAGER_TEST_MSSQL_USER=$MSSQL_USER
export DBMANAGER_TEST_MSSQL_PASSWORD='$MSSQL_PASSWORD'
export DBMANAGER_TEST_MSSQL_BIN='$TOOLS_DIR/bin/iridium-server'
export DBMANAGER_TEST_MONGO_PORT=$MONGO_PORT
export DBMANAGER_TEST_MONGO_USER=$MONGO_USER
export DBMANAGER_TEST_MONGO_PASSWORD='$MONGO_PASSWORD'
export DBMANAGER_TEST_MONGO_BIN='$TOOLS_DIR/secantus/bin/secantusd-py'
ENV
}

case "${1:-}" in
    start)
        mkdir -p "$RUN_DIR"
        install_iridium
        install_secantus
        start_iridium
        start_secantus
        ;;
    stop)
        stop_pid "$RUN_DIR/iridium.pid"
        stop_pid "$RUN_DIR/secantus.pid"
        ;;
    env) print_env ;;
    *) die "usage: $0 start|stop|env" ;;
esac
