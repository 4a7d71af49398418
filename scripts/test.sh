#!/usr/bin/env bash
# Runs the whole test suite, starting what it needs: PostgreSQL and MariaDB (if installed but
# down), the SQL Server and MongoDB test servers (installed once into ~/.cache/dbmanager-tools),
# then lint, then every test (unit, integration, doctests) of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

PG_HOST=${DBMANAGER_TEST_PG_HOST:-127.0.0.1}
PG_PORT=${DBMANAGER_TEST_PG_PORT:-5432}

ensure_postgres() {
    if pg_isready -q -h "$PG_HOST" -p "$PG_PORT" 2>/dev/null; then
        return 0
    fi
    if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
        log "PostgreSQL is down; starting it"
        for version in /etc/postgresql/*; do
            pg_ctlcluster --skip-systemctl-redirect "$(basename "$version")" main start || true
        done
        for _ in $(seq 1 60); do
            pg_isready -q -h "$PG_HOST" -p "$PG_PORT" && return 0
            sleep 0.5
        done
    fi
    echo "error: PostgreSQL is not reachable on $PG_HOST:$PG_PORT and could not be started" >&2
    exit 1
}

log "PostgreSQL"
ensure_postgres
pg_isready -h "$PG_HOST" -p "$PG_PORT"

MYSQL_HOST=${DBMANAGER_TEST_MYSQL_HOST:-127.0.0.1}
MYSQL_PORT=${DBMANAGER_TEST_MYSQL_PORT:-3306}

mariadb_ping() {
    mysqladmin --no-defaults -h "$MYSQL_HOST" -P "$MYSQL_PORT" -uroot --connect-timeout=2 ping \
        >/dev/null 2>&1
}

ensure_mariadb() {
    if mariadb_ping; then
        return 0
    fi
    if [ -x /usr/sbin/mariadbd ] && command -v start-stop-daemon >/dev/null 2>&1; then
        log "MariaDB is down; starting it"
        # The server aborts without its socket directory (/run is often fresh at CI start), and
        # start-stop-daemon --background reports success even when the server then aborts.
        install -d -o mysql -g mysql -m 755 /run/mysqld || true
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql \
            || true
        local deadline=$((SECONDS + 30))
        while [ "$SECONDS" -lt "$deadline" ]; do
            mariadb_ping && return 0
            sleep 0.5
        done
        tail -n 20 /var/log/mysql/error.log >&2 2>/dev/null || true
    fi
    echo "error: MariaDB is not reachable on $MYSQL_HOST:$MYSQL_PORT (root, no password) and could not be started" >&2
    exit 1
}

log "MariaDB"
ensure_mariadb
mysqladmin --no-defaults -h "$MYSQL_HOST" -P "$MYSQL_PORT" -uroot version | grep -E '^(Server version|TCP port)'

# Debian packages some tests drive, installed when their command is missing: headless Chromium
# (the status page test loads the page in a real browser), and promtool and prometheus (the
# dashboards test checks the alert rules and runs a Prometheus against `serve`; without its
# recommends, and in containers policy-rc.d keeps its service from starting), and PgBouncer
# (tests/pooler.rs starts private ones in front of a private PostgreSQL cluster; the package's
# own service is not used).
install_package() {
    local command=$1 package=$2
    shift 2
    command -v "$command" >/dev/null 2>&1 && return 0
    log "installing $package"
    apt-get install -y "$@" "$package" || { apt-get update && apt-get install -y "$@" "$package"; }
}

log "Test tools"
install_package chromium chromium
install_package promtool prometheus --no-install-recommends
PATH="$PATH:/usr/sbin" install_package pgbouncer pgbouncer
# pg_auto_failover (tests/failover_auto.rs runs a monitor and two nodes): the command, and the
# server extension, which has no command of its own to look for.
install_package pg_autoctl pg-auto-failover-cli
if ! ls /usr/lib/postgresql/*/lib/pgautofailover.so >/dev/null 2>&1; then
    log "installing postgresql-15-auto-failover"
    apt-get install -y postgresql-15-auto-failover ||
        { apt-get update && apt-get install -y postgresql-15-auto-failover; }
fi
chromium --version 2>/dev/null
promtool --version 2>&1 | sed -n 1p
/usr/sbin/pgbouncer --version | sed -n 1p
pg_autoctl --version 2>&1 | sed -n 1p

log "SQL Server and MongoDB test servers"
scripts/test-servers.sh start
trap 'scripts/test-servers.sh stop' EXIT
eval "$(scripts/test-servers.sh env)"

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

log "lean builds: the default features, then one backend at a time, compile without warnings"
cargo clippy -q -p dbmanager -- -D warnings
for features in sqlite postgres tokio-postgres mysql "mssql,mongodb"; do
    cargo clippy -q -p dbmanager --no-default-features --features "$features" -- -D warnings
done

log "cargo test"
cargo test --workspace --all-features --no-fail-fast

log "cargo publish --dry-run: the library and the CLI, packaged and built as crates.io would"
# --workspace packages both and verifies the CLI against the packaged library through a local
# registry overlay (the library is not on crates.io, so `cargo package -p dbmanager-cli` alone
# cannot resolve it); the bench has publish = false. --allow-dirty: local runs with edits.
# Cargo treats registry crates as immutable: a later run would verify the CLI against the library
# as an earlier run packaged, unpacked (a `-<hash>` directory in the registry sources) and
# compiled it, since name and version are the same. So the dry run builds in a target directory
# of its own, cleared of our two crates first (dependencies stay cached there).
target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
publish_dir="${target_dir:?}/publish-dry-run"
rm -rf "$publish_dir/package" "$publish_dir"/debug/.fingerprint/dbmanager-* \
    "$publish_dir"/debug/deps/*dbmanager*
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/dbmanager-[0-9]* \
    "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/dbmanager-cli-[0-9]*
cargo publish --workspace --dry-run --allow-dirty --target-dir "$publish_dir"
