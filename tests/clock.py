"""Time for tests: a monotonic clock that moves only when slept on, so nothing really waits."""

from __future__ import annotations

import asyncio
import datetime as dt

from syncd.clock import Clock

EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class FakeClock:
    """Monotonic time that only moves when someone sleeps (or the test moves it)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, delay_s: float) -> None:
        self.sleeps.append(delay_s)
        self.now += max(delay_s, 0.0)
        await asyncio.sleep(0)

    def clock(self, wall_at_zero: dt.datetime = EPOCH) -> Clock:
        """This fake time as syncd's Clock: `now` moves with the monotonic seconds."""
        return Clock(
            now=lambda: wall_at_zero + dt.timedelta(seconds=self.now),
            monotonic=self.monotonic,
            sleep=self.sleep,
        )
