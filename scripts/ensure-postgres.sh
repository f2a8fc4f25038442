#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on 127.0.0.1:5432 with a login role
# inferd/inferd (CREATEDB), then print the SQLAlchemy admin URL on stdout.
#
# The test suite runs the whole API against real PostgreSQL as well as SQLite,
# and CI may run on a fresh machine, so this script starts an installed but
# stopped cluster, or installs one with apt-get, without any interaction.
# Idempotent: when everything is already in place it only checks and prints.
#
# Set INFERD_TEST_POSTGRES_URL to use a server of your own instead; then this
# script only echoes it. Progress goes to stderr; stdout gets exactly one line.
set -euo pipefail

HOST=127.0.0.1
PORT=5432
ROLE=inferd
PASSWORD=inferd
URL="postgresql+psycopg://${ROLE}:${PASSWORD}@${HOST}:${PORT}/postgres"
READY_TIMEOUT_S=30

log() { printf 'ensure-postgres: %s\n' "$*" >&2; }
die() { printf 'ensure-postgres: ERROR: %s\n' "$*" >&2; exit 1; }

if [[ -n "${INFERD_TEST_POSTGRES_URL:-}" ]]; then
    printf '%s\n' "$INFERD_TEST_POSTGRES_URL"
    exit 0
fi

is_root() { [[ "$(id -u)" -eq 0 ]]; }

# Serialise concurrent runs (parallel test workers) so they do not race to
# install or start the same cluster. Every command that may leave a daemon
# behind (pg_ctlcluster, pg_createcluster, apt-get) runs with "9>&-": a
# postmaster that inherited fd 9 would hold this lock forever.
if command -v flock >/dev/null 2>&1; then
    exec 9>"${TMPDIR:-/tmp}/inferd-ensure-postgres.$(id -u).lock"
    flock -w 600 9 || die "timed out waiting for another ensure-postgres run"
fi

# Does something accept PostgreSQL connections on HOST:PORT?
server_ready() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$HOST" -p "$PORT" -t 2 >/dev/null 2>&1
    else
        # No client tools: fall back to "the TCP port is open".
        (exec 3<>"/dev/tcp/$HOST/$PORT") >/dev/null 2>&1
    fi
}

wait_ready() {
    local deadline=$((SECONDS + READY_TIMEOUT_S))
    until server_ready; do
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 0.5
    done
}

# Run a command as the postgres OS user (cluster owner / database superuser).
as_postgres() {
    if [[ "$(id -un)" == postgres ]]; then
        "$@"
    elif command -v runuser >/dev/null 2>&1; then
        runuser -u postgres -- "$@"
    else
        su postgres -s /bin/bash -c "$(printf '%q ' "$@")"
    fi
}

can_manage_clusters() { is_root || [[ "$(id -un)" == postgres ]]; }

not_root_hint() {
    die "no PostgreSQL server answers on $HOST:$PORT and $(id -un) cannot $1.
  Run this script once as root:   sudo bash $0
  or point the tests at a server: export INFERD_TEST_POSTGRES_URL=postgresql+psycopg://USER:PASS@127.0.0.1:5432/postgres"
}

# Debian clusters ("ver name port status ..."), without the header line.
list_clusters() {
    command -v pg_lsclusters >/dev/null 2>&1 || return 0
    pg_lsclusters -h 2>/dev/null || true
}

start_cluster() {
    local ver="$1" name="$2"
    log "starting PostgreSQL cluster $ver/$name"
    # --skip-systemctl-redirect: there may be no systemd (containers, CI).
    pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start >&2 9>&- ||
        log "pg_ctlcluster $ver $name start failed (see /var/log/postgresql/postgresql-$ver-$name.log)"
}

