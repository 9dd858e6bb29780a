"""Every way `syncd` can fail to start ends in one line on stderr and a documented exit code.

Each test runs the command in a subprocess as a user would and asserts the
exit code, the line (what is wrong and which setting fixes it) and that no
Python traceback reached the terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.support.postgres import admin, database_url
from tests.support.processes import SYNCD, env_for, run_syncd

EXIT_FAILED, EXIT_CONFIG = 1, 2


def assert_one_line(stderr: str, *needles: str) -> str:
    """In JSON mode every stderr line is a JSON object, and one `command_failed` says why."""
    assert "Traceback" not in stderr, stderr
    events = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    failed = [e for e in events if e["event"] == "command_failed"]
    assert len(failed) == 1, stderr
    line = failed[0]["error"]
    for needle in needles:
        assert needle in line, line
    return str(line)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A 127.0.0.1 port some other program is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


async def test_http_port_in_use_names_the_port_and_the_setting(busy_port: int, db_url: str) -> None:
    """`syncd run` with its HTTP port taken exits 2 naming the port and SYNCD_HTTP_PORT."""
    env = env_for(SYNCD_API_URL="http://127.0.0.1:9", SYNCD_API_KEY="k" * 16,
                  SYNCD_DATABASE_URL=db_url, SYNCD_HTTP_HOST="127.0.0.1",
                  SYNCD_HTTP_PORT=str(busy_port))  # fmt: skip
    code, _, err = await run_syncd("run", env=env)
    assert code == EXIT_CONFIG
    assert_one_line(err, f"127.0.0.1:{busy_port}", "Address already in use", "SYNCD_HTTP_PORT")
    # For a person (console logs), the same news is one plain line.
    code, _, err = await run_syncd("run", env={**env, "SYNCD_LOG_FORMAT": "console"})
    assert code == EXIT_CONFIG and "Traceback" not in err
    plain = [line for line in err.splitlines() if line.startswith("syncd: ")]
    assert plain == [
        f"syncd: cannot listen on 127.0.0.1:{busy_port} (Address already in use): "
        "set SYNCD_HTTP_PORT to a free port, or 0 for no HTTP server"
    ]


@pytest.mark.parametrize(
    ("make_dir", "words"),
    [
        (lambda tmp: tmp / "a-file" / "data", "cannot be created (Not a directory)"),
        (lambda tmp: Path("/proc/no-such-dir/syncd"), "cannot be created"),
        # Exists, but nothing may be created in it (not even by root).
        (lambda tmp: Path("/proc/self"), "is not writable"),
    ],
    ids=["under-a-file", "uncreatable", "not-writable"],
)
async def test_bad_data_dir_exits_2_naming_the_setting(
    tmp_path: Path, make_dir: object, words: str
) -> None:
    """A SYNCD_DATA_DIR that cannot hold the embedded database stops every command at once."""
    (tmp_path / "a-file").write_text("not a directory")
    data_dir = make_dir(tmp_path)  # type: ignore[operator]
    code, _, err = await run_syncd("migrate", env=env_for(SYNCD_DATA_DIR=str(data_dir)))
    assert code == EXIT_CONFIG
    assert_one_line(err, f"SYNCD_DATA_DIR={data_dir}", words)


async def test_missing_migrations_exit_1_saying_where_syncd_looked(
    tmp_path: Path, db_url: str
) -> None:
    """A package installed without its migrations says so instead of failing half-way."""
    import syncd

    if (Path(sys.prefix) / "share" / "syncd" / "migrations").is_dir():
        pytest.skip("this environment has installed migrations, found as a fallback")
    package = Path(syncd.__file__).parent
    shutil.copytree(package, tmp_path / "syncd", ignore=shutil.ignore_patterns("__pycache__"))
    env = env_for(SYNCD_DATABASE_URL=db_url, PYTHONPATH=str(tmp_path))
    proc = await asyncio.create_subprocess_exec(
        *SYNCD, "migrate", env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == EXIT_FAILED
    assert_one_line(err.decode(), "alembic migrations not found", str(tmp_path / "migrations"))


@pytest.fixture
async def role_without_rights(pg_server_url: str) -> AsyncIterator[str]:
    """A login role and an empty database it may connect to but create nothing in."""
    suffix = uuid.uuid4().hex[:8]
    role, name = f"reader_{suffix}", f"t_norights_{suffix}"
    await admin(
        pg_server_url,
        f"CREATE ROLE {role} LOGIN",
        f'CREATE DATABASE "{name}"',
    )
    await admin(database_url(pg_server_url, name), "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    url = make_url(database_url(pg_server_url, name)).set(username=role)
    yield url.render_as_string(hide_password=False)
    await admin(
        pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f"DROP ROLE {role}"
    )


async def test_role_without_rights_to_migrate_gets_the_grant_it_needs(
    role_without_rights: str,
) -> None:
    """`syncd migrate` as a role that may not create tables says what to grant, in one line."""
    code, _, err = await run_syncd("migrate", env=env_for(SYNCD_DATABASE_URL=role_without_rights))
    assert code == EXIT_FAILED
    assert_one_line(err, "migration failed", "permission denied", "GRANT CREATE ON SCHEMA")


# The embedded server: one data directory, set up once, then broken in two ways.


async def test_embedded_server_stale_lock_and_broken_config(tmp_path: Path) -> None:
    """A postmaster.pid left by a crash, naming a pid now someone else's, is cleared (and
    that process left alone); a server that will not start is one line naming its log."""
    env = env_for(SYNCD_DATA_DIR=str(tmp_path))
    code, _, err = await run_syncd("migrate", env=env, timeout_s=120)
    assert code == 0, err
    pgdata = tmp_path / "pgdata"
    assert not (pgdata / "postmaster.pid").exists()  # stopped cleanly on exit

    bystander = await asyncio.create_subprocess_exec("sleep", "60")
    try:
        stale = [str(bystander.pid), str(pgdata), "1700000000", "5432", str(pgdata), "",
                 "  5432001         0", "ready   "]  # fmt: skip
        (pgdata / "postmaster.pid").write_text("\n".join(stale) + "\n")
        code, out, err = await run_syncd("status", "--json", env=env, timeout_s=120)
        assert code == 0, err
        assert "runs" in json.loads(out)["counts"]
        events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        removed = [e for e in events if e["event"] == "embedded_postgres_stale_lock_removed"]
        assert removed and removed[0]["pid"] == bystander.pid
        assert bystander.returncode is None  # not taken for the server and signalled
    finally:
        with contextlib.suppress(ProcessLookupError):
            bystander.kill()
        await bystander.wait()

    with (pgdata / "postgresql.conf").open("a") as conf:
        conf.write("\nshared_buffers = 'plenty'\n")
    code, _, err = await run_syncd("status", env=env, timeout_s=120)
    assert code == EXIT_FAILED
    line = assert_one_line(err, "embedded PostgreSQL", "did not start", str(pgdata / "log"))
    assert "shared_buffers" in line  # the server's own reason
