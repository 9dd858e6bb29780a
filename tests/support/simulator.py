"""The CoreClaw simulator, three ways.

- `serve`: in this process and this event loop (tests: read `api.requests`,
  call `api.tick()` directly);
- `ThreadedSimulator`: in this process, served by an event loop in a thread of
  its own, like a remote server: work in the caller's loop (parsing, merging)
  cannot delay its answers past a short client timeout;
- `simulator_process`: ``syncd fake-api`` as a process of its own, for a
  `syncd` command to sync from (read it over HTTP: ``/_fake/truth``,
  ``/_fake/requests``).

Everything binds to 127.0.0.1 and is stopped when the block ends.  `accepted`
and `rate_limited` read its request log.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from syncd.envelope import RATE_LIMIT_CODES
from syncd.fakeapi import FakeApi, FakeApiConfig, RequestRecord, start_fake_api
from tests.support.processes import SYNCD, clean_env, stop_process

T = TypeVar("T")


def accepted(rec: RequestRecord) -> bool:
    """Answered with data: HTTP 200 and app code 0."""
    return rec.status == 200 and rec.code == 0


def rate_limited(rec: RequestRecord) -> bool:
    """Told to slow down: HTTP 429, or app code 13000 / 4290 with any status."""
    return rec.status == 429 or rec.code in RATE_LIMIT_CODES


@contextlib.asynccontextmanager
async def serve(config: FakeApiConfig) -> AsyncIterator[tuple[FakeApi, str]]:
    """The simulator in this event loop; yields it and its base URL."""
    api, runner, url = await start_fake_api(config)
    try:
        yield api, url
    finally:
        await runner.cleanup()


class ThreadedSimulator:
    """The simulator served by its own event loop in a thread; its log and truth read here."""

    def __init__(self, config: FakeApiConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-api", daemon=True)
        self.thread.start()
        try:
            started = asyncio.run_coroutine_threadsafe(start_fake_api(config), self.loop)
            self.api: FakeApi
            self.api, self._runner, self.url = started.result(30)
        except BaseException:
            self._stop_loop()
            raise

    @classmethod
    async def start(cls, config: FakeApiConfig) -> ThreadedSimulator:
        return await asyncio.to_thread(cls, config)

    @property
    def requests(self) -> list[RequestRecord]:
        return list(self.api.requests)

    async def _call(self, fn: Callable[[], T]) -> T:
        if self.loop.is_closed():  # stopped: nothing else touches it any more
            return fn()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:  # handed over to the caller
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return await asyncio.wait_for(asyncio.wrap_future(done), 30)

    async def truth(self) -> list[dict[str, Any]]:
        return await self._call(self.api.truth)

    async def rejects(self) -> list[dict[str, Any]]:
        return await self._call(self.api.rejects)

    def set_quota(self, rps: float) -> None:
        self.loop.call_soon_threadsafe(setattr, self.api.config, "rate_limit_rps", rps)

    async def close(self) -> None:
        if self.loop.is_closed():
            return
        cleanup = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.wrap_future(cleanup), 10)
        await asyncio.to_thread(self._stop_loop)

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


@contextlib.asynccontextmanager
async def simulator_process(key: str, *args: str) -> AsyncIterator[str]:
    """`syncd fake-api` on a free 127.0.0.1 port (`args`: more fake-api flags); its base URL."""
    proc = await asyncio.create_subprocess_exec(
        *SYNCD, "fake-api", "--host", "127.0.0.1", "--port", "0", "--api-key", key, *args,
        env=clean_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        if "listening on http://127.0.0.1:" not in line:
            raise RuntimeError(f"the simulator did not start: {line!r}")
        yield line.split("listening on ")[1].split()[0]
    finally:
        await stop_process(proc)
