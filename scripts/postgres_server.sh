#!/usr/bin/env bash
# Run a throw-away PostgreSQL server on 127.0.0.1 for Dagster (tests, CI, the scale-out demo).
#   scripts/postgres_server.sh [STATE_DIR]
# Initialises a cluster in STATE_DIR/data (a new temporary folder by default), starts the server
# on a free port, creates the `dagster` role and database, then writes STATE_DIR/env.sh (the
# DAGSTER_PG_* variables that configs/instance/dagster.postgres.yaml reads) and prints its path.
# The file appears only once the server accepts connections, so a caller can wait for it. Runs in
# the foreground until SIGTERM/SIGINT (Ctrl-C), then stops the server and deletes STATE_DIR, also
# on failure. The server refuses to run as root: as root it runs as the `postgres` user (from
# Debian's `postgresql` package, which scripts/install.sh installs).
# Private to the user who starts it (other local users share 127.0.0.1): STATE_DIR, which holds
# the socket, is mode 700 and env.sh 600; every connection, socket or TCP, needs a password
# (scram-sha-256); `dagster` is an ordinary role that owns its database, so it cannot run
# `COPY ... TO PROGRAM`. The superuser's password is used for the setup only and is not kept.
set -euo pipefail
umask 077  # every file and folder made here is born private (no moment of being world-readable)

STATE=${1:-$(mktemp -d -t lcaffect-pg.XXXXXX)}
mkdir -p "$STATE"
chmod 700 "$STATE"  # a STATE_DIR given by the caller may have been made with a looser mode
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
[ -n "$PGBIN" ] || PGBIN=$(dirname "$(command -v initdb || echo /nonexistent/initdb)")
if [ ! -x "$PGBIN/initdb" ]; then
  echo "postgres_server.sh: no PostgreSQL server found (apt-get install postgresql, or scripts/install.sh)" >&2
  exit 2
fi

# Server programs run as an unprivileged user. setpriv execs (no wrapper process), so $! below
# is the server itself and our signals reach it.
AS_DB=()
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
  AS_DB=(setpriv --reuid=postgres --regid=postgres --clear-groups)
  chown postgres "$STATE"
fi

# SIGINT = PostgreSQL's "fast shutdown"
STOP_SIGNAL=INT STOP_TRIES=50
. "$(dirname "$0")/service_lib.sh"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# No secret on a command line (any user can read those); psql takes them from its environment
# or standard input.
ADMIN_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
printf '%s\n' "$ADMIN_PASSWORD" > "$STATE/pwfile"
[ "$(id -u)" -ne 0 ] || chown postgres "$STATE/pwfile"
"${AS_DB[@]}" "$PGBIN/initdb" -D "$STATE/data" -U postgres --pwfile="$STATE/pwfile" \
  --auth=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$STATE/initdb.log" 2>&1 \
  || { cat "$STATE/initdb.log" >&2; exit 1; }
rm -f "$STATE/pwfile"

# Loopback only; the Unix socket lives in the state folder (not /var/run/postgresql), mode 700.
# fsync off: the data is thrown away, and it keeps a busy CI machine fast.
"${AS_DB[@]}" "$PGBIN/postgres" -D "$STATE/data" -h 127.0.0.1 -p "$PORT" -k "$STATE" \
  -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 \
  -c unix_socket_permissions=0700 >"$STATE/postgres.log" 2>&1 &
PID=$!

for _ in $(seq 1 120); do
  if "${AS_DB[@]}" "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then break; fi
  kill -0 "$PID" 2>/dev/null || { cat "$STATE/postgres.log" >&2; exit 1; }
  sleep 0.5
done
"${AS_DB[@]}" "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" || { echo "postgres did not start" >&2; exit 1; }
# The superuser makes the Dagster role and its database, then its password is forgotten.
PGPASSWORD=$ADMIN_PASSWORD "${AS_DB[@]}" "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$STATE" -p "$PORT" \
  -U postgres -d postgres >"$STATE/setup.log" 2>&1 <<SQL || { cat "$STATE/setup.log" >&2; exit 1; }
CREATE ROLE dagster LOGIN PASSWORD '$PASSWORD' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
CREATE DATABASE dagster OWNER dagster;
SQL
unset ADMIN_PASSWORD

cat >"$STATE/env.sh.tmp" <<ENV
export DAGSTER_PG_HOST=127.0.0.1
export DAGSTER_PG_PORT=$PORT
export DAGSTER_PG_USERNAME=dagster
export DAGSTER_PG_PASSWORD=$PASSWORD
export DAGSTER_PG_DB=dagster
ENV
mv "$STATE/env.sh.tmp" "$STATE/env.sh"
echo "postgres_server.sh: PostgreSQL on 127.0.0.1:$PORT (state in $STATE); . $STATE/env.sh sets DAGSTER_PG_*; Ctrl-C stops it"
wait "$PID"
