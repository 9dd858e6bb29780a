"""Time, as one injectable value: wall-clock `now`, `monotonic` seconds and `sleep`.

The composition root builds one (`SYSTEM_CLOCK`) and hands it to everything
that reads or waits on time, so a test can hand a fake one instead and nothing
really waits.  APScheduler keeps its own (real) timers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class Clock:
    now: Callable[[], dt.datetime] = utcnow  # aware, UTC: stamps what syncd observed
    monotonic: Callable[[], float] = time.monotonic  # seconds: durations and deadlines
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def unix_s(self) -> float:
        """`now` as Unix seconds (for gauges)."""
        return self.now().timestamp()


SYSTEM_CLOCK = Clock()
