"""The installed command, as a user runs it: `syncd fake-api`, `migrate`, `sync --once`, `run`.

Every process is started on 127.0.0.1, waited for with a deadline and
stopped at the end of its test.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.processes import SYNCD, env_for, get_json, run_syncd
from tests.support.simulator import simulator_process
from tests.support.truth import diff, expected_rows, stored_rows

KEY = "cli-e2e-key-0123456789"


@pytest.fixture
async def fake_api_process() -> AsyncIterator[str]:
    """`syncd fake-api` on a free 127.0.0.1 port; yields its base URL."""
    async with simulator_process(KEY, "--runs", "260", "--offset-mode", "pages") as url:
        yield url


async def test_migrate_then_sync_once_equals_simulator(
    fake_api_process: str, empty_db_url: str, engine_for: Any
) -> None:
    """`syncd migrate && syncd sync --once` with the SPEC's variables mirrors the simulator."""
    env = env_for(SYNCD_API_URL=fake_api_process, SYNCD_API_KEY=KEY,
                  SYNCD_DATABASE_URL=empty_db_url)  # fmt: skip
    code, out, err = await run_syncd("migrate", env=env)
    assert code == 0, err
    assert "database at revision" in out
    code, out, err = await run_syncd("sync", "--once", env=env)
    assert code == 0, err
    assert "v1:" in out and "v2:" in out
    truth = (await asyncio.to_thread(get_json, f"{fake_api_process}/_fake/truth"))["runs"]
    engine: AsyncEngine = engine_for(empty_db_url)
    assert diff(expected_rows(truth), await stored_rows(engine)) == []
    assert KEY not in out + err
    code, out, err = await run_syncd("status", env=env)
    assert code == 0, err
    assert "v1" in out and "v2" in out and "runs=260" in out


async def test_wrong_key_exits_3_with_a_clear_message(fake_api_process: str, db_url: str) -> None:
    """A rejected API key ends `sync --once` with exit 3 and a message naming SYNCD_API_KEY."""
    env = env_for(SYNCD_API_URL=fake_api_process, SYNCD_API_KEY="wrong-key-abcdef",
                  SYNCD_DATABASE_URL=db_url, SYNCD_MAX_RETRIES="1")  # fmt: skip
    code, out, err = await run_syncd("sync", "--once", "--stream", "v2", env=env)
    assert code == 3
    assert "SYNCD_API_KEY" in err
    assert "wrong-key-abcdef" not in out + err


async def test_bad_config_exits_2_naming_the_variable() -> None:
    """An invalid setting stops syncd before it does anything, naming the variable."""
    code, _, err = await run_syncd("sync", "--once", env=env_for(SYNCD_POLL_INTERVAL_V2="0"))
    assert code == 2
    assert "SYNCD_POLL_INTERVAL_V2" in err and len(err.strip().splitlines()) == 1


async def test_unreachable_database_exits_1_without_the_password(
    fake_api_process: str, tmp_path: Path
) -> None:
    """A database that is not there fails the sync clearly and never prints its password."""
    url = f"postgresql://syncd:pw-s3cret-xyz@/syncd?host={tmp_path}&port=1"
    env = env_for(SYNCD_API_URL=fake_api_process, SYNCD_API_KEY=KEY, SYNCD_DATABASE_URL=url)
    code, out, err = await run_syncd("sync", "--once", env=env)
    assert code == 1
    assert "migration failed" in err or "database" in err.lower()
    assert "pw-s3cret-xyz" not in out + err


async def _wait_for_both_streams(engine: AsyncEngine, deadline_s: float) -> None:
    from sqlalchemy import text

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            async with engine.connect() as conn:
                n = await conn.scalar(
                    text("SELECT count(*) FROM sync_state WHERE last_success_at IS NOT NULL")
                )
            if n == 2:
                return
        except Exception:  # tables appear only once the daemon migrated
            pass
        await asyncio.sleep(0.3)
    raise AssertionError("the daemon did not complete a cycle of both streams in time")


async def test_run_daemon_syncs_both_and_stops_on_sigterm(
    fake_api_process: str, empty_db_url: str, engine_for: Any
) -> None:
    """`syncd run` migrates, syncs both streams, and exits 0 within 10 s of SIGTERM."""
    env = env_for(SYNCD_API_URL=fake_api_process, SYNCD_API_KEY=KEY,
                  SYNCD_DATABASE_URL=empty_db_url, SYNCD_POLL_INTERVAL_V1="1",
                  SYNCD_POLL_INTERVAL_V2="1")  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *SYNCD, "run", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        await _wait_for_both_streams(engine_for(empty_db_url), 60)
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _, err = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert time.monotonic() - started < 10
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    events = [
        json.loads(line)["event"] for line in err.decode().splitlines() if line.startswith("{")
    ]
    assert "daemon_stopped" in events
    truth = (await asyncio.to_thread(get_json, f"{fake_api_process}/_fake/truth"))["runs"]
    assert diff(expected_rows(truth), await stored_rows(engine_for(empty_db_url))) == []


async def test_run_without_key_or_database_is_the_demo(tmp_path: Path) -> None:
    """With no API key and no database URL, `syncd run` syncs the built-in simulator
    into an embedded PostgreSQL under SYNCD_DATA_DIR, and stops cleanly."""
    env = env_for(SYNCD_DATA_DIR=str(tmp_path / "data"), SYNCD_POLL_INTERVAL_V1="1",
                  SYNCD_POLL_INTERVAL_V2="1")  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *SYNCD, "run", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    finished: dict[str, dict[str, Any]] = {}
    events: list[str] = []
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        while len(finished) < 2 and time.monotonic() < deadline:
            line = await asyncio.wait_for(proc.stderr.readline(), deadline - time.monotonic())
            if not line.startswith(b"{"):
                continue
            event = json.loads(line)
            events.append(event["event"])
            if event["event"] == "cycle_finished" and event["completed"]:
                finished[event["stream"]] = event
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    assert "demo_mode" in events and "embedded_postgres_started" in events
    assert set(finished) == {"v1", "v2"}
    assert finished["v1"]["seen"] >= 500 and finished["v2"]["seen"] >= 500
    assert (tmp_path / "data" / "pgdata" / "PG_VERSION").is_file()


# (aiohttp loads: the simulator's options are part of the parser.)
HEAVY = ("syncd.commands", "syncd.app", "sqlalchemy", "alembic", "pydantic")


@pytest.mark.parametrize("argv", [["--help"], ["sync", "--help"], ["sync", "--bogus"]])
def test_help_and_usage_errors_import_none_of_the_services(argv: list[str]) -> None:
    """The parser answers before the services, SQLAlchemy, alembic and pydantic load."""
    probe = (
        "import sys\n"
        "from syncd.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print('loaded:', [m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.stdout.splitlines()[-1] == "loaded: []", out.stdout + out.stderr
