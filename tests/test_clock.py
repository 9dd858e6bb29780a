"""The one clock: wall-clock now, monotonic seconds and sleep, injectable as one value."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

from syncd.clock import SYSTEM_CLOCK, Clock, utcnow
from tests.clock import FakeClock


def test_unix_s_is_now_as_unix_seconds() -> None:
    """unix_s reads the clock's own `now`, not the system's."""
    at = dt.datetime(2026, 1, 1, 0, 0, 1, 500_000, tzinfo=dt.UTC)
    assert Clock(now=lambda: at).unix_s() == 1_767_225_601.5


def test_system_clock_is_the_real_time() -> None:
    """SYSTEM_CLOCK is the real thing: aware UTC now, time.monotonic, asyncio.sleep."""
    assert Clock() == SYSTEM_CLOCK
    assert (SYSTEM_CLOCK.now, SYSTEM_CLOCK.monotonic, SYSTEM_CLOCK.sleep) == (
        utcnow,
        time.monotonic,
        asyncio.sleep,
    )
    before = dt.datetime.now(dt.UTC)
    now = SYSTEM_CLOCK.now()
    assert now.tzinfo is dt.UTC and before <= now <= dt.datetime.now(dt.UTC)
    assert abs(SYSTEM_CLOCK.unix_s() - time.time()) < 5


async def test_a_fake_clock_moves_now_with_its_sleeps() -> None:
    """Handed a fake clock, waiting takes no real time and `now` moves by what was slept."""
    fake = FakeClock()
    clock = fake.clock(wall_at_zero=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    started = time.monotonic()
    await clock.sleep(3600)
    assert time.monotonic() - started < 1
    assert clock.now() == dt.datetime(2026, 1, 1, 1, 0, tzinfo=dt.UTC)
    assert clock.monotonic() == 3600 and fake.sleeps == [3600]
