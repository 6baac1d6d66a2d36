"""The throw-away servers (scripts/postgres_server.sh, scripts/s3_server.sh) are private to the
user who starts them. Another local user (`nobody`) can neither connect to PostgreSQL (the socket
folder is 700; every connection, socket or TCP, needs a password) nor read a secret (every file
the scripts make is 600, every folder 700, even when started with umask 0 in a 777 folder), and
the Dagster role is an ordinary role, so `COPY ... TO PROGRAM` is refused. Acting as `nobody`
needs root (tests and CI run as root): elsewhere these tests skip with the reason, in CI they fail.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path

import pytest

from services import require_module, running, unavailable

pytestmark = pytest.mark.timeout(300)


def other_user_available() -> None:
    if os.geteuid() != 0:
        unavailable("acting as another local user (nobody) needs root")
    if not shutil.which("runuser"):
        unavailable("no runuser (util-linux) to act as another local user")


def psql() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        unavailable("no PostgreSQL client (apt-get install postgresql, or scripts/install.sh)")
    return found[-1]


def as_nobody(*cmd: str) -> subprocess.CompletedProcess:
    """``cmd`` as user nobody, with an empty environment (no PGPASSWORD, no ~/.pgpass)."""
    return subprocess.run(["runuser", "-u", "nobody", "--", "env", "-i", "PATH=/usr/bin:/bin", "HOME=/nonexistent", *cmd],
                          capture_output=True, text=True, timeout=60)


@contextmanager
def started_loosely(script: str, client: str):
    """scripts/SCRIPT started with umask 0 in a 777 state folder (what it makes private, it made
    so); yields (state folder, its variables). ``client``: the module the tests talk to it with."""
    other_user_available()
    require_module(client)
    state = Path(tempfile.mkdtemp(prefix=Path(script).stem + "-"))
    state.chmod(0o777)
    with ExitStack() as stack:
        old = os.umask(0)
        try:
            env = stack.enter_context(running(script, state=state))
        finally:
            os.umask(old)
        yield state, env


def open_to_others(state: Path) -> list[str]:
    """``state`` and what lies in it (the scripts' files, the servers' data folders, the socket)
    with a group or other permission bit. Inside a data folder the server sets its own modes
    (weed: 644); the folder's 700 keeps them private."""
    paths = [state, *state.iterdir()]
    return [f"{p} {p.lstat().st_mode & 0o777:o}" for p in paths if p.lstat().st_mode & 0o077]


@pytest.fixture(scope="module")
def pg():
    with started_loosely("postgres_server.sh", "psycopg2") as server:
        yield server


@pytest.fixture(scope="module")
def s3():
    with started_loosely("s3_server.sh", "s3fs") as server:
        yield server


def connect(env: dict[str, str], **overrides):
    import psycopg2

    settings = {"host": env["DAGSTER_PG_HOST"], "port": env["DAGSTER_PG_PORT"], "user": env["DAGSTER_PG_USERNAME"],
                "password": env["DAGSTER_PG_PASSWORD"], "dbname": env["DAGSTER_PG_DB"], **overrides}
    conn = psycopg2.connect(**settings)
    conn.autocommit = True
    return closing(conn)


def test_postgres_socket_is_out_of_reach_of_another_user(pg) -> None:
    state, env = pg
    with connect(env, host=str(state)) as conn, conn.cursor() as cur:  # the socket is there: its owner gets in
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    for user in ("dagster", "postgres"):
        proc = as_nobody(psql(), "-w", "-h", str(state), "-p", env["DAGSTER_PG_PORT"], "-U", user, "-d", "postgres", "-c", "SELECT 1")
        assert proc.returncode != 0 and "Permission denied" in proc.stderr, (user, proc.stdout, proc.stderr)


def test_postgres_over_tcp_needs_the_password(pg) -> None:
    _, env = pg
    for user in ("dagster", "postgres"):
        query = [psql(), "-h", "127.0.0.1", "-p", env["DAGSTER_PG_PORT"], "-U", user, "-d", "postgres", "-c", "SELECT 1"]
        proc = as_nobody(*query, "-w")
        assert proc.returncode != 0 and "no password supplied" in proc.stderr, (user, proc.stderr)
        proc = as_nobody("PGPASSWORD=guess", *query)
        assert proc.returncode != 0 and "password authentication failed" in proc.stderr, (user, proc.stderr)


def test_no_trust_in_pg_hba(pg) -> None:
    state, _ = pg
    rules = [line.split() for line in (state / "data" / "pg_hba.conf").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert rules and {rule[-1] for rule in rules} == {"scram-sha-256"}, rules


def test_the_dagster_role_is_no_superuser_and_cannot_run_programs(pg, tmp_path) -> None:
    import psycopg2

    _, env = pg
    marker = tmp_path / "ran"
    with connect(env) as conn, conn.cursor() as cur:
        cur.execute("SELECT rolsuper, rolcreaterole, rolcreatedb, pg_has_role(current_user, 'pg_execute_server_program', 'MEMBER'),"
                    " (SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()) FROM pg_roles WHERE rolname = current_user")
        assert cur.fetchone() == (False, False, False, False, "dagster")
        cur.execute("CREATE TABLE owned_here (x int)")  # it owns its database: Dagster can make its tables
        with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="pg_execute_server_program"):
            cur.execute(f"COPY (SELECT 1) TO PROGRAM 'touch {marker}'")
    assert not marker.exists()


def test_postgres_secrets_are_private(pg) -> None:
    state, env = pg
    assert open_to_others(state) == []
    assert not (state / "pwfile").exists()  # the superuser's password is not kept
    proc = as_nobody("cat", str(state / "env.sh"))
    assert proc.returncode != 0 and "Permission denied" in proc.stderr and env["DAGSTER_PG_PASSWORD"] not in proc.stdout
    log = state.with_suffix(".log")  # what the script printed
    assert log.stat().st_mode & 0o077 == 0 and env["DAGSTER_PG_PASSWORD"] not in log.read_text()


def test_s3_secrets_are_private(s3) -> None:
    state, env = s3
    assert open_to_others(state) == []
    for name in ("env.sh", "s3.json"):
        proc = as_nobody("cat", str(state / name))
        assert proc.returncode != 0 and "Permission denied" in proc.stderr and env["AWS_SECRET_ACCESS_KEY"] not in proc.stdout, name
    proc = as_nobody("ls", str(state / "data"))
    assert proc.returncode != 0 and "Permission denied" in proc.stderr, proc.stdout
    assert env["AWS_SECRET_ACCESS_KEY"] in (state / "s3.json").read_text()  # the file the server reads holds it
    assert env["AWS_SECRET_ACCESS_KEY"] not in state.with_suffix(".log").read_text()
