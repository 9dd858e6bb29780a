"""The last look at the gates, between a request's slot and its first byte on the wire.

A slot is granted, then the request waits for a connection (a new one takes a few
turns of the event loop); a rate limit read meanwhile closes the gates.  The request
must not go out before they open again: the server would count it as sent early.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from syncd.client import CoreClawClient
from syncd.errors import UpstreamUnavailable
from syncd.fakeapi import FakeApiConfig
from syncd.ratelimit import RateLimiter, Ticket
from tests.support.settings import settings_for
from tests.support.simulator import serve

KEY = "gate-key"
WAIT_S = 0.3


class GateClosesAfterTheSlot(RateLimiter):
    """As if another request's Retry-After answer were read just after each slot is granted."""

    def __init__(self) -> None:
        super().__init__()
        self.closed_until: list[float] = []

    @asynccontextmanager
    async def slot(self, endpoint: str = "") -> AsyncIterator[Ticket]:
        async with super().slot(endpoint) as ticket:
            until = time.monotonic() + WAIT_S
            self._not_before = until
            self.closed_until.append(until)
            yield ticket


async def test_a_gate_closed_after_the_slot_holds_the_request_until_it_opens() -> None:
    async with serve(FakeApiConfig(runs=5, api_key=KEY)) as (api, url):
        limiter = GateClosesAfterTheSlot()
        settings = settings_for(url, None, KEY)
        async with CoreClawClient(settings, limiter=limiter) as client:
            await client.list_v1(page_index=1, page_size=5)  # a new connection
            await client.list_v1(page_index=2, page_size=5)  # the same one, reused
        arrived = [rec.time for rec in api.requests]
        assert len(arrived) == 2 == len(limiter.closed_until)
        assert all(at >= until for at, until in zip(arrived, limiter.closed_until, strict=True))


async def test_a_request_held_at_the_gate_longer_than_its_timeout_still_goes() -> None:
    """SYNCD_HTTP_TIMEOUT_S times the exchange, not the wait at the gate: a Retry-After may
    be longer than the timeout, and the request waits it out and then succeeds."""
    async with serve(FakeApiConfig(runs=5, api_key=KEY)) as (api, url):
        limiter = GateClosesAfterTheSlot()
        settings = settings_for(url, None, KEY, http_timeout_s=WAIT_S / 3, max_retries=0)
        async with CoreClawClient(settings, limiter=limiter) as client:
            page = await client.list_v1(page_index=1, page_size=5)
        assert len(page.items) == 5
        (arrived,) = [rec.time for rec in api.requests]
        assert arrived >= limiter.closed_until[0]


async def test_an_answer_slower_than_the_timeout_fails_the_exchange() -> None:
    async with serve(FakeApiConfig(runs=5, api_key=KEY, latency_ms=2000)) as (api, url):
        settings = settings_for(url, None, KEY, http_timeout_s=0.2, max_retries=0)
        started = time.monotonic()
        async with CoreClawClient(settings) as client:
            with pytest.raises(UpstreamUnavailable, match="TimeoutError"):
                await client.list_v1(page_index=1, page_size=5)
        assert time.monotonic() - started < 1.5  # the timeout, not the 2 s answer
        assert len(api.requests) == 1


def established_to(port: int) -> int:
    """TCP connections of this machine in state ESTABLISHED whose remote port is `port`
    (the client ends of connections to a server on it)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                    count += 1
    return count


class GateClosesOnRequest(RateLimiter):
    """Closes the gates for a long wait just after the slot of the request asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.close_next = False
        self.held = asyncio.Event()  # a request reached the last look with its connection

    @asynccontextmanager
    async def slot(self, endpoint: str = "") -> AsyncIterator[Ticket]:
        async with super().slot(endpoint) as ticket:
            if self.close_next:
                self._not_before = time.monotonic() + 60.0
            yield ticket

    async def hold(self, ticket: Ticket, *, land_answers: bool = True) -> None:
        if self.close_next:
            self.held.set()
        await super().hold(ticket, land_answers=land_answers)


@pytest.mark.parametrize("reused", [False, True])
async def test_a_request_cancelled_while_held_at_the_gate_leaves_no_connection_open(
    reused: bool,
) -> None:
    """Shutdown, or a scan that no longer needs a page, cancels a request held at the gate:
    it is never sent, and its connection (new or from the pool) is closed with the client."""
    async with serve(FakeApiConfig(runs=5, api_key=KEY)) as (api, url):
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        limiter = GateClosesOnRequest()
        async with CoreClawClient(settings_for(url, None, KEY), limiter=limiter) as client:
            if reused:
                await client.list_v1(page_index=1, page_size=5)  # leaves one in the pool
            sent = len(api.requests)
            limiter.close_next = True
            held = asyncio.create_task(client.list_v1(page_index=2, page_size=5))
            async with asyncio.timeout(5.0):
                await limiter.held.wait()
            await asyncio.sleep(0.05)  # well inside the 60 s wait
            assert not held.done() and established_to(port) == 1
            held.cancel()
            with pytest.raises(asyncio.CancelledError):
                await held
        await asyncio.sleep(0.05)  # the close reaches the kernel
        assert len(api.requests) == sent  # the held request never went
        assert established_to(port) == 0


class GateClosesAfterTheLook(RateLimiter):
    """As if an answer read in the very next turn of the event loop, after the connector's
    last look let a request through, closed the gates."""

    def __init__(self) -> None:
        super().__init__()
        self.closed_until: list[float] = []
        self._looked: set[int] = set()

    def _close(self) -> None:
        self._not_before = time.monotonic() + WAIT_S
        self.closed_until.append(self._not_before)

    async def hold(self, ticket: Ticket, *, land_answers: bool = True) -> None:
        await super().hold(ticket, land_answers=land_answers)
        if id(ticket) not in self._looked:
            self._looked.add(id(ticket))
            asyncio.get_running_loop().call_soon(self._close)


async def test_a_request_with_a_body_waits_for_gates_closed_after_the_last_look() -> None:
    """v1's body (and the headers aiohttp keeps back for it) goes a turn after the look
    (Python 3.11): a gate closed in that turn holds the whole request until it opens."""
    async with serve(FakeApiConfig(runs=5, api_key=KEY)) as (api, url):
        limiter = GateClosesAfterTheLook()
        async with CoreClawClient(settings_for(url, None, KEY), limiter=limiter) as client:
            await client.list_v1(page_index=1, page_size=5)  # a new connection
            await client.list_v1(page_index=2, page_size=5)  # the same one, reused
        arrived = [rec.time for rec in api.requests]
        assert len(arrived) == 2 == len(limiter.closed_until)
        assert all(at >= until for at, until in zip(arrived, limiter.closed_until, strict=True))
