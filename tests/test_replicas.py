"""Several replicas against one database: each stream is polled by one process at a time,
and a standby takes over when the active one dies."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from syncd.client import CoreClawClient
from syncd.config import load_settings
from syncd.daemon import Daemon
from syncd.database import create_engine
from syncd.fakeapi import FakeApiConfig, start_fake_api
from syncd.models import Source
from syncd.storage import STREAM_LOCK_KEYS, Store, StreamLease
from syncd.sync import StreamSync

KEY = "replica-key-0123456"
INTERVAL_S = 0.3


async def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    for _ in range(int(timeout_s / 0.05)):  # bounded in count and so in time
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


class Replica:
    """One syncd process's worth of objects: its own simulator, client, engine and lease."""

    def __init__(self, api: Any, url: str, db_url: str) -> None:
        self.api = api
        self.settings = load_settings(
            api_url=url, api_key=SecretStr(KEY), database_url=SecretStr(db_url),
            max_requests_per_s=200.0, initial_requests_per_s=200.0,
        )  # fmt: skip
        self.engine = create_engine(db_url)
        self.client = CoreClawClient(self.settings)
        store = Store(self.engine)
        self.daemon = Daemon(
            [StreamSync(s, self.client, store, self.settings) for s in (Source.V1, Source.V2)],
            {Source.V1: INTERVAL_S, Source.V2: INTERVAL_S},
            lease=StreamLease(self.engine),
        )
        self.task: asyncio.Task[Any] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.daemon.run())

    def cycles(self, stream: str) -> int:
        return self.daemon.stats.cycles.get(stream, 0)

    async def close(self) -> None:
        self.daemon.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 15)
        await self.client.close()
        await self.engine.dispose()


async def lease_holder_pids(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = ANY(:keys)"),
            {"keys": list(STREAM_LOCK_KEYS.values())},
        )
        return sorted({row[0] for row in result})


async def test_one_replica_polls_and_a_standby_takes_over(db_url: str, engine: AsyncEngine) -> None:
    """Two daemons on one database: only the first polls; when its connection dies
    (as when its process is killed), the standby takes both streams within an interval."""
    config = FakeApiConfig(runs=150, api_key=KEY)
    (api_a, runner_a, url_a), (api_b, runner_b, url_b) = await asyncio.gather(
        start_fake_api(config), start_fake_api(config)
    )
    a, b = Replica(api_a, url_a, db_url), Replica(api_b, url_b, db_url)
    try:
        a.start()
        assert await wait_for(lambda: a.cycles("v1") >= 1 and a.cycles("v2") >= 1, 20)
        b.start()
        await asyncio.sleep(6 * INTERVAL_S)
        assert api_b.requests == [], "the standby polled a stream another replica holds"
        assert a.cycles("v1") >= 2 and a.cycles("v2") >= 2
        (holder,) = await lease_holder_pids(engine)

        a.daemon.stop.set()  # the active replica dies: no more cycles ...
        async with engine.connect() as conn:  # ... and its database session is gone
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": holder})
        taken = await wait_for(
            lambda: b.cycles("v1") >= 1 and b.cycles("v2") >= 1, 4 * INTERVAL_S + 3
        )
        assert taken, "the standby did not take over"
        requests_a = len(api_a.requests)
        await asyncio.sleep(6 * INTERVAL_S)
        assert len(api_a.requests) == requests_a, "both replicas polled after the takeover"
        assert len(await lease_holder_pids(engine)) == 1
    finally:
        await asyncio.gather(a.close(), b.close())
        await asyncio.gather(runner_a.cleanup(), runner_b.cleanup())


async def test_sync_once_skips_a_stream_another_process_holds(
    db_url: str, engine: AsyncEngine
) -> None:
    """`syncd sync --once` next to a running daemon does not double-poll: it says so, exit 1."""
    from tests.support.processes import env_for, run_syncd

    api, runner, url = await start_fake_api(FakeApiConfig(runs=50, api_key=KEY))
    lease = StreamLease(engine)
    try:
        assert await lease.acquire(Source.V1)
        env = env_for(SYNCD_API_URL=url, SYNCD_API_KEY=KEY, SYNCD_DATABASE_URL=db_url)
        code, out, err = await run_syncd("sync", "--once", env=env)
    finally:
        await lease.release()
        await runner.cleanup()
    assert code == 1
    skipped = [json.loads(line) for line in err.splitlines() if '"stream_skipped"' in line]
    assert [e["stream"] for e in skipped] == ["v1"]
    assert "another syncd process" in skipped[0]["reason"]
    assert "v2:" in out
    assert {r.path for r in api.requests} == {"/api/v2/worker-runs"}
