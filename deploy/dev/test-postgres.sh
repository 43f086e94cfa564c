#!/usr/bin/env bash
# The PostgreSQL lane of `make test`: a throwaway server on 127.0.0.1, or the reason there is none.
#
#   eval "$(bash deploy/dev/test-postgres.sh)"   start one; prints only `export` lines on stdout
#   bash deploy/dev/test-postgres.sh stop         stop the one the exports describe and delete its files
#
# An MLCP_TEST_POSTGRES_URL already in the environment is passed through untouched (your own server).
# Without server binaries, root installs Debian's `postgresql` package, as CI does on a fresh machine.
# Everything except the export lines goes to stderr.
set -uo pipefail

MARKER=.mlcp-test-postgres

say() { echo "test-postgres: $*" >&2; }

emit() { printf 'export %s=%q\n' "$1" "$2"; }

skip() {
    say "PostgreSQL lane skipped: $1"
    emit MLCP_TEST_POSTGRES_SKIP_REASON "$1"
    exit 0
}

find_bindir() {
    local dir
    # Debian keeps server binaries out of PATH, one folder per major version; take the newest.
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
            return 0
        fi
    done
    if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
        dirname "$(command -v pg_ctl)"
        return 0
    fi
    return 1
}

run_as_owner() {
    # The server refuses to run as root, so root runs it as the account the package created.
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    else
        echo $((20000 + RANDOM % 40000))
    fi
}

stop_server() {
    local base="${MLCP_TEST_POSTGRES_DATA:-}"
    if [ -z "$base" ]; then
        return 0
    fi
    # Only ever delete a folder this script made.
    if [ ! -f "$base/$MARKER" ]; then
        say "not stopping $base: it was not made by this script"
        return 0
    fi
    local bindir
    bindir="$(cat "$base/bindir")"
    if [ -f "$base/data/postmaster.pid" ]; then
        run_as_owner "$bindir/pg_ctl" -D "$base/data" -m immediate -w stop >&2 || say "pg_ctl stop failed; see $base/server.log"
    fi
    rm -rf "$base"
    say "stopped and removed the server in $base"
}

install_server() {
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        return 1
    fi
    say "installing Debian's postgresql package (apt-get; this takes a minute)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq postgresql >&2
}

start_server() {
    if [ -n "${MLCP_TEST_POSTGRES_URL:-}" ]; then
        say "using the server in MLCP_TEST_POSTGRES_URL"
        emit MLCP_TEST_POSTGRES_URL "$MLCP_TEST_POSTGRES_URL"
        return 0
    fi
    local bindir
    if ! bindir="$(find_bindir)"; then
        if ! install_server; then
            if [ "$(id -u)" -ne 0 ]; then
                skip "PostgreSQL server binaries (initdb, pg_ctl) not found; install Debian's postgresql package or set MLCP_TEST_POSTGRES_URL"
            fi
            skip "PostgreSQL server binaries not found and installing the postgresql package failed (see the apt-get output above)"
        fi
        bindir="$(find_bindir)" || skip "the postgresql package installed no initdb/pg_ctl under /usr/lib/postgresql/*/bin"
    fi
    if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
        skip "running as root but there is no 'postgres' account to run the server as"
    fi

    local base
    base="$(mktemp -d "${TMPDIR:-/tmp}/mlcp-test-postgres.XXXXXX")" || skip "could not create a temporary folder"
    touch "$base/$MARKER"
    echo "$bindir" >"$base/bindir"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres "$base"
    fi
    # Make a stop possible even if a later step fails.
    export MLCP_TEST_POSTGRES_DATA="$base"

    if ! run_as_owner "$bindir/initdb" -D "$base/data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync \
        >"$base/initdb.log" 2>&1; then
        tail -n 20 "$base/initdb.log" >&2
        stop_server
        skip "initdb failed (output above)"
    fi
    local port attempt
    for attempt in 1 2 3; do
        port="$(free_port)"
        # Durability is pointless for a throwaway server; skipping fsync makes the suite faster.
        if run_as_owner "$bindir/pg_ctl" -D "$base/data" -l "$base/server.log" -w -t 30 \
            -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$base -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
            start >&2; then
            say "PostgreSQL $("$bindir/pg_ctl" --version | awk '{print $3}') on 127.0.0.1:$port, files in $base"
            emit MLCP_TEST_POSTGRES_URL "postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
            emit MLCP_TEST_POSTGRES_DATA "$base"
            return 0
        fi
        say "start attempt $attempt on port $port failed"
        tail -n 5 "$base/server.log" >&2 2>/dev/null
    done
    stop_server
    skip "the throwaway PostgreSQL server did not start (see the server log lines above)"
}

case "${1:-start}" in
start) start_server ;;
stop) stop_server ;;
*)
    say "usage: $0 [start|stop]"
    exit 2
    ;;
esac