# Start the installed cluster that listens on PORT; if the server packages are
# installed but have no cluster at all, create one. Returns 1 if there is
# nothing installed to start.
start_installed() {
    local clusters ver name port status
    clusters="$(list_clusters)"
    if [[ -n "$clusters" ]]; then
        can_manage_clusters || not_root_hint "start the installed cluster"
        while read -r ver name port status _; do
            [[ "$port" == "$PORT" ]] || continue
            if [[ "$status" == online* ]]; then
                log "cluster $ver/$name is already online on port $PORT"
            else
                start_cluster "$ver" "$name"
            fi
            return 0
        done <<<"$clusters"
        die "PostgreSQL clusters exist but none uses port $PORT:
$clusters"
    fi
    # Packages installed (e.g. with create_main_cluster = false) but no cluster.
    if command -v pg_createcluster >/dev/null 2>&1 && ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
        can_manage_clusters || not_root_hint "create a cluster"
        ver="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
        log "no cluster found; creating PostgreSQL $ver/main on port $PORT"
        pg_createcluster --port "$PORT" "$ver" main >&2 9>&-
        start_cluster "$ver" main
        return 0
    fi
    return 1
}

install_server() {
    is_root || not_root_hint "install PostgreSQL (apt-get needs root)"
    command -v apt-get >/dev/null 2>&1 || die "PostgreSQL is not installed and apt-get is not available; install it by hand or set INFERD_TEST_POSTGRES_URL"
    log "PostgreSQL is not installed; installing it with apt-get (this takes a minute)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2 9>&- || die "apt-get update failed"
    apt-get install -y -q postgresql >&2 9>&- || die "apt-get install postgresql failed"
    # The package creates the cluster; in containers its post-install script
    # usually cannot start it (no systemd / policy-rc.d), so start it here.
    start_installed || die "postgresql was installed but no cluster was found (pg_lsclusters is empty)"
}

# --- 1. a server on 127.0.0.1:5432 -----------------------------------------
if server_ready; then
    log "PostgreSQL already answers on $HOST:$PORT"
else
    if ! start_installed; then
        install_server
    fi
    log "waiting up to ${READY_TIMEOUT_S}s for PostgreSQL on $HOST:$PORT"
    wait_ready || die "PostgreSQL did not become ready on $HOST:$PORT within ${READY_TIMEOUT_S}s
$(list_clusters)"
    log "PostgreSQL is ready on $HOST:$PORT"
fi

command -v psql >/dev/null 2>&1 || die "psql is not installed (apt-get install -y postgresql-client)"

# --- 2. the inferd role ------------------------------------------------------
role_ok() {
    local got
    got="$(PGPASSWORD="$PASSWORD" PGCONNECT_TIMEOUT=5 psql -X -q -At -w \
        -h "$HOST" -p "$PORT" -U "$ROLE" -d postgres \
        -c "select rolcreatedb from pg_roles where rolname = current_user" 2>/dev/null)" || return 1
    [[ "$got" == t ]]
}

# Creates the role, or resets its password/attributes if it exists. A
# concurrent creator can still make CREATE ROLE fail with 'already exists';
# role_ok below is the real check.
ROLE_SQL="DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${ROLE}') THEN
    CREATE ROLE ${ROLE} LOGIN CREATEDB PASSWORD '${PASSWORD}';
  ELSE
    ALTER ROLE ${ROLE} LOGIN CREATEDB PASSWORD '${PASSWORD}';
  END IF;
END
\$\$;"

run_role_sql() {
    # a) as the postgres OS user over the local socket (Debian: peer auth);
    if can_manage_clusters && id postgres >/dev/null 2>&1; then
        # cd / so psql does not complain about an unreadable cwd.
        (cd / && as_postgres psql -X -q -w -p "$PORT" -d postgres -c "$ROLE_SQL") >&2 && return 0
    fi
    # b) as the current OS user over the socket (a superuser role of your own);
    psql -X -q -w -p "$PORT" -d postgres -c "$ROLE_SQL" >&2 2>/dev/null && return 0
    # c) as postgres over TCP (trust auth, or a password in PGPASSWORD/.pgpass).
    psql -X -q -w -h "$HOST" -p "$PORT" -U postgres -d postgres -c "$ROLE_SQL" >&2 && return 0
    return 1
}

if role_ok; then
    log "role $ROLE already exists and can log in"
else
    log "creating/updating role $ROLE (LOGIN CREATEDB)"
    run_role_sql || log "could not run the role SQL as a superuser"
    role_ok || die "cannot log in as $ROLE/$PASSWORD on $HOST:$PORT with CREATEDB.
  Create it as a database superuser:  CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD';
  (and make sure pg_hba.conf allows password or trust auth for host 127.0.0.1/32)"
fi

printf '%s\n' "$URL"
